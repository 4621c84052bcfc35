"""batch_invariance skips only for a reason that cannot be a failure."""

from __future__ import annotations

import pytest

from conftest import SMALL_CASE, write_case
from parity.catalog import load_case
from parity.session import Session

BROKEN = '''
import torch


def garbage_export(model, example_inputs, path):
    """A user's exporter that writes a file no runtime can load."""
    path.write_bytes(b"this is not an ONNX model")
    return {"exporter": "garbage"}


def fixed_shape_export(model, example_inputs, path):
    """Loads, but only takes 4x4 images where the case feeds 8x8: it runs at no batch size."""
    x = torch.zeros(1, 3, 4, 4)
    torch.onnx.export(torch.nn.Flatten().eval(), (x,), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"])
    return {"exporter": "fixed"}


def fixed_batch_export(model, example_inputs, path):
    """Runs only at batch 3, the case's largest batch size: no sample can run alone."""
    x = torch.zeros(3, 3, 8, 8)
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["logits"])
    return {"exporter": "fixed-batch"}
'''


def _batch_invariance(case_dir, tmp_path, export_function: str, factory: str = "small", module: str = "broken"):
    (case_dir / "broken.py").write_text(BROKEN, encoding="utf-8")
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]").replace(
        "models:small", f"models:{factory}") + \
        f"export:\n  onnx: {{function: '{module}:{export_function}'}}\n"
    session = Session(tmp_path / "b", tmp_path / "g")
    try:
        return session.run_check(load_case(write_case(case_dir, export_function, body)), "onnx", "cpu",
                                 "batch_invariance")
    finally:
        session.close()


@pytest.mark.parametrize("export_function", ["garbage_export", "fixed_shape_export"])
def test_a_broken_artefact_is_an_error_not_a_skip(case_dir, tmp_path, export_function):
    """One that does not load, one that loads but runs at no batch size: errors, never skips."""
    result = _batch_invariance(case_dir, tmp_path, export_function)
    assert result.status == "error", result.message
    assert "does not run at batch 1" not in result.message
    # the runtime's failure, at load or at inference: never "parity itself failed" (harness-error)
    assert result.cause == "load-failed", (result.cause, result.why)


def test_an_artefact_that_loads_but_fails_at_inference_says_so(case_dir, tmp_path):
    """Its runtime raises on the case's inputs: the parity test names the runner, the file and the call."""
    (case_dir / "broken.py").write_text(BROKEN, encoding="utf-8")
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]") + \
        "export:\n  onnx: {function: 'broken:fixed_shape_export'}\n"
    session = Session(tmp_path / "b", tmp_path / "g")
    try:
        result = session.run_check(load_case(write_case(case_dir, "fixed", body)), "onnx", "cpu", "parity")
    finally:
        session.close()
    assert result.status == "error" and result.cause == "load-failed", (result.cause, result.message)
    assert "the onnx export succeeded, but" in result.why and "raised when run on (x: float32[1, 3, 8, 8])" \
        in result.why, result.why


def test_a_clean_model_passes(case_dir, tmp_path):
    case = load_case(write_case(case_dir, "clean", SMALL_CASE))
    session = Session(tmp_path / "b", tmp_path / "g")
    result = session.run_check(case, "onnx", "cpu", "batch_invariance")
    assert result.status == "passed", result.message
    session.close()


def test_a_fixed_batch_artefact_is_still_checked(case_dir, tmp_path):
    """An artefact that runs only at the case's largest batch is compared across batches of that size."""
    result = _batch_invariance(case_dir, tmp_path, "fixed_batch_export")
    assert result.status == "passed", result.message
    assert "compared across batches of 3" in result.message
    assert result.metrics["batch_sizes_run"] == [3]


def test_a_fixed_batch_artefact_that_mixes_samples_fails(case_dir, tmp_path):
    """The planted bug (x - x.mean(0)) is found without batch 1, and named as a batch dependence."""
    result = _batch_invariance(case_dir, tmp_path, "fixed_batch_export", factory="batch_coupled")
    assert result.status == "failed", result.message
    assert result.cause == "batch-dependence"
    assert "mixed" in result.message


@pytest.mark.parametrize("export_function, factory, cause, why", [
    ("half_export", "tiny_outputs", "precision-limit", "underflow"),  # the eager model's 5e-14 flushed to zeros
    ("plain_export", "zeros", "vacuous", "the eager model's output is as constant as the artefact's"),
    ("zeroing_export", "small", "numerics", "cosine 0.000000"),  # fp32 zeros where the eager model has 0.5
])
def test_outputs_that_cannot_differ_per_batch_are_named_by_what_the_eager_model_says(
        case_dir, tmp_path, export_function, factory, cause, why):
    """An artefact whose outputs are all zeros passes no batch comparison (vacuous): the cause is
    what parity would say of the same outputs, never "small differences per batch size" with a hint to
    raise the tolerance."""
    result = _batch_invariance(case_dir, tmp_path, export_function, factory=factory, module="models")
    assert result.status == "failed", result.message
    assert result.cause == cause and why in result.why, (result.cause, result.why)
    assert "kernels chosen per batch size" not in result.message
    assert "raise batch_invariance.scale" not in result.message


class _StubRun:
    """What batch_invariance's verdict asks of a case run: a static-shape INT8 target, no lint findings."""

    model_findings: list = []

    def __init__(self, route: str = "static"):
        self.route = route

    def artefact_info(self, fmt):
        return {"route": self.route}

    def artefact_findings(self, fmt):
        return []

    def static_shape(self, fmt):
        return True

    def runner(self, fmt, backend):
        return type("Runner", (), {"name": "stub"})()


def test_per_batch_int8_artefacts_are_not_blamed_on_kernels():
    """INT8 artefacts exported (and calibrated) once per batch size differ by quantization scales,
    not by kernels chosen per batch size and not by a batch dependence."""
    import numpy as np

    from parity.checks.batch_invariance import PER_BATCH_QUANT_HINT, _verdict
    from parity.compare import compare_output
    from parity.tolerance import Tolerance, invariance

    tol = invariance(Tolerance(), None, "int8")  # scale 5e-2; GROSS for int8 is 0.2
    solo = np.linspace(-1.0, 1.0, 10, dtype=np.float32).reshape(2, 5)
    rows = [("b2", compare_output("logits", solo, solo + np.float32(0.1), tol))]  # 0.1 of max|output|
    result = _verdict(_StubRun(), "tflite_int8", "cpu", rows, tol, [1, 2], 2, {}, False, [])
    assert result.status == "failed" and result.cause == "numerics", (result.cause, result.why)
    assert "calibrated and quantized separately" in result.why
    assert PER_BATCH_QUANT_HINT in result.message and result.metrics["hint"] == PER_BATCH_QUANT_HINT
    assert "kernels chosen" not in result.message and "batch-mates" not in result.message
