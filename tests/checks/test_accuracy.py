"""Quantized accuracy: INT8 gates on real labelled data (digits), measured independently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import write_case
from parity.pipeline.datasets import load
from parity.session import Session
from parity.catalog import load_case

WEIGHTS = Path(__file__).parents[2] / "cases" / "weights" / "digits_cnn.safetensors"

CASE = f"""
model: {{factory: 'parity_examples.zoo:digits_cnn', weights: {WEIGHTS.name}}}
inputs: {{image: {{shape: [1, 8, 8], distribution: uniform}}}}
outputs: [logits]
batch_sizes: [1, 8]
formats: [FORMAT]
backends: [cpu]
checks: [accuracy]
accuracy:
  evaluation: {{source: digits, split: test}}
  CALIBRATION
"""


def accuracy(case_dir, tmp_path, fmt, calibration="calibration: {source: digits, split: calibration}",
             update=False):
    backend = "mil-ref" if fmt.startswith("coreml") else "cpu"
    body = CASE.replace("FORMAT", fmt).replace("CALIBRATION", calibration).replace(
        "backends: [cpu]", f"backends: [{backend}]")
    shutil.copy(WEIGHTS, case_dir / WEIGHTS.name)  # files a case reads lie under its directory
    session = Session(tmp_path / "build", tmp_path / "golden", update_golden=update)
    result = session.run_check(load_case(write_case(case_dir, f"d_{fmt}", body)), fmt, backend, "accuracy")
    return result, session


@pytest.mark.parametrize("fmt", ["onnx_int8", "pt2_int8", "torchscript_int8", "coreml_int8", "tflite_int8"])
def test_correct_calibration_passes_and_golden_round_trips(case_dir, tmp_path, fmt):
    recorded, _ = accuracy(case_dir, tmp_path, fmt, update=True)
    assert recorded.status == "passed", recorded.message
    result, _ = accuracy(case_dir, tmp_path, fmt)
    assert result.status == "passed", result.message
    m = result.metrics
    assert m["accuracy"] >= 98.0 and m["accuracy_drop"] <= 1.0 and m["top1_agreement"] >= 0.97
    assert m["golden_accuracy"] == m["accuracy"]
    assert m["size_ratio"] > 0
    if fmt in ("onnx_int8", "coreml_int8", "tflite_int8"):
        assert m["size_ratio"] < 0.6  # int8 weights (measured 46%, 37%, 37% of fp32)


def test_accuracy_matches_an_independent_computation(case_dir, tmp_path):
    import onnxruntime as ort
    import torch

    from parity.frameworks.pytorch import load_weights
    from parity_examples.zoo import digits_cnn

    result, session = accuracy(case_dir, tmp_path, "onnx_int8", update=True)
    x, y = load("digits", "test")
    path = session.case_run(next(iter(session._runs.values())).case).artefact("onnx_int8").path
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 8]})[0] for i in range(0, len(x), 8)]).argmax(1)
    model = digits_cnn()
    model.load_state_dict(load_weights(WEIGHTS))
    with torch.no_grad():
        fp32 = model(torch.from_numpy(x)).argmax(1).numpy()
    assert result.metrics["accuracy"] == pytest.approx(100 * (pred == y).mean())
    assert result.metrics["fp32_accuracy"] == pytest.approx(100 * (fp32 == y).mean())
    assert result.metrics["top1_agreement"] == pytest.approx((pred == fp32).mean())
    assert result.metrics["samples"] == 450


def test_drift_below_golden_fails_even_within_the_drop_gate(case_dir, tmp_path):
    accuracy(case_dir, tmp_path, "pt2_int8", update=True)
    golden = tmp_path / "golden" / "d_pt2_int8" / "pt2_int8-cpu.accuracy.json"
    data = json.loads(golden.read_text())
    data["accuracy"] = data["accuracy"] + 0.8  # the golden says this target used to be better
    golden.write_text(json.dumps(data))
    result, _ = accuracy(case_dir, tmp_path, "pt2_int8")
    assert result.status == "failed"
    assert "quantization drift" in result.message and result.metrics["accuracy_drop"] <= 1.0


def test_collapse_is_named(case_dir, tmp_path):
    """Calibrated on constant 1e4 images, every activation scale is huge: all predictions one class."""
    np.savez(case_dir / "huge.npz", inputs=np.full((64, 1, 8, 8), 1e4, np.float32))
    result, _ = accuracy(case_dir, tmp_path, "pt2_int8", calibration="calibration: {file: huge.npz}", update=True)
    assert result.status == "failed", result.message
    assert "collapsed: top-1 agreement with fp32" in result.message
    assert result.metrics["top1_agreement"] < 0.2 and result.metrics["accuracy_drop"] > 1.0


@pytest.mark.parametrize("fmt", ["onnx_int8", "tflite_int8"])
def test_all_zero_calibration_fails_the_gate_in_static_routes(case_dir, tmp_path, fmt):
    np.savez(case_dir / "zeros.npz", inputs=np.zeros((64, 1, 8, 8), np.float32))
    result, _ = accuracy(case_dir, tmp_path, fmt, calibration="calibration: {file: zeros.npz}", update=True)
    assert result.status == "failed", result.message
    assert result.metrics["accuracy_drop"] > 1.0


def test_tflite_runner_quantizes_inputs_and_dequantizes_outputs():
    from parity.formats.tflite.runner import _dequantize, _quantize

    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    q = _quantize(np.array([0.0, 1.0, -100.0, 100.0], np.float32), detail)
    assert q.dtype == np.int8 and q.tolist() == [-3, -1, -128, 127]
    assert _dequantize(q, detail).tolist() == [0.0, 1.0, -62.5, 65.0]
    plain = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert _quantize(np.ones(2, np.float32), plain).dtype == np.float32
