"""The generator protocol: a small required core every shape generator has, and optional capabilities.

Required core (`Generator`, an abstract base class): the network `net` holding every weight a
weight-space point may replace, `condition_shape`, the native `resolution`, and three functions:
`sdf_grid(condition, seeds, *, params, resolution)`, `sdf_points(points, condition, seeds, *, params)`
and `training_loss(grids, condition, seeds, *, params)`. That is all a study needs to walk, fit and
decode weight space (EDM's sampler, likewise, needs only `net(x, sigma, labels)` and three attributes).

Optional capabilities are `typing.Protocol`s checked with `isinstance`, never by probing attributes:

    EncodesPoints      encode_points(points, seeds) -> conditions        (B, P, 3) surface points
    EncodesVoxels      encode_voxels(voxels, seeds) -> conditions        (B, V, V, V) occupancy
    HasFamilies        families: list[str]; encode_families(names, seeds) -> conditions
    BatchedDecode      sdf_grid_batched(conditions, seeds, params_batch, *, resolution) -> grids
    BatchedTrainingLoss  training_loss_batched(grids, conditions, seeds, params_batch) -> losses (B,)
    EffectiveWeights   effective_weights(condition) -> name -> (B, ...) weights a condition induces
    Saveable           save(folder, *, extra_config); loaded back by the factory registered for its kind

A study asks with `require(gen, Capability, "what needs it")`, which returns the generator or raises
`MissingCapability` (an InputError) naming the generator, the capability and the method to write.
`module_groups()` (named parameter-name prefixes for masked paths and LoRA targets) is part of the
base class and defaults to the network's top-level children. Callers decode through `grids(...)`, the
base class's `sdf_grid` checked against the protocol (a tensor (B, R, R, R) of finite floats).

Conventions shared by all generators
------------------------------------
* Grids follow `weightspace.data.grid`: a grid of resolution R samples the box [-1, 1]^3 at
  `grid_coords(R)` (vertices, including both ends), indexed [x, y, z]; values are signed
  distances in world units, negative inside.
* A *condition* is a tensor of shape (B, *condition_shape): condition tokens (B, M, d) for
  latent diffusion, the latent code (B, d_z) for the neural field. It is the
  "conditioning vector" the studies interpolate.
* Every decode takes one integer seed per item; the same (weights, condition, seed) gives the
  same grid, whatever the batch size.
* `params` is an optional mapping from parameter names of `net` to tensors that replace them for
  this call only (through `torch.func.functional_call`); the base weights are never copied or
  modified.
"""

from __future__ import annotations

import abc
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from weightspace.runtime.errors import InputError

Params = Mapping[str, torch.Tensor]


