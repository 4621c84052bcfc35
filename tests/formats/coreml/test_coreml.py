"""CoreML: export at an explicit precision, structural checks, the MIL reference evaluator end to end.

Through pytest (pytester): a clean model passes in FLOAT32 and FLOAT16 on ``mil-ref``; the Core ML
runtime backends are skipped with exactly "Core ML runtime requires macOS" on Linux; a conversion
whose weights were perturbed fails parity; a package that computes in the wrong precision, or was
converted from a model coremltools cannot convert, fails that format only, with the reason.
"""

from __future__ import annotations

import platform
import shutil

import pytest

import parity._triton_first  # noqa: F401  (before coremltools, which imports tensorflow)

pytest.importorskip("coremltools")

from conftest import SMALL_CASE, by_id, run_suite, write_case  # noqa: E402


COREML_MODELS = '''
import torch


def perturbing_coreml_export(model, example_inputs, path, layer="fc", factor=1.01, precision="fp32"):
    """A user's own CoreML export with a bug: one layer's weights scaled by `factor`."""
    from parity.formats.coreml.export import export

    with torch.no_grad():
        getattr(model, layer).weight.mul_(factor)
    return export(model, example_inputs, path, input_names=["x"], output_names=["logits"], precision=precision)


def default_precision_export(model, example_inputs, path):
    """Converted without compute_precision: coremltools' mlprogram default is FLOAT16."""
    import coremltools as ct

    traced = torch.jit.trace(model, example_inputs)
    batch = ct.RangeDim(1, example_inputs[0].shape[0])
    ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(batch, *example_inputs[0].shape[1:]))],
               outputs=[ct.TensorType(name="logits")], convert_to="mlprogram", skip_model_load=True).save(str(path))


class Bessel(torch.nn.Module):
    def forward(self, x):
        return torch.special.i0(x).flatten(1)


def bessel():
    return Bessel()
'''

SMALL_COREML = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [coreml, coreml_fp16]").replace(
    "backends: [cpu]", "backends: [mil-ref, cpu, gpu, ane]") + "checks: [parity]\n"


@pytest.fixture
def suite(pytester, case_dir):
    (case_dir / "coreml_models.py").write_text(COREML_MODELS, encoding="utf-8")

    def run(*args: str):
        result, records = run_suite(pytester, case_dir, *args)
        return result, by_id(records)

    return run


