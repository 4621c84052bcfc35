"""Precision sensitivity finds the badly quantized layer, and re-quantizing without it meets the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import write_case
from parity.catalog import load_case
from parity.session import Session
from parity.sensitivity import _own_sqnr, sensitivity, unsupported
from parity.triage import main

ROOT = Path(__file__).parents[1]

#: parity's ONNX INT8 route with one weight quantized with scales `factor` times too large, through
#: onnxruntime's own TensorQuantOverrides (a layer calibrated badly); nodes_to_exclude as the route takes it
PLANTED = '''
import numpy as np


def overridden_int8(model, example_inputs, path, tensor="features.3.weight", factor=100.0, nodes_to_exclude=()):
    import onnx
    from onnx import numpy_helper

    from parity.formats.onnx.export import export
    from parity.formats.onnx.quantize import quantize_onnx
    from parity.formats.quantize import via_fp32
    from parity.pipeline.datasets import load

    calibration = {"image": load("digits", "calibration")[0].astype(np.float32)}

    def quantize(fp32):
        weight = next(numpy_helper.to_array(t) for t in onnx.load(str(fp32)).graph.initializer if t.name == tensor)
        scales = factor * np.abs(weight).reshape(len(weight), -1).max(1) / 63  # 7-bit weights (reduce_range)
        overrides = {tensor: [{"axis": 0, "scale": np.float32(s), "zero_point": np.int8(0)} for s in scales]}
        quantize_onnx(fp32, path, calibration, "static", True, True, nodes_to_exclude,
                      extra_options={"TensorQuantOverrides": overrides})

    return via_fp32(export, ".onnx", model, example_inputs, ["image"], ["logits"], quantize)
'''

#: the digits CNN with its trained weights and accuracy gate, on the cpu backend; BATCHES and FORMATS to fill
DIGITS_CASE = """
model:
  factory: parity_examples.zoo:digits_cnn
  weights: weights/digits_cnn.safetensors
  seed: 0
inputs:
  image: {shape: [1, 8, 8], distribution: uniform, low: 0.0, high: 1.0}
outputs: [logits]
batch_sizes: BATCHES
formats: FORMATS
backends: [cpu]
accuracy:
  evaluation: {source: digits, split: test}
  calibration: {source: digits, split: calibration}
  max_accuracy_drop: 1.0
  min_top1_agreement: 0.97
"""

DIGITS = DIGITS_CASE.replace("BATCHES", "[1, 8]").replace("FORMATS", "[onnx, onnx_int8]")

PLANTED_CASE = DIGITS + "export:\n  onnx_int8: {function: 'planted:overridden_int8'}\n"


def digits_cases(root: Path) -> Path:
    """root/cases, holding the digits CNN's trained weights that DIGITS_CASE loads."""
    d = root / "cases"
    (d / "weights").mkdir(parents=True)
    shutil.copy(ROOT / "cases" / "weights" / "digits_cnn.safetensors", d / "weights")
    return d


def sensitivity_runs(root: Path, d: Path, planted: str, fmt: str, backend: str, *cli: str) -> dict:
    """`parity triage <planted> -f <fmt> <cli...> --sensitivity --json ...` on the cases in `d`, run once
    (its exit code, printed text and JSON report), and the sensitivity report of the case named clean
    (one candidate re-exported), both building under root/build."""
    import contextlib
    import io

    out = root / "sensitivity.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([planted, "-f", fmt, *cli, "--sensitivity", "--cases", str(d), "--build", str(root / "build"),
                     "--json", str(out)])
    session = Session(root / "build", root / "golden")
    try:
        clean = sensitivity(session.case_run(load_case(d / "clean.yaml", root=d)), fmt, backend,
                            workdir=root / "clean-work", max_candidates=1)
    finally:
        session.close()
    return {"code": code, "text": printed.getvalue(), "report": json.loads(out.read_text()), "clean": clean,
            "build": root / "build", "dir": d}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("sensitivity")
    d = digits_cases(root)
    (d / "planted.py").write_text(PLANTED)
    write_case(d, "planted", PLANTED_CASE)
    write_case(d, "clean", DIGITS)
    session = Session(root / "build", root / "golden")
    yield {"dir": d, "build": root / "build", "session": session,
           **{name: session.case_run(load_case(d / f"{name}.yaml", root=d)) for name in ("planted", "clean")}}
    session.close()


