"""LatentDiffusionGenerator: the `Generator` protocol over LatentDiffusionNet (condition, sample, decode, save)."""

from __future__ import annotations

import dataclasses
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from weightspace.generators.latent_diffusion.config import ModelConfig, saved_model_config
from weightspace.generators.latent_diffusion.losses import autoencoder_loss, diffusion_loss
from weightspace.generators.latent_diffusion.network import LatentDiffusionNet
from weightspace.generators.latent_diffusion.samplers import get_sampler
from weightspace.generators.latent_diffusion.schedule import ddim_timesteps, q_sample
from weightspace.generators.lowrank import StackedLowRank, is_low_rank, low_rank_hooks, merge_low_rank
from weightspace.generators.protocol import Generator, Params
from weightspace.runtime.checkpoint import check_state_matches, save_checkpoint
from weightspace.runtime.config import check_config
from weightspace.runtime.errors import InputError
from weightspace.runtime.seeding import item_generator

KIND = "latent-diffusion"
NOISE_KEY = "latent-diffusion/noise"  # the seeding key of the start noise of one item
FIT_NULL_PROB = 0.5  # share of a weight fit's loss draws made under the null condition (see training_loss)
# A weight fit's time steps: t = floor(T u^power) with u uniform, so power 2 draws half of them below
# T/4. Thin parts (ladder rungs) are settled at low noise; uniform draws left 8 of 8 held-out ladder
# members a rung short at 100 steps, power 2 left 4 (training record, member_fidelity.trials).
FIT_T_POWER = 2.0


def _fit_timestep(g: torch.Generator, T: int, power: float) -> torch.Tensor:
    """One fit time step (int64 scalar) from generator g: uniform at power 1, else floor(T u^power)."""
    if power == 1.0:
        return torch.randint(T, (), generator=g)
    return (T * torch.rand((), generator=g) ** power).long().clamp(max=T - 1)


