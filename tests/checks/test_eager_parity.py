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
