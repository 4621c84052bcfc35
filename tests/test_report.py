"""The reports: JSON record and run file, Markdown summary, HTML (rendered in Chromium when present), JUnit.

One real run (a clean case with latency, and a case whose exporter perturbs a weight by 1%) feeds
the end-to-end tests; the renderers' corner cases use records written by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import MODELS, SMALL_CASE, find_chromium, in_ci, require_chromium, write_case
from parity.report import html, junit, load, markdown, svg
from parity.report.diff import Thresholds, diff
from parity.report.run import Run, outcome, run_path, target_id

ROOT = Path(__file__).parents[1]
TEST_FILE = str(ROOT / "parity" / "test_parity.py")
KEYS = {"case", "format", "backend", "check", "status", "message", "metrics"}  # the record's keys


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """One run writing every output: `small` passes (parity + latency), `bug` fails parity."""
    d = tmp_path_factory.mktemp("run")
    cases = d / "cases"
    cases.mkdir()
    (cases / "models.py").write_text(MODELS, encoding="utf-8")
    write_case(cases, "small", SMALL_CASE + "checks: [parity, latency]\nlatency: {warmup: 2, runs: 5}\n")
    write_case(cases, "bug", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [parity]\nexport:\n  onnx: {function: 'models:perturbing_export'}\n")
    step_summary = d / "step_summary.md"
    step_summary.write_text("earlier step\n")
    env = {**_env(), "GITHUB_STEP_SUMMARY": str(step_summary)}
    # through pytest-xdist when installed: records then travel from workers to the controller
    workers = ["-n", "2"] if importlib.util.find_spec("xdist") else []
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", TEST_FILE, *workers, "-p", "no:cacheprovider", "--cases", str(cases),
         "--golden", str(d / "golden"), "--parity-build", str(d / "build"), "--parity-report", str(d / "r.json"),
         "--parity-summary", str(d / "s.md"), "--parity-html", str(d / "r.html"), "--junitxml", str(d / "j.xml")],
        cwd=d, env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return d, proc


def test_json_report_keeps_issue2_keys_and_adds_run_file(outputs):
    d, _ = outputs
    records = json.loads((d / "r.json").read_text())
    assert isinstance(records, list) and len(records) == 5  # still one object per test, nothing else
    assert all(KEYS <= set(r) for r in records)
    by = {(r["case"], r["format"], r["check"]): r for r in records}
    parity = by[("small", "onnx", "parity")]["metrics"]
    assert parity["artefact"]["size_bytes"] > 0 and parity["artefact"]["export_s"] > 0
    assert 0 <= parity["tolerance_used"] < 0.5
    assert "profile" not in parity["outputs"]["logits"]["b1"]["extra"]  # clean: no plot data stored
    latency = by[("small", "torchscript", "latency")]["metrics"]["latency_ms"]
    assert set(latency) == {"b1", "b3"}
    assert all(0 < s["min"] <= s["p50"] <= s["p90"] and (s["runs"], s["warmup"]) == (5, 2) for s in latency.values())
    bug = by[("bug", "onnx", "parity")]
    profile = bug["metrics"]["outputs"]["logits"]["b3"]["extra"]["profile"]
    assert sum(profile["abs_error_hist"]["counts"]) == 15 and len(profile["sample"]["expected"]) == 15

    info = json.loads(run_path(d / "r.json").read_text())
    assert info["exitstatus"] == 1 and info["counts"] == {"failed": 1, "passed": 4}
    env = info["environment"]
    assert env["python"]["version"] and env["packages"]["numpy"] and env["packages"]["torch"]
    assert env["cpu"]["count"] >= 1 and isinstance(env["gpus"], list)
    assert load(d / "r.json").records == records


def test_markdown_shows_the_failure_in_matrix_and_message(outputs):
    d, _ = outputs
    text = (d / "s.md").read_text()
    matrix = text[:text.index("### Latency")]
    rows = {line.split("|")[1].strip(): line for line in matrix.splitlines() if line.startswith("| ")}
    assert rows["case"].split("|")[2:4] == [" torchscript/cpu ", " onnx/cpu "]
    assert "❌ parity" in rows["bug"]
    assert "✅" in rows["small"] and "❌" not in rows["small"]
    assert "#### ❌ `bug-onnx-cpu-parity`" in text
    assert "parity of onnx/cpu against the eager model: 2 of 2 comparisons failed" in text
    assert "### Latency" in text and "| small | torchscript/cpu | 3 |" in text
    # the same summary was appended to GitHub's step summary
    assert (d / "step_summary.md").read_text() == "earlier step\n" + text + "\n"


def test_junit_has_flat_metric_properties(outputs):
    d, proc = outputs
    assert "incompatible with junit_family" not in proc.stdout + proc.stderr
    root = ET.parse(d / "j.xml").getroot()
    suite_props = {p.get("name"): p.get("value") for p in root.iter("testsuite").__next__().find("properties")}
    assert suite_props["numpy"] and suite_props["python"]
    cases = {tc.get("name"): tc for tc in root.iter("testcase")}
    bug = cases["test_parity[bug-onnx-cpu-parity]"]
    props = {p.get("name"): p.get("value") for p in bug.find("properties")}
    assert props["status"] == "failed" and props["case"] == "bug" and props["check"] == "parity"
    assert float(props["scaled_error"]) > 1e-3 and int(props["artefact.size_bytes"]) > 0
    assert float(props["outputs.logits.b3.max_abs"]) > 0 and props["outputs.logits.b3.passed"] == "false"
    assert not any("profile" in name or name == "parity" for name in props)
    assert bug.find("failure") is not None
    lat = {p.get("name"): p.get("value") for p in cases["test_parity[small-onnx-cpu-latency]"].find("properties")}
    assert float(lat["latency_ms.b1.p50"]) > 0 and float(lat["latency_ms.b3.p90"]) > 0


def test_html_is_self_contained_with_plots_of_the_failure(outputs):
    d, _ = outputs
    page = (d / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and " src=" not in page and 'href="http' not in page
    assert 'id="t-bug-onnx-cpu-parity"' in page
    section = page[page.index('id="t-bug-onnx-cpu-parity"'):]
    assert "logits @ b3: |error| distribution" in section and "logits @ b3: reference vs obtained" in section
    assert "parity: logits error per batch size" in section
    assert "<h2>Latency</h2>" in page and "<h2>Environment</h2>" in page
    for chart in page.split("<svg")[1:]:  # every chart is well-formed XML
        ET.fromstring("<svg" + chart[:chart.index("</svg>") + 6])


def _png_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


CHROMIUM = find_chromium()


def test_html_renders_in_headless_chromium(outputs, tmp_path):
    d, _ = outputs
    flags = [require_chromium(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}"]
    url = (d / "r.html").as_uri()
    shot = tmp_path / "shot.png"
    done = subprocess.run([*flags, "--window-size=1280,2000", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert _png_size(shot) == (1280, 2000) and shot.stat().st_size > 20_000  # a blank page compresses to ~5 kB
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") >= 5 and "bug-onnx-cpu-parity" in dom.stdout
    keep = os.environ.get("PARITY_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_the_chromium_tests_fail_rather_than_skip_in_ci_without_chromium(monkeypatch):
    """Where CI is set, a missing Chromium is a failure: a CI run never passes without rendering the HTML."""
    assert require_chromium("/opt/chromium") == "/opt/chromium"
    monkeypatch.delenv("__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI", raising=False)
    for value, outcome in (("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                           ("false", pytest.skip.Exception), ("", pytest.skip.Exception)):
        monkeypatch.setenv("CI", value)
        with pytest.raises(outcome):
            require_chromium(None)
    monkeypatch.delenv("CI")
    monkeypatch.setenv("__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI", "true")  # CI under tox, which does not pass CI on
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_chromium(None)


# --------------------------------------------------------------------------- renderers on hand-made records


def _rec(case, fmt, check, status="passed", **metrics):
    return {"case": case, "format": fmt, "backend": "cpu", "check": check, "status": status, "message": "",
            "metrics": metrics}


def test_outcomes_drifting_and_xfail():
    assert outcome(_rec("a", "onnx", "parity", tolerance_used=0.6)) == "drifting"
    assert outcome(_rec("a", "onnx", "parity", tolerance_used=0.1)) == "passed"
    assert outcome(_rec("a", "onnx", "parity", tolerance_used="inf", status="failed")) == "failed"
    assert outcome({**_rec("a", "onnx", "parity", status="failed"), "xfail": "known"}) == "xfailed"
    assert outcome({**_rec("a", "onnx", "parity"), "xfail": "known"}) == "xpassed"
    run = Run([{**_rec("a", "onnx", "parity", status="failed"), "xfail": "known"}])
    assert not run.failed


def test_case_file_error_row_and_text_matrix():
    load_error = {"case": "typo", "format": None, "backend": None, "check": "load", "status": "error",
                  "message": "cases/typo.yaml: batchsizes: unknown field", "metrics": {}}
    run = Run([_rec("a", "torchscript", "parity", scaled_error=0.0), load_error])
    text = markdown.render(run)
    assert "| typo | 💥 case file error |" in text and "`typo-case-error`" in text
    assert "unknown field" in text
    terminal = markdown.render_text(run)
    assert "ERROR case file" in terminal and "parity: 1 failed (1 error), 1 passed" in terminal


def test_html_draws_optional_plots_only_when_metrics_exist():
    int8 = _rec("digits", "onnx_int8", "accuracy", accuracy=0.95, fp32_accuracy=0.97, fp32_size_bytes=4_000_000,
                artefact={"size_bytes": 1_100_000})
    batch = _rec("a", "onnx", "batch_invariance", status="failed", scaled_error=0.02, outputs={"y": {
        "b2": {"scaled_error": 1e-7, "passed": True, "tolerance": {"atol": 0, "rtol": 0, "scale": 1e-5}},
        "b8": {"scaled_error": 0.02, "passed": False, "tolerance": {"atol": 0, "rtol": 0, "scale": 1e-5}}}})
    page = html.render(Run([int8, batch, _rec("a", "onnx", "parity", scaled_error=1e-7)]))
    assert "accuracy vs fp32" in page and "artefact size vs fp32" in page and "ratio 0.28" in page
    assert "batch_invariance: y error per batch size" in page and "tolerance 1e-5" in page
    assert "|error| distribution" not in page  # no profile recorded, no histogram
    plain = html.render(Run([_rec("a", "onnx", "parity", scaled_error=1e-7)]))
    assert "<svg" not in plain and "not recorded" in plain


def test_summary_counts_are_pytests_counts(outputs):
    """parity's closing line counts as pytest does: errors and strict xpasses are failures."""
    import re

    _, proc = outputs
    pytest_line = proc.stdout.strip().splitlines()[-1]
    parity_line = next(line for line in proc.stdout.splitlines() if "parity: " in line and "failed" in line)
    for word in ("failed", "passed"):
        ours = re.search(rf"(\d+) {word}", parity_line)
        theirs = re.search(rf"(\d+) {word}", pytest_line)
        assert ours and theirs and ours.group(1) == theirs.group(1), (parity_line, pytest_line)
    run = Run([_rec("a", "onnx", "parity", status="error"), _rec("a", "onnx", "golden", status="failed"),
               {**_rec("a", "pt2", "parity"), "xfail": "known"}, _rec("b", "onnx", "parity", tolerance_used=0.9),
               _rec("b", "onnx", "golden")])
    assert run.summary_line() == "parity: 3 failed (1 error, 1 strict xpass), 2 passed (1 drifting)"


