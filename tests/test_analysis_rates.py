"""Wilson 95% intervals of rates against known values and the closed form."""

import math

import pytest

from weightspace.analysis.rates import format_rate, rate, wilson_interval


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
