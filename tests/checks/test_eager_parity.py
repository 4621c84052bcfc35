"""The parity check: what it says beside the figures."""

from __future__ import annotations

from conftest import SMALL_CASE, write_case
from parity.catalog import load_case
from parity.checks.eager_parity import INT8_WITHOUT_ACCURACY
from parity.session import Session


def test_int8_without_an_accuracy_section_says_what_its_figure_means(case_dir, tmp_path):
    session = Session(tmp_path / "build", tmp_path / "golden")
    case = load_case(write_case(case_dir, "q", SMALL_CASE.replace("[torchscript, onnx]", "[onnx, onnx_int8]")))
    try:
        int8 = session.run_check(case, "onnx_int8", "cpu", "parity")
        fp32 = session.run_check(case, "onnx", "cpu", "parity")
    finally:
        session.close()
    assert INT8_WITHOUT_ACCURACY in int8.message
    assert "quantization noise" in INT8_WITHOUT_ACCURACY and "'accuracy' section" in INT8_WITHOUT_ACCURACY
    assert INT8_WITHOUT_ACCURACY not in fp32.message


def test_inputs_the_model_rejects_are_one_finding_naming_the_file_and_field(case_dir, tmp_path):
    """A per-sample shape the model cannot take: reference-failed, with the case file, 'inputs' and the
    call; every check of the case says the same, none skips."""
    path = write_case(case_dir, "wrong_shape", SMALL_CASE.replace("[3, 8, 8]", "[3, 4, 4]"))
    session = Session(tmp_path / "b", tmp_path / "g")
    case = load_case(path)
    results = [session.run_check(case, "onnx", "cpu", check) for check in ("parity", "batch_invariance")]
    session.close()
    for result in results:
        assert result.status == "error" and result.cause == "reference-failed", (result.cause, result.message)
        assert str(path) in result.message and ": inputs:" in result.message
        assert "x: float32[1, 3, 4, 4]" in result.message
        assert "Traceback" not in result.message
