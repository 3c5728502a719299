"""The `lora` parameterisation: a point is a set of PEFT LoRA adapters (or their products Delta W = B A).

PEFT defines the adapters: `peft.LoraConfig` plus `inject_adapter_in_model` on a weightless
(meta-device) skeleton of `gen.net` tell us exactly which modules are targeted and the shapes
of every `lora_A` / `lora_B`, so a saved adapter folder is an ordinary PEFT adapter that PEFT
itself loads. To *decode*, a point becomes merged weights W + scaling * B A passed through the
generator's `params=` argument, so the base model is never modified or copied; this is the
same function as PEFT's unmerged forward (no dropout), which the tests check.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from weightspace.generators.lowrank import StackedLowRank
from weightspace.generators.protocol import Generator
from weightspace.runtime.checkpoint import load_state, state_metadata
from weightspace.runtime.errors import InputError
from weightspace.runtime.io import atomic_path, atomic_write_json, read_json
from weightspace.runtime.seeding import item_generator
from weightspace.space.layout import Layout, LayoutMismatchError
from weightspace.space.parameterisation import Parameterisation, base_hash, layout_extra, resolve_targets

if TYPE_CHECKING:
    from peft import LoraConfig

LoraForm = Literal["factors", "delta"]
LORA_FORMS = ("factors", "delta")
LORA_KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
PEFT_PREFIX = "base_model.model."  # how PEFT names adapter weights in adapter_model.safetensors
# adapter_config.json fields a lora point cannot hold: other per-layer forms (DoRA, rank/alpha patterns, bias,
# transposed weights), whole module weights saved beside the factors (modules_to_save, trainable tokens), and
# selections that take modules out of target_modules or add parameters to it
UNHELD_SETTINGS = ("use_dora", "rank_pattern", "alpha_pattern", "lora_bias", "fan_in_fan_out", "modules_to_save",
                   "trainable_token_indices", "exclude_modules", "layers_to_transform", "target_parameters",
                   "layer_replication")


def _meta_skeleton(net: nn.Module) -> nn.Module:
    """A copy of `net` whose parameters and buffers live on the meta device (no weights copied)."""
    memo: dict[int, Any] = {}
    for p in net.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in net.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(net, memo)


def _delta_w(A: torch.Tensor, B: torch.Tensor, scaling: float, weight_shape: Sequence[int]) -> torch.Tensor:
    """Delta W = scaling * B A for a batch: A (n, r, in, *kernel), B (n, out, r, *ones) -> (n, *weight_shape)."""
    return scaling * torch.bmm(B.flatten(2), A.flatten(2)).reshape(-1, *weight_shape)  # (n, out, in, *kernel)


def stored_form(config: Mapping[str, Any]) -> str:
    """The form of a LoRA parameterisation config (`factors` when it predates the option)."""
    return str(config.get("form", "factors"))


def _factor_modules(layout: Layout) -> list[str]:
    """Target modules of a factor-form LoRA layout, in layout order (entries `m.lora_A`, `m.lora_B`)."""
    if layout.parameterisation != "lora" or stored_form(layout.extra) != "factors":
        raise InputError(f"need a factor-form lora layout, got parameterisation {layout.parameterisation!r} "
                         f"form {layout.extra.get('form')!r}")
    names = layout.names
    modules = [n[: -len(".lora_A")] for n in names[::2]]
    if len(names) % 2 or names != [f"{m}.{ab}" for m in modules for ab in ("lora_A", "lora_B")]:
        raise InputError("lora layout: entries are not (m.lora_A, m.lora_B) pairs")
    return modules


def delta_layout(layout: Layout) -> Layout:
    """The delta-form layout of a factor-form LoRA layout, read off the layout alone (no generator).

    One entry `m.weight` per module with the weight's shape (out, in, *kernel) = (B.shape[0], *A.shape[1:]);
    equal (`check_same`) to `delta_parameterisation().layout` of the parameterisation that made `layout`.
    """
    shapes = {e.name: e.shape for e in layout.entries}
    tensors = [(f"{m}.weight", (shapes[f"{m}.lora_B"][0], *shapes[f"{m}.lora_A"][1:])) for m in _factor_modules(layout)]
    return Layout.from_tensors(tensors, base_hash=layout.base_hash, parameterisation=layout.parameterisation,
                               extra={**layout.extra, "form": "delta"})


def factors_to_delta(points: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Factor points (B, D) or (D,) of `layout` -> delta points in `delta_layout(layout)`, exactly as they decode.

    The same product as `LoraParameterisation.to_delta` (Delta W = (alpha / rank) B A per module), computed
    from the layout, so a stored population converts without loading its generator.
    """
    single = points.ndim == 1
    x = points[None] if single else points
    modules = _factor_modules(layout)
    scaling = float(layout.extra["alpha"]) / int(layout.extra["rank"])
    t = layout.from_vector(x.to(torch.float32))
    parts = []
    for m in modules:
        A, B = t[f"{m}.lora_A"], t[f"{m}.lora_B"]
        parts.append(_delta_w(A, B, scaling, (B.shape[1], *A.shape[2:])).reshape(x.shape[0], -1))
    flat = torch.cat(parts, dim=1)  # (B, D_delta)
    return flat[0] if single else flat


