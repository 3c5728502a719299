"""Wilson 95% intervals of rates against known values and the closed form."""

import math

import pytest

from weightspace.analysis.rates import format_rate, rate, rate_fields, wilson_interval


@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.2775),  # z^2 / (n + z^2)
    (10, 10, 0.7225, 1.0),
    (5, 10, 0.2366, 0.7634),
    (1, 8, 0.0224, 0.4709),
    (8, 8, 0.6756, 1.0),  # the "8/8 = 1.00 [0.68, 1.00]" of the findings' family table
])
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-4) and hi == pytest.approx(high, abs=5e-4)


@pytest.mark.parametrize("k, n", [(46, 80), (25, 32), (3, 7), (31, 32)])
def test_wilson_interval_matches_the_closed_form(k, n):
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)


def test_rate_counts_and_formats():
    r = rate([True, True, False, True])
    assert (r["successes"], r["n"], r["rate"]) == (3, 4, 0.75) and r["low"] < 0.75 < r["high"]
    assert format_rate(r) == f"0.75 [{r['low']:.2f}, {r['high']:.2f}] (n=4)"
    assert rate([])["n"] == 0 and wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_rate_fields_say_unmeasured_instead_of_zero():
    """A figure of no items is None with the reason, never a 0.0 that reads as every item failing; a set
    metric of one shape a side (1-NNA 0, COV 1 whatever the shapes) carries a caveat."""
    import numpy as np

    from weightspace.analysis.sets import set_caveat, set_metrics

    assert rate_fields("m", [True, False, True, True], why_unmeasured="-") == {
        "m": 0.75, "m_n": 4, "m_low": pytest.approx(0.3006, abs=5e-4), "m_high": pytest.approx(0.9544, abs=5e-4)}
    assert rate_fields("m", [], why_unmeasured="no families") == {
        "m": None, "m_n": 0, "m_low": None, "m_high": None, "m_not_measured": "no families"}
    one = set_metrics([np.zeros((4, 3))], [np.ones((4, 3))])
    assert (one["nna"], one["cov"]) == (0.0, 1.0) and "1 generated and 1 reference" in set_caveat(1, 1)
    assert set_caveat(8, 8) is None and set_caveat(8, 7) is not None