class Generator(abc.ABC):
    """A shape generator: conditions in, signed distance grids out (the required core)."""

    kind: ClassVar[str] = "custom"
    net: nn.Module
    # The checkpoint's config.json as loaded (kind, architecture, data provenance); empty (and read-only,
    # so no two generators share a dict by accident) for a generator that sets none. Studies read only
    # `config["data"]["pose"]` from it, when present.
    config: Mapping[str, Any] = MappingProxyType({})
    # The checkpoint it was loaded from, as `load_generator` was given it (a shipped name or a folder);
    # '' for a generator built in code. Studies and populations record it as their base checkpoint.
    source: str = ""
    # The condition weight-space members are fitted under when a population asks for `auto`:
    # zeros (the prior mean of a code) or mean (of the population's encoded shapes).
    fit_anchor: ClassVar[str] = "zeros"
    # A population's optimiser steps, Adam learning rate and loss draws per step when it names none,
    # per parameterisation (raw weights take a smaller step than LoRA factors or a condition).
    fit_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "condition": {"steps": 50, "lr": 1e-2, "draws": 1},
        "lora": {"steps": 50, "lr": 1e-2, "draws": 1},
        "layers": {"steps": 50, "lr": 1e-3, "draws": 1},
    }

    # Whether `training_loss_batched` takes `generators.lowrank.StackedLowRank` entries in params_batch
    # (LoRA members kept factored: W + s B_b A_b, no full weight per member); others get them merged.
    accepts_low_rank: ClassVar[bool] = False

    # Whether `training_loss` takes target grids at the native `resolution` only (latent diffusion encodes
    # them with its autoencoder); others read a grid of any resolution. A population's grid fit refuses a
    # data folder of another resolution up front, naming the folder, instead of failing in its first member.
    native_grids_only: ClassVar[bool] = False

    @property
    def unconditional(self) -> bool:
        """Whether the generator ignores its condition (an unconditional model, such as WaLa-UN):
        `generate` then takes no --family, --points or --voxels and decodes a zero condition."""
        return False

    @property
    @abc.abstractmethod
    def condition_shape(self) -> tuple[int, ...]:
        """Shape of one item's condition (without the batch dimension)."""

    @property
    @abc.abstractmethod
    def resolution(self) -> int:
        """The native grid resolution R the generator decodes (and was trained) at."""

    @abc.abstractmethod
    def sdf_grid(
        self, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None, resolution: int | None = None
    ) -> torch.Tensor:
        """Decode conditions (B, *condition_shape) to SDF grids (B, R, R, R) float32, differentiable in condition and params."""

    @abc.abstractmethod
    def sdf_points(
        self, points: torch.Tensor, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None
    ) -> torch.Tensor:
        """Signed distance at query points (B, P, 3) -> (B, P), differentiable."""

    @abc.abstractmethod
    def training_loss(
        self, grids: torch.Tensor, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None
    ) -> torch.Tensor:
        """The generator's own training loss for target grids (B, R, R, R) under `condition` (scalar)."""

    # --- defaults every generator may override ------------------------------------------
    def observation_loss(
        self, points: torch.Tensor, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None
    ) -> torch.Tensor:
        """Loss of observed surface points (B, P, 3): mean |sdf| there (they lie on the surface)."""
        return self.sdf_points(points, condition, seeds, params=params).abs().mean()

    def module_groups(self) -> dict[str, list[str]]:
        """Named groups of parameter-name prefixes of `net`, for masked paths and LoRA targets.
        Default: one group per top-level child module."""
        return {name: [name + "."] for name, _ in self.net.named_children()}

    def fit_excluded(self) -> tuple[str, ...]:
        """Parameter-name prefixes that `targets="all"` of the `lora` and `layers` parameterisations
        leaves out: weights a fit under a given condition never runs (condition encoders, training
        codes) or must not move (an autoencoder that defines the fit's target). Default: none."""
        return ()

    def condition(
        self,
        *,
        family: Sequence[str] | None = None,
        points: torch.Tensor | None = None,
        voxels: torch.Tensor | None = None,
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Encode exactly one kind of input into conditions (B, *condition_shape), through the capability
        that takes it; a generator without it raises MissingCapability.

        family : B family names; points : (B, P, 3) float world units; voxels : (B, V, V, V) occupancy.
        """
        given = [name for name, v in (("family", family), ("points", points), ("voxels", voxels)) if v is not None]
        if len(given) != 1:
            raise InputError(f"condition takes exactly one of family=, points=, voxels=; got {given or 'none'}")
        if family is not None:
            names = [family] if isinstance(family, str) else list(family)
            out, method, n = require(self, HasFamilies, "a family condition").encode_families(names, seeds), "encode_families", len(names)
        elif points is not None:
            out, method, n = require(self, EncodesPoints, "a point-cloud condition").encode_points(points, seeds), "encode_points", len(points)
        else:
            out, method, n = require(self, EncodesVoxels, "a voxel condition").encode_voxels(voxels, seeds), "encode_voxels", len(voxels)
        expected = (n, *self.condition_shape)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(f"generator {self.name}: {method} must return conditions (B, *condition_shape) = {expected}, got {got}")
        return out

    def grids(self, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None,
              resolution: int | None = None, **sampler: Any) -> torch.Tensor:
        """`sdf_grid` checked against the protocol: grids (B, R, R, R) float32 with real, finite values, on the
        generator's device or any other, R = `resolution` or the native one; else InputError naming the
        generator and `sdf_grid`, before a caller measures or meshes what a plug-in got wrong."""
        out = self.sdf_grid(condition, seeds, params=params, resolution=resolution, **sampler)
        return self.check_grids(out, seeds, resolution=resolution)

    def check_grids(self, out: Any, seeds: Sequence[int], *, resolution: int | None = None,
                    method: str = "sdf_grid") -> torch.Tensor:
        """`out`, what `method` returned for one item per seed, as float32 grids (B, R, R, R) when it keeps the
        protocol (see `grids`); else InputError naming the generator and `method`."""
        R = int(resolution or self.resolution)
        expected = (len(seeds), R, R, R)
        where = f"generator {self.name}: {method} must return grids (B, R, R, R) = {expected}"
        if not isinstance(out, torch.Tensor):
            raise InputError(f"{where}, got {type(out).__module__}.{type(out).__name__} (return a torch.Tensor)")
        if out.is_meta:
            raise InputError(f"{where}, got a tensor on the meta device (shapes only, no values)")
        if tuple(out.shape) != expected:
            raise InputError(f"{where}, got {tuple(out.shape)}")
        if not out.is_floating_point():
            raise InputError(f"{where} of floats (signed distances in world units), got dtype {out.dtype}")
        out = out.float()  # (B, R, R, R); a half or double decode is read as float32
        bad = ~torch.isfinite(out.detach())  # (B, R, R, R)
        if bool(bad.any()):
            items = torch.nonzero(bad.flatten(1).any(1)).flatten().tolist()
            raise InputError(f"{where} of finite values, got {int(bad.sum())} NaN or infinite value(s) of {bad.numel()} "
                             f"in item(s) {items[:8]} of {expected[0]} (seeds {[int(seeds[i]) for i in items[:8]]})")
        return out

    @property
    def name(self) -> str:
        """How messages name this generator: its kind and class."""
        return f"{self.kind!r} ({type(self).__name__})"

    def to(self, device: torch.device | str) -> "Generator":
        self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        try:
            net = self.net
        except AttributeError:
            raise InputError(f"generator {self.name}: the protocol requires `net`, the torch.nn.Module holding every "
                             f"weight a weight-space point may replace (set self.net in __init__)") from None
        p = next(net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


# --- optional capabilities ------------------------------------------------------------------
@runtime_checkable
class EncodesPoints(Protocol):
    """Encodes surface point clouds into conditions."""

    def encode_points(self, points: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """points (B, P, 3) float world units -> conditions (B, *condition_shape)."""


@runtime_checkable
class EncodesVoxels(Protocol):
    """Encodes coarse occupancy grids into conditions."""

    def encode_voxels(self, voxels: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """voxels (B, V, V, V) {0, 1} -> conditions (B, *condition_shape)."""


@runtime_checkable
class HasFamilies(Protocol):
    """Knows named shape families and draws (or embeds) a condition per family name."""

    families: list[str]

    def encode_families(self, names: Sequence[str], seeds: Sequence[int] | None = None) -> torch.Tensor:
        """B family names -> conditions (B, *condition_shape)."""


@runtime_checkable
class BatchedDecode(Protocol):
    """Decodes K different weight sets in one call."""

    def sdf_grid_batched(
        self, conditions: torch.Tensor, seeds: Sequence[int], params_batch: Params, *, resolution: int | None = None
    ) -> torch.Tensor:
        """params_batch name -> (K, ...), conditions (K, *condition_shape) -> grids (K, R, R, R)."""


@runtime_checkable
class BatchedTrainingLoss(Protocol):
    """The training loss of B weight sets (population members) in one forward and backward pass."""

    def training_loss_batched(
        self, grids: torch.Tensor, conditions: torch.Tensor, seeds: Sequence[Sequence[int]], params_batch: Params
    ) -> torch.Tensor:
        """grids (B, R, R, R), conditions (B, *condition_shape), seeds: per member its D draw seeds,
        params_batch name -> (B, ...) -> per-member losses (B,). Member b's loss equals (to float
        rounding) `training_loss(grids[b] repeated D times, conditions[b] repeated D times, seeds[b],
        params={name: v[b]})`, and its gradient reaches only member b's weights. A generator whose
        `accepts_low_rank` is True also takes `generators.lowrank.StackedLowRank` values (LoRA factors
        of a Linear layer, kept factored) in params_batch."""


@runtime_checkable
class EffectiveWeights(Protocol):
    """Says which weights a condition induces (the condition seen as a point of weight space)."""

    def effective_weights(self, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        """conditions (B, *condition_shape) -> layer name -> (B, ...) tensor."""


@runtime_checkable
class Saveable(Protocol):
    """Writes itself as a checkpoint folder; `load_generator` reads it back through the factory registered
    for its `kind` (`registry.register` or the entry-point group)."""

    def save(self, folder: str | Path, *, extra_config: Mapping[str, Any] | None = None) -> Path:
        """Write `model.safetensors` + `config.json` (with `kind`) to `folder`."""


CAPABILITIES: dict[type, str] = {
    EncodesPoints: "encode point clouds: encode_points(points (B, P, 3), seeds) -> conditions",
    EncodesVoxels: "encode voxel grids: encode_voxels(voxels (B, V, V, V), seeds) -> conditions",
    HasFamilies: "name shape families: a `families` list and encode_families(names, seeds) -> conditions",
    BatchedDecode: "decode a batch of weight sets: sdf_grid_batched(conditions, seeds, params_batch, *, resolution)",
    BatchedTrainingLoss: "fit a batch of weight sets at once: training_loss_batched(grids, conditions, seeds, params_batch) -> (B,)",
    EffectiveWeights: "report the weights a condition induces: effective_weights(condition) -> {name: (B, ...)}",
    Saveable: "save itself: save(folder, *, extra_config) writing model.safetensors + config.json with its kind",
}


class MissingCapability(InputError):
    """A study or command needs an optional capability the generator does not offer."""


def require(gen: Generator, capability: type, purpose: str) -> Any:
    """`gen` when it offers `capability` (one of CAPABILITIES); else MissingCapability naming both and the fix."""
    if isinstance(gen, capability):
        return gen
    what = CAPABILITIES.get(capability, capability.__name__)
    raise MissingCapability(
        f"{purpose} needs a generator that can {what}; the generator {gen.name} lacks {capability.__name__} "
        f"(see docs/generators.md for adding it)"
    )


def families_of(gen: Generator) -> list[str]:
    """Family names the generator knows (empty when it takes no family condition)."""
    return list(gen.families) if isinstance(gen, HasFamilies) else []
