"""tflite_onnx2tf: parity's ONNX export converted by onnx2tf, run on the LiteRT backends.

One session (module fixture) serves every case here, so onnx2tf is imported once in its export
worker: a clean small CNN matches eager on ``cpu`` and ``cpu-ref``; a case whose own ONNX step
perturbs a weight fails parity with cause ``numerics``; an output whose channels-last form has the
same shape as the case's is transposed back because onnx2tf says it is channels-last; an ONNX op onnx2tf
has no conversion for is ``unsupported`` with the op named; a missing package skips with the pip
line. One in-process conversion checks that onnx2tf's changes to its process are put back.
"""

from __future__ import annotations

import os
import random
import sys
import warnings

import numpy as np
import pytest

import parity._triton_first  # noqa: F401  (before anything imports tensorflow)

pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_litert")

from conftest import MODELS, SMALL_CASE, write_case  # noqa: E402

#: Models and export functions for these cases, written beside the case files.
ONNX2TF_MODELS = MODELS + '''

def perturbing_onnx_step(model, example_inputs, path, factor=1.01):
    """A user's own route with a bug in its ONNX step: the classifier's weight scaled by `factor` in
    the ONNX file, which parity's onnx2tf conversion then converts faithfully."""
    import onnx
    from onnx import numpy_helper
    from parity.formats.onnx.export import export as onnx_export
    from parity.formats.tflite.onnx2tf_export import convert, pin_batch

    onnx_path = path.parent / "step.onnx"
    onnx_export(model, example_inputs, onnx_path, input_names=["x"], output_names=["logits"])
    proto = onnx.load(str(onnx_path))
    weight = next(i for i in proto.graph.initializer if i.name.endswith("fc.weight"))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * factor, weight.name))
    onnx.save(proto, str(onnx_path))
    pin_batch(onnx_path, int(example_inputs[0].shape[0]))
    metadata = convert(onnx_path, path, input_names=["x"])
    onnx_path.unlink()
    return metadata


class Square(nn.Module):
    """(N, 8, 8, 8) out of (N, 3, 8, 8): the output's channels-last form has the case's shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def square():
    torch.manual_seed(1)
    return Square().eval()


def castlike_export(model, example_inputs, path):
    """An ONNX file holding CastLike (an op onnx2tf has no conversion for), through parity's onnx2tf step."""
    import onnx
    from onnx import TensorProto, helper
    from parity.formats.tflite.onnx2tf_export import convert

    batch = int(example_inputs[0].shape[0])
    graph = helper.make_graph(
        [helper.make_node("CastLike", ["x", "x"], ["cast"]), helper.make_node("Flatten", ["cast"], ["flat"]),
         helper.make_node("Slice", ["flat", "start", "end", "axis"], ["logits"])],
        "castlike", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        [helper.make_tensor("start", TensorProto.INT64, [1], [0]), helper.make_tensor("end", TensorProto.INT64, [1], [5]),
         helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    onnx_path = path.parent / "castlike.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(onnx_path))
    return convert(onnx_path, path, input_names=["x"])
'''

ROUTE = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [tflite_onnx2tf]").replace(
    "backends: [cpu]", "backends: [cpu, cpu-ref]") + "checks: [parity]\n"


@pytest.fixture(scope="module")
def route(tmp_path_factory):
    """run(case name, case body, backend) -> CheckResult of parity on tflite_onnx2tf, in one session."""
    from parity.catalog import load_case
    from parity.session import Session

    root = tmp_path_factory.mktemp("onnx2tf")
    cases = root / "cases"
    cases.mkdir()
    (cases / "models.py").write_text(ONNX2TF_MODELS, encoding="utf-8")
    session = Session(root / "build", root / "golden")
    results: dict = {}

    def run(name: str, body: str, backend: str = "cpu"):
        if (name, backend) not in results:
            results[name, backend] = session.run_check(load_case(write_case(cases, name, body)), "tflite_onnx2tf",
                                                       backend, "parity")
        return results[name, backend]

    yield run
    session.close()


@pytest.mark.parametrize("backend", ["cpu", "cpu-ref"])
def test_clean_model_matches_eager(route, backend):
    result = route("clean", ROUTE, backend)
    assert result.status == "passed", result.message
    artefact = result.metrics["artefact"]
    assert artefact["exporter"].startswith("onnx2tf.convert")
    assert artefact["onnx_step"]["exporter"] == "dynamo" and artefact["onnx_step"]["batch"] == "pinned to 3"
    assert artefact["kept_channels_first"] == ["x"]  # the case's NCHW tensor goes in as it is
    assert artefact["layout"]["inputs"] == {"x": "as the case"}
    assert "resized to 1" in artefact["batch"]  # one conversion at batch 3, checked to resize


