"""What every study shares: results folders, generator and data set-up, and the checks a study stands on.

A results folder holds `config.json` (the study's config), `results.json` (summary figures),
per-item CSV tables, meshes and PNG plots; every file is written atomically (`runtime.results`).
Decoded grids are measured by `analysis.measure`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from weightspace.data.dataset import check_shape_folder, load_points, read_manifest, read_shapes
from weightspace.generators.protocol import Generator
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_write_json, read_json, safe_child
from weightspace.runtime.results import write_results
from weightspace.runtime.seeding import derive_seed

# --- results folders ---------------------------------------------------------------------------------
# Config fields that change where or how a study runs, not what it measures: an earlier run in the
# same folder with other values is the same study.
RUNTIME_FIELDS = frozenset({"out", "executor", "workers", "address", "meshes", "batch_members", "overwrite"})


def start_results(out: str | Path, config: Any, *, settings_may_differ: bool = False, overwrite: bool = False,
                  outputs: Sequence[str] = ()) -> Path:
    """Create the results folder and write `config.json` (the dataclass config, as given).

    A folder that holds an earlier run of another study, or of this study with other settings (any
    field but RUNTIME_FIELDS; fields the earlier config.json lacks are not compared), is refused
    before anything is written there, so the earlier run's results stay whole and described by
    their own config.json. Such a run of this study is replaced instead when it was refused (its
    results.json says why), when it stopped before writing anything but its config.json (bad input found
    after the config was written: an unknown family or checkpoint), or with `overwrite`: its `outputs` (the names of the files and folders the
    study writes there), results.json and report.html are removed first, so none of them is left
    beside the new ones; anything else in the folder stays. With `settings_may_differ` (a study that
    checks per item what it can resume, as the subspace grid does) the run goes on and leaves
    config.json alone; the study calls `record_config` once it has finished.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"out: {folder} exists and is not a folder")
    body = json.loads(json.dumps(_config_body(config), default=str))  # as config.json holds it
    earlier = folder / "config.json"
    if earlier.is_file():
        old = read_json(earlier)
        if not isinstance(old, dict) or old.get("study") != body["study"]:
            what = old.get("study") if isinstance(old, dict) else None
            raise InputError(f"out: {folder} holds {'a ' + str(what) + ' run' if what else 'another run'}, not a "
                             f"{body['study']} run; choose another --out")
        differ = [k for k in body if k in old and k not in RUNTIME_FIELDS and old[k] != body[k]]
        if differ and settings_may_differ:
            return folder
        only_config = all(p.name == "config.json" for p in folder.iterdir())  # nothing of that run to keep
        if differ and (overwrite or only_config or refusal(folder) is not None):
            for name in ("results.json", "report.html", *outputs):
                path = folder / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        elif differ:
            changes = ", ".join(f"{k} {old[k]!r} -> {body[k]!r}" for k in differ[:4])
            raise InputError(f"out: {folder} holds a finished or interrupted run with other settings ({changes}"
                             f"{', ...' if len(differ) > 4 else ''}); choose another --out, or --overwrite to replace "
                             f"it (nothing there was changed)")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(earlier, body)
    return folder