@pytest.fixture(scope="module")
def planted(digits, tmp_path_factory):
    """`parity triage planted -f onnx_int8 --sensitivity --json ...` run once: (exit code, printed text, JSON)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("planted") / "sensitivity.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["planted", "-f", "onnx_int8", "--sensitivity", "--cases", str(digits["dir"]),
                     "--build", str(digits["build"]), "--json", str(out)])
    return code, printed.getvalue(), json.loads(out.read_text())


def test_the_badly_calibrated_layer_ranks_first_and_keeping_it_in_fp32_meets_the_gate(digits, planted):
    _, text, report = planted
    ranked = sorted(report["layers"], key=lambda r: r["rank"])
    assert [(r["op"], r["module"]) for r in ranked][0] == ("Conv", "features.3"), text
    assert {r["module"] for r in ranked} == {"features.0", "features.3", "classifier"}
    culprit = ranked[0]["node"]
    assert ranked[0]["own_sqnr_db"] < 10 < min(r["own_sqnr_db"] for r in ranked[1:]), text

    assert report["gate_kind"] == "accuracy"
    baseline, final = report["baseline"], report["final"]
    assert not baseline["met"] and baseline["figures"]["accuracy_drop"] > 10, text
    assert report["recommended"] == [culprit] and report["met"] is True
    assert final["met"] and final["excluded"] == [culprit]
    assert final["figures"]["accuracy"] >= final["figures"]["fp32_accuracy"] - 1.0
    assert final["figures"]["top1_agreement"] >= 0.97
    assert ranked[0]["alone"]["met"] and ranked[0]["alone"]["accuracy"] == final["figures"]["accuracy"]
    assert report["recommendation"].startswith(f"keep {culprit} (Conv, features.3) in fp32: accuracy "
                                               f"{baseline['figures']['accuracy']:.2f}% -> "
                                               f"{final['figures']['accuracy']:.2f}%, gate met (max drop 1 point(s)")
    assert f"nodes_to_exclude: [{culprit}]" in report["recommendation"]
    # the re-quantized artefact the figure came from really keeps that conv's weight in float
    import onnx

    files = sorted(digits["build"].rglob("sensitivity/onnx_int8-cpu/exclude-0.onnx"))  # the first: rank 1 alone
    graph = onnx.load(str(files[0])).graph
    conv = next(n for n in graph.node if n.name == culprit)
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert producers.get(conv.input[1]) != "DequantizeLinear"
    assert conv.input[1] in {i.name for i in graph.initializer}


def test_a_clean_int8_artefact_needs_nothing_kept_in_fp32(digits, tmp_path):
    report = sensitivity(digits["clean"], "onnx_int8", "cpu", workdir=tmp_path / "work", max_candidates=1)
    assert report.baseline.met and report.met, report.table()
    assert report.recommended == [] and report.steps == []
    assert report.recommendation.startswith("gate already met as exported (accuracy ")
    assert report.recommendation.endswith("nothing to keep in higher precision")
    assert all(r.sqnr_db > 25 for r in report.layers), report.table()  # every layer quantized fine
    assert sum(r.alone is not None for r in report.layers) == 1


def test_cli_flag_prints_the_table_naming_the_layer(planted):
    code, text, report = planted
    assert code == 1, text  # as exported, the artefact fails its gate
    assert text.startswith("precision sensitivity of planted / onnx_int8 / cpu\ngate: max drop 1 point(s)")
    line = next(line for line in text.splitlines() if line.startswith("1 "))
    assert line.split()[1:4] == [report["recommended"][0], "Conv", "features.3"], text
    assert f"keep {report['recommended'][0]} (Conv, features.3) in fp32: accuracy" in text
    assert "as exported: accuracy" in text and "gate failed (accuracy" in text


def test_formats_without_a_route_say_which_formats_have_one(digits, capsys):
    code = main(["clean", "-f", "coreml_int8", "--sensitivity", "--cases", str(digits["dir"]),
                 "--build", str(digits["build"])])
    text = capsys.readouterr().out
    assert code == 2
    assert "precision sensitivity supports onnx_int8, coreml_fp16, tflite_int8" in text, text
    assert "coreml_int8: coremltools' linear quantizer takes per-op configs (op_name_configs)" in text, text
    assert unsupported("coreml_fp16") is None and unsupported("tflite_int8") is None
    assert "not a reduced-precision format" in unsupported("onnx")
    assert unsupported("onnx_int8") is None


def test_own_sqnr_is_the_noise_a_layer_adds():
    assert _own_sqnr(30.0, None) == 30.0  # the first layer: all of its noise is its own
    assert _own_sqnr(20.0, 20.0) == 120.0  # no noisier than its input: adds none
    assert abs(_own_sqnr(10 * __import__("math").log10(1 / 0.02), 20.0) - 20.0) < 1e-9  # 0.02 = 0.01 + 0.01


def test_without_an_accuracy_section_the_gate_is_the_tolerance_and_an_own_function_must_take_the_option(case_dir,
                                                                                                        tmp_path):
    write_case(case_dir, "small_int8", """
        model: {factory: 'models:small'}
        inputs: {x: {shape: [3, 8, 8]}}
        batch_sizes: [1, 4]
        formats: [onnx, onnx_int8]
        backends: [cpu]
        export:
          onnx_int8: {function: 'models:badly_calibrated_int8_export'}
        """)
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        report = sensitivity(session.case_run(load_case(case_dir / "small_int8.yaml", root=case_dir)), "onnx_int8")
    finally:
        session.close()
    assert report.gate_kind == "tolerance"
    assert report.gate == "the outputs within the case's onnx_int8 tolerance"
    assert report.gate_source.startswith("the case has no accuracy section, so the gate is the parity comparison")
    assert [r.op for r in sorted(report.layers, key=lambda r: r.rank)] != [] and report.steps == []
    why = "the case's export function models:badly_calibrated_int8_export takes no nodes_to_exclude option"
    assert why in report.method, report.table()
    assert all(r.alone is None for r in report.layers)  # nothing re-quantized, so nothing is claimed
    assert report.baseline.met, report.table()  # calibrated on its own inputs: within the int8 tolerance
    assert report.recommendation == "gate already met as exported: nothing to keep in higher precision"


#: a projection whose outputs exceed fp16's largest value (65504) while its weights stay inside it (so
#: coremltools casts it to fp16), then a LayerNorm that would bring them back into range: in fp16 the
#: projection overflows to inf and the norm makes NaN; `scale` 1 is the clean model
FP16_MODELS = '''
import torch


class Projected(torch.nn.Module):
    def __init__(self, scale=1e4):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Linear(64, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 4)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(16, 64, generator=generator) * scale)
            self.embed.bias.zero_()

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.embed(x))))


def overflowing():
    return Projected(1e4)


def clean():
    return Projected(1.0)
'''

FP16_CASE = """
model: {{factory: 'fp16models:{factory}'}}
inputs:
  x: {{shape: [64], distribution: uniform, low: 0.0, high: 1.0}}