def test_clean_perturbed_and_broken(suite, case_dir):
    write_case(case_dir, "small", SMALL_COREML)
    bug = "export:\n  {fmt}: {{function: 'coreml_models:perturbing_coreml_export', options: {opts}}}\n"
    only = SMALL_CASE.replace("backends: [cpu]", "backends: [mil-ref]") + "checks: [parity]\n"
    write_case(case_dir, "bug32", only.replace("formats: [torchscript, onnx]", "formats: [coreml]")
               + bug.format(fmt="coreml", opts="{factor: 1.01}"))
    write_case(case_dir, "bug16", only.replace("formats: [torchscript, onnx]", "formats: [coreml_fp16]")
               + bug.format(fmt="coreml_fp16", opts="{factor: 1.05, precision: fp16}"))
    write_case(case_dir, "precision", only.replace("formats: [torchscript, onnx]", "formats: [coreml]")
               + "export:\n  coreml: {function: 'coreml_models:default_precision_export'}\n")
    write_case(case_dir, "bessel", only.replace("models:small", "coreml_models:bessel")
               .replace("formats: [torchscript, onnx]", "formats: [torchscript, coreml]").replace("[mil-ref]", "[cpu, mil-ref]")
               .replace("outputs: [logits]\n", ""))
    result, records = suite()

    # clean: both precisions pass on the MIL reference evaluator, fp16 with its own tolerance
    fp32, fp16 = records["small-coreml-mil-ref-parity"], records["small-coreml_fp16-mil-ref-parity"]
    assert fp32["status"] == fp16["status"] == "passed", (fp32["message"], fp16["message"])
    assert fp32["metrics"]["runner"].startswith("MIL reference evaluator") and "Core ML" not in fp32["metrics"]["runner"]
    assert fp32["metrics"]["scaled_error"] < 1e-5 < fp16["metrics"]["scaled_error"] < 1e-2
    artefact = fp16["metrics"]["artefact"]
    assert artefact["compute_precision"] == "FLOAT16" and artefact["compute_dtypes"].keys() == {"fp16"}
    assert fp32["metrics"]["artefact"]["compute_dtypes"].keys() == {"fp32"}
    assert artefact["inputs"]["x"]["range"][0] == [1, 3]  # flexible batch covers batch sizes 1 and 3
    assert artefact["outputs"]["logits"]["shape"] == ["*", 5]
    assert artefact["ops"]["linear"] == 1 and "conv" in artefact["ops"]
    for fmt in ("coreml", "coreml_fp16"):
        for backend in ("cpu", "gpu", "ane"):
            record = records[f"small-{fmt}-{backend}-parity"]
            if platform.system() != "Darwin":
                assert record["status"] == "skipped" and record["message"] == "Core ML runtime requires macOS"

    # planted bug: 1% on one layer fails in fp32; in fp16 (tolerance 1e-2) a 5% change fails
    for name in ("bug32-coreml", "bug16-coreml_fp16"):
        record = records[f"{name}-mil-ref-parity"]
        assert record["status"] == "failed", record["message"]
        assert record["metrics"]["artefact"]["source"] == "function:coreml_models:perturbing_coreml_export"
    assert records["bug32-coreml-mil-ref-parity"]["metrics"]["scaled_error"] > 1e-3

    # structural check: the coreml format promises fp32, this package computes in fp16
    precision = records["precision-coreml-mil-ref-parity"]
    assert precision["status"] == "error"
    assert "failed its structural checks" in precision["message"]
    assert "promises fp32 compute" in precision["message"] and "FLOAT16" in precision["message"]

    # a converter error fails only that format of that case, with the converter's message
    assert records["bessel-torchscript-cpu-parity"]["status"] == "passed"
    broken = records["bessel-coreml-mil-ref-parity"]
    assert broken["status"] == "error" and broken["cause"] == "unsupported"  # a converter limit, named
    assert broken["message"].startswith("export to coreml failed: the converter has no conversion for op i0: ")
    # the op and where it sits (coremltools logs them; its exception names neither), then its error
    assert ("the built-in coreml exporter raised RuntimeError: coremltools: converting 'i0' op (located at: "
            in broken["message"])
    assert "NotImplementedError: PyTorch convert function for op 'i0' not implemented" in broken["message"]
    assert len(broken["message"].splitlines()) <= 10


def test_prebuilt_package_for_other_input_shape_fails_structural_check(suite, case_dir, pytester):
    only = SMALL_COREML.replace("formats: [coreml, coreml_fp16]", "formats: [coreml]").replace(
        "backends: [mil-ref, cpu, gpu, ane]", "backends: [mil-ref]")
    write_case(case_dir, "small", only)
    _, built = suite()
    shutil.copytree(built["small-coreml-mil-ref-parity"]["metrics"]["artefact"]["path"], case_dir / "frozen.mlpackage")
    (case_dir / "small.yaml").write_text(only.replace("batch_sizes: [1, 3]", "batch_sizes: [1, 4]")
                                         + "export:\n  coreml: {artefact: frozen.mlpackage}\n")
    result, records = suite()
    result.assert_outcomes(failed=1)
    message = records["small-coreml-mil-ref-parity"]["message"]
    assert "input 'x' (position 0) does not accept the case's shape (4, 3, 8, 8) at batch size 4" in message


def test_missing_package_skips_with_install_command(monkeypatch, case_dir):
    from parity.formats.spec import FormatInfo
    from parity.session import Session
    from parity.catalog import load_case

    case = load_case(write_case(case_dir, "small", SMALL_COREML))
    monkeypatch.setattr(FormatInfo, "missing_modules", lambda self, framework="torch": ["coremltools"])
    result = Session(case_dir / "build", case_dir / "golden").run_check(case, "coreml_fp16", "mil-ref", "parity")
    assert result.status == "skipped"
    assert result.message == "coreml_fp16 skipped: coremltools not installed; pip install 'parity[coreml]'"


