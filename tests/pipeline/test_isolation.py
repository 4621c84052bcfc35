"""Crash isolation: an exporter that kills its process or hangs fails its format only."""

from __future__ import annotations

import time

from conftest import SMALL_CASE, write_case
from parity.session import Session
from parity.catalog import load_case

BODY = SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {function: 'models:FUNCTION', isolate: true, timeout_s: 8}\n"


def run_both(case_dir, tmp_path, function):
    case = load_case(write_case(case_dir, function, BODY.replace("FUNCTION", function)))
    session = Session(tmp_path / "b", tmp_path / "g")
    return (session.run_check(case, "onnx", "cpu", "parity"), session.run_check(case, "torchscript", "cpu", "parity"))


def leftovers(build) -> list[str]:
    """Hidden directories (temporary export and scratch dirs) left in the build dir."""
    return sorted(str(p.relative_to(build)) for p in build.rglob(".*") if p.is_dir())


def test_segfaulting_exporter_fails_only_its_format(case_dir, tmp_path):
    onnx, torchscript = run_both(case_dir, tmp_path, "crashing_export")
    assert onnx.status == "error"
    assert "crashed its process with signal 11 (SIGSEGV)" in onnx.message
    assert not onnx.message.rstrip().endswith("Last output:")
    assert torchscript.status == "passed"
    assert leftovers(tmp_path / "b") == []


def test_hanging_exporter_is_killed(case_dir, tmp_path):
    start = time.perf_counter()
    onnx, torchscript = run_both(case_dir, tmp_path, "hanging_export")
    assert onnx.status == "error" and "hung: killed after 8 s" in onnx.message
    assert time.perf_counter() - start < 60
    assert torchscript.status == "passed"
    assert leftovers(tmp_path / "b") == []


def test_isolated_export_matches_in_process_export(case_dir, tmp_path):
    body = SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {isolate: true}\n"
    result = Session(tmp_path / "b", tmp_path / "g").run_check(load_case(write_case(case_dir, "iso", body)),
                                                               "onnx", "cpu", "parity")
    assert result.status == "passed", result.message
    assert result.metrics["artefact"]["isolated"] is True
    assert result.metrics["artefact"]["opset_written"] == 18


def test_error_inside_isolated_exporter_is_reported(case_dir, tmp_path):
    body = SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {function: 'models:broken_export', isolate: true}\n"
    result = Session(tmp_path / "b", tmp_path / "g").run_check(load_case(write_case(case_dir, "br", body)),
                                                               "onnx", "cpu", "parity")
    assert result.status == "error"
    assert "converter exploded: unsupported operator aten::frobnicate" in result.message