outputs: [y]
batch_sizes: [1, 4]
formats: [coreml, coreml_fp16]
backends: [mil-ref]
"""


@pytest.fixture(scope="module")
def fp16(tmp_path_factory):
    """`parity triage overflowing -f coreml_fp16 -b mil-ref --sensitivity` run once, and the clean model's report."""
    root = tmp_path_factory.mktemp("fp16")
    d = root / "cases"
    d.mkdir()
    (d / "fp16models.py").write_text(FP16_MODELS)
    for name in ("overflowing", "clean"):
        write_case(d, name, FP16_CASE.format(factory=name))
    return sensitivity_runs(root, d, "overflowing", "coreml_fp16", "mil-ref", "-b", "mil-ref")


def test_the_overflowing_fp16_op_ranks_first_and_keeping_it_in_fp32_meets_the_gate(fp16):
    text, report = fp16["text"], fp16["report"]
    ranked = sorted(report["layers"], key=lambda r: r["rank"])
    first = ranked[0]
    assert (first["op"], first["module"]) == ("linear", "embed"), text
    assert first["sqnr_db"] == float("-inf") and first["own_sqnr_db"] == float("-inf"), text
    assert {r["module"] for r in ranked} >= {"embed", "norm", "head"}, text  # and the functional relu: ""
    norm = next(r for r in ranked if r["op"] == "layer_norm")
    assert first["keep_with"] == [norm["node"]], text  # its fp32 output overflows at the cast back to fp16
    assert norm["own_sqnr_db"] == 120.0  # its input is already inf: nothing measurable is its own

    assert report["gate_kind"] == "tolerance" and fp16["code"] == 1
    baseline, final = report["baseline"], report["final"]
    assert not baseline["met"], text
    assert report["recommended"] == [first["node"], norm["node"]] and report["met"] is True, text
    assert final["met"] and final["figures"]["scaled_error"] < 1e-2, text  # within the fp16 tolerance
    assert first["alone"]["met"], text
    assert report["recommendation"].startswith(f"keep {first['node']} (linear, embed), {norm['node']} (layer_norm, "
                                               f"norm) in fp32: error "), text
    assert "verified by re-converting with fp32_ops" in report["recommendation"]
    assert report["recommendation"].endswith(
        f"export: {{coreml_fp16: {{options: {{fp32_ops: [{first['node']}, {norm['node']}]}}}}}}"), text
    assert text.startswith("precision sensitivity of overflowing / coreml_fp16 / mil-ref\ngate: the outputs within")
    assert f"(gate met, with {norm['node']})" in text
    # the re-converted package the figure came from really computes those two ops in fp32, the head in fp16
    from parity.formats.coreml.mil_ref import Evaluator, load_program

    package = next(fp16["build"].rglob("sensitivity/coreml_fp16-mil-ref/exclude-0.mlpackage"))
    ops = {op.name: op for op in Evaluator(load_program(package)[0]).ops}
    assert ops[first["node"]].outputs[0].dtype.__name__ == "fp32"
    assert ops[norm["node"]].outputs[0].dtype.__name__ == "fp32"
    assert any(name.endswith("_cast_fp16") and op.op_type == "linear" for name, op in ops.items())


