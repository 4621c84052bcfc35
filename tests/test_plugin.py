"""End to end through pytest itself (pytester): what a user sees from `pytest parity/`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SMALL_CASE, TEST_FILE, by_id, run_suite, write_case


@pytest.fixture
def suite(pytester, case_dir):
    """Run the parity suite on `case_dir` in a child pytest process: (result, report records)."""
    return lambda *args: run_suite(pytester, case_dir, *args)


def test_suggested_update_command_runs_and_selects_exactly_that_case(suite, case_dir, pytester):
    """The hint is this run's own command; its -k selects `net`, never `net_small` beside it."""
    import re
    import shlex

    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [torchscript]") + "checks: [golden]\n"
    write_case(case_dir, "net", body)
    write_case(case_dir, "net_small", body)
    result, _ = suite()
    hint = re.search(r"no golden for case 'net'.*?create it with: (pytest .*?)$", result.stdout.str(), re.M)
    assert hint, result.stdout.str()[-2000:]
    words = shlex.split(hint.group(1))
    assert words[1] == TEST_FILE and words[words.index("--cases") + 1] == str(case_dir)
    k = words[words.index("-k") + 1]
    result, records = suite("--update-golden", "-k", k)
    assert {r["case"] for r in records} == {"net"}
    assert (pytester.path / "golden" / "net").is_dir() and not (pytester.path / "golden" / "net_small").exists()


def test_the_hint_of_a_pyargs_run_is_that_command_and_runs_verbatim(case_dir, pytester):
    """README's invocation, `pytest --pyargs parity --cases DIR --golden DIR`: the suggested command
    keeps --pyargs, --cases and --golden, and running it as printed records exactly that case."""
    import json
    import re
    import shlex

    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [torchscript]") + "checks: [golden]\n"
    write_case(case_dir, "net", body)
    write_case(case_dir, "net_small", body)
    golden, build = pytester.path / "goldens", pytester.path / "build"
    result = pytester.runpytest_subprocess("--pyargs", "parity", "-p", "no:cacheprovider", "--cases", str(case_dir),
                                           "--golden", str(golden), "--parity-build", str(build))
    hint = re.search(r"no golden for case 'net'.*?create it with: (pytest .*?)$", result.stdout.str(), re.M)
    assert hint, result.stdout.str()[-2000:]
    assert hint.group(1).startswith(f"pytest --pyargs parity --cases {case_dir} --golden {golden} "
                                    f"--parity-build {build} --update-golden -k "), hint.group(1)
    words = shlex.split(hint.group(1))
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(*words[1:], "--parity-report", str(report))  # as printed
    assert result.ret == 0, result.stdout.str()[-2000:]
    assert {r["case"] for r in json.loads(report.read_text())} == {"net"}
    assert (golden / "net").is_dir() and not (golden / "net_small").exists()


def test_clean_case_passes_and_golden_round_trip(suite, case_dir, pytester):
    write_case(case_dir, "small", SMALL_CASE + "checks: [parity, golden]\n")
    result, records = suite()
    # no golden yet: parity passes, golden fails with the command that creates it
    result.assert_outcomes(passed=2, failed=2)
    assert (f"no golden for case 'small' in {pytester.path / 'golden' / 'small'}; create it with: pytest {TEST_FILE} "
            f"--cases {case_dir} --golden {pytester.path / 'golden'} ") in result.stdout.str()
    assert "--update-golden -k '[small- and golden]'" in result.stdout.str()
    parity = by_id(records)["small-onnx-cpu-parity"]
    assert parity["status"] == "passed"
    assert set(parity) >= {"case", "format", "backend", "check", "status", "message", "metrics"}
    assert parity["metrics"]["artefact"]["opset_written"] == 18
    assert parity["metrics"]["outputs"]["logits"]["b3"]["top1_agreement"] == 1.0

    result, records = suite("--update-golden")
    result.assert_outcomes(passed=4)
    golden = pytester.path / "golden" / "small"
    assert sorted(p.name for p in golden.iterdir()) == [
        "inputs.npz", "meta.json", "onnx-cpu.json", "onnx-cpu.npz", "reference.npz",
        "torchscript-cpu.json", "torchscript-cpu.npz"]

    result, records = suite()
    result.assert_outcomes(passed=4)
    assert all(r["status"] == "passed" for r in records)


