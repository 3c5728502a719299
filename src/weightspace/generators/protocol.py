"""The generator protocol: what every shape generator offers to the weight-space stages.

A generator owns one `torch.nn.Module` (`self.net`) that holds every weight a weight-space
point may replace; layouts name parameters by their names in `self.net.named_parameters()`.
Everything downstream (weightspace/, decode/, experiments/) talks to generators only
through this class, so it never knows which architecture it has.

Conventions shared by all generators
------------------------------------
* Grids follow `weightspace.data.grid`: a grid of resolution R samples the box [-1, 1]^3 at
  `grid_coords(R)` (vertices, including both ends), indexed [x, y, z]; values are signed
  distances in world units, negative inside, truncated to +-truncation.
* A *condition* is a tensor of shape (B, *condition_shape): condition tokens (B, M, d) for
  latent diffusion, the latent code (B, d_z) for the neural field. It is the
  "conditioning vector" the studies interpolate.
* Every decode takes one integer seed per item; the same (weights, condition, seed) gives the
  same grid, whatever the batch size.
* `params` is an optional mapping from parameter names of `self.net` to tensors that replace
  them for this call only (through `torch.func.functional_call`); the base weights are
  never copied or modified.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn

Params = Mapping[str, torch.Tensor]


class Generator(abc.ABC):
    """A trained shape generator: conditions in, signed distance grids out."""

    kind: ClassVar[str]
    net: nn.Module
    config: dict[str, Any]
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

    # --- conditions -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def condition_shape(self) -> tuple[int, ...]:
        """Shape of one item's condition (without the batch dimension)."""

    @abc.abstractmethod
    def condition(
        self,
        *,
        family: Sequence[str] | None = None,
        points: torch.Tensor | None = None,
        voxels: torch.Tensor | None = None,
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Encode exactly one kind of input into conditions (B, *condition_shape).

        family : B family names; points : (B, P, 3) float world units; voxels : (B, V, V, V)
        occupancy. A generator that cannot use an input raises InputError saying which it takes.
        """

    # --- decoding -----------------------------------------------------------------------
    @abc.abstractmethod
    def sdf_grid(
        self,
        condition: torch.Tensor,
        seeds: Sequence[int],
        *,
        params: Params | None = None,
        resolution: int | None = None,
    ) -> torch.Tensor:
        """Decode conditions to SDF grids (B, R, R, R) float32, differentiable in condition and params."""

    @abc.abstractmethod
    def sdf_points(
        self,
        points: torch.Tensor,
        condition: torch.Tensor,
        seeds: Sequence[int],
        *,
        params: Params | None = None,
    ) -> torch.Tensor:
        """Signed distance at query points (B, P, 3) -> (B, P), differentiable."""

    # --- losses used for fitting ------------------------------------------------------
    @abc.abstractmethod
    def training_loss(
        self, grids: torch.Tensor, condition: torch.Tensor, seeds: Sequence[int], *, params: Params | None = None
    ) -> torch.Tensor:
        """The generator's own training loss for target grids (B, R, R, R) under `condition` (scalar)."""

    def observation_loss(
        self,
        points: torch.Tensor,
        condition: torch.Tensor,
        seeds: Sequence[int],
        *,
        params: Params | None = None,
    ) -> torch.Tensor:
        """Loss of observed surface points (B, P, 3): mean |sdf| there (they lie on the surface)."""
        return self.sdf_points(points, condition, seeds, params=params).abs().mean()

    # --- weight-space views --------------------------------------------------------------
    @abc.abstractmethod
    def effective_weights(self, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weights a condition induces, per layer: name -> (B, ...) tensor."""

    @abc.abstractmethod
    def module_groups(self) -> dict[str, list[str]]:
        """Named groups of parameter-name prefixes of `self.net`, for masked paths and LoRA targets."""

    def fit_excluded(self) -> tuple[str, ...]:
        """Parameter-name prefixes that `targets="all"` of the `lora` and `layers` parameterisations
        leaves out: weights a fit under a given condition never runs (condition encoders, training
        codes) or must not move (an autoencoder that defines the fit's target). Default: none."""
        return ()

    # --- persistence --------------------------------------------------------------------
    @abc.abstractmethod
    def save(self, folder: str | Path, *, extra_config: Mapping[str, Any] | None = None) -> Path:
        """Write `model.safetensors` + `config.json` (with `kind`) to `folder`."""

    @classmethod
    @abc.abstractmethod
    def from_checkpoint(cls, state: dict[str, torch.Tensor], config: dict[str, Any]) -> "Generator":
        """Rebuild from a loaded state dict and config; mismatches raise InputError naming the field."""

    def to(self, device: torch.device | str) -> "Generator":
        self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device
