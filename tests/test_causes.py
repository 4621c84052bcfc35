"""The failure taxonomy and one finding per cause, end to end: a run with a model in training mode
(failing lint), a NaN export, an fp16-underflow model, a missing runtime kernel and a failed export.
Each failure carries the right cause; the reports lead with one finding per cause, most severe
first; the HTML shows the findings before the matrix (rendered in headless Chromium where present)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODELS, SMALL_CASE, find_chromium, require_chromium, write_case
from parity.causes import CAUSES, ORDER, severity
from parity.checks.base import CheckResult
from parity.report import load
from parity.report.run import target_id
from parity.report.findings import group

ROOT = Path(__file__).parents[1]
TEST_FILE = str(ROOT / "parity" / "test_parity.py")

PLANTED = '''
import torch
from torch import nn


def broken_export(model, example_inputs, path):
    raise RuntimeError("converter: unsupported layer 'Frobnicate' at model.head")


def double_gelu():
    """A float64 model with an exact GELU: onnxruntime has no Erf kernel for doubles."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 4), nn.GELU()).double().eval()
'''

#: case -> (case file body, the cause its failures must carry)
CASES = {
    "trained": (SMALL_CASE.replace("models:small", "models:bn_train").replace("[torchscript, onnx]", "[torchscript]")
                + "checks: [parity, batch_invariance, lint]\n", "batch-dependence"),
    "nan": (SMALL_CASE.replace("[torchscript, onnx]", "[onnx]")
            + "checks: [parity]\nexport:\n  onnx: {function: 'models:nan_export'}\n", "nonfinite"),
    "tiny": (SMALL_CASE.replace("models:small", "models:tiny_outputs").replace("[torchscript, onnx]", "[torchscript]")
             + "checks: [parity, batch_invariance]\nexport:\n  torchscript: {function: 'models:half_torchscript_export'}\n",
             "precision-limit"),
    "kernel": ("model: {factory: 'planted:double_gelu'}\ninputs: {x: {shape: [6], dtype: float64}}\n"
               "formats: [onnx]\nbackends: [cpu]\nchecks: [parity]\n", "unsupported"),
    "broken": (SMALL_CASE.replace("[torchscript, onnx]", "[onnx]")
               + "checks: [parity, batch_invariance]\nexport:\n  onnx: {function: 'planted:broken_export'}\n",
               "export-failed"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("causes")
    cases = d / "cases"
    cases.mkdir()
    (cases / "models.py").write_text(MODELS, encoding="utf-8")
    (cases / "planted.py").write_text(PLANTED, encoding="utf-8")
    for name, (body, _) in CASES.items():
        write_case(cases, name, body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", TEST_FILE, "-p", "no:cacheprovider", "--cases", str(cases),
         "--golden", str(d / "golden"), "--parity-build", str(d / "build"), "--parity-report", str(d / "r.json"),
         "--parity-summary", str(d / "s.md"), "--parity-html", str(d / "r.html"), "--junitxml", str(d / "j.xml")],
        cwd=d, env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return d, proc, load(d / "r.json")


def test_every_failure_carries_the_cause_of_its_planted_bug(run):
    _, _, report = run
    for record in report.records:
        if record["status"] in ("failed", "error"):
            assert record.get("cause") == CASES[record["case"]][1], (record["case"], record["check"], record.get("why"))
            assert record.get("why") and record.get("fix")
    by_case = {r["case"]: r for r in report.records if r["check"] == "parity"}
    assert "underflow" in by_case["tiny"]["why"] and "e-14" in by_case["tiny"]["why"]
    assert "NaN/Inf" in by_case["nan"]["why"]
    assert "Erf" in by_case["kernel"]["why"]
    assert "Frobnicate" in by_case["broken"]["why"]
    assert "training mode" in by_case["trained"]["why"] and "model.eval()" in by_case["trained"]["fix"]


def _refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def test_the_json_report_is_strict_json_with_nonfinite_figures_as_strings(run):
    """A NaN export's figures are non-finite: written as the strings "inf"/"nan" at the top level, as
    per output, never as bare Infinity/NaN tokens that strict parsers (and jq, and browsers) reject."""
    d, _, _ = run
    records = json.loads((d / "r.json").read_text(), parse_constant=_refuse)
    nan = next(r for r in records if r["case"] == "nan" and r["check"] == "parity")
    assert nan["metrics"]["scaled_error"] == "inf" and nan["metrics"]["min_cosine"] == "nan"
    assert nan["metrics"]["outputs"]["logits"]["b1"]["scaled_error"] == "inf"


def test_markdown_and_html_count_as_pytest_does(run):
    """An errored check fails its test: the reports' counts are pytest's, not parity's finer outcomes."""
    import re

    d, proc, _ = run
    pytest_line = proc.stdout.strip().splitlines()[-1]
    failed = re.search(r"(\d+) failed", pytest_line).group(1)
    errors = sum(1 for r in load(d / "r.json").records if r["status"] == "error")
    assert errors, "the run has errored checks, so parity's own counts would differ from pytest's"
    summary = (d / "s.md").read_text()
    counts = summary.splitlines()[2]
    assert f"{failed} failed ({errors} errors)" in counts and f"{errors} error " not in counts, counts
    page = (d / "r.html").read_text()
    assert f"{failed} failed ({errors} errors)" in page


def test_every_failure_message_opens_with_its_cause_and_ends_with_the_fix(run):
    """What a person reads first in pytest's failure block, the JUnit failure and the Markdown summary
    is the cause and why; the last line is the fix."""
    import re
    import xml.etree.ElementTree as ET

    d, proc, report = run
    failing = {target_id(r): r for r in report.records if r["status"] in ("failed", "error")}
    blocks = re.split(r"^_{3,} test_parity\[(.+?)\] _{3,}$", proc.stdout, flags=re.M)
    seen = dict(zip(blocks[1::2], blocks[2::2]))
    assert set(seen) == set(failing), (set(seen), set(failing))
    for test, block in seen.items():
        r = failing[test]
        text = [line for line in re.split(r"^(?:-{3,}|={3,}) ", block, flags=re.M)[0].strip().splitlines()
                if not line.startswith("All traceback entries are hidden")]  # pytest's own note
        assert text[0] == f"[{r['cause']}] {r['why']}", (test, text[:2])
        assert text[-1] == f"fix: {r['fix']}", (test, text[-1])
    for case in ET.parse(d / "j.xml").getroot().iter("testcase"):
        test = case.get("name")[len("test_parity["):-1]
        failure = case.find("failure")
        assert (failure is not None) == (test in failing), test
        if failure is not None:
            assert failure.text.startswith(f"[{failing[test]['cause']}] "), (test, failure.text[:200])
    summary = (d / "s.md").read_text()
    for test, r in failing.items():
        block = summary[summary.index(f"`{test}`\n"):]
        assert block.split("```text\n", 1)[1].startswith(f"[{r['cause']}] {r['why']}\n"), test


def test_junit_lists_the_findings_as_suite_properties(run):
    import xml.etree.ElementTree as ET

    d, _, report = run
    suite = ET.parse(d / "j.xml").getroot().find("testsuite")
    props = [(p.get("name"), p.get("value")) for p in suite.find("properties")]
    findings = group(report.records)
    assert [(n, v) for n, v in props if n.startswith("finding.")] == \
        [(f"finding.{i}", f.line()) for i, f in enumerate(findings, 1)]
    assert props[0][0] == "finding.1"  # findings first, the environment after them


def test_one_finding_per_cause_most_severe_first(run):
    _, proc, report = run
    findings = group(report.records)
    assert [f.cause for f in findings] == sorted((c for _, c in CASES.values()), key=severity)
    trained = findings[0]
    assert trained.cause == "batch-dependence" and trained.case == "trained"
    assert trained.checks == {"parity": 1, "batch_invariance": 1, "lint": 1}  # three tests, one cause
    broken = next(f for f in findings if f.cause == "export-failed")
    assert broken.checks == {"parity": 1, "batch_invariance": 1} and broken.format == "onnx"
    tiny = next(f for f in findings if f.case == "tiny")  # underflow, never "small differences per batch size"
    assert tiny.cause == "precision-limit" and tiny.checks == {"parity": 1, "batch_invariance": 1}
    out = proc.stdout
    assert "parity findings: 5 cause(s), most severe first" in out
    section = out[out.index("parity findings: "):]  # failure blocks above open with "[cause]" too
    lines = [line for line in section.splitlines() if line.startswith("[")]
    assert [line.split("]")[0][1:] for line in lines] == [f.cause for f in findings]
    assert "explains 3 tests: parity, batch_invariance, lint" in lines[0]


def test_markdown_and_html_lead_with_the_findings(run):
    d, _, _ = run
    summary = (d / "s.md").read_text()
    assert summary.index("### Findings (5 causes") < summary.index("| case |")
    assert summary.index("**batch-dependence**") < summary.index("**export-failed**") < \
        summary.index("**nonfinite**") < summary.index("**precision-limit**") < summary.index("**unsupported**")
    page = (d / "r.html").read_text()
    assert page.index("<h2>Findings (5 causes") < page.index("<h2>Matrix</h2>")
    assert page.index('class="cause">batch-dependence') < page.index('class="cause">unsupported')
    assert 'href="#t-trained-torchscript-lint"' in page  # each test the finding explains links to its details


CHROMIUM = find_chromium()


def test_the_html_of_a_failing_run_renders_findings_first_in_chromium(run, tmp_path):
    d, _, _ = run
    dom = subprocess.run([require_chromium(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'p'}", "--dump-dom", (d / "r.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert text.index("Findings (5 causes") < text.index(">Matrix<")
    for cause in ("batch-dependence", "export-failed", "nonfinite", "precision-limit", "unsupported"):
        assert f'class="cause">{cause}' in text


def test_the_taxonomy_is_complete_and_results_are_checked_against_it():
    assert ORDER[0] == "case-error" and len(ORDER) == len(set(ORDER))
    assert all(c.meaning and c.fix and c.scope in ("case", "format") for c in CAUSES.values())
    with pytest.raises(ValueError, match="cause must be one of"):
        CheckResult("failed", "x", cause="bogus")
    assert CheckResult("failed", "x", cause="drift").fix == CAUSES["drift"].fix  # the generic fix by default
    assert CheckResult("passed", "x", cause="drift").cause is None  # a pass has no cause
    # wrong values before a documented limit, before a missing golden: what a person should read first
    assert severity("nonfinite") < severity("numerics") < severity("precision-limit") < severity("unsupported") \
        < severity("no-golden") < severity("harness-error")


def _failure(case, fmt, check, cause, why="", status="failed"):
    return {"case": case, "format": fmt, "backend": "cpu", "check": check, "status": status, "message": why,
            "metrics": {}, "cause": cause, "why": why or f"{check} of {fmt}", "fix": CAUSES[cause].fix}


def test_a_model_level_cause_absorbs_the_numerics_and_drift_failures_of_its_case():
    """A model that mixes samples fails batch invariance, parity and golden in every format: one
    finding of the case (both formats, five tests). What the model does not explain stays apart: a
    failed export of the same case, and the numerics failure of another case."""
    records = [
        _failure("m", "onnx", "parity", "numerics"),  # listed first: the grouping must not depend on order
        _failure("m", "torchscript", "golden", "drift"),
        _failure("m", "onnx", "batch_invariance", "batch-dependence", "the model mixes samples across the batch"),
        _failure("m", "torchscript", "batch_invariance", "batch-dependence", "the model mixes samples"),
        _failure("m", "torchscript", "parity", "nonfinite"),
        _failure("m", "coreml", "parity", "export-failed", status="error"),
        _failure("other", "onnx", "parity", "numerics"),
    ]
    findings = group(records)
    assert [(f.cause, f.case, f.format) for f in findings] == [
        ("batch-dependence", "m", None), ("export-failed", "m", "coreml"), ("numerics", "other", "onnx")]
    model = findings[0]
    assert model.checks == {"batch_invariance": 2, "parity": 2, "golden": 1} and len(model.tests) == 5
    assert sorted(model.formats) == ["onnx", "torchscript"] and model.where.startswith("m (")
    assert model.why == "the model mixes samples across the batch"  # the most severe record's own why



def test_fp16_overflow_is_a_precision_limit_in_a_reduced_precision_format_only():
    """An Inf where the eager value is finite but beyond fp16's largest (65504): the format's range in
    coreml_fp16, a non-finite export in an fp32 format."""
    import numpy as np

    from parity.checks.base import numeric_cause
    from parity.compare import compare_output
    from parity.tolerance import Tolerance, invariance

    tol = invariance(Tolerance(), None, "fp16")
    expected = np.array([[1.0, 7e4, -2.0]], dtype=np.float32)
    rows = [("b1", compare_output("y", expected, np.array([[1.0, np.inf, -2.0]], dtype=np.float32), tol))]
    cause, why = numeric_cause(rows, "coreml_fp16")
    assert cause == "precision-limit" and "overflow" in why and "65504" in why, why
    assert numeric_cause(rows, "onnx")[0] == "nonfinite"
