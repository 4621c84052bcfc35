"""Tolerances that mean something, on real exports: no false alarm on large outputs, no blind spot
on tiny ones, vacuous checks refused, and learned drift thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SMALL_CASE, write_case
from parity.compare import compare_output
from parity.session import Session
from parity.catalog import load_case
from parity.tolerance import ResolvedTolerance

DEFAULT = ResolvedTolerance(atol=0.0, rtol=0.0, scale=1e-4)
POLYGRAPHY = ResolvedTolerance(atol=1e-5, rtol=1e-5, scale=0.0)


def test_resnet34_large_outputs_pass_at_defaults_and_one_layer_one_percent_fails(tmp_path):
    """resnet34, random init with untouched BatchNorm: outputs up to ~40 (measured: 224 at 224x224)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    ort = pytest.importorskip("onnxruntime")
    from parity.formats.onnx.export import export

    torch.manual_seed(0)
    model = torchvision.models.resnet34(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x).numpy()
    export(model, (x,), tmp_path / "r34.onnx", input_names=["x"], output_names=["logits"])
    exported = ort.InferenceSession(str(tmp_path / "r34.onnx")).run(None, {"x": x.numpy()})[0]

    assert np.abs(reference).max() > 10
    clean = compare_output("logits", reference, exported, DEFAULT)
    assert clean.passed, clean  # a correct export is not flagged ...
    assert not compare_output("logits", reference, exported, POLYGRAPHY).passed  # ... as a fixed atol flags it

    with torch.no_grad():
        model.layer3[0].conv1.weight.mul_(1.01)  # one layer, 1%
        perturbed = model(x).numpy()
    bug = compare_output("logits", reference, perturbed, DEFAULT)
    assert not bug.passed and bug.scaled_error > 10 * DEFAULT.scale


def _session(tmp_path) -> Session:
    return Session(tmp_path / "build", tmp_path / "golden")


def _case(case_dir, name, body):
    return load_case(write_case(case_dir, name, body))


ONNX_PARITY = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]") + "checks: [parity]\n"


def test_tiny_outputs_planted_one_percent_fails_where_fixed_atol_passes(case_dir, tmp_path):
    body = ONNX_PARITY.replace("models:small", "models:tiny_outputs") + \
        "export:\n  onnx: {function: 'models:perturbing_export'}\n"
    result = _session(tmp_path).run_check(_case(case_dir, "tiny", body), "onnx", "cpu", "parity")
    assert result.status == "failed", result.message
    assert result.metrics["scaled_error"] > 1e-3
    assert result.metrics["max_abs"] < 1e-14  # invisible to any fixed atol

    lenient = body + "tolerance:\n  default: {atol: 1e-5, allow_vacuous: true}\n"
    result = _session(tmp_path).run_check(_case(case_dir, "tiny_atol", lenient), "onnx", "cpu", "parity")
    assert result.status == "passed"  # what a fixed atol would do: pass the bug ...
    assert "cannot fail" in result.message  # ... but never quietly

    strict = body + "tolerance:\n  default: {atol: 1e-5}\n"
    result = _session(tmp_path).run_check(_case(case_dir, "tiny_strict", strict), "onnx", "cpu", "parity")
    assert result.status == "failed" and "vacuous check: atol 1e-05 is" in result.message


def test_zero_output_is_a_vacuous_check(case_dir, tmp_path):
    case = _case(case_dir, "zeros", ONNX_PARITY.replace("models:small", "models:zeros"))
    result = _session(tmp_path).run_check(case, "onnx", "cpu", "parity")
    assert result.status == "failed" and "reference is all zeros" in result.message
    assert result.metrics["vacuous"] is True


NOISY = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [torchscript]") + \
    "export:\n  torchscript: {function: 'models:noisy_export', options: {level: LEVEL}}\n"


def test_learned_threshold_catches_fifty_fold_error_growth(case_dir, tmp_path):
    path = write_case(case_dir, "noisy", NOISY.replace("LEVEL", "2e-7"))
    recording = Session(tmp_path / "build", tmp_path / "golden", update_golden=True)
    assert recording.run_check(load_case(path), "torchscript", "cpu", "golden").status == "passed"

    # Same export, same error: passes, and the report shows recorded vs now.
    same = _session(tmp_path).run_check(load_case(path), "torchscript", "cpu", "golden")
    assert same.status == "passed", same.message
    drift = same.metrics["learned_drift"]["logits"]
    assert drift["recorded_error"] == pytest.approx(drift["error_now"])

    # The exporter becomes 50x less accurate: still far inside the 1e-4 default (and a fixed 1e-4) ...
    path.write_text(NOISY.replace("LEVEL", "1e-5"))
    worse = load_case(path)
    session = _session(tmp_path)
    assert session.run_check(worse, "torchscript", "cpu", "parity").status == "passed"
    result = session.run_check(worse, "torchscript", "cpu", "golden")
    # ... but the golden check fails on the learned threshold alone.
    assert result.status == "failed", result.message
    assert "learned limit" in result.message and "0 of 2 comparisons failed" in result.message
    drift = result.metrics["learned_drift"]["logits"]
    assert drift["error_now"] / drift["recorded_error"] == pytest.approx(50, rel=0.1)


def test_drift_factor_is_a_case_setting(case_dir, tmp_path):
    path = write_case(case_dir, "noisy", NOISY.replace("LEVEL", "2e-7"))
    Session(tmp_path / "build", tmp_path / "golden", update_golden=True).run_check(
        load_case(path), "torchscript", "cpu", "golden")
    path.write_text(NOISY.replace("LEVEL", "1e-5") + "tolerance:\n  default: {drift_factor: 100}\n")
    result = _session(tmp_path).run_check(load_case(path), "torchscript", "cpu", "golden")
    assert result.status == "passed", result.message
    assert result.metrics["learned_drift"]["logits"]["limit"] == pytest.approx(
        100 * result.metrics["learned_drift"]["logits"]["recorded_error"])


def test_every_row_reports_the_minimum_passing_tolerance(case_dir, tmp_path):
    case = _case(case_dir, "small", ONNX_PARITY)
    result = _session(tmp_path).run_check(case, "onnx", "cpu", "parity")
    assert result.status == "passed"
    for row in result.metrics["outputs"]["logits"].values():
        assert row["min_scale"] == pytest.approx(row["scaled_error"])
        assert row["min_scale"] <= 1e-4 and row["min_atol"] == 0.0
