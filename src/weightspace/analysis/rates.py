"""Rates with their sample size and a Wilson 95% interval (SciPy's binomial test does the math)."""

from __future__ import annotations

from typing import Iterable


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) of a binomial rate; (0, 1) when n is 0."""
    from scipy.stats import binomtest

    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def rate(flags: Iterable[bool], confidence: float = 0.95) -> dict[str, float | int]:
    """{rate, n, successes, low, high} of a sequence of booleans (rate is None-free: 0 for n = 0)."""
    values = [bool(f) for f in flags]
    k, n = sum(values), len(values)
    low, high = wilson_interval(k, n, confidence)
    return {"rate": k / n if n else 0.0, "n": n, "successes": k, "low": low, "high": high}


def format_rate(r: dict) -> str:
    """'0.81 [0.71, 0.88] (n=80)'."""
    return f"{r['rate']:.2f} [{r['low']:.2f}, {r['high']:.2f}] (n={r['n']})"


def rate_fields(name: str, flags: Iterable[bool], *, why_unmeasured: str, confidence: float = 0.95) -> dict:
    """The flat JSON fields of one rate figure: ``name`` (the rate), ``name_n`` (its items), ``name_low``
    and ``name_high`` (Wilson interval). With no items nothing was measured: ``name``, ``name_low`` and
    ``name_high`` are None (never a 0 that reads as a measured failure) and ``name_not_measured`` is
    `why_unmeasured`. Flat, so that `pytest.approx` and the number-only training records take them."""
    r = rate(flags, confidence)
    if r["n"] == 0:
        return {name: None, f"{name}_n": 0, f"{name}_low": None, f"{name}_high": None, f"{name}_not_measured": why_unmeasured}
    return {name: r["rate"], f"{name}_n": r["n"], f"{name}_low": r["low"], f"{name}_high": r["high"]}