def test_the_report_is_written_as_strict_json(tmp_path):
    """Non-finite floats anywhere in a record are written as the strings the per-output metrics use."""
    from parity.report.run import save

    record = _rec("a", "onnx", "parity", status="failed", scaled_error=float("inf"), min_cosine=float("nan"),
                  learned={"limit": float("-inf"), "rows": [1.0, float("inf")]})
    report, info = save(tmp_path / "r.json", Run([record], {"worst": float("inf")}))

    def refuse(constant):
        raise ValueError(constant)

    metrics = json.loads(report.read_text(), parse_constant=refuse)[0]["metrics"]
    assert (metrics["scaled_error"], metrics["min_cosine"]) == ("inf", "nan")
    assert metrics["learned"] == {"limit": "-inf", "rows": [1.0, "inf"]}
    assert json.loads(info.read_text(), parse_constant=refuse)["worst"] == "inf"
    assert load(report).records[0]["metrics"]["scaled_error"] == "inf"


def test_a_report_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    """A failed write (here the target is a directory; a full disk alike) removes its temporary file."""
    from parity.report.run import write_text

    (tmp_path / "r.json").mkdir()
    with pytest.raises(OSError):
        write_text(tmp_path / "r.json", "[]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_html_renders_a_failing_lint_record():
    """Lint records carry lists of findings under metrics.model / metrics.artefact, not dicts."""
    finding = {"where": "features.1", "op": "BatchNorm2d", "detail": "batch statistics at inference"}
    lint = {**_rec("cnn", "tflite", "lint", status="failed", model=[finding], artefact=[finding],
                   artefact_linted=True, export_error=None), "backend": None,
            "message": "training-mode lint of cnn/tflite: 2 finding(s)"}
    page = html.render(Run([lint, _rec("cnn", "tflite", "parity", scaled_error=1e-7)]))
    assert "training-mode lint of cnn/tflite: 2 finding(s)" in page
    assert markdown.render(Run([lint])).count("lint") >= 1


def test_svg_charts_are_well_formed_in_corner_cases():
    charts = [svg.histogram([], [], "empty", "x"), svg.histogram([1e-7, 1e-6], [3], "one bin", "x", note="2 zero"),
              svg.scatter([1.0], [1.0], "one point", "e", "o"), svg.scatter([], [], "none", "e", "o"),
              svg.bars(["a", "b"], [0.0, float("inf")], "inf", "y"), svg.bars(["a"], [None], "missing", "y"),
              svg.bars(["a", "b", "c"], [1e-9, 1e-3, 1.0], "log", "y", limit=1e-4),
              svg.curve(["a"], [0.0], "zero", "y"), svg.curve(["a", "b"], [1e-7, float("inf")], "inf", "y", mark=1),
              svg.curve([f"m{i}" for i in range(40)], [10.0 ** -(i % 7) for i in range(40)], "many", "y", limit=1e-4,
                        mark=3)]
    for chart in charts:
        ET.fromstring(chart)


def test_junit_flatten_names():
    record = {**_rec("a", "onnx", "latency", latency_ms={"b1": {"p50": 1.5, "p90": 2.0}}, runner="ort",
                     outputs={"y": {"b1": {"max_abs": 0.1, "shape": [1, 2], "extra": {"profile": {"x": 1}}}}}),
              "duration_s": 0.3}
    props = dict(junit.flatten(record))
    assert props["latency_ms.b1.p50"] == "1.5" and props["runner"] == "ort" and props["duration_s"] == "0.3"
    assert props["outputs.y.b1.max_abs"] == "0.1"
    assert not any("shape" in k or "profile" in k or k == "message" for k in props)


def test_diff_names_only_what_got_worse_beyond_thresholds():
    old = Run([
        _rec("a", "onnx", "parity", scaled_error=1e-7, outputs={"y": {"b1": {"scaled_error": 1e-7, "cosine": 1.0}}}),
        _rec("a", "torchscript", "parity", scaled_error=1e-7),
        _rec("a", "onnx", "golden", scaled_error=0.0),
        _rec("a", "onnx", "latency", latency_ms={"b1": {"p50": 0.05}, "b4": {"p50": 10.0}}),
        _rec("b", "onnx", "parity", scaled_error=1e-7, top1_agreement=1.0),
        _rec("gone", "onnx", "parity"),
    ])
    new = Run([
        _rec("a", "onnx", "parity", scaled_error=5e-6, outputs={"y": {"b1": {"scaled_error": 5e-6, "cosine": 1.0}}}),
        _rec("a", "torchscript", "parity", scaled_error=9e-7),  # x9 but below the 1e-6 floor: noise
        _rec("a", "onnx", "golden", status="failed", scaled_error=2e-3),
        _rec("a", "onnx", "latency", latency_ms={"b1": {"p50": 0.5}, "b4": {"p50": 30.0}}),  # b1: x10 but +0.45 ms
        _rec("b", "onnx", "parity", scaled_error=1e-7, top1_agreement=0.9),
        _rec("new", "onnx", "parity"),
    ])
    result = diff(old, new)
    assert sorted(result.drifted) == ["a-onnx-cpu-golden", "a-onnx-cpu-latency", "a-onnx-cpu-parity", "b-onnx-cpu-parity"]
    assert result.drifted["a-onnx-cpu-parity"] == ["y@b1 err/max|ref| 1e-07 -> 5e-06 (x50)"]
    assert result.drifted["a-onnx-cpu-golden"][0] == "status passed -> failed"
    assert result.drifted["a-onnx-cpu-latency"] == ["b4 p50 latency 10 ms -> 30 ms (x3)"]
    assert "top-1 agreement 1 -> 0.9" in result.drifted["b-onnx-cpu-parity"]
    assert (result.only_old, result.only_new) == (["gone-onnx-cpu-parity"], ["new-onnx-cpu-parity"])
    assert "a-onnx-cpu-latency" not in diff(old, new, Thresholds(latency_factor=0)).drifted
    assert diff(old, old).drifted == {}


def test_matrix_lists_checks_in_registry_order_whatever_order_they_finished():
    """Parallel workers finish checks in any order; each cell lists them in one fixed order."""
    finished = [_rec("a", "onnx", c, scaled_error=0.0) for c in ("determinism", "golden", "parity", "batch_invariance")]
    _, _, cells = Run(finished).matrix()
    assert [r["check"] for r in cells[("a", "onnx/cpu")].records] == ["parity", "golden", "batch_invariance",
                                                                       "determinism"]
    page = html.render(Run(finished))
    assert page.index('"check">parity ') < page.index('"check">golden ') < page.index('"check">determinism ')
    assert '<div class="matrix">' in page  # wide matrices scroll inside their box, not the page
    assert Run([_rec("b", "onnx", "parity"), _rec("a", "onnx", "parity")]).matrix()[0] == ["a", "b"]


def test_matrix_of_many_formats_is_split_by_family_never_wider_than_six_targets():
    from parity.report.html import MATRIX_COLUMNS, column_groups

    columns = [f"{f}/{b}" for f in ("torchscript", "torchscript_int8", "onnx", "onnx_int8", "pt2", "pt2_int8",
                                    "tflite", "tflite_int8", "coreml", "coreml_fp16", "coreml_int8", "savedmodel")
               for b in ("cpu", "cuda")]
    tables = column_groups(columns)
    assert [c for t in tables for c in t] == columns  # every column once, in order
    assert all(len(t) <= MATRIX_COLUMNS for t in tables)
    assert ["onnx/cpu", "onnx/cuda", "onnx_int8/cpu", "onnx_int8/cuda"] in tables  # a family stays together
    records = [_rec("a", c.split("/")[0], "parity") | {"backend": c.split("/")[1]} for c in columns]
    run = Run(records)
    page = html.render(run)
    assert page.count('<div class="matrix"><table>') == len(column_groups(run.matrix()[1]))  # registry order


def test_every_record_the_json_can_hold_renders():
    """Every status, cause and check (failing lint with lists, xfail, error, skip, a case file error)."""
    from parity.causes import ORDER
    from parity.checks import CHECKS

    finding = {"kind": "batchnorm-training", "where": "bn", "op": "BatchNorm2d", "module": None, "detail": "x"}
    records = []
    for i, check in enumerate(CHECKS):
        for status in ("passed", "failed", "error", "skipped"):
            r = _rec(f"c{i}", "onnx", check, status=status, scaled_error="inf" if status == "failed" else 1e-7)
            if check == "lint":
                r = {**r, "backend": None, "metrics": {"model": [finding], "artefact": [finding]}}
            if status in ("failed", "error"):
                r.update(cause=ORDER[(i * 2 + (status == "error")) % len(ORDER)], why="because", fix="do this")
            records.append(r)
        records.append({**_rec(f"c{i}", "pt2", check, status="failed"), "xfail": "known", "cause": "unsupported"})
    records.append({"case": "typo", "format": None, "backend": None, "check": "load", "status": "error",
                    "message": "cases/typo.yaml: x: unknown field", "metrics": {}, "cause": "case-error"})
    run = Run(records)
    page, text = html.render(run), markdown.render(run)
    for r in records:
        if outcome(r) in ("failed", "error"):
            assert target_id(r) in page and target_id(r) in text
    assert page.index("<h2>Findings") < page.index("<h2>Matrix</h2>")
    assert "case-error" in page and "typo" in page


def test_a_triaged_failure_shows_its_error_by_module_curve():
    rows = [{"path": "conv", "status": "pass", "rel_error": 1.3e-7}, {"path": "fc", "status": "fail", "rel_error": 9e-3},
            {"path": "head", "status": "error", "rel_error": 0.0}]
    record = {**_rec("small", "onnx", "parity", status="failed", scaled_error=9e-3,
                     triage={"rows": rows, "first_divergence": "fc", "tolerance_scale": 1e-4})}
    page = html.render(Run([record]))
    assert "triage: error by module (onnx/cpu)" in page and "first divergence: fc" in page
    curve = page[page.index("triage: error by module"):]
    curve = curve[:curve.index("</svg>")]
    assert "<title>fc: 0.009</title>" in curve and "head" not in curve  # the errored row is no point
    assert "tolerance 1e-4" in curve


def test_plural_counts_read_as_english():
    from parity.report.run import Run

    records = [{"case": "c", "format": "onnx", "backend": "cpu", "check": k, "status": s, "xfail": x}
               for k, s, x in (("a", "passed", "r"), ("b", "passed", "r"), ("c", "error", None), ("d", "error", None))]
    assert Run(records).summary_line() == "parity: 4 failed (2 errors, 2 strict xpasses)"