def test_the_recommended_fp32_ops_option_applies_as_written_and_a_wrong_name_is_refused(fp16, tmp_path):
    import torch

    from parity.formats.coreml.export import export_fp16
    from parity.formats.coreml.mil_ref import Evaluator, load_program

    import importlib.util

    spec = importlib.util.spec_from_file_location("fp16models", fp16["dir"] / "fp16models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    model, x = models.overflowing().eval(), torch.rand(4, 64)
    keep = fp16["report"]["recommended"]
    meta = export_fp16(model, (x,), tmp_path / "kept.mlpackage", input_names=["x"], output_names=["y"], fp32_ops=keep)
    assert meta["fp32_ops"] == sorted(keep)
    got = Evaluator(load_program(tmp_path / "kept.mlpackage")[0]).run({"x": x.numpy()})["y"]
    with torch.no_grad():
        want = model(x).numpy()
    assert abs(got - want).max() < 1e-2 * abs(want).max()
    with pytest.raises(ValueError, match=r"fp32_ops names linear_9, which the program has no op of that name; its "
                                         r"ops: .*linear_0"):
        export_fp16(model, (x,), tmp_path / "wrong.mlpackage", input_names=["x"], output_names=["y"],
                    fp32_ops=["linear_9"])


def test_a_clean_fp16_package_needs_nothing_kept_in_fp32(fp16):
    report = fp16["clean"]
    assert report.baseline.met and report.met, report.table()
    assert report.recommended == [] and report.steps == []
    assert report.recommendation.startswith("gate already met as exported (error ")
    assert {r.op for r in report.layers} >= {"linear", "layer_norm"}, report.table()
    assert all(r.sqnr_db > 40 and not r.keep_with for r in report.layers), report.table()  # fp16 rounding only
    assert report.unmatched == [], report.table()


#: the digits CNN through parity's tflite_int8 route, its second convolution (features.3, whose fused
#: ReLU is features.5: the scope regex ``ReLU_5;``) given 2-bit tensorwise weights by one more recipe
#: entry of ai-edge-quantizer's own (weight-only, dequantized before the float conv)
TFLITE_DIGITS = DIGITS_CASE.replace("BATCHES", "[8]").replace("FORMATS", "[tflite, tflite_int8]")

TWO_BIT = """export:
  tflite_int8:
    options:
      recipe:
        - regex: 'ReLU_5;'
          operation: '*'
          algorithm_key: min_max_uniform_quantize
          op_config:
            weight_tensor_config: {num_bits: 2, symmetric: true, granularity: TENSORWISE, dtype: INT}
            compute_precision: FLOAT
            explicit_dequantize: true
            skip_checks: true
"""


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    """`parity triage two_bit -f tflite_int8 --sensitivity` run once, and the clean digits model's report."""
    root = tmp_path_factory.mktemp("tflite")
    d = digits_cases(root)
    write_case(d, "two_bit", TFLITE_DIGITS + TWO_BIT)
    write_case(d, "clean", TFLITE_DIGITS)
    return sensitivity_runs(root, d, "two_bit", "tflite_int8", "cpu")


def test_the_two_bit_tflite_conv_ranks_first_and_keeping_it_in_float_meets_the_gate(tflite):
    text, report = tflite["text"], tflite["report"]
    ranked = sorted(report["layers"], key=lambda r: r["rank"])
    assert [(r["node"], r["op"], r["module"]) for r in ranked][0] == ("ReLU_5;", "CONV_2D", "features.3"), text
    assert {(r["op"], r["module"]) for r in ranked} == {("DEPTHWISE_CONV_2D", "features.0"),
                                                         ("CONV_2D", "features.3"),
                                                         ("FULLY_CONNECTED", "classifier")}, text
    assert ranked[0]["own_sqnr_db"] < 5 < 25 < min(r["own_sqnr_db"] for r in ranked[1:]), text
    assert report["unmatched"] == []

    assert report["gate_kind"] == "accuracy" and tflite["code"] == 1
    baseline, final = report["baseline"], report["final"]
    assert not baseline["met"] and baseline["figures"]["accuracy_drop"] > 10, text
    assert report["recommended"] == ["ReLU_5;"] and report["met"] is True, text
    assert final["met"] and final["excluded"] == ["ReLU_5;"], text
    assert final["figures"]["accuracy"] >= final["figures"]["fp32_accuracy"] - 1.0
    assert final["figures"]["top1_agreement"] >= 0.97
    assert ranked[0]["alone"]["met"] and not any(r["alone"]["met"] for r in ranked[1:]), text
    assert report["recommendation"].startswith(
        f"keep ReLU_5; (CONV_2D, features.3) in fp32: accuracy {baseline['figures']['accuracy']:.2f}% -> "
        f"{final['figures']['accuracy']:.2f}%, gate met (max drop 1 point(s)"), text
    assert "verified by re-quantizing with float_ops" in report["recommendation"]
    assert report["recommendation"].endswith("export: {tflite_int8: {options: {float_ops: [ReLU_5;]}}}"), text
    assert text.startswith("precision sensitivity of two_bit / tflite_int8 / cpu\ngate: max drop 1 point(s)")
    # the re-quantized file the figure came from computes that conv in float: float weights, float output,
    # a DEQUANTIZE before it and a QUANTIZE after it; the other two layers stay INT8
    from parity.formats.tflite.sensitivity import _graph

    graph = _graph(next(tflite["build"].rglob("sensitivity/tflite_int8-cpu/exclude-0.tflite")))
    tensors = graph.model.subgraphs[0].tensors
    kinds = [kind for kind, _, _ in graph.ops]
    conv = kinds.index("CONV_2D")
    _, ins, outs = graph.ops[conv]
    assert tensors[ins[1]].type == tensors[outs[0]].type == 0  # FLOAT32
    assert kinds[conv - 1] == "DEQUANTIZE" and kinds[conv + 1] == "QUANTIZE", kinds
    for other in ("DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        assert tensors[graph.ops[kinds.index(other)][2][0]].type == 9  # INT8


def test_a_clean_tflite_int8_artefact_needs_nothing_kept_in_float(tflite):
    report = tflite["clean"]
    assert report.baseline.met and report.met, report.table()
    assert report.recommended == [] and report.steps == []
    assert report.recommendation.startswith("gate already met as exported (accuracy ")
    assert [r.node for r in report.layers] == ["ReLU_2;", "ReLU_5;", "serving_default_output_0_output;"]
    assert all(r.sqnr_db > 25 for r in report.layers), report.table()  # every layer quantized fine
    assert report.unmatched == [] and sum(r.alone is not None for r in report.layers) == 1


def test_float_ops_that_match_no_op_are_refused_naming_the_scopes():
    from parity.formats.tflite.quantize import float_recipe

    scopes = [("CONV_2D", "a/torch.nn.modules.activation.ReLU_5;;a/torch.nn.modules.conv.Conv2d_3;1;"),
              ("FULLY_CONNECTED", "serving_default_output_0_output;")]
    entries, kept = float_recipe(["ReLU_5;"], scopes)
    assert entries == [{"regex": "ReLU_5;", "operation": "*", "algorithm_key": "no_quantize"}]
    assert kept == {"ReLU_5;": ["CONV_2D #0"]}
    with pytest.raises(ValueError, match=r"float_ops entry 'ReLU_9;' matches no op of the float model .*the ops' "
                                         r"scopes: #0 CONV_2D: a/torch.*; #1 FULLY_CONNECTED: serving_default"):
        float_recipe(["ReLU_9;"], scopes)
    with pytest.raises(ValueError, match=r"float_ops entry 'Conv2d_\(' is not a regular expression"):
        float_recipe(["Conv2d_("], scopes)


def test_scope_regex_picks_one_op_alone():
    from parity.formats.tflite.sensitivity import scope_regex

    scopes = ["m/torch.nn.modules.conv.Conv2d_0;1;",  # the RESHAPE before the depthwise conv carries its location
              "m/torch.nn.modules.activation.ReLU_2;;m/torch.nn.modules.conv.Conv2d_0;1;",
              "m/torch.nn.modules.activation.ReLU_2;;m/torch.nn.modules.conv.Conv2d_0;1;"]
    assert scope_regex(1, scopes[:2]) == "ReLU_2;"
    assert scope_regex(0, scopes[:2]) == "^" + __import__("re").escape(scopes[0]) + "$"
    assert scope_regex(2, scopes) == "^" + __import__("re").escape(scopes[2]) + "$"  # no regex tells twins apart