def test_perturbed_onnx_step_fails_on_numerics(route):
    body = ROUTE + "export:\n  tflite_onnx2tf: {function: 'models:perturbing_onnx_step'}\n"
    result = route("perturbed", body)
    assert result.status == "failed" and result.cause == "numerics", (result.status, result.cause, result.message)
    assert result.metrics["artefact"]["exporter"].startswith("onnx2tf.convert")  # the conversion itself ran


def test_channels_last_output_is_transposed_back_as_onnx2tf_declares(route):
    """(N, 8, 8, 8) fits both layouts: one run of the .tflite beside onnxruntime on the ONNX file at
    export finds it channels-last. Read as the case's layout (the shape rule's tie-break), the values
    are transposed and parity fails."""
    result = route("square", ROUTE.replace("models:small", "models:square").replace("outputs: [logits]",
                                                                                     "outputs: [features]"))
    assert result.status == "passed", result.message
    artefact = result.metrics["artefact"]
    assert artefact["layout_declared"]["outputs"] == {"features": "channels-last"}
    assert artefact["layout"]["outputs"] == {"features": "channels-last"}
    assert any("outputs features are channels-last (NHWC)" in note for note in artefact["notes"])


def test_op_without_conversion_is_unsupported_and_named(route):
    body = ROUTE + "export:\n  tflite_onnx2tf: {function: 'models:castlike_export'}\n"
    result = route("castlike", body)
    assert result.status == "error" and result.cause == "unsupported", (result.cause, result.message)
    assert "no conversion for op CastLike" in result.why
    assert "onnx2tf 1.29.24: CastLike OP is not yet implemented." in result.message
    assert "Read this and deal with it" not in result.message  # onnx2tf's boilerplate advice is left out


def test_the_route_is_opt_in(case_dir):
    """Only cases that list tflite_onnx2tf run it (a conversion costs seconds to minutes), beside tflite."""
    from parity.catalog import load_case
    from parity.formats import FORMATS

    default = load_case(write_case(case_dir, "d", SMALL_CASE.replace("formats: [torchscript, onnx]\n", "")))
    assert "tflite" in default.formats and "tflite_onnx2tf" not in default.formats
    listed = load_case(write_case(case_dir, "l", SMALL_CASE.replace("[torchscript, onnx]", "[tflite, tflite_onnx2tf]")))
    assert listed.formats == ["tflite", "tflite_onnx2tf"]
    route, tflite = FORMATS["tflite_onnx2tf"], FORMATS["tflite"]
    assert (route.runner, route.backends, route.precision) == (tflite.runner, tflite.backends, "fp32")


def test_missing_onnx2tf_skips_with_the_pip_line(monkeypatch, tmp_path):
    import importlib.util

    from parity.catalog import load_case
    from parity.session import Session

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx2tf" else find_spec(name, *a))
    (tmp_path / "models.py").write_text(MODELS, encoding="utf-8")
    case = load_case(write_case(tmp_path, "small", ROUTE))
    result = Session(tmp_path / "build", tmp_path / "golden").run_check(case, "tflite_onnx2tf", "cpu", "parity")
    assert result.status == "skipped"
    assert result.message.startswith("tflite_onnx2tf skipped: onnx2tf not installed; pip install 'parity[tflite,onnx]'")
    assert "pip install --no-deps onnx2tf==1.29.24 " in result.message


def test_conversion_puts_back_what_onnx2tf_changes(tmp_path):
    """onnx2tf sets a recursion limit of 2**31-1, silences every warning, seeds the random modules and
    sets TF_USE_LEGACY_KERAS and CUDA_VISIBLE_DEVICES as it is imported and run: the export worker
    serves other formats afterwards, so each is put back. The file it writes takes NCHW input."""
    import onnx
    from onnx import TensorProto, helper

    from parity.formats.tflite.onnx2tf_export import convert

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 5])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "relu.onnx"))
    limit, filters = sys.getrecursionlimit(), list(warnings.filters)
    environment = {k: os.environ.get(k) for k in ("TF_USE_LEGACY_KERAS", "CUDA_VISIBLE_DEVICES")}
    random.seed(7)
    np.random.seed(7)
    expected = random.random(), np.random.rand()
    random.seed(7)
    np.random.seed(7)
    metadata = convert(tmp_path / "relu.onnx", tmp_path / "relu.tflite")
    assert (sys.getrecursionlimit(), list(warnings.filters)) == (limit, filters)
    assert {k: os.environ.get(k) for k in environment} == environment
    assert (random.random(), np.random.rand()) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relu.onnx", "relu.tflite"]  # its scratch folder is gone
    assert metadata["kept_channels_first"] == ["x"]

    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(model_path=str(tmp_path / "relu.tflite"))
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert got.shape == (2, 4, 5, 3)  # onnx2tf keeps no output channels-first: the runner transposes it back
    assert metadata["layout_declared"]["outputs"] == {}  # the shape alone says so
    np.testing.assert_array_equal(np.moveaxis(got, -1, 1), np.maximum(x, 0))
