"""Error profiles (what the HTML report plots) and the tolerance share a comparison used."""

from __future__ import annotations

import json
import math

import numpy as np

from parity.compare import compare_output
from parity.profile import SAMPLE_SIZE, SAMPLE_WORST, error_profile, tolerance_used
from parity.tolerance import ResolvedTolerance

TOL = ResolvedTolerance(atol=0.0, rtol=0.0, scale=1e-4)


def test_profile_is_bounded_and_puts_the_worst_first():
    rng = np.random.default_rng(1)
    expected = rng.normal(size=(4, 1000))
    obtained = expected + rng.normal(scale=1e-3, size=expected.shape)
    obtained[2, 7] += 0.5  # the worst element
    p = error_profile(expected, obtained)
    sample = p["sample"]
    assert len(sample["expected"]) == len(sample["obtained"]) == SAMPLE_SIZE
    assert sample["worst"] == SAMPLE_WORST and sample["of"] == 4000
    assert math.isclose(sample["obtained"][0] - sample["expected"][0], 0.5, rel_tol=1e-2)
    hist = p["abs_error_hist"]
    assert sum(hist["counts"]) == 4000 and hist["zeros"] == 0 and len(hist["counts"]) <= 24
    assert hist["edges"][0] <= 1e-6 and hist["edges"][-1] >= 0.5
    assert len(json.dumps(p)) < 5000  # stays small whatever the output size
    assert error_profile(expected, obtained) == p  # seeded: the same outputs give the same profile


def test_profile_counts_zeros_and_nonfinite():
    expected = np.array([1.0, 2.0, 3.0, 4.0])
    obtained = np.array([1.0, 2.0, np.nan, 4.5])
    p = error_profile(expected, obtained)
    assert p["abs_error_hist"]["zeros"] == 2 and p["abs_error_hist"]["nonfinite"] == 1
    assert sum(p["abs_error_hist"]["counts"]) == 1
    assert sorted(p["sample"]["obtained"]) == [1.0, 2.0, 4.5]


def test_tolerance_used():
    assert tolerance_used(np.array([0.5, 1.0]), np.array([1.0, 4.0])) == 0.5
    assert tolerance_used(np.array([0.0, 1e-9]), np.array([0.0, 1.0])) == 1e-9
    assert math.isinf(tolerance_used(np.array([1e-9]), np.array([0.0])))


def test_comparison_keeps_a_profile_only_when_failing_or_drifting():
    expected = np.linspace(-1, 1, 50).reshape(5, 10)
    clean = compare_output("y", expected, expected + 1e-6, TOL)  # 1% of the tolerance
    assert clean.passed and "profile" not in clean.extra and 0.005 < clean.tolerance_used < 0.02
    near = compare_output("y", expected, expected + 0.7e-4, TOL)  # 70%: passes, drifting
    assert near.passed and "profile" in near.extra
    bad = compare_output("y", expected, expected * 1.01, TOL)
    assert not bad.passed and bad.tolerance_used > 1 and "profile" in bad.extra
    assert json.dumps(bad.metrics())  # JSON-ready
