"""Fuzz the config loaders with hypothesis for a bounded time: weightspace.runtime.config and the generators' own.

Property: any JSON document (and any bytes in a config file) either loads into a config whose
every field has its annotated type, finite numbers and its documented bounds, or is refused with
an InputError naming the file. Any other exception, or an accepted config that breaks its own
declared rules (a non-finite number, a negative size), is a finding.

Targets: `runtime.config.load_config` on a dataclass using every supported field kind, and the
generators' config dataclasses (`latent_diffusion.config.ModelConfig` / `TrainConfig`,
`neural_field.config.FieldConfig` / `TrainConfig`) through `config_from_dict`, as the training CLIs build them.

Example: .venv/bin/python benchmarks/fuzz_config.py --seconds 90
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightspace.runtime.config import config_from_dict, load_config, option
from weightspace.runtime.errors import InputError


@dataclass
class Inner:
    width: int = option(16, min=1)
    act: Literal["relu", "gelu"] = "relu"


@dataclass
class Probe:
    """Every field kind the loader supports."""

    steps: int = option(50, min=1)
    lr: float = option(1e-2, min=0.0, exclusive_min=True)
    offset: float = 0.0
    kind: Literal["grid", "points"] = "grid"
    sigmas: tuple[float, ...] = (0.01,)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    out: Optional[Path] = None
    names: list[str] = field(default_factory=list)
    table: dict[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    flag: bool = False


KEYS = [f.name for f in dataclasses.fields(Probe)] + ["width", "act", "minutes", "ae_lr", "d_z", "depth", "model", "train"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8), st.sampled_from(["grid", "points", "relu", "haar", "ddim", "runs/x"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5)),
                    max_leaves=12)


EDGE = st.sampled_from([math.inf, -math.inf, math.nan, -1, -1.0, 0, 0.0, 1e308, 2**63, 3, 0.5, True])  # boundary values
VALUES = st.one_of(EDGE, EDGE, SCALARS, st.lists(st.one_of(EDGE, SCALARS), max_size=3))


def _sectioned():
    """Documents shaped like a training --config file, {"model": {...}} or {"train": {...}}, with one config's own field names."""
    from weightspace.generators.latent_diffusion import config as ld
    from weightspace.generators.neural_field import config as nf

    parts = []
    for section, cls in (("model", ld.ModelConfig), ("train", ld.TrainConfig), ("model", nf.FieldConfig), ("train", nf.TrainConfig)):
        names = [f.name for f in dataclasses.fields(cls)]
        parts.append(st.fixed_dictionaries({section: st.dictionaries(st.sampled_from(names), VALUES, max_size=2)}))
    return st.one_of(*parts)


SECTIONED = _sectioned()
DOCS = st.one_of(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6), JSON, SECTIONED, SECTIONED)


def _check_probe(cfg: Probe) -> str | None:
    """A broken invariant of an accepted Probe, or None."""
    if not (isinstance(cfg.steps, int) and not isinstance(cfg.steps, bool) and cfg.steps >= 1):
        return "steps"
    if not (isinstance(cfg.lr, float) and math.isfinite(cfg.lr) and cfg.lr > 0):
        return "lr"
    if not (isinstance(cfg.offset, float) and math.isfinite(cfg.offset)):
        return "offset"
    if cfg.kind not in ("grid", "points") or not all(isinstance(s, float) and math.isfinite(s) for s in cfg.sigmas):
        return "kind/sigmas"
    if len(cfg.split) != 3 or not all(isinstance(x, float) for x in cfg.split):
        return "split"
    if not (cfg.out is None or isinstance(cfg.out, Path)) or not all(isinstance(n, str) for n in cfg.names):
        return "out/names"
    if not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in cfg.table.items()):
        return "table"
    if not (isinstance(cfg.inner, Inner) and cfg.inner.width >= 1 and cfg.inner.act in ("relu", "gelu")) or not isinstance(cfg.flag, bool):
        return "inner/flag"
    return None


def _finite_and_bounded(cfg) -> str | None:
    """For the generators' configs: every number finite, every int field non-negative."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        values = v if isinstance(v, list) else [v]
        for x in values:
            if isinstance(x, float) and not math.isfinite(x):
                return f"{f.name} = {x} accepted"
            if isinstance(x, int) and not isinstance(x, bool) and x < 0:
                return f"{f.name} = {x} accepted"
    return None


def targets():
    from weightspace.generators.latent_diffusion import config as ld
    from weightspace.generators.neural_field import config as nf

    return {
        "runtime.config": (lambda raw, path: load_config(Probe, path), _check_probe),
        "latent_diffusion.model": (lambda raw, path: config_from_dict(ld.ModelConfig, raw.get("model") if isinstance(raw, dict) else raw, where=str(path)), _finite_and_bounded),
        "latent_diffusion.train": (lambda raw, path: config_from_dict(ld.TrainConfig, raw.get("train") if isinstance(raw, dict) else raw, where=str(path)), _finite_and_bounded),
        "neural_field.model": (lambda raw, path: config_from_dict(nf.FieldConfig, raw.get("model") if isinstance(raw, dict) else raw, where=str(path)), _finite_and_bounded),
        "neural_field.train": (lambda raw, path: config_from_dict(nf.TrainConfig, raw.get("train") if isinstance(raw, dict) else raw, where=str(path)), _finite_and_bounded),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    args = ap.parse_args()
    tgs = targets()
    findings: Counter = Counter()
    examples: dict = {}
    stats: Counter = Counter()
    t_end = time.perf_counter() + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"

        def run(name, fn, check, raw):
            try:
                cfg = fn(raw, path)
                stats[f"{name}:accepted"] += 1
                problem = check(cfg)
                if problem:
                    key = (name, f"accepted invalid: {problem.split(' = ')[0]}")
                    findings[key] += 1
                    examples.setdefault(key, (raw, problem))
            except InputError as e:
                stats[f"{name}:refused"] += 1
                if str(path) not in str(e) and name == "runtime.config":
                    findings[(name, "error does not name the file")] += 1
                    examples.setdefault((name, "error does not name the file"), (raw, str(e)))
            except Exception as e:
                where = traceback.extract_tb(e.__traceback__)[-1]
                key = (name, f"{type(e).__name__} at {Path(where.filename).name}:{where.lineno}")
                findings[key] += 1
                examples.setdefault(key, (raw, str(e)[:200]))

        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(DOCS, st.booleans(), st.binary(max_size=64))
        def batch(doc, as_bytes, junk):
            if time.perf_counter() >= t_end:
                return
            if as_bytes and junk:
                path.write_bytes(junk)  # arbitrary bytes in the file
                run("runtime.config", *tgs["runtime.config"], None)
                return
            try:
                path.write_text(json.dumps(doc, allow_nan=True))
            except (ValueError, OverflowError):
                return
            for name, (fn, check) in tgs.items():
                run(name, fn, check, doc)

        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            batch()
        elapsed = time.perf_counter() - t0
    print(f"fuzz_config: {sum(stats.values())} loads in {elapsed:.0f} s; " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
    if not findings:
        print("findings: none")
    for key, n in findings.most_common():
        print(f"FINDING x{n}: {key}: {examples[key]!r}"[:500])


if __name__ == "__main__":
    main()