def test_runtime_skip_reason_is_exact_off_macos():
    from parity.formats.coreml.runner import CoreMLRunner
    from parity.formats.coreml.mil_ref.runner import MilReferenceRunner

    if platform.system() == "Darwin":
        pytest.skip("on macOS the Core ML runtime is available")
    for backend in ("cpu", "gpu", "ane"):
        assert CoreMLRunner.unavailable_reason(backend) == "Core ML runtime requires macOS"
    assert MilReferenceRunner.unavailable_reason("mil-ref") is None
    assert "no 'cpu' backend" in MilReferenceRunner.unavailable_reason("cpu")


def test_layer_zoo_converts_to_supported_ops_and_matches_eager(tmp_path):
    """The layer zoo in fp32 through coremltools and the evaluator: every op known, error at float level."""
    import numpy as np
    import torch

    from parity.formats.coreml.export import export
    from parity.formats.coreml.mil_ref import Evaluator, load_program
    from parity_examples.zoo import layer_zoo

    torch.manual_seed(0)
    model = layer_zoo(size=16)
    x = torch.randn(2, 3, 16, 16)
    meta = export(model, (x,), tmp_path / "zoo.mlpackage", input_names=["image"], output_names=["logits"])
    assert meta["compute_precision"] == "FLOAT32"
    evaluator = Evaluator(load_program(tmp_path / "zoo.mlpackage")[0])
    assert {"conv", "conv_transpose", "upsample_bilinear", "max_pool", "reduce_mean", "linear", "clip"} <= \
        set(evaluator.op_types)
    want = model(x).detach().numpy()
    for batch in (1, 2):
        got = evaluator.run({"image": x[:batch].numpy()})["logits"]
        assert np.abs(got - want[:batch]).max() <= 1e-5 * np.abs(want).max()


def test_an_op_without_a_kernel_is_not_reported_as_an_export_failure(case_dir, tmp_path):
    """coremltools lowers a GRU to a while_loop: the export succeeds and the message says the MIL
    reference evaluator, not the exporter, is what cannot go on."""
    from parity.catalog import load_case
    from parity.session import Session

    case = load_case(write_case(case_dir, "gru", """
        model: {factory: 'parity_examples.families:tagger', kwargs: {cell: gru}}
        inputs: {tokens: {shape: [6], dtype: int64, distribution: tokens, high: 50}}
        batch_sizes: [1, 2]
        formats: [coreml]
        backends: [mil-ref]
        """))
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        result = session.run_check(case, "coreml", "mil-ref", "parity")
    finally:
        session.close()
    assert result.status == "error" and result.cause == "unsupported", (result.cause, result.why)
    assert result.message.startswith("the coreml export succeeded, but MilReferenceRunner on mil-ref could not load")
    assert "the MIL reference evaluator has no kernel for op type(s)" in result.message
    assert "while_loop" in result.message and "export to coreml failed" not in result.message


def test_the_torch_export_route_beside_the_trace(case_dir, tmp_path):
    """coreml_pt2 reaches coremltools through torch.export: the clean model matches as through the
    trace; a BatchNorm left in training mode is a converter limit of that route, named as such."""
    from parity.catalog import load_case
    from parity.session import Session

    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [coreml, coreml_pt2]").replace(
        "backends: [cpu]", "backends: [mil-ref]") + "checks: [parity]\n"
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        clean = load_case(write_case(case_dir, "clean", body))
        trace, export = (session.run_check(clean, fmt, "mil-ref", "parity") for fmt in ("coreml", "coreml_pt2"))
        training = load_case(write_case(case_dir, "training", body.replace("models:small", "models:bn_train")))
        limit = session.run_check(training, "coreml_pt2", "mil-ref", "parity")
    finally:
        session.close()
    assert trace.status == export.status == "passed", export.message
    assert "torch.export.export(model)" in export.metrics["artefact"]["exporter"]
    assert "torch.jit.trace(model)" in trace.metrics["artefact"]["exporter"]
    assert limit.status == "error" and limit.cause == "unsupported", (limit.cause, limit.message)
    assert "no conversion for op _native_batch_norm_legit_functional" in limit.why
    assert "is the model in eval mode?" in limit.why