def test_ids_allow_k_selection(suite, case_dir):
    write_case(case_dir, "small", SMALL_CASE + "checks: [parity, golden]\n")
    result, _ = suite("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_parity[[]small-torchscript-cpu-parity[]]*",
                                 "*test_parity[[]small-onnx-cpu-golden[]]*"])
    result, records = suite("-k", "onnx and not golden")  # "parity" also matches the test function name
    result.assert_outcomes(passed=1)
    assert [(r["format"], r["check"]) for r in records] == [("onnx", "parity")]


def test_perturbed_export_fails_parity_naming_the_output(suite, case_dir):
    write_case(case_dir, "bug", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [parity]\nexport:\n  onnx: {function: 'models:perturbing_export'}\n")
    result, records = suite()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*parity of onnx/cpu against the eager model: 2 of 2 comparisons failed*",
                                 "*b1 * logits *", "*b3 logits: * elements outside tolerance*"])
    record = records[0]
    assert record["status"] == "failed"
    assert record["metrics"]["artefact"]["source"] == "function:models:perturbing_export"
    assert record["metrics"]["scaled_error"] > 1e-3


def test_prebuilt_artefact_is_compared_without_reexport(suite, case_dir, pytester):
    write_case(case_dir, "small", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [parity]\n")
    result, records = suite()
    result.assert_outcomes(passed=1)
    built = Path(records[0]["metrics"]["artefact"]["path"])
    shutil.copy(built, case_dir / "frozen.onnx")
    shutil.rmtree(pytester.path / "build")
    (case_dir / "small.yaml").write_text((case_dir / "small.yaml").read_text()
                                         + "export:\n  onnx: {artefact: frozen.onnx}\n")
    result, records = suite()
    result.assert_outcomes(passed=1)
    assert records[0]["metrics"]["artefact"]["source"] == "prebuilt"
    assert not (pytester.path / "build" / "cache" / "export").exists()  # nothing was exported


def test_prebuilt_artefact_of_another_model_fails(suite, case_dir, pytester):
    write_case(case_dir, "small", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [parity]\n")
    _, records = suite()
    shutil.copy(records[0]["metrics"]["artefact"]["path"], case_dir / "frozen.onnx")
    (case_dir / "small.yaml").write_text((case_dir / "small.yaml").read_text().replace("seed: 3", "seed: 4")
                                         + "export:\n  onnx: {artefact: frozen.onnx}\n")
    result, records = suite()
    result.assert_outcomes(failed=1)
    assert records[0]["status"] == "failed"


def test_bad_case_fails_alone_and_others_run(suite, case_dir):
    write_case(case_dir, "good", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [torchscript]")
               + "checks: [parity]\n")
    write_case(case_dir, "typo", SMALL_CASE + "tolerance: {default: {atoll: 1}}\n")
    result, records = suite()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*typo.yaml: tolerance.default.atoll: unknown field 'atoll'*did you mean 'atol'*"])
    assert by_id(records)["typo-load"]["status"] == "error"


def test_export_failure_fails_its_format_only(suite, case_dir):
    write_case(case_dir, "small", SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {function: 'models:broken_export'}\n")
    result, records = suite()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*export to onnx failed: the case's export function models:broken_export raised "
                                 "RuntimeError: converter exploded: unsupported operator aten::frobnicate*"])
    assert by_id(records)["small-onnx-cpu-parity"]["status"] == "error"
    assert by_id(records)["small-torchscript-cpu-parity"]["status"] == "passed"


def test_golden_drift_fails_even_when_parity_passes(suite, case_dir, pytester):
    write_case(case_dir, "small", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [parity, golden]\n")
    suite("--update-golden")
    golden = pytester.path / "golden" / "small" / "onnx-cpu.npz"
    import numpy as np

    with np.load(golden) as data:
        arrays = {k: data[k] for k in data.files}
    arrays = {k: v * 1.001 for k, v in arrays.items()}  # the golden says the export used to compute this
    np.savez(golden, **arrays)
    import hashlib
    import json

    target = golden.with_suffix(".json")  # one recording: the JSON vouches for the npz it was written with
    target.write_text(json.dumps({**json.loads(target.read_text()),
                                  "npz_sha256": hashlib.sha256(golden.read_bytes()).hexdigest()}))
    result, records = suite()
    result.assert_outcomes(passed=1, failed=1)
    assert by_id(records)["small-onnx-cpu-golden"]["status"] == "failed"
    result.stdout.fnmatch_lines(["*golden drift of onnx/cpu*"])


def test_a_warm_update_golden_rewrites_nothing(suite, case_dir, pytester):
    """Goldens hold what the targets compute, not the cache's state: a re-run of --update-golden, warm
    or with --parity-no-cache, leaves every file byte for byte (and untouched), so `git diff` is empty."""
    import json

    write_case(case_dir, "small", SMALL_CASE + "checks: [golden]\n")
    golden = pytester.path / "golden"

    def state() -> dict:
        return {str(p.relative_to(golden)): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(golden.rglob("*")) if p.is_file()}

    result, _ = suite("--update-golden")
    result.assert_outcomes(passed=2)
    cold = state()
    assert sorted(cold) == ["small/inputs.npz", "small/meta.json", "small/onnx-cpu.json", "small/onnx-cpu.npz",
                            "small/reference.npz", "small/torchscript-cpu.json", "small/torchscript-cpu.npz"]
    for name in ("small/onnx-cpu.json", "small/torchscript-cpu.json"):
        artefact = json.loads(cold[name][0])["artefact"]
        assert not {"cached", "cache_key", "isolated", "path", "export_s", "size_bytes"} & set(artefact), artefact
    for args in (("--update-golden",), ("--update-golden", "--parity-no-cache")):
        result, records = suite(*args)
        result.assert_outcomes(passed=2)
        assert state() == cold, args  # same bytes, same modification times
    assert all(r["metrics"]["golden_written"] for r in records)


def test_golden_for_other_input_spec_says_so(suite, case_dir):
    write_case(case_dir, "small", SMALL_CASE + "checks: [golden]\n")
    suite("--update-golden")
    (case_dir / "small.yaml").write_text((case_dir / "small.yaml").read_text().replace("shape: [3, 8, 8]",
                                                                                        "shape: [3, 8, 8], std: 3"))
    result, _ = suite()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*recorded for another input spec*--update-golden*"])


def test_without_flag_golden_is_never_written(suite, case_dir, pytester):
    write_case(case_dir, "small", SMALL_CASE + "checks: [golden]\n")
    suite()
    assert not (pytester.path / "golden").exists()


def test_model_change_is_reported_in_golden_failure(suite, case_dir):
    write_case(case_dir, "small", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [torchscript]")
               + "checks: [golden]\n")
    suite("--update-golden")
    # a model change (other BatchNorm statistics), same inputs: the golden says the reference moved too
    models = case_dir / "models.py"
    models.write_text(models.read_text().replace("uniform_(0.5, 2.0)", "uniform_(0.6, 2.0)"))
    result, _ = suite()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*since the golden was recorded: the model changed (its factory source, kwargs, "
                                 "seed or weights); the eager reference moved by up to*"])
    assert "the environment changed" not in result.stdout.str()


def test_cuda_is_skipped_with_reason(suite, case_dir):
    write_case(case_dir, "small", SMALL_CASE.replace("backends: [cpu]", "backends: [cuda]") + "checks: [parity]\n")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the skip path is not taken")
    result, records = suite()
    result.assert_outcomes(skipped=2)
    reasons = {r["format"]: r["message"] for r in records}
    assert "sees no CUDA device" in reasons["torchscript"]
    assert "no CUDAExecutionProvider" in reasons["onnx"]


def test_expected_failures_are_strict_per_check_and_format(suite, case_dir):
    """A CNN frozen with BatchNorm in training mode, as a case: declared failures xfail, an undeclared pass stays a pass,
    and a declared failure that stops failing breaks the suite (strict)."""
    body = SMALL_CASE.replace("models:small", "models:bn_train").replace("formats: [torchscript, onnx]",
                                                                           "formats: [torchscript]") + \
        "checks: [parity, determinism, lint]\nxfail: BatchNorm in training mode\n"
    write_case(case_dir, "incident", body + "xfail_checks: {lint: all, parity: [torchscript]}\n")
    result, records = suite()
    result.assert_outcomes(passed=1, xfailed=2)
    assert by_id(records)["incident-torchscript-lint"]["xfail"] == "BatchNorm in training mode"
    assert by_id(records)["incident-torchscript-lint"]["backend"] is None

    write_case(case_dir, "incident", body + "xfail_checks: {lint: all, determinism: [torchscript]}\n")
    result, _ = suite()
    result.assert_outcomes(failed=2, xfailed=1)  # parity fails undeclared; determinism XPASS(strict)
    result.stdout.fnmatch_lines(["*XPASS(strict)*"])


def test_triage_option_explains_a_failure(suite, case_dir, pytester):
    write_case(case_dir, "planted", """
model: {factory: 'models:planted_resnet'}
inputs: {x: {shape: [3, 32, 32]}}
batch_sizes: [2]
formats: [pt2]
backends: [cpu]
checks: [parity]
export:
  pt2: {function: 'models:planted_export'}
""")
    result, records = suite("--parity-triage")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*first divergence: layer3.0.conv2 (Conv2d), computes something else than eager*"])
    assert records[0]["metrics"]["triage"]["first_divergence"] == "layer3.0.conv2"
    assert (pytester.path / "triage" / "planted-pt2-cpu.json").is_file()  # beside the report


def test_shards_partition_the_cases(suite, case_dir):
    for name in ("a", "b", "c"):
        write_case(case_dir, name, SMALL_CASE + "checks: [lint]\n")
    seen = []
    for shard in ("1/2", "2/2"):
        result, records = suite("--parity-shard", shard, "--collect-only", "-q")
        seen.append({line.split("[")[1].split("-")[0] for line in result.stdout.lines if "test_parity[" in line})
    assert seen == [{"a", "c"}, {"b"}]
    result, _ = suite("--parity-shard", "3/2")
    assert result.ret == 4  # usage error


def test_an_export_function_whose_module_fails_to_import_names_the_import_error(suite, case_dir):
    """The real error (the module's own ImportError) reaches the user, naming the field."""
    (case_dir / "exporters.py").write_text("import not_a_module_anywhere\n\ndef export(m, x, p):\n    pass\n")
    write_case(case_dir, "small", SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {function: 'exporters:export'}\n")
    result, records = suite()
    result.assert_outcomes(passed=1, failed=1)
    record = by_id(records)["small-onnx-cpu-parity"]
    assert "export.onnx.function" in record["message"]
    assert "No module named 'not_a_module_anywhere'" in record["message"]
    assert "UnboundLocalError" not in result.stdout.str()


def test_an_empty_cases_directory_is_a_usage_error(suite, case_dir):
    """No case files is bad input (exit 4 from pytest, 2 from `parity run`), never a green run."""
    for f in case_dir.iterdir():
        f.unlink()
    result, _ = suite()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*--cases: holds no case files*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_concurrent_update_golden_run_is_refused_before_it_writes(suite, case_dir, pytester):
    from parity.golden import GoldenStore

    write_case(case_dir, "small", SMALL_CASE + "checks: [golden]\n")
    holder = GoldenStore(pytester.path / "golden")
    holder.lock_for_update()  # another run is writing
    try:
        result, _ = suite("--update-golden")
    finally:
        holder.unlock()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "another --update-golden run is writing to" in result.stderr.str()
    assert list((pytester.path / "golden").iterdir()) == []
    result, _ = suite("--update-golden")  # once it is done
    result.assert_outcomes(passed=2)


def test_orphan_goldens_are_listed_and_pruned_only_on_request(suite, case_dir, pytester):
    write_case(case_dir, "small", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [golden]\n")
    result, _ = suite("--update-golden")
    result.assert_outcomes(passed=1)
    golden = pytester.path / "golden"
    (golden / "renamed_away").mkdir()
    (golden / "renamed_away" / "meta.json").write_text("{}")
    (golden / "small" / "tflite-cpu.npz").write_bytes(b"")  # a format the case no longer lists
    result, _ = suite()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*2 orphan golden(s)*", "*renamed_away: no case is named 'renamed_away'*",
                                 "*tflite-cpu.npz: case 'small' has no target 'tflite-cpu'*",
                                 "*--parity-prune-golden*"])
    assert (golden / "renamed_away").is_dir()  # listing deletes nothing
    result, _ = suite("--parity-prune-golden")
    result.stdout.fnmatch_lines(["*2 orphan golden(s) deleted*"])
    assert not (golden / "renamed_away").exists() and not (golden / "small" / "tflite-cpu.npz").exists()
    assert (golden / "small" / "onnx-cpu.npz").is_file() and (golden / "small" / "meta.json").is_file()


def test_pruning_removes_a_symlinked_orphan_but_never_what_lies_outside_the_golden_root(suite, case_dir, pytester):
    """A link is deleted as a link (never its target), a file reached through a linked case directory is
    left alone and named, and the session ends with its reports written."""
    import json

    write_case(case_dir, "small", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [golden]\n")
    write_case(case_dir, "other", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [parity]\n")
    result, _ = suite("--update-golden", "-k", "small")
    result.assert_outcomes(passed=1)
    golden, outside = pytester.path / "golden", pytester.path / "outside"
    for d in ("linked", "other"):
        (outside / d).mkdir(parents=True)
        (outside / d / "precious.txt").write_text("keep")
    (outside / "other" / "tflite-cpu.npz").write_text("keep")
    (golden / "linked").symlink_to(outside / "linked", target_is_directory=True)  # an orphan directory
    (golden / "other").symlink_to(outside / "other", target_is_directory=True)  # a case's, holding an orphan
    result, _ = suite("--parity-prune-golden", "-k", "small")
    said = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in said and "Traceback" not in said, said[-3000:]
    assert not (golden / "linked").exists() and not (golden / "linked").is_symlink()
    assert (outside / "linked" / "precious.txt").read_text() == "keep"
    assert (outside / "other" / "tflite-cpu.npz").read_text() == "keep"  # outside the root: never deleted
    result.stdout.fnmatch_lines(["*other/tflite-cpu.npz*outside the golden root*"])
    assert json.loads((pytester.path / "report.run.json").read_text())["complete"] is True
    assert (golden / "small" / "onnx-cpu.npz").is_file()


def test_a_session_killed_midway_leaves_the_report_of_what_ran(suite, case_dir, pytester):
    """An in-process export (isolate: false) that segfaults ends pytest; the JSON report written while
    the run went on still holds the records before it, marked incomplete."""
    import json

    write_case(case_dir, "a_good", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [torchscript]")
               + "checks: [parity]\n")
    write_case(case_dir, "z_crash", SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
               + "checks: [parity]\nexport:\n  onnx: {function: 'models:crashing_export', isolate: false}\n")
    result, records = suite("-p", "no:faulthandler")
    assert result.ret != 0
    assert [r["case"] for r in records] == ["a_good"] and records[0]["status"] == "passed"
    run = json.loads((pytester.path / "report.run.json").read_text())
    assert run["complete"] is False


def test_a_finished_case_frees_its_sessions_before_the_next_case_runs(suite, case_dir, pytester):
    """Memory is that of one case at a time: a case's runtime sessions are closed after its last test."""
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]") + "checks: [parity, determinism]\n"
    write_case(case_dir, "a", body)
    write_case(case_dir, "b", body)
    seen = pytester.path / "alive.txt"
    pytester.makepyfile(aliveplug=f'''
import parity.plugin

def pytest_runtest_setup(item):
    adapter = item.config.stash.get(parity.plugin._ADAPTER, None)
    alive = sorted(adapter.engine._runs) if adapter is not None else []
    with open({str(seen)!r}, "a") as f:
        f.write(item.name + " " + ",".join(alive) + "\\n")
''')
    result, records = suite("-p", "aliveplug")
    result.assert_outcomes(passed=4)
    lines = dict(line.split(" ") for line in seen.read_text().splitlines())
    assert lines["test_parity[a-onnx-cpu-determinism]"] == "a"  # kept across the checks of one case
    assert lines["test_parity[b-onnx-cpu-parity]"] == ""          # a's runs were freed
    assert lines["test_parity[b-onnx-cpu-determinism]"] == "b"


def test_a_canary_that_passes_says_the_upstream_fix_arrived_everywhere(suite, case_dir, pytester):
    """A canary whose model is fine (as when the pinned runtime gets the fix): the strict XPASS fails the
    run, and pytest's line, the record, the Markdown summary and the HTML report all say the upstream fix
    arrived and the xfail can go, naming the thread; a plain xfail case that passes does not say so."""
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [torchscript]") + "checks: [parity]\n"
    thread = "https://github.com/microsoft/onnxruntime/issues/12098"
    write_case(case_dir / "canaries", "fixed", body.replace("models:small", "parity_examples.zoo:tiny_cnn")
               .replace("shape: [3, 8, 8]", "shape: [3, 32, 32]")
               + f"xfail: the runtime picks the wrong sample\ncanary: {{upstream: '{thread}', fixed_in: 'ort 9'}}\n")
    write_case(case_dir, "plain", body + "xfail: a known limit\n")
    summary, html = pytester.path / "s.md", pytester.path / "r.html"
    result, records = suite("--parity-summary", str(summary), "--parity-html", str(html))
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    arrived = f"upstream fix arrived: the bug of {thread}, fixed in ort 9, no longer reproduces on this stack; " \
        "remove the xfail of fixed.yaml"
    assert "[XPASS(strict)] the runtime picks the wrong sample [canary; if this passes, the " + arrived in out
    assert "[XPASS(strict)] a known limit" in out
    record = by_id(records)["fixed-torchscript-cpu-parity"]
    assert record["message"].startswith(arrived) and record["canary"] == {"upstream": thread, "fixed_in": "ort 9"}
    assert "upstream fix arrived" not in by_id(records)["plain-torchscript-cpu-parity"]["message"]
    assert arrived in summary.read_text() and arrived in html.read_text()
    assert summary.read_text().count("upstream fix arrived") == 1
