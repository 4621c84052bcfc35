"""shape_invariance: every size of a case's dynamic axes against eager. It passes on models that are
right at every size, and fails, naming the cause, on an artefact right only at its export size and
on one that cannot take another size at all."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_case
from parity.catalog import load_case
from parity.checks.shape_invariance import SPECIALISED_HINT
from parity.session import Session

MODELS = '''
import torch
from torch import nn


class MeanPool(nn.Module):
    """Token ids and a padding mask -> 3 logits: a masked mean over the sequence, right at every length."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(30, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids, mask):
        e = self.embed(ids) * mask.unsqueeze(-1).float()
        return self.head(e.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).float())


class LengthBaked(MeanPool):
    """Right at every length in eager; traced, `float(seq)` is a Python number, baked in as a constant."""

    def forward(self, ids, mask):
        seq = float(ids.shape[1])
        e = self.embed(ids) * mask.unsqueeze(-1).float()
        return self.head(e.sum(1) / seq)


class Pooled(nn.Module):
    """A CNN that takes any image size (global average pool)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def mean_pool():
    return MeanPool().eval()


def length_baked():
    return LengthBaked().eval()


def pooled():
    return Pooled().eval()


def static_onnx(model, example_inputs, path):
    """A user's exporter that keeps only the batch dynamic: the sequence length is fixed."""
    torch.onnx.export(model, example_inputs, str(path), dynamo=False, opset_version=17,
                      input_names=["ids", "mask"], output_names=["logits"],
                      dynamic_axes={"ids": {0: "b"}, "mask": {0: "b"}, "logits": {0: "b"}})