def finished_with(folder: str | Path, config: Any) -> bool:
    """Whether `folder` holds a finished run of `config`'s study with its settings (RUNTIME_FIELDS aside) that
    did not refuse: its config.json says so and its results.json, written last, is there."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "results.json").is_file() or refusal(folder) is not None:
        return False
    old = read_json(folder / "config.json")
    body = json.loads(json.dumps(_config_body(config), default=str))
    return isinstance(old, dict) and {k: v for k, v in old.items() if k not in RUNTIME_FIELDS} == {
        k: v for k, v in body.items() if k not in RUNTIME_FIELDS}


def record_config(folder: Path, config: Any) -> None:
    """Write the config a finished run was made with (see `start_results`' settings_may_differ)."""
    atomic_write_json(Path(folder) / "config.json", _config_body(config))


def _config_body(config: Any) -> dict[str, Any]:
    body = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {"study": type(config).__name__, **body}


class Clock:
    """Wall time since creation, in seconds."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


# --- generators and data -------------------------------------------------------------------------
def given_checkpoint(config: Any, generator: Generator | None) -> Any:
    """`config` with `checkpoint` set to what a study given `generator=` really runs on (its `source`;
    for one built in code the checkpoint the config names as its label, '' when the config left its
    default), so results, frames and resumes never name a model the study did not run."""
    if generator is None:
        return config
    from weightspace.generators.registry import checkpoint_of

    default = {f.name: f.default for f in dataclasses.fields(config)}["checkpoint"]
    return dataclasses.replace(config, checkpoint=checkpoint_of(generator, config.checkpoint, default))


def load_study_generator(checkpoint: str, generator: Generator | None = None) -> Generator:
    """The generator a study runs on: `generator` when given (tests), else `load_generator(checkpoint)`."""
    if generator is not None:
        return generator
    from weightspace.generators.registry import load_generator

    torch.manual_seed(0)
    return load_generator(checkpoint)


def generator_pose(gen: Generator) -> str:
    """The pose distribution of the procedural shapes the generator was trained on (`data make --pose`), in
    which a study makes its procedural shapes; `random` for checkpoints that predate the option and for one
    trained on imported meshes ("as given": no procedural pose to match) or on a mix of poses."""
    from weightspace.data.families import POSES

    data = gen.config.get("data") if isinstance(gen.config.get("data"), dict) else {}
    pose = str(data.get("pose", "random"))
    return pose if pose in POSES else "random"


def usable(row: dict[str, Any]) -> bool:
    """A manifest row with a shape: not a file whose import failed or was skipped (not solid)."""
    return row.get("status", "ok") == "ok"


def left_out_reason(data: str | Path, shape_id: str) -> str | None:
    """Why `study_data` leaves the row `shape_id` of the folder `data` out, or None when it does not."""
    for r in read_manifest(Path(data)):
        if str(r.get("id")) == str(shape_id) and not usable(r):
            return f"{r.get('status')} at import: {r.get('reason') or r.get('error')}"
    return None


def study_data(folder: Path, *, data: str | None, families: Sequence[str], count: int, seed: int,
               resolution: int, pose: str = "random",
               population_option: str | None = "--population") -> tuple[Path, list[dict[str, Any]]]:
    """Shapes for a study: usable rows of `data` (when given; rows whose import failed or was skipped are
    left out, see `left_out_reason`) of the named families (all when empty), else a
    procedural set made into `folder` (`count` shapes per family, `seed` unseen by training when it
    differs from the training data's seed, in the generator's training `pose`). `population_option`: the study's
    option that takes a population, offered when `data` is one (None: the study has none)."""
    if data is not None:
        root = Path(data)
        check_shape_folder(root, population_option=population_option)
        rows = read_shapes(root)  # usable rows, each with its id and grid, no id twice
        if families:
            rows = [r for r in rows if r.get("family") in set(families)]
        if not rows:
            raise InputError(f"data: {root} has no shapes of families {list(families)}")
        return root, rows
    from weightspace.data.make import make_dataset

    if not families:
        raise InputError("data: this generator knows no family names; pass a data folder (--data)")
    root = folder
    rows: list[dict[str, Any]] = []
    for fam in families:
        sub = root / fam
        if not (sub / "manifest.jsonl").is_file():
            make_dataset(sub, family=fam, count=count, resolution=resolution, seed=seed, progress=False, pose=pose)
        rows += [{**r, "_root": fam} for r in read_manifest(sub)]  # relative: resolved under root
    return root, rows


def row_root(root: Path, row: dict[str, Any]) -> Path:
    """The folder a row's files are relative to: a subfolder of `root` named by `_root`, never outside it
    (a user's manifest could carry a `_root` key of its own)."""
    return safe_child(root, str(row["_root"])) if "_root" in row else root


def clean_surface(root: Path, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The shape's stored surface samples and normals, (P, 3) float32 each."""
    return load_points(row_root(root, row), row)


def encode_points(gen: Generator, points: Sequence[np.ndarray], *, seed: int) -> torch.Tensor:
    """Conditions (B, *condition_shape) of point clouds (each (P, 3)) through the generator's own encoder."""
    out = []
    for i, p in enumerate(points):
        x = torch.as_tensor(np.asarray(p, dtype=np.float32))[None]  # (1, P, 3)
        with torch.no_grad():
            out.append(gen.condition(points=x, seeds=[derive_seed(seed, "encode", i) % 2**31]).detach().cpu())
    return torch.cat(out)


def check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise InputError(f"{name} must be one of {', '.join(valid)}, got {value!r}")


def check_executor(executor: str, workers: int | None) -> None:
    """The executor settings every study shares: `executor` one of inprocess | process | ray, `workers`
    >= 1 (None, where a study allows it: every usable core), and more than one worker only on a pool
    or Ray (in process, the items ran one at a time and the option was silently unused)."""
    check_choice("executor", executor, ("inprocess", "process", "ray"))
    if workers is not None and workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if executor == "inprocess" and (workers or 1) > 1:
        raise InputError(f"workers (--workers) {workers} needs executor 'process' or 'ray' (--executor); "
                         f"'inprocess' runs one item at a time")


def check_distinct(name: str, values: Sequence[Any]) -> None:
    """Each value of a list option once: a repeated one would run the same item or cell twice and count it
    twice in every pooled rate (`--seeds 0,0` doubled n)."""
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise InputError(f"{name}: {repeated!r} is given twice in {list(values)}; name each value once")


# --- checking what a study stands on ---------------------------------------------------------------
def topology_check(ids: Sequence[str], decoded: Sequence[tuple[int, int, int]],
                   intended: Sequence[tuple[int, int, int] | None]) -> list[dict[str, Any]]:
    """One row per endpoint or example: id, its decoded robust Betti numbers, the ones it stands for
    (None: nothing to check against) and whether they agree."""
    return [{"id": i, "decoded": list(got), "intended": None if want is None else list(want),
             "ok": want is None or tuple(got) == tuple(want)} for i, got, want in zip(ids, decoded, intended)]


def mismatches(check: Sequence[dict[str, Any]], limit: int = 300) -> str:
    """'id: (decoded) vs (intended), ...' for the rows of a topology check that failed, cut at `limit` characters."""
    return ", ".join(f"{c['id']}: {tuple(c['decoded'])} vs {tuple(c['intended'])}" for c in check if not c["ok"])[:limit]


def refuse(folder: Path, checkpoint: str, why: str, **records: Any) -> None:
    """Record a refusal (and the checks behind it) as the study's results.json, then raise it:
    a study never reports figures measured on broken endpoints or examples."""
    write_results(folder, {"checkpoint": checkpoint, "refused": why, **records})
    raise InputError(why)


def refusal(folder: Path) -> str | None:
    """The reason a study in `folder` refused, or None when it did not (or wrote no results)."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("refused")
