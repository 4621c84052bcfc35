"""Blame: on a parity failure, the format's reference backends say whether the export or the
runtime is wrong. Real upstream bug (runtime), planted exporter bug (export), and the decision table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL_CASE, write_case
from parity.catalog import load_case
from parity.checks.blame import EXPORT, OPTIMISATION, RUNTIME, UNKNOWN, blame
from parity.session import Session
from parity.tolerance import ResolvedTolerance

#: The shipped canary of onnxruntime's nearest Resize (26 -> 64): the runtime is wrong, the file is right.
RESIZE_CANARY = Path(__file__).parents[2] / "cases" / "canaries" / "canary_ort_nearest_resize.yaml"


def _parity(case_dir, tmp_path, name, body):
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        return session.run_check(load_case(write_case(case_dir, name, body)), "onnx", "cpu", "parity")
    finally:
        session.close()


def test_a_runtime_bug_is_blamed_on_the_runtime(tmp_path):
    """The shipped canary, as docs/case-files.md lists it: onnxruntime's nearest Resize (26 -> 64) picks the
    wrong sample; onnx.reference agrees with eager, and so does nothing with optimisations off."""
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        result = session.run_check(load_case(RESIZE_CANARY), "onnx", "cpu", "parity")
    finally:
        session.close()
    assert result.status == "failed" and result.cause == "numerics"
    assert result.metrics["blame"]["verdict"] == RUNTIME
    assert result.metrics["blame"]["oracles"]["ref"]["agrees"] is True
    assert result.metrics["blame"]["oracles"]["cpu-noopt"]["agrees"] is False  # the kernel, not an optimisation
    assert result.why.startswith("the artefact's reference evaluation agrees with eager")
    assert "the runtime (onnxruntime" in result.why and "is wrong" in result.why
    assert "file it with the runtime" in result.fix
    assert "blame: the artefact's reference evaluation agrees" in result.message


def test_a_planted_exporter_bug_is_blamed_on_the_export(case_dir, tmp_path):
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]") + \
        "checks: [parity]\nexport:\n  onnx: {function: 'models:perturbing_export'}\n"
    result = _parity(case_dir, tmp_path, "perturbed", body)
    assert result.status == "failed" and result.cause == "numerics"
    assert result.metrics["blame"]["verdict"] == EXPORT
    assert result.why.startswith("the reference evaluation disagrees too") and "the export is wrong" in result.why
    assert "file it with the converter" in result.fix


def test_a_clean_export_is_not_blamed(case_dir, tmp_path):
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]") + "checks: [parity]\n"
    result = _parity(case_dir, tmp_path, "clean", body)
    assert result.status == "passed" and "blame" not in result.metrics


class _Runner:
    def __init__(self, name):
        self.name = name


class _Run:
    """What blame reads of a CaseRun: eager outputs, each backend's outputs (or its error), tolerances."""

    def __init__(self, outputs: dict):
        self._outputs = outputs

    def reference(self, size):
        return {"y": np.arange(size * 4, dtype=np.float32).reshape(size, 4)}

    def outputs(self, fmt, backend, size):  # the eager values times this backend's factor
        got = self._outputs[backend]
        if isinstance(got, Exception):
            raise got
        return {"y": self.reference(size)["y"] * got}

    def tolerance_for(self, fmt, backend, name):
        return ResolvedTolerance(atol=0.0, rtol=0.0, scale=1e-4)

    def runner(self, fmt, backend):
        return _Runner(f"runtime[{backend}]")


@pytest.mark.parametrize("ref, noopt, verdict", [
    (1.0, 2.0, RUNTIME),           # the file is right, both sessions of the runtime are not
    (2.0, 1.0, OPTIMISATION),      # only the optimised session is wrong
    (2.0, 2.0, EXPORT),            # the reference computes the same wrong values: the file is wrong
    (NotImplementedError("no reference for op com.microsoft.FusedConv"), 2.0, UNKNOWN),
])
def test_the_verdict_follows_the_reference_backends(ref, noopt, verdict):
    found = blame(_Run({"cpu": 2.0, "ref": ref, "cpu-noopt": noopt}), "onnx", "cpu", [1, 3])
    assert found.verdict == verdict
    if verdict == UNKNOWN:
        assert "com.microsoft.FusedConv" in found.sentence
    if verdict == OPTIMISATION:
        assert "ORT_DISABLE_ALL" in found.fix


def test_a_format_without_other_reference_backends_has_no_blame():
    assert blame(_Run({"mil-ref": 2.0}), "coreml", "mil-ref", [1]) is None


def test_the_torchscript_based_onnx_route_runs_beside_the_dynamo_one(case_dir, tmp_path):
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx, onnx_legacy]") + "checks: [parity]\n"
    case = load_case(write_case(case_dir, "routes", body))
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        dynamo = session.run_check(case, "onnx", "cpu", "parity")
        legacy = session.run_check(case, "onnx_legacy", "cpu", "parity")
    finally:
        session.close()
    assert dynamo.status == legacy.status == "passed", legacy.message
    assert dynamo.metrics["artefact"]["exporter"] == "dynamo"
    assert legacy.metrics["artefact"]["exporter"] == "torchscript-based (legacy)"
    assert legacy.metrics["artefact"]["opset_written"] == 17
