"""Comparison metrics and verdicts: pure NumPy, each rule shown to pass and to fail."""

from __future__ import annotations

import math

import numpy as np
import pytest

from parity.compare import compare_output, compare_outputs, format_table, min_cosine
from parity.tolerance import DEFAULT_SCALE, ResolvedTolerance

DEFAULT = ResolvedTolerance(atol=0.0, rtol=0.0, scale=DEFAULT_SCALE)


def logits(seed=0, shape=(4, 10), scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def test_identical_passes_with_exact_metrics():
    ref = logits()
    c = compare_output("logits", ref, ref.copy(), DEFAULT)
    assert c.passed and c.problem == ""
    assert c.max_abs == 0 and c.n_outside == 0 and c.cosine == pytest.approx(1.0)
    assert c.top1_agreement == 1.0
    assert c.ref_max_abs == pytest.approx(float(np.abs(ref).max()))


def test_metrics_match_independent_computation():
    ref = logits()
    obt = ref.copy()
    obt[2, 7] += 0.5
    obt[0, 1] -= 0.01
    c = compare_output("logits", ref, obt, DEFAULT)
    d = np.abs(obt.astype(np.float64) - ref)
    assert c.max_abs == pytest.approx(d.max())
    assert c.mean_abs == pytest.approx(d.mean())
    assert c.max_rel == pytest.approx((d / np.abs(ref)).max())
    assert c.scaled_error == pytest.approx(d.max() / np.abs(ref).max())
    assert c.worst_index == [2, 7]
    assert c.worst_obtained == pytest.approx(obt[2, 7]) and c.worst_expected == pytest.approx(ref[2, 7])
    assert c.n_outside == 2 and c.share_outside == pytest.approx(2 / 40)
    cos = float(np.dot(ref.ravel().astype(np.float64), obt.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(obt)))
    assert c.cosine == pytest.approx(cos)
    assert not c.passed and "2 of 40 elements outside tolerance" in c.problem


def test_float_noise_passes_but_one_percent_fails():
    # Large outputs (resnet34-like, up to ~200): float error scales with the tensor's magnitude
    # (measured: 1.1e-4 on outputs up to 224), so elements near zero get errors far above 1e-5.
    ref = logits(scale=100.0)
    err = np.random.default_rng(1).normal(scale=5e-7 * np.abs(ref).max(), size=ref.shape)
    noise = (ref + err).astype(np.float32)
    assert compare_output("l", ref, noise, DEFAULT).passed
    assert not compare_output("l", ref, noise, ResolvedTolerance(atol=1e-5, rtol=1e-5, scale=0)).passed
    assert not compare_output("l", ref, ref * 1.01, DEFAULT).passed


def test_tiny_outputs_scale_aware_catches_what_fixed_atol_misses():
    ref = logits(scale=4e-14)
    wrong = ref * 1.01
    assert not compare_output("l", ref, wrong, DEFAULT).passed
    fixed = compare_output("l", ref, wrong, ResolvedTolerance(atol=1e-5, rtol=0, scale=0))
    assert not fixed.passed and fixed.vacuous
    assert "cannot fail" in fixed.problem and "atol 1e-05" in fixed.problem


def test_vacuous_atol_allowed_only_warns():
    ref = logits(scale=1e-3)
    c = compare_output("l", ref, ref, ResolvedTolerance(atol=1.0, rtol=0, scale=0, allow_vacuous=True))
    assert c.passed and c.vacuous and c.problem.startswith("warning")


def test_zero_reference_is_vacuous():
    ref = np.zeros((2, 3), np.float32)
    c = compare_output("l", ref, ref, DEFAULT)
    assert not c.passed and "all zeros" in c.problem
    assert c.scaled_error == 0.0


def test_zero_reference_with_nonzero_output_reports_infinite_scaled_error():
    c = compare_output("l", np.zeros(3, np.float32), np.ones(3, np.float32), DEFAULT)
    assert not c.passed and c.scaled_error == float("inf")
    assert c.metrics()["scaled_error"] == "inf"  # JSON-safe


def test_constant_reference_is_vacuous():
    ref = np.full((2, 4), 0.7, np.float32)
    c = compare_output("l", ref, ref, DEFAULT)
    assert not c.passed and "constant" in c.problem


def test_nan_in_output_fails_and_is_counted():
    ref = logits()
    obt = ref.copy()
    obt[1, 2] = np.nan
    obt[3, 3] = np.inf
    c = compare_output("l", ref, obt, ResolvedTolerance(atol=1e9, rtol=0, scale=0, allow_vacuous=True))
    assert not c.passed and c.nonfinite == 2
    assert "2 non-finite value(s)" in c.problem
    assert c.worst_index in ([1, 2], [3, 3])


def test_nonfinite_output_makes_the_figures_nonfinite():
    """A NaN export never reads as exact in the figures: error inf, cosine NaN, in the table and JSON."""
    ref = logits()
    obt = ref.copy()
    obt[0, 1] = np.nan
    c = compare_output("l", ref, obt, DEFAULT)
    assert math.isinf(c.max_abs) and math.isinf(c.scaled_error) and math.isinf(c.tolerance_used)
    assert math.isnan(c.cosine)
    m = c.metrics()
    assert m["scaled_error"] == "inf" and m["cosine"] == "nan"
    table = format_table([("b1", c)])
    assert " inf " in table and " nan " in table and "1.000000" not in table
    assert math.isnan(min_cosine([1.0, c.cosine, 0.5])) and min_cosine([1.0, 0.5]) == 0.5


def test_nan_in_both_matches():
    ref = logits()
    ref[0, 0] = np.nan
    c = compare_output("l", ref, ref.copy(), DEFAULT)
    assert c.passed and c.nonfinite == 0


def test_shape_mismatch_fails():
    c = compare_output("l", logits(shape=(2, 10)), logits(shape=(2, 5)), DEFAULT)
    assert not c.passed and "shape (2, 5) but expected (2, 10)" in c.problem


def test_top1_agreement():
    ref = np.array([[1.0, 2.0], [3.0, 1.0]], np.float32)
    obt = np.array([[1.0, 2.0], [1.0, 3.0]], np.float32)
    assert compare_output("l", ref, obt, DEFAULT).top1_agreement == 0.5


def test_minimum_passing_tolerance_passes_and_less_fails():
    ref = logits()
    obt = ref + np.random.default_rng(2).normal(scale=1e-3, size=ref.shape).astype(np.float32)
    c = compare_output("l", ref, obt, DEFAULT)
    assert not c.passed
    assert compare_output("l", ref, obt, ResolvedTolerance(atol=0, rtol=0, scale=c.min_scale * 1.0001)).passed
    assert not compare_output("l", ref, obt, ResolvedTolerance(atol=0, rtol=0, scale=c.min_scale * 0.99)).passed
    at = compare_output("l", ref, obt, ResolvedTolerance(atol=0, rtol=1e-3, scale=0))
    assert compare_output("l", ref, obt, ResolvedTolerance(atol=at.min_atol * 1.0001, rtol=1e-3, scale=0)).passed


def test_missing_and_unexpected_outputs():
    ref = {"a": logits(), "b": logits(1)}
    rows = compare_outputs(ref, {"a": ref["a"], "c": ref["b"]}, lambda n: DEFAULT)
    by = {c.name: c for c in rows}
    assert by["a"].passed
    assert not by["b"].passed and "missing" in by["b"].problem
    assert not by["c"].passed and "unexpected" in by["c"].problem


def test_table_is_readable():
    ref = logits()
    rows = [("b4", compare_output("logits", ref, ref * 1.01, DEFAULT))]
    table = format_table(rows)
    header, line = table.splitlines()
    assert "max_abs" in header and "outside" in header
    assert line.startswith("b4") and "logits" in line and "4x10" in line
