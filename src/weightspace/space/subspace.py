"""PCA subspaces of populations: fit, save/load, sample, project, reconstruct and edit points.

A subspace stores mean (D,), basis (k, D) (orthonormal rows), singular values, explained
variance, an optional per-coordinate scale (standardised fits) and the frame of its points (layout,
parameterisation, anchor, checkpoint), all in one `subspace.safetensors`, so any sample decodes on
its own (`sub.frame.build(gen)`).
LoRA populations are learned in delta form by default (Delta W = s B A per layer): the factors
(A, B) are not identifiable, BA = (BR)(R^-1 A), and each member starts from its own random A.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from weightspace.runtime.checkpoint import load_state
from weightspace.runtime.errors import InputError
from weightspace.runtime.folders import WHAT, check_out_folder, folder_kind
from weightspace.runtime.io import atomic_write_text
from weightspace.runtime.seeding import item_generator
from weightspace.space.frame import Frame
from weightspace.space.layout import Layout
from weightspace.space.lora import LORA_FORMS, delta_layout, factors_to_delta, stored_form
from weightspace.space.pca import pca
from weightspace.space.store import Population, _meta_json, read_frame, read_metadata, save_tensors

SUBSPACE_FILE = "subspace.safetensors"
IN_MEMORY_BYTES = 512 * 2**20  # larger populations are streamed through a memory-mapped file


@dataclass
class Subspace:
    """mean (D,), basis (k, D), singular_values (k,), explained_variance (k,), scale (D,) or None."""

    mean: torch.Tensor
    basis: torch.Tensor
    singular_values: torch.Tensor
    explained_variance: torch.Tensor
    explained_variance_ratio: torch.Tensor
    scale: torch.Tensor | None
    n: int
    frame: Frame
    solver: str
    # where its points came from, when fitted to a population: {"population": folder, "data": the data folder,
    # "shapes": the source shape id of every member}, kept in summary.json (a scan of one of these shapes,
    # inverted into the subspace, is recalled rather than generalised to)
    members: dict[str, Any] | None = None

    @property
    def k(self) -> int:
        return self.basis.shape[0]

    @property
    def sigma(self) -> torch.Tensor:
        """Standard deviation of the training points along each component: s / sqrt(N - 1), (k,)."""
        return self.singular_values / (self.n - 1) ** 0.5

    # --- coordinates <-> points -----------------------------------------------------------------
    def _check(self, points: torch.Tensor) -> torch.Tensor:
        if points.shape[-1] != self.frame.layout.size:
            raise InputError(f"points have length {points.shape[-1]}, this subspace expects {self.frame.layout.size}")
        return points.to(self.mean.dtype)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Coordinates (B, k) of points (B, D)."""
        x = self._check(points) - self.mean
        if self.scale is not None:
            x = x / self.scale
        return x @ self.basis.T  # (B, k)

    def reconstruct(self, coords: torch.Tensor) -> torch.Tensor:
        """Points (B, D) of coordinates (B, k) (differentiable in coords)."""
        if coords.shape[-1] != self.k:
            raise InputError(f"coordinates have length {coords.shape[-1]}, this subspace has k = {self.k}")
        x = coords.to(self.basis.dtype) @ self.basis  # (B, D)
        if self.scale is not None:
            x = x * self.scale
        return self.mean + x

    def sample_coords(self, n: int, *, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """Gaussian coordinates (n, k): z_i ~ N(0, (temperature * sigma_i)^2), one generator per item."""
        if n < 1 or not 0 <= temperature < float("inf"):  # NaN fails the comparison too
            raise InputError(f"samples (--samples) must be >= 1 and temperature (--temperature) a finite number >= 0, "
                             f"got {n} and {temperature}")
        eps = torch.stack([torch.randn(self.k, generator=item_generator(seed, "subspace-sample", i)) for i in range(n)])
        return eps * (temperature * self.sigma)  # (n, k)

    def sample(self, n: int, *, seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
        """Points (n, D) drawn in the subspace."""
        return self.reconstruct(self.sample_coords(n, seed=seed, temperature=temperature))

    # --- edits -----------------------------------------------------------------------------------
    def direction(self, *, component: int | None = None, coords: torch.Tensor | None = None) -> torch.Tensor:
        """A weight-space direction (D,): one principal component scaled by its sigma, or a unit
        coordinate direction (k,) (e.g. from `fit_direction`) mapped into weight space."""
        if (component is None) == (coords is None):
            raise InputError("give exactly one of component or coords")
        if component is not None:
            if not 0 <= component < self.k:
                raise InputError(f"component must be in [0, {self.k}), got {component}")
            d = self.sigma[component] * self.basis[component]
        else:
            d = coords.to(self.basis.dtype) @ self.basis
        return d * self.scale if self.scale is not None else d

    def edit(self, points: torch.Tensor, amount: float | Sequence[float], **direction: Any) -> torch.Tensor:
        """points (B, D) + amount * direction (see `direction`); a list of amounts gives (len, D) for one point."""
        d = self.direction(**direction)
        amounts = torch.as_tensor(amount, dtype=d.dtype).reshape(-1, 1)  # (A, 1)
        return self._check(points) + amounts * d

    # --- persistence ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the subspace into `folder`: subspace.safetensors (mean, basis, spectrum, anchor, its frame
        in the metadata) and summary.json; `Subspace.load` and `weightspace decode` read it back."""
        folder = Path(folder)
        tensors = {"mean": self.mean, "basis": self.basis, "singular_values": self.singular_values,
                   "explained_variance": self.explained_variance, "explained_variance_ratio": self.explained_variance_ratio,
                   "anchor": self.frame.anchor}
        if self.scale is not None:
            tensors["scale"] = self.scale
        meta = {"kind": "subspace", **self.frame.metadata(), "n": self.n, "solver": self.solver}
        summary = {
            "k": self.k, "n": self.n, "d": self.frame.layout.size, "solver": self.solver, "standardized": self.scale is not None,
            "parameterisation": self.frame.parameterisation, "checkpoint": self.frame.checkpoint,
            "explained_variance_ratio": [float(v) for v in self.explained_variance_ratio],
            "singular_values": [float(v) for v in self.singular_values],
            **({"members": self.members} if self.members is not None else {})}
        try:  # serialised before anything is written: a value JSON cannot hold leaves no half-written subspace
            text = json.dumps(summary, indent=2, sort_keys=True, allow_nan=False) + "\n"
        except ValueError as e:
            raise InputError(f"{folder}: the subspace's summary holds a value JSON cannot store ({e}); nothing written") from None
        save_tensors(folder / SUBSPACE_FILE, tensors, meta)
        atomic_write_text(folder / "summary.json", text)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Subspace":
        folder = Path(folder)
        if folder.is_dir() and not (folder / SUBSPACE_FILE).is_file():  # a population or checkpoint given for its subspace
            kind = folder_kind(folder)
            held = f"; it holds {WHAT[kind]}" if kind else ""
            raise InputError(f"{folder}: not a subspace folder (no {SUBSPACE_FILE}){held}; `weightspace subspace fit` makes one")
        path = folder / SUBSPACE_FILE if folder.is_dir() else folder
        meta = read_metadata(path)
        if meta.get("kind") != "subspace":
            raise InputError(f"{path}: not a subspace file (metadata kind is {meta.get('kind')!r})")
        t = load_state(path)
        need = ("mean", "basis", "singular_values", "explained_variance", "explained_variance_ratio", "anchor")
        missing = [k for k in need if k not in t]
        if missing:
            raise InputError(f"{path}: tensors missing: {missing}")
        frame = read_frame(meta, t["anchor"], path)
        size = frame.layout.size
        if t["basis"].ndim != 2 or t["basis"].shape[1] != size or t["mean"].shape != (size,):
            raise InputError(f"{path}: basis/mean do not match the layout length {size}")
        k = t["basis"].shape[0]
        # a spectrum or scale of another length would broadcast silently into every sample
        shapes = {"singular_values": (k,), "explained_variance": (k,), "explained_variance_ratio": (k,), "scale": (size,)}
        for key, shape in shapes.items():
            if key in t and tuple(t[key].shape) != shape:
                raise InputError(f"{path}: {key} has shape {tuple(t[key].shape)}, the basis of {k} directions of length "
                                 f"{size} needs {shape}")
        n = _meta_json(meta, "n", path)
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise InputError(f"{path}: metadata n (points the subspace was fitted to) must be an integer >= 2, got {n!r}")
        return cls(t["mean"], t["basis"], t["singular_values"], t["explained_variance"], t["explained_variance_ratio"],
                   t.get("scale"), n, frame, meta.get("solver", ""), _members(path.parent / "summary.json"))


def _members(summary: Path) -> dict[str, Any] | None:
    """The `members` record of a subspace's summary.json, or None (an older subspace, or none beside the file)."""
    try:
        members = json.loads(summary.read_text(encoding="utf-8")).get("members")
    except (OSError, ValueError, AttributeError):
        return None
    return members if isinstance(members, dict) and isinstance(members.get("shapes"), list) else None


def fit_direction(coords: torch.Tensor, labels: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A unit direction (k,) in subspace coordinates along which `labels` grow (as in weights2weights).

    Least squares of labels on [coords, 1]: y ~ coords w + b; the direction is w / |w|.
    coords : (N, k) float; labels : (N,) numbers (e.g. 0/1 for an attribute).
    """
    z = torch.as_tensor(coords, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64).reshape(-1, 1)
    if z.ndim != 2 or y.shape[0] != z.shape[0]:
        raise InputError(f"need coords (N, k) and N labels, got {tuple(z.shape)} and {y.shape[0]}")
    a = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], dim=1)  # (N, k + 1)
    w = torch.linalg.lstsq(a, y).solution[:-1, 0]  # (k,)
    norm = w.norm()
    if norm == 0:
        raise InputError("labels do not vary linearly with the coordinates (zero direction)")
    return (w / norm).to(torch.float32)


def fit_subspace_matrix(x: np.ndarray | torch.Tensor, k: int, *, frame: Frame, solver: str = "auto",
                        standardize: bool = False, seed: int = 0) -> Subspace:
    """Fit a subspace to points x (N, D) (array or memory map) in one `frame`."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if x.shape[1] != frame.layout.size:
        raise InputError(f"points have length {x.shape[1]}, layout expects {frame.layout.size}")
    r = pca(x, k, solver=solver, standardize=standardize, seed=seed)
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Subspace(f(r.mean), f(r.basis), f(r.singular_values.astype(np.float32)), f(r.explained_variance.astype(np.float32)),
                    f(r.explained_variance_ratio.astype(np.float32)), None if r.scale is None else f(r.scale), r.n, frame, r.solver)


def converts_to_delta(parameterisation: Mapping[str, Any], form: str | None) -> bool:
    """Whether a population of `parameterisation` is converted to delta form for a subspace in `form`.

    form : None (the default: `delta` for LoRA populations, nothing for the others), `delta` or `factors`.
    """
    if form is not None and form not in LORA_FORMS:
        raise InputError(f"form must be one of {', '.join(LORA_FORMS)}, got {form!r}")
    name = parameterisation.get("name")
    if name != "lora":
        if form is not None:
            raise InputError(f"form {form!r} applies to lora populations; this one's parameterisation is {name!r}")
        return False
    stored = stored_form(parameterisation)
    if form == "factors" and stored == "delta":
        raise InputError("the population stores delta points (B A), which have no unique factors; "
                         "a factors subspace needs a factor-form population (or use form delta)")
    return stored == "factors" and form != "factors"


def _delta_memmap(pop: Population, path: Path, layout: Layout) -> None:
    """Write every member converted to delta form into a float32 (N, D_delta) .npy file, one row at a time."""
    mm = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(len(pop), layout.size))
    for i, p in enumerate(pop.iter_points()):
        mm[i] = factors_to_delta(p, pop.frame.layout).numpy()
    mm.flush()
    del mm


def fit_subspace(population: str | Path | Population, k: int, *, form: str | None = None, solver: str = "auto",
                 standardize: bool = False, seed: int = 0, out: str | Path | None = None, overwrite: bool = False) -> Subspace:
    """Fit a k-component subspace to a population (streamed through a memory map when large).

    form : the LoRA point form the subspace is learned in. `delta` (the default for LoRA): every factor
        member (A, B) becomes Delta W = s B A per layer (`lora.factors_to_delta`, exactly what decodes), the
        same for every factorisation of it, and the subspace records the delta layout and parameterisation
        (form `delta`) so its points decode on their own. `factors`: the stored (A, B) coordinates, whose
        variance mostly follows each member's random start of A (for comparison). Leave it None for
        condition and layers populations (one form).
    out : the folder to save it in; an earlier subspace there is replaced only with `overwrite`.
    """
    if out is not None:  # the population itself, a data folder (its summary.json) or a checkpoint: named, untouched
        check_out_folder(out, "subspace", writes="subspace.safetensors and summary.json", overwrite=overwrite,
                         finished=SUBSPACE_FILE)
    pop = population if isinstance(population, Population) else Population(population)
    n = len(pop)
    if n < 2:
        raise InputError(f"{pop.folder}: a subspace needs at least 2 finished members, found {n}")
    convert = converts_to_delta(pop.frame.parameterisation, form)
    frame = delta_frame(pop.frame) if convert else pop.frame
    layout = frame.layout
    kw = dict(frame=frame, solver=solver, standardize=standardize, seed=seed)
    if n * layout.size * 4 <= IN_MEMORY_BYTES:
        x = pop.matrix()  # (N, D)
        sub = fit_subspace_matrix((factors_to_delta(x, pop.frame.layout) if convert else x).numpy(), k, **kw)
    else:
        with tempfile.TemporaryDirectory(prefix="weightspace-pca-") as tmp:
            path = Path(tmp) / "points.npy"
            if convert:
                _delta_memmap(pop, path, layout)
            else:
                mm = pop.to_memmap(path)
                del mm
            sub = fit_subspace_matrix(np.load(path, mmap_mode="r", allow_pickle=False), k, **kw)
    sub.members = {"population": str(pop.folder), "data": pop.config.get("data"), "data_hash": pop.config.get("data_hash"),
                   "shapes": pop.shape_ids()}
    if out is not None:
        sub.save(out)
    return sub


def delta_frame(frame: Frame) -> Frame:
    """The frame of a LoRA factor frame's points in delta form (Delta W = s B A per layer)."""
    return dataclasses.replace(frame, layout=delta_layout(frame.layout),
                               parameterisation={**frame.parameterisation, "form": "delta"})