'''

TOKENS = """
model: {{factory: 'seq_models:{factory}'}}
inputs:
  ids: {{shape: [8], dtype: int64, distribution: tokens, low: 1, high: 30, mask: mask, dynamic: {{0: seq}}}}
  mask: {{shape: [8], dtype: int64, distribution: mask, dynamic: {{0: seq}}}}
sizes: {{seq: [5, 12]}}
batch_sizes: [1, 3]
formats: {formats}
backends: [cpu]
"""


@pytest.fixture
def session(tmp_path):
    s = Session(tmp_path / "build", tmp_path / "golden")
    yield s
    s.close()


def _case(tmp_path, name, factory, formats, extra=""):
    d = tmp_path / "cases"
    d.mkdir(exist_ok=True)
    (d / "seq_models.py").write_text(MODELS)
    return load_case(write_case(d, name, TOKENS.format(factory=factory, formats=formats) + extra))


def test_a_model_right_at_every_length_passes_in_every_dynamic_format(tmp_path, session):
    case = _case(tmp_path, "clean", "mean_pool", "[torchscript, onnx, pt2]")
    run = session.case_run(case)
    assert [list(v.values())[0] for v in case.shape_variants()] == [8, 5, 12]  # the export size first
    assert run.variant_inputs({"seq": 12})["ids"].shape == (3, 12)
    for fmt in ("torchscript", "onnx", "pt2"):
        result = session.run_check(case, fmt, "cpu", "shape_invariance")
        assert result.status == "passed", (fmt, result.message)
        assert set(result.metrics["error_by_size"]) == {"seq=8", "seq=5", "seq=12"}
        assert result.metrics["scaled_error"] < 1e-5
    assert "ids[1]=seq" in run.artefact_info("onnx")["dynamic_axes"]
    assert "ids[1]=seq" in run.artefact_info("pt2")["dynamic_axes"]


def test_an_artefact_right_only_at_its_export_length_fails_and_says_why(tmp_path, session):
    """The planted bug: the traced program divides by the export length at every length."""
    case = _case(tmp_path, "baked", "length_baked", "[torchscript, pt2]")
    parity = session.run_check(case, "torchscript", "cpu", "parity")
    assert parity.status == "passed", parity.message  # at the export size nothing is wrong
    result = session.run_check(case, "torchscript", "cpu", "shape_invariance")
    assert result.status == "failed", result.message
    assert SPECIALISED_HINT.format(export="seq=8") in result.message
    assert "seq=12 output" in result.message and "seq=5 output" in result.message
    errors = result.metrics["error_by_size"]
    assert errors["seq=8"] < 1e-5 and errors["seq=12"] > 0.1 and errors["seq=5"] > 0.1
    assert "exporter warning" in result.message  # the tracer's own warning, as evidence
    # torch.export will not bake the length in: it keeps the batch dynamic only and says why, and the
    # program then refuses the other lengths (a guard) instead of computing them wrong
    strict = session.run_check(case, "pt2", "cpu", "shape_invariance")
    assert strict.status == "failed", strict.message
    assert "could not be exported dynamic, only the batch" in strict.message
    assert set(strict.metrics["rejected_sizes"]) == {"seq=5", "seq=12"}


def test_an_artefact_with_a_fixed_length_is_a_failure_naming_the_sizes_it_rejects(tmp_path, session):
    case = _case(tmp_path, "fixed", "mean_pool", "[onnx]", "export:\n  onnx: {function: 'seq_models:static_onnx'}\n")
    result = session.run_check(case, "onnx", "cpu", "shape_invariance")
    assert result.status == "failed", result.message
    assert "seq=12: the artefact does not run at this size" in result.message
    assert "seq=5: the artefact does not run at this size" in result.message
    assert "does not accept other sizes of a dynamic axis" in result.message
    assert set(result.metrics["rejected_sizes"]) == {"seq=5", "seq=12"}
    assert result.metrics["error_by_size"]["seq=8"] < 1e-5


def test_image_sizes_through_a_named_axis_shared_by_height_and_width(tmp_path, session):
    d = tmp_path / "cases"
    d.mkdir()
    (d / "seq_models.py").write_text(MODELS)
    case = load_case(write_case(d, "images", """
        model: {factory: 'seq_models:pooled'}
        inputs: {x: {shape: [3, size, size]}}
        sizes: {size: [8, 12]}
        formats: [onnx, torchscript]
        backends: [cpu]
        """))
    assert case.sample_shape("x") == (3, 8, 8)  # the first listed size is the export size
    assert case.sample_shape("x", {"size": 12}) == (3, 12, 12)
    for fmt in ("onnx", "torchscript"):
        result = session.run_check(case, fmt, "cpu", "shape_invariance")
        assert result.status == "passed", result.message
        assert set(result.metrics["error_by_size"]) == {"size=8", "size=12"}


def test_other_sizes_leave_the_export_size_inputs_and_their_fingerprint_alone(tmp_path):
    with_sizes = _case(tmp_path, "a", "mean_pool", "[onnx]")
    d = tmp_path / "plain"
    d.mkdir()
    (d / "seq_models.py").write_text(MODELS)
    plain = load_case(write_case(d, "a", """
        model: {factory: 'seq_models:mean_pool'}
        inputs:
          ids: {shape: [8], dtype: int64, distribution: tokens, low: 1, high: 30, mask: mask}
          mask: {shape: [8], dtype: int64, distribution: mask}
        batch_sizes: [1, 3]
        formats: [onnx]
        backends: [cpu]
        """))
    assert with_sizes.input_fingerprint() == plain.input_fingerprint()  # goldens of the export size stay valid
    from parity.pipeline.inputs import make_pool

    a, b = make_pool(with_sizes), make_pool(plain)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    longer = make_pool(with_sizes, {"seq": 12})
    assert longer["ids"].shape == (3, 12) and longer["mask"].shape == (3, 12)
    assert (longer["ids"][longer["mask"] == 0] == 0).all()  # pads where the mask is zero, at the new length too


def test_the_check_is_not_collected_for_a_case_without_dynamic_axes(tmp_path):
    from parity.checks import CHECKS

    d = tmp_path / "c"
    d.mkdir()
    (d / "seq_models.py").write_text(MODELS)
    case = load_case(write_case(d, "p", """
        model: {factory: 'seq_models:pooled'}
        inputs: {x: {shape: [3, 8, 8]}}
        formats: [onnx]
        """))
    assert not CHECKS["shape_invariance"].applies(case, "onnx")


def test_converters_core_ml_flexible_and_tflite_once_per_size(tmp_path, session):
    """Core ML converts a trace, so it inherits a baked length (and gets a bounded RangeDim per axis);
    TFLite has static shapes, so each size is its own export, traced there, and right."""
    pytest.importorskip("coremltools")
    pytest.importorskip("litert_torch")
    baked = _case(tmp_path, "baked", "length_baked", "[coreml]")
    result = session.run_check(baked, "coreml", "mil-ref", "shape_invariance")
    assert result.status == "failed", result.message
    assert SPECIALISED_HINT.format(export="seq=8") in result.message
    assert "seq ct.RangeDim(1, 12)" in session.case_run(baked).artefact_info("coreml")["dynamic_axes"]
    clean = _case(tmp_path, "clean", "mean_pool", "[tflite]")
    result = session.run_check(clean, "tflite", "cpu", "shape_invariance")
    assert result.status == "passed", result.message
    run = session.case_run(clean)
    assert run.artefact("tflite", {"seq": 12}).metadata["shape"] == "static: exported at seq=12 (batch 3)"
    assert run.artefact("tflite", {"seq": 8}) is run.artefact("tflite")  # the export size is the case's own
