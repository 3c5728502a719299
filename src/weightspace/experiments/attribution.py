"""Attribution of a path's transitions: which parts of the point (module groups, condition tokens, effective weights) carry them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from weightspace.experiments.path_study import PathStudy
from weightspace.generators.protocol import EffectiveWeights, Generator
from weightspace.runtime.errors import InputError
from weightspace.space.condition import ConditionParameterisation
from weightspace.space.parameterisation import Parameterisation
from weightspace.space.paths import masked


def attribution_parts(gen: Generator, param: Parameterisation) -> tuple[str, list[tuple[str, Any]]]:
    """How a transition is split into parts: (mode, [(name, mask or effective-weight key)]).

    weight points: one part per module group (`param.group_mask`); condition points of tokens
    (M, d): one part per token; a single condition vector: one part per effective-weight tensor
    that is a parameter of the net (the neural field's code-induced biases), else 4 coordinate blocks.
    """
    if not isinstance(param, ConditionParameterisation):
        parts = []
        for g in gen.module_groups():
            try:
                m = param.group_mask([g])
            except InputError:  # the group holds none of this point's tensors (e.g. a LoRA that skips it)
                continue
            if bool(m.any()):
                parts.append((g, m))
        return "module_groups", parts
    shape = gen.condition_shape
    if len(shape) >= 2:
        return "condition_tokens", [(f"token{i}", param.token_mask([i])) for i in range(shape[0])]
    names = dict(gen.net.named_parameters())
    with torch.no_grad():
        keys = [k for k in gen.effective_weights(param.anchor) if k in names] if isinstance(gen, EffectiveWeights) else []
    if keys:
        return "effective_weights", [(k, k) for k in keys]
    d = param.layout.size
    blocks = np.array_split(np.arange(d), min(4, d))
    parts = []
    for idx in blocks:
        m = torch.zeros(d, dtype=torch.bool)
        m[torch.as_tensor(idx)] = True
        parts.append((f"coords{idx[0]}-{idx[-1]}", m))
    return "condition_coordinates", parts


def attribute(study: PathStudy, transitions: list[dict[str, Any]], *, margin: float) -> tuple[str, list[dict[str, Any]]]:
    """For each transition and part: move only that part across it ("alone") and all but that part
    ("without"); a part alone reproduces the transition when `alone` has the `after` topology, and
    is necessary when `without` keeps the `before` topology."""
    gen, param = study.gen, study.param
    mode, parts = attribution_parts(gen, param)
    rows: list[dict[str, Any]] = []
    base = dict(gen.net.named_parameters())
    for k, tr in enumerate(transitions):
        lo, hi = max(0.0, tr["t_lo"] - margin), min(1.0, tr["t_hi"] + margin)
        p_lo, p_hi = study.point(lo), study.point(hi)
        before = study.run.shapes[lo].robust if lo in study.run.shapes else study.shape(study.decode(p_lo)).robust
        after = study.run.shapes[hi].robust if hi in study.run.shapes else study.shape(study.decode(p_hi)).robust
        for name, part in parts:
            if mode == "effective_weights":
                with torch.no_grad():
                    ew_lo = gen.effective_weights(param.conditions(p_lo[None]))[part][0]
                    ew_hi = gen.effective_weights(param.conditions(p_hi[None]))[part][0]
                delta = (ew_hi - ew_lo).to(base[part].dtype)
                alone = study.decode(p_lo, {part: base[part].detach() + delta})
                without = study.decode(p_hi, {part: base[part].detach() - delta})
            else:
                alone = study.decode(masked(p_lo, p_hi, [1.0], part)[0])
                without = study.decode(masked(p_lo, p_hi, [1.0], ~part)[0])
            s_alone, s_without = study.shape(alone), study.shape(without)
            rows.append({"transition": k, "part": name, "t_lo": lo, "t_hi": hi, "before": list(before), "after": list(after),
                         "alone": list(s_alone.robust), "without": list(s_without.robust),
                         "alone_reproduces": s_alone.robust == tuple(after), "necessary": s_without.robust == tuple(before)})
    return mode, rows



def attribution_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per transition: the parts that alone reproduce it and the parts it needs."""
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        s = out.setdefault(r["transition"], {"transition": r["transition"], "alone_reproduces": [], "necessary": []})
        if r["alone_reproduces"]:
            s["alone_reproduces"].append(r["part"])
        if r["necessary"]:
            s["necessary"].append(r["part"])
    return list(out.values())