def _unwrap(pattern: str) -> str:
    """Our saved `target_modules` is `^(a|b)$`; return `a|b` (any other pattern unchanged)."""
    return pattern[2:-2] if pattern.startswith("^(") and pattern.endswith(")$") else pattern


def _peft_targets(target_modules: Any) -> str:
    """A PEFT config's `target_modules` as our `targets` pattern: a string is a regular expression matched
    in full; a list names modules or name suffixes (`q` matches `attn.q`), as PEFT matches it."""
    if isinstance(target_modules, list):
        return r"(.*\.)?(" + "|".join(re.escape(str(t)) for t in target_modules) + ")"
    return _unwrap(str(target_modules))


def check_lora_options(*, rank: Any = 4, alpha: Any = 8.0, targets: Any = "all", form: Any = "factors") -> None:
    """The LoRA options' types and bounds, checked without a generator (also for a saved config)."""
    if form not in LORA_FORMS:
        raise InputError(f"lora form must be one of {', '.join(LORA_FORMS)}, got {form!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError(f"lora rank must be an integer >= 1, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise InputError(f"lora alpha must be a number >= 0 (0: the adapter does nothing), got {alpha!r}")
    if not isinstance(targets, str):
        raise InputError(f"lora targets must be a string (a group name, 'all', or a pattern), got {targets!r}")


class LoraParameterisation(Parameterisation):
    """Point = LoRA factors (`lora_A`, `lora_B` per target module) or their products (`form="delta"`)."""

    name: ClassVar[str] = "lora"

    def __init__(self, gen: Generator, *, rank: int = 4, alpha: float = 8.0, targets: str = "all",
                 form: str = "factors") -> None:
        super().__init__(gen)
        check_lora_options(rank=rank, alpha=alpha, targets=targets, form=form)
        self.rank, self.alpha, self.targets, self.form = int(rank), float(alpha), targets, form
        self.scaling = self.alpha / self.rank  # PEFT's scaling without rsLoRA
        self.modules = resolve_targets(gen, targets, kinds=LORA_KINDS)
        net_modules = dict(gen.net.named_modules())
        for m in self.modules:
            if getattr(net_modules[m], "groups", 1) != 1:
                raise InputError(f"lora: module {m!r} is a grouped convolution; only groups=1 is supported")
        self.peft_config = self._peft_config(self.rank, self.alpha)
        from peft import inject_adapter_in_model  # imported here: peft loads transformers (~4 s), which
        # importing weightspace.space for condition-only work must not pay

        skeleton = inject_adapter_in_model(self.peft_config, _meta_skeleton(gen.net))
        shapes = {n: tuple(p.shape) for n, p in skeleton.named_parameters()}
        self.factor_shapes = {
            m: (shapes[f"{m}.lora_A.default.weight"], shapes[f"{m}.lora_B.default.weight"]) for m in self.modules
        }
        self.weight_shapes = {m: tuple(net_modules[m].weight.shape) for m in self.modules}
        if form == "factors":
            tensors = [(f"{m}.{ab}", self.factor_shapes[m][i]) for m in self.modules for i, ab in enumerate(("lora_A", "lora_B"))]
        else:
            tensors = [(f"{m}.weight", self.weight_shapes[m]) for m in self.modules]
        self.layout = Layout.from_tensors(
            tensors, base_hash=base_hash(gen), parameterisation=self.name,
            extra=layout_extra(self.options, gen.condition_shape),
        )

    def _peft_config(self, rank: int, alpha: float) -> "LoraConfig":
        from peft import LoraConfig

        pattern = "^(" + "|".join(m.replace(".", r"\.") for m in self.modules) + ")$"
        return LoraConfig(r=rank, lora_alpha=alpha, target_modules=pattern, lora_dropout=0.0, bias="none")

    @property
    def options(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": self.targets, "form": self.form}

    # --- points ------------------------------------------------------------------------------
    def base_point(self) -> torch.Tensor:
        return torch.zeros(self.layout.size, device=self.gen.device)  # Delta W = 0 everywhere

    def initial_point(self, seed: int) -> torch.Tensor:
        """PEFT's default start: A ~ kaiming-uniform(a=sqrt(5)) (seeded per item), B = 0, so Delta W = 0."""
        if self.form == "delta":
            return self.base_point()
        parts = {}
        for m in self.modules:
            a_shape, b_shape = self.factor_shapes[m]
            fan_in = math.prod(a_shape[1:])
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform with a = sqrt(5)
            g = item_generator(seed, "lora-init", m)
            parts[f"{m}.lora_A"] = (torch.rand(a_shape, generator=g) * 2 - 1) * bound
            parts[f"{m}.lora_B"] = torch.zeros(b_shape)
        return self.layout.to_vector(parts).to(self.gen.device)

    def deltas_batch(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per target module, Delta W = scaling * B A for each point: module -> (B, *weight_shape)."""
        t = self.layout.from_vector(self.check_point(points))
        if self.form == "delta":
            return {m: t[f"{m}.weight"] for m in self.modules}
        return {m: _delta_w(t[f"{m}.lora_A"], t[f"{m}.lora_B"], self.scaling, self.weight_shapes[m]) for m in self.modules}

    def params_batch(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        modules = dict(self.gen.net.named_modules())
        return {f"{m}.weight": modules[m].weight + d for m, d in self.deltas_batch(points).items()}

    def low_rank_batch(self, points: torch.Tensor) -> dict[str, Any] | None:
        """Points (B, D) -> name -> StackedLowRank (Linear targets; the same weights as `params_batch`,
        factored, the base weight detached) or merged weights (B, *shape) (convolutions); None in delta form."""
        if self.form != "factors":
            return None
        t = self.layout.from_vector(self.check_point(points))
        modules = dict(self.gen.net.named_modules())
        out: dict[str, Any] = {}
        for m in self.modules:
            A, B, W = t[f"{m}.lora_A"], t[f"{m}.lora_B"], modules[m].weight
            if isinstance(modules[m], nn.Linear):
                out[f"{m}.weight"] = StackedLowRank(W.detach(), A, B, self.scaling)  # A (B, r, in), B (B, out, r)
            else:
                out[f"{m}.weight"] = W + _delta_w(A, B, self.scaling, self.weight_shapes[m])
        return out

    # --- Delta W views ---------------------------------------------------------------------------
    def delta_parameterisation(self) -> "LoraParameterisation":
        """The same adapters in `delta` form (points = Delta W per layer, invariant to re-factorisation)."""
        other = LoraParameterisation(self.gen, rank=self.rank, alpha=self.alpha, targets=self.targets, form="delta")
        other.anchor = self.anchor
        return other

    def factorise(self, point: torch.Tensor, *, rtol: float = 1e-6) -> tuple["LoraParameterisation", torch.Tensor]:
        """A delta point (D,) as factors: (parameterisation of rank r and alpha r, factor point) with B A equal
        to every layer's Delta W up to singular values below `rtol` of its largest, r the largest such rank
        over the layers (a subspace sample, a sum of adapters, has a higher rank than each). By SVD:
        B = U sqrt(S), A = sqrt(S) V^T of the layer's (out, in * kernel) matrix."""
        if self.form != "delta":
            return self, point
        deltas = {m: d.to(torch.float64) for m, d in self.deltas_batch(point[None]).items()}  # m -> (1, *weight_shape)
        svds = {m: torch.linalg.svd(d[0].reshape(d.shape[1], -1), full_matrices=False) for m, d in deltas.items()}
        rank = max([1] + [int((S > rtol * S[0]).sum()) for _, S, _ in svds.values() if S.numel() and S[0] > 0])
        other = LoraParameterisation(self.gen, rank=rank, alpha=float(rank), targets=self.targets, form="factors")
        other.anchor = self.anchor
        parts = {}
        for m, (U, S, Vh) in svds.items():
            k = min(rank, S.numel())  # a layer of lower full rank keeps zero rows past it
            a_shape, b_shape = other.factor_shapes[m]
            A = torch.zeros(rank, Vh.shape[1], dtype=torch.float64)
            B = torch.zeros(U.shape[0], rank, dtype=torch.float64)
            A[:k], B[:, :k] = S[:k].sqrt()[:, None] * Vh[:k], U[:, :k] * S[:k].sqrt()
            parts[f"{m}.lora_A"], parts[f"{m}.lora_B"] = A.reshape(a_shape).float(), B.reshape(b_shape).float()
        return other, other.layout.to_vector(parts)

    def to_delta(self, points: torch.Tensor) -> torch.Tensor:
        """Factor points (B, D) or (D,) -> delta points in `delta_parameterisation().layout`."""
        single = points.ndim == 1
        deltas = self.deltas_batch(points[None] if single else points)
        flat = torch.cat([deltas[m].reshape(deltas[m].shape[0], -1) for m in self.modules], dim=1)  # (B, D_delta)
        return flat[0] if single else flat

    def combine(self, points: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
        """Exact weighted sum of adapters in Delta W: sum_i w_i B_i A_i, as a delta point (D_delta,).

        We combine Delta W ourselves rather than with PEFT's `add_weighted_adapter`: its `linear`
        mode scales each A_i and B_i by sqrt(w_i) and sums them separately, so the result
        (sum_i sqrt(w_i) B_i)(sum_j sqrt(w_j) A_j) carries cross terms B_i A_j that are not in the
        sum; its SVD modes fail on Conv3d weights; and it needs the base model wrapped by PEFT.
        """
        w = torch.as_tensor(list(weights), dtype=torch.float32, device=points.device)
        if points.ndim != 2 or points.shape[0] != w.shape[0]:
            raise InputError(f"combine: need points (n, D) and n weights, got {tuple(points.shape)} and {w.shape[0]}")
        return (w[:, None] * self.to_delta(points)).sum(0)

    def combine_factors(self, points: torch.Tensor, weights: Sequence[float]) -> tuple["LoraParameterisation", torch.Tensor]:
        """The exact weighted sum as one adapter of rank n * r: A = [A_1; ...], B = [w_1 s B_1, ...], alpha = n r."""
        if self.form != "factors":
            raise InputError("combine_factors needs factor points (form='factors')")
        weights = list(weights)
        if points.ndim != 2 or points.shape[0] != len(weights):
            raise InputError(f"combine_factors: need points (n, D) and n weights, got {tuple(points.shape)} and {len(weights)}")
        n = points.shape[0]
        big = LoraParameterisation(self.gen, rank=n * self.rank, alpha=float(n * self.rank), targets=self.targets)
        big.anchor = self.anchor
        t = self.layout.from_vector(self.check_point(points))
        parts = {}
        for m in self.modules:
            parts[f"{m}.lora_A"] = torch.cat(list(t[f"{m}.lora_A"]), dim=0)  # (n r, in, *kernel)
            parts[f"{m}.lora_B"] = torch.cat([float(w) * self.scaling * b for w, b in zip(weights, t[f"{m}.lora_B"])], dim=1)
        return big, big.layout.to_vector(parts)

    # --- PEFT adapter folders --------------------------------------------------------------------
    def save_adapter(self, point: torch.Tensor, folder: str | Path) -> Path:
        """Write `adapter_config.json` + `adapter_model.safetensors` that `PeftModel.from_pretrained` loads."""
        if self.form != "factors":
            raise InputError("save_adapter needs factor points (form='factors'); delta points are not a PEFT adapter")
        folder = Path(folder)
        t = self.layout.from_vector(self.check_point(point).detach().cpu())
        state = {}
        for m in self.modules:
            state[f"{PEFT_PREFIX}{m}.lora_A.weight"] = t[f"{m}.lora_A"].contiguous()
            state[f"{PEFT_PREFIX}{m}.lora_B.weight"] = t[f"{m}.lora_B"].contiguous()
        with atomic_path(folder / "adapter_model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "base_hash": self.layout.base_hash})
        cfg = self.peft_config.to_dict()
        cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
        cfg["peft_type"] = str(cfg["peft_type"].value if hasattr(cfg["peft_type"], "value") else cfg["peft_type"])
        atomic_write_json(folder / "adapter_config.json", cfg)
        return folder

    @classmethod
    def load_adapter(cls, gen: Generator, folder: str | Path, *, targets: str | None = None) -> tuple["LoraParameterisation", torch.Tensor]:
        """Read a PEFT LoRA adapter folder back into (parameterisation, point).

        A folder `save_adapter` wrote names its base checkpoint; on other base weights it raises
        LayoutMismatchError (a foreign adapter names none and is taken as it is)."""
        folder = Path(folder)
        cfg = read_json(folder / "adapter_config.json")
        if not isinstance(cfg, dict) or cfg.get("peft_type") != "LORA":
            raise InputError(f"{folder / 'adapter_config.json'}: not a PEFT LoRA adapter config")
        try:
            rank, alpha, pattern = int(cfg["r"]), float(cfg["lora_alpha"]), _peft_targets(cfg["target_modules"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{folder / 'adapter_config.json'}: field {e} missing or not a number") from None
        unheld = [k for k in UNHELD_SETTINGS if cfg.get(k)]
        unheld += ["bias"] if cfg.get("bias", "none") != "none" else []
        if unheld:
            raise InputError(f"{folder / 'adapter_config.json'}: settings {unheld} change the adapter beyond "
                             f"W + (alpha / r) B A on every module target_modules names, which a lora point holds; "
                             "not loadable")
        if cfg.get("use_rslora"):  # rsLoRA scales by alpha / sqrt(r): the same Delta W as alpha sqrt(r) / r
            alpha *= math.sqrt(rank)
        try:
            param = cls(gen, rank=rank, alpha=alpha, targets=targets or pattern)
        except InputError as e:
            named = "--targets" if targets else f"{folder / 'adapter_config.json'}: target_modules {cfg['target_modules']!r}"
            raise InputError(f"{named} name no module LoRA can adapt in {gen.name} ({e}); is it an adapter of another base?") from None
        state = load_state(folder / "adapter_model.safetensors")
        saved_on = state_metadata(folder / "adapter_model.safetensors").get("base_hash")
        if saved_on is not None and saved_on != param.layout.base_hash:
            raise LayoutMismatchError(f"{folder}: adapter vs generator: base checkpoints differ "
                                      f"(hash {saved_on} vs {param.layout.base_hash})")
        # save_pretrained names the factors under the PeftModel (PEFT_PREFIX); get_peft_model_state_dict of a
        # net that inject_adapter_in_model adapted names them bare
        prefix = PEFT_PREFIX if any(k.startswith(PEFT_PREFIX) for k in state) else ""
        parts = {}
        for m in param.modules:
            for ab in ("lora_A", "lora_B"):
                key = f"{prefix}{m}.{ab}.weight"
                if key not in state:
                    raise InputError(f"{folder / 'adapter_model.safetensors'}: missing tensor {key!r}")
                want = param.factor_shapes[m][ab == "lora_B"]
                if tuple(state[key].shape) != want:
                    raise InputError(f"{folder / 'adapter_model.safetensors'}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                                     f"{gen.name} at rank {rank} takes {want}; is it an adapter of another base?")
                parts[f"{m}.{ab}"] = state[key]
        unread = sorted(set(state) - {f"{prefix}{k}.weight" for k in parts})
        if unread:  # weights PEFT would load (a module saved whole, a magnitude vector) that the point would drop
            raise InputError(f"{folder / 'adapter_model.safetensors'}: holds {len(unread)} tensor(s) besides the LoRA factors "
                             f"of target_modules (first {unread[0]!r}), which a lora point cannot hold; not loadable")
        return param, param.layout.to_vector(parts).to(gen.device)