class LatentDiffusionGenerator(Generator):
    """Condition tokens (B, M, d) -> DDIM in latent space (with classifier-free guidance) -> TSDF grid."""

    kind = KIND
    accepts_low_rank = True  # training_loss_batched runs LoRA factors of the denoiser unmerged
    native_grids_only = True  # training_loss encodes its target grids: (B, R, R, R) at cfg.resolution
    fit_anchor = "mean"  # measured: zero condition tokens decode nothing, so members fitted there start far off
    # Chosen by member fidelity (benchmarks/member_fidelity.py, training record): LoRA members fitted
    # with 50 steps at lr 1e-2 and one draw decoded at IoU 0.08; one time step per step is too noisy a
    # gradient for the denoiser, so each step averages 4 (time step, noise) draws.
    fit_defaults = {
        "condition": {"steps": 50, "lr": 1e-2, "draws": 4},
        "lora": {"steps": 200, "lr": 3e-3, "draws": 4},
        "layers": {"steps": 200, "lr": 3e-4, "draws": 4},
    }

    def __init__(self, cfg: ModelConfig, net: LatentDiffusionNet | None = None, extra_config: Mapping[str, Any] | None = None):
        self.cfg = cfg = check_config(cfg, where="model")
        self.net = net if net is not None else LatentDiffusionNet(cfg)
        self.config = {"kind": KIND, "model": dataclasses.asdict(cfg), **dict(extra_config or {})}

    # --- helpers -------------------------------------------------------------------------
    def _call(self, params: Params | None, mode: str, *args):
        if params is None:
            return self.net(mode, *args)
        return functional_call(self.net, dict(params), (mode, *args), strict=False)

    @property
    def condition_shape(self) -> tuple[int, ...]:
        return (self.cfg.n_cond_tokens, self.cfg.cond_dim)

    @property
    def resolution(self) -> int:
        return int(self.cfg.resolution)

    def _check_condition(self, condition: torch.Tensor, seeds: Sequence[int]) -> None:
        if condition.dim() != 3 or tuple(condition.shape[1:]) != self.condition_shape:
            raise InputError(f"condition must have shape (B, {self.cfg.n_cond_tokens}, {self.cfg.cond_dim}), got {tuple(condition.shape)}")
        if len(seeds) != condition.shape[0]:
            raise InputError(f"seeds must give one seed per item: {condition.shape[0]} items, {len(seeds)} seeds")

    def start_noise(self, seeds: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
        """Per-item start noise (B, C, r, r, r) from `item_generator(seed, NOISE_KEY)`, and those generators."""
        r = self.cfg.resolution // 4
        gens = [item_generator(int(s), NOISE_KEY) for s in seeds]
        x_T = torch.stack([torch.randn(self.cfg.latent_channels, r, r, r, generator=g) for g in gens])  # (B, C, r, r, r)
        return x_T.to(self.device), gens

    # --- conditions (capabilities EncodesPoints, EncodesVoxels, HasFamilies) --------------
    @property
    def families(self) -> list[str]:
        """The families this checkpoint can sample: those its training data held, where its config records
        them (data.families, as a neural field's does); one that records none (the shipped checkpoints),
        every family of its model (cfg.families). The token of a family without training shapes is its
        random initialisation: it decodes a shape of no family."""
        data = self.config.get("data")
        trained = data.get("families") if isinstance(data, dict) else None
        return [f for f in self.cfg.families if f in trained] if isinstance(trained, list) else list(self.cfg.families)

    def encode_families(self, names, seeds=None) -> torch.Tensor:
        """Family names (B,) -> their learnt condition tokens (B, M, d); seeds unused (no randomness)."""
        names = [names] if isinstance(names, str) else list(names)
        unknown = [f for f in names if f not in self.cfg.families]
        if unknown:
            raise InputError(f"unknown family {unknown[0]!r}; this checkpoint knows {self.cfg.families}")
        trained = self.families
        untrained = [f for f in names if f not in trained]
        if untrained:
            raise InputError(f"condition: this checkpoint had no training shapes of family {untrained[0]!r}; "
                             f"it samples {', '.join(trained) or 'no family'}")
        labels = torch.tensor([self.cfg.families.index(f) for f in names], dtype=torch.int64, device=self.device)
        return self.net("family", labels)  # (B, M, d)

    def encode_points(self, points, seeds=None) -> torch.Tensor:
        """Surface points (B, P, 3) -> condition tokens (B, M, d) through the point encoder; seeds unused."""
        points = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        if points.dim() != 3 or points.shape[-1] != 3 or points.shape[1] < 1:
            raise InputError(f"points must have shape (B, P, 3) with P >= 1, got {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            raise InputError("points contain NaN or infinite values")
        return self.net("points", points)  # (B, M, d)

    def encode_voxels(self, voxels, seeds=None) -> torch.Tensor:
        """Occupancy (B, V, V, V) -> condition tokens (B, M, d) through the voxel encoder; seeds unused."""
        voxels = torch.as_tensor(voxels, dtype=torch.float32, device=self.device)
        if voxels.dim() != 4 or len(set(voxels.shape[1:])) != 1 or voxels.shape[1] < 2:
            raise InputError(f"voxels must have shape (B, V, V, V) with V >= 2, got {tuple(voxels.shape)}")
        return self.net("voxels", voxels)  # (B, M, d)

    # --- decoding ------------------------------------------------------------------------
    def sample_latents(
        self,
        condition: torch.Tensor,
        seeds: Sequence[int],
        *,
        params: Params | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        callback: Callable[[dict], None] | None = None,
    ) -> torch.Tensor:
        """Normalised clean latents (B, C, r, r, r) for the conditions, by the configured sampler."""
        self._check_condition(condition, seeds)
        steps = self.cfg.sample_steps if steps is None else int(steps)
        w = self.cfg.guidance if guidance is None else float(guidance)
        sample = get_sampler(sampler or self.cfg.sampler)
        x_T, gens = self.start_noise(seeds)
        denoise = self.guided_denoiser(condition, params=params, guidance=w)
        alphas = self.net.alphas_cumprod
        return sample(denoise, x_T, ddim_timesteps(self.cfg.timesteps, steps), alphas, generators=gens, callback=callback)

    def sampler_settings(self, steps: int | None = None, guidance: float | None = None) -> dict[str, float | int]:
        """{"steps", "guidance"} a sampling call will use: the given ones, checked (as the `--steps` and
        `--guidance` options a command takes), or the checkpoint's."""
        if steps is not None and not 1 <= steps <= self.cfg.timesteps:
            raise InputError(f"--steps must be in 1..{self.cfg.timesteps}, got {steps}")
        if guidance is not None and not guidance >= 0:
            raise InputError(f"--guidance must be >= 0 (0: unconditional, 1: no guidance), got {guidance}")
        return {"steps": self.cfg.sample_steps if steps is None else int(steps),
                "guidance": self.cfg.guidance if guidance is None else float(guidance)}

    def guided_denoiser(self, condition: torch.Tensor, *, params: Params | None = None,
                        guidance: float | Callable[[int], float] | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The sampler's `denoise(x_t, t) -> x0` for one chain under `condition` (B, M, d): classifier-free
        guidance at `guidance` (the checkpoint's by default; 1 runs the conditioned branch alone; a function
        of the step t gives a schedule, e.g. guidance in an interval of noise levels) and, on a
        self-conditioned model, each branch fed its own estimate of the step before (none at the first), so
        a chain needs a fresh one."""
        constant = None if callable(guidance) else self.cfg.guidance if guidance is None else float(guidance)
        null = self._call(params, "null", condition.shape[0])  # (B, M, d)
        prev: list[torch.Tensor] = []

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            # a schedule runs both branches at every step, so each keeps its own self-condition
            w = constant if constant is not None else float(guidance(int(t.flatten()[0])))  # one t per chain step
            if constant == 1.0:
                x0 = self._call(params, "denoise", x, t, condition, *prev)
                if self.cfg.self_condition:
                    prev[:] = [x0]
                return x0
            both = self._call(params, "denoise", torch.cat([x, x]), torch.cat([t, t]), torch.cat([condition, null]), *prev)  # (2B, ...)
            if self.cfg.self_condition:
                prev[:] = [both]
            x0_c, x0_u = both.chunk(2)
            return x0_u + w * (x0_c - x0_u)  # classifier-free guidance (Ho & Salimans 2022)

        return denoise

    def decode_latents(self, z: torch.Tensor, *, params: Params | None = None, resolution: int | None = None) -> torch.Tensor:
        """Normalised latents (B, C, r, r, r) -> TSDF grids (B, R, R, R) in world units."""
        grid = self._call(params, "decode", z).clamp(-1.0, 1.0) * self.cfg.truncation  # (B, R, R, R)
        if resolution is not None and resolution != grid.shape[-1]:
            if resolution < 2:
                raise InputError(f"resolution must be >= 2, got {resolution}")
            grid = F.interpolate(grid.unsqueeze(1), size=(resolution,) * 3, mode="trilinear", align_corners=True).squeeze(1)
        return grid

    def sdf_grid(self, condition, seeds, *, params=None, resolution=None, steps=None, guidance=None, sampler=None, callback=None):
        z0 = self.sample_latents(condition, seeds, params=params, steps=steps, guidance=guidance, sampler=sampler, callback=callback)
        return self.decode_latents(z0, params=params, resolution=resolution)  # (B, R, R, R)

    def sdf_points(self, points, condition, seeds, *, params=None):
        if points.dim() != 3 or points.shape[-1] != 3:
            raise InputError(f"points must have shape (B, P, 3), got {tuple(points.shape)}")
        grid = self.sdf_grid(condition, seeds, params=params)  # (B, R, R, R) indexed [x, y, z]
        # grid_sample reads the last coordinate as the first spatial axis: pass (z, y, x).
        loc = points[..., [2, 1, 0]].to(grid.dtype).unsqueeze(2).unsqueeze(2)  # (B, P, 1, 1, 3)
        out = F.grid_sample(grid.unsqueeze(1), loc, mode="bilinear", padding_mode="border", align_corners=True)  # (B, 1, P, 1, 1)
        return out.flatten(1)  # (B, P)

    # --- losses --------------------------------------------------------------------------
    def encode_grids(self, grids: torch.Tensor, *, params: Params | None = None) -> torch.Tensor:
        """TSDF grids (B, R, R, R) in world units -> normalised latents (B, C, r, r, r)."""
        R = self.cfg.resolution
        if grids.dim() != 4 or tuple(grids.shape[1:]) != (R, R, R):
            got = f"; this generator takes {R}^3 grids: make the data with --resolution {R}" if grids.dim() == 4 else ""
            raise InputError(f"grids must have shape (B, {R}, {R}, {R}), got {tuple(grids.shape)}{got}")
        tsdf = (grids.to(torch.float32) / self.cfg.truncation).clamp(-1.0, 1.0)  # (B, R, R, R)
        return self._call(params, "encode", tsdf)

    def training_loss(self, grids, condition, seeds, *, params=None):
        """x0-prediction loss of target grids under `condition` with weights `params`.

        The target latent comes from the *base* encoder: were it encoded with adapted weights, a
        fit could lower the loss by collapsing every target latent to one value instead of
        learning the shape (it did: members decoded empty). When `params` adapt the decoder, a
        reconstruction term (the autoencoder's own loss) is added, the only signal it gets.
        """
        self._check_condition(condition, seeds)
        with torch.no_grad():
            z0 = self.encode_grids(grids)  # (B, C, r, r, r), frozen base encoder
        gens = [item_generator(int(s), "latent-diffusion/train") for s in seeds]
        power = 1.0 if params is None else FIT_T_POWER  # a condition fit keeps uniform draws
        t = torch.stack([_fit_timestep(g, self.cfg.timesteps, power) for g in gens]).to(self.device)  # (B,)
        noise = torch.stack([torch.randn(z0.shape[1:], generator=g) for g in gens]).to(self.device)  # (B, C, r, r, r)
        if params is not None and FIT_NULL_PROB > 0:
            # Classifier-free guidance mixes the conditioned and the null branch, so a weight fit
            # learns both: each item sees the null condition with probability FIT_NULL_PROB. (A
            # condition fit, params None, keeps its condition: the null branch does not depend on it.)
            drop = torch.tensor([bool(torch.rand((), generator=g) < FIT_NULL_PROB) for g in gens], device=self.device)  # (B,)
            condition = torch.where(drop.view(-1, 1, 1), self._call(params, "null", len(seeds)), condition)  # (B, M, d)

        def denoise(z_t, tt, c, *prev):
            return self._call(params, "denoise", z_t, tt, c, *prev)

        # a self-conditioned model samples with its own estimate at every step but the first: fit that call
        loss = diffusion_loss(denoise, z0, condition, t, noise, self.net.alphas_cumprod, self_condition=self.cfg.self_condition)
        if params is not None and any(k.startswith("ae.decoder.") for k in params):
            tsdf = (grids.to(self.device, torch.float32) / self.cfg.truncation).clamp(-1.0, 1.0)  # (B, R, R, R)
            band = 2.0 * (2.0 / (self.cfg.resolution - 1)) / self.cfg.truncation  # two voxels, normalised units
            loss = loss + autoencoder_loss(self._call(params, "decode", z0), tsdf, band=band, near_surface_weight=4.0, sign_weight=0.5)
        return loss

    def training_loss_batched(self, grids, conditions, seeds, params_batch):
        """`training_loss` of B members at once (capability BatchedTrainingLoss): grids (B, R, R, R),
        conditions (B, M, d), seeds[b] the D draw seeds of member b, params_batch name -> (B, ...) or
        StackedLowRank (`generators.lowrank`) -> (B,).

        Member b's draws take the same (t, noise, null drop) as `training_loss` of its grid repeated
        D times with params_batch[.][b]. LoRA factors of denoiser Linears (every entry a StackedLowRank)
        run the B D draws through the denoiser once, each Linear as one matmul with its fixed base
        weight plus the members' rank-r terms (`_low_rank_losses`); any other weights run through
        `torch.func.vmap` (each Linear a batched matmul). The frozen-encoder target and the
        reconstruction term do not depend on the draw, so they are computed once per member, and the
        target is remembered across the steps of a fit (`_target_latents`).
        """
        B = conditions.shape[0]
        draws = [[int(s) for s in member] for member in seeds]
        if len(draws) != B or not draws[0] or any(len(d) != len(draws[0]) for d in draws):
            raise InputError(f"seeds: need one list of draw seeds per member, the same number (>= 1) for each of the "
                             f"{B} members; got lengths {[len(d) for d in draws]}")
        self._check_condition(conditions, draws)
        own = dict(self.net.named_parameters())
        for name, value in params_batch.items():
            shape = (value.members, *value.weight.shape) if isinstance(value, StackedLowRank) else tuple(value.shape)
            if name not in own or shape != (B, *own[name].shape):
                raise InputError(f"params_batch[{name!r}]: need a parameter of the network with shape (B, ...) = "
                                 f"{(B, *own[name].shape) if name in own else '(not a parameter)'}, got {shape}")
        z0 = self._target_latents(grids)  # (B, C, r, r, r), frozen base encoder, once per member
        D = len(draws[0])
        gens = [[item_generator(s, "latent-diffusion/train") for s in member] for member in draws]  # B x D
        t = torch.stack([torch.stack([_fit_timestep(g, self.cfg.timesteps, FIT_T_POWER) for g in gs]) for gs in gens])  # (B, D)
        noise = torch.stack([torch.stack([torch.randn(z0.shape[1:], generator=g) for g in gs]) for gs in gens])  # (B, D, C, r, r, r)
        drop = torch.tensor([[bool(torch.rand((), generator=g) < FIT_NULL_PROB) for g in gs] for gs in gens])  # (B, D)
        dev = self.device
        if is_low_rank(params_batch) and all(k.startswith("denoiser.") for k in params_batch):
            return self._low_rank_losses(z0, conditions.to(dev), t.to(dev), noise.to(dev), drop.to(dev), params_batch)
        params_batch = merge_low_rank(params_batch)
        decoder = any(k.startswith("ae.decoder.") for k in params_batch)
        tsdf = (grids.to(self.device, torch.float32) / self.cfg.truncation).clamp(-1.0, 1.0)  # (B, R, R, R)
        band = 2.0 * (2.0 / (self.cfg.resolution - 1)) / self.cfg.truncation  # as in training_loss
        net, alphas, self_condition = self.net, self.net.alphas_cumprod, self.cfg.self_condition

        def member(p, z0_b, cond_b, t_b, noise_b, drop_b, tsdf_b):
            def call(mode, *args):
                return functional_call(net, p, (mode, *args), strict=False)

            cond = torch.where(drop_b.view(-1, 1, 1), call("null", D), cond_b.expand(D, -1, -1))  # (D, M, d)
            z0_d = z0_b.expand(D, *z0_b.shape)  # (D, C, r, r, r)
            loss = diffusion_loss(lambda z_t, tt, c, *prev: call("denoise", z_t, tt, c, *prev), z0_d, cond, t_b, noise_b, alphas,
                                  self_condition=self_condition)
            if decoder:
                loss = loss + autoencoder_loss(call("decode", z0_b[None]), tsdf_b[None], band=band, near_surface_weight=4.0,
                                               sign_weight=0.5)
            return loss

        # the math attention kernel has a vmap batching rule; the fused CPU kernel would run member by member
        with sdpa_kernel(SDPBackend.MATH):
            return vmap(member)(dict(params_batch), z0, conditions.to(dev), t.to(dev), noise.to(dev), drop.to(dev), tsdf)  # (B,)

    def _low_rank_losses(self, z0, conditions, t, noise, drop, params_batch):
        """Per-member x0-prediction losses (B,) of B members' LoRA factors on denoiser Linears: z0 (B, C, r, r, r),
        conditions (B, M, d), t (B, D), noise (B, D, C, r, r, r), drop (B, D) bool.

        The B D draws go through the denoiser as one batch, member-major: its own weights, detached (no
        gradient to the base), and on every targeted Linear a hook adding member b's s (x A_b^T) B_b^T
        (`lowrank.low_rank_hooks`). Each draw sees the same inputs as in `training_loss`.
        """
        B, D = t.shape
        latent = z0.shape[1:]
        null = self.net.null_tokens.detach()  # (M, d)
        cond = torch.where(drop.view(B, D, 1, 1), null, conditions[:, None]).flatten(0, 1)  # (B D, M, d)
        z0_d = z0[:, None].expand(B, D, *latent).reshape(B * D, *latent)  # (B D, C, r, r, r)
        tt = t.reshape(B * D)  # (B D,)
        z_t = q_sample(z0_d, tt, noise.reshape(B * D, *latent), self.net.alphas_cumprod)  # (B D, C, r, r, r)
        den = self.net.denoiser
        base = {n: p.detach() for n, p in den.named_parameters()}
        with low_rank_hooks(self.net, params_batch, B):
            prev: tuple[torch.Tensor, ...] = ()
            if self.cfg.self_condition:  # as diffusion_loss does: the member's own estimate first, without gradient
                with torch.no_grad():
                    prev = (self.net.x0_from_output(functional_call(den, base, (z_t, tt, cond)), z_t, tt),)  # (B D, C, r, r, r)
            x0_hat = self.net.x0_from_output(functional_call(den, base, (z_t, tt, cond, *prev)), z_t, tt)  # (B D, C, r, r, r)
        return (x0_hat - z0_d).pow(2).reshape(B, -1).mean(dim=1)  # (B,)

    def _target_latents(self, grids: torch.Tensor) -> torch.Tensor:
        """The frozen base encoder's latents (B, C, r, r, r) of target grids (B, R, R, R), remembered for
        the last grids tensor seen while it and the encoder are unchanged: a fit passes the same grids
        every step, and encoding them each step costs about 2.5 ms per member here, 8% of a batched step."""
        ae = self.net.ae.encoder
        key = (grids._version, tuple(p._version for p in ae.parameters()),
               self.net.latent_mean._version, self.net.latent_std._version)
        memo = getattr(self, "_latents_memo", None)
        if memo is not None and memo[0]() is grids and memo[1] == key:
            return memo[2]
        with torch.no_grad():
            z0 = self.encode_grids(grids)  # (B, C, r, r, r)
        self._latents_memo = (weakref.ref(grids), key, z0)
        return z0

    def fit_excluded(self) -> tuple[str, ...]:
        """A fit under a given condition never runs the condition encoders or the family tokens,
        and the autoencoder defines its target: `all` means the denoiser and the null tokens."""
        return ("ae.", "cond_points.", "cond_voxels.", "family_tokens")

    # --- weight-space views --------------------------------------------------------------
    def effective_weights(self, condition: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per denoiser block: the adaLN modulation (shifts, scales, gates) at each default sampler
        step, `...adaln` (B, S, 9W), and the cross-attention keys and values, `...cross_attn.k/v` (B, M, W)."""
        if condition.dim() != 3 or tuple(condition.shape[1:]) != self.condition_shape:
            raise InputError(f"condition must have shape (B, {self.cfg.n_cond_tokens}, {self.cfg.cond_dim}), got {tuple(condition.shape)}")
        den = self.net.denoiser
        B = condition.shape[0]
        ts = ddim_timesteps(self.cfg.timesteps, self.cfg.sample_steps).to(self.device)  # (S,)
        S = ts.shape[0]
        cond_rep = condition.repeat_interleave(S, dim=0)  # (B S, M, d)
        cond_w, c = den.condition_context(ts.repeat(B), cond_rep)  # (B S, M, W), (B S, W)
        cond_w = cond_w[::S]  # (B, M, W) does not depend on t
        out: dict[str, torch.Tensor] = {}
        for i, block in enumerate(den.blocks):
            out[f"denoiser.blocks.{i}.adaln"] = block.modulation(c).view(B, S, -1)  # (B, S, 9W)
            k, v = block.cross_attn.keys_values(cond_w)  # (B, M, W) each
            out[f"denoiser.blocks.{i}.cross_attn.k"] = k
            out[f"denoiser.blocks.{i}.cross_attn.v"] = v
        out["denoiser.final_adaln"] = den.final_adaln(F.silu(c)).view(B, S, -1)  # (B, S, 2W)
        return out

    def module_groups(self) -> dict[str, list[str]]:
        depth = self.cfg.depth
        blocks = [f"denoiser.blocks.{i}." for i in range(depth)]
        groups = {
            "autoencoder.encoder": ["ae.encoder."],
            "autoencoder.decoder": ["ae.decoder."],
            "condition.points": ["cond_points."],
            "condition.voxels": ["cond_voxels."],
            "condition.family": ["family_tokens"],
            "condition.null": ["null_tokens"],
            "denoiser.embed": ["denoiser.patch_in.", "denoiser.pos", "denoiser.t_embed.", "denoiser.cond_norm.", "denoiser.cond_proj.", "denoiser.pool_mlp.",
                               "denoiser.cond_in.", "denoiser.self_cond_in."],
            "denoiser.adaln": [b + "adaln." for b in blocks] + ["denoiser.final_adaln."],
            "denoiser.self_attention": [b + "self_attn." for b in blocks],
            "denoiser.cross_attention": [b + "cross_attn." for b in blocks],
            "denoiser.mlp": [b + "mlp." for b in blocks],
            "denoiser.final": ["denoiser.final_adaln.", "denoiser.final.", "denoiser.refine."],
        }
        for i, b in enumerate(blocks):
            groups[f"denoiser.block{i}"] = [b]
        return groups

    # --- persistence ---------------------------------------------------------------------
    def save(self, folder: str | Path, *, extra_config: Mapping[str, Any] | None = None) -> Path:
        config = dict(self.config)
        config.update(dict(extra_config or {}))
        config["kind"] = KIND
        config["model"] = dataclasses.asdict(self.cfg)
        return save_checkpoint(folder, self.net.state_dict(), config)

    @classmethod
    def from_checkpoint(cls, state: dict[str, torch.Tensor], config: dict[str, Any]) -> "LatentDiffusionGenerator":
        if config.get("kind") != KIND:
            raise InputError(f"config.json: field 'kind' must be {KIND!r}, got {config.get('kind')!r}")
        if "model" not in config:
            raise InputError("config.json: missing field 'model' (the architecture)")
        cfg = saved_model_config(config["model"], where="config.json: model")
        net = LatentDiffusionNet(cfg)
        check_state_matches(state, net.state_dict(), "config.json model")
        net.load_state_dict(state, strict=True)
        extra = {k: v for k, v in config.items() if k not in ("kind", "model")}
        return cls(cfg, net, extra)
