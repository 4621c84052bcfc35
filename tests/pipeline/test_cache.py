"""The export cache: a re-run with nothing changed re-exports nothing; any change to what
determines an artefact re-exports, so a stale artefact is never used."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SMALL_CASE, write_case
from parity.session import Session
from parity.catalog import load_case

BODY = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]") + "checks: [parity]\n"


def parity_run(tmp_path, path, **kw):
    session = Session(tmp_path / "build", tmp_path / "golden", **kw)
    result = session.run_check(load_case(path), "onnx", "cpu", "parity")
    session.close()
    return result


def test_warm_run_reuses_artefact_and_reference(case_dir, tmp_path):
    path = write_case(case_dir, "c", BODY)
    cold = parity_run(tmp_path, path)
    warm = parity_run(tmp_path, path)
    assert cold.status == warm.status == "passed"
    assert cold.metrics["artefact"]["cached"] is False and warm.metrics["artefact"]["cached"] is True
    assert cold.metrics["artefact"]["cache_key"] == warm.metrics["artefact"]["cache_key"]
    assert parity_run(tmp_path, path, use_cache=False).metrics["artefact"]["cached"] is False


def test_every_key_change_reexports(case_dir, tmp_path):
    path = write_case(case_dir, "c", BODY)
    keys = {parity_run(tmp_path, path).metrics["artefact"]["cache_key"]}

    def changed(new_body=None, edit_models=None):
        if new_body is not None:
            path.write_text(new_body)
        if edit_models is not None:
            models = case_dir / "models.py"
            models.write_text(edit_models(models.read_text()))
        result = parity_run(tmp_path, path)
        assert result.status == "passed", result.message  # the new artefact matches the new model
        assert result.metrics["artefact"]["cached"] is False
        keys.add(result.metrics["artefact"]["cache_key"])

    changed(BODY.replace("seed: 3", "seed: 4"))                                 # seed
    changed(BODY.replace("  seed: 3", "  seed: 3\n  kwargs: {classes: 6}"))      # factory kwargs
    changed(BODY + "export:\n  onnx: {options: {opset: 17}}\n")                  # exporter options
    changed(edit_models=lambda src: src.replace("uniform_(0.5, 2.0)", "uniform_(0.7, 2.0)"))  # factory source
    changed(BODY.replace("shape: [3, 8, 8]", "shape: [3, 8, 8], std: 2"))       # inputs (traced with them)
    assert len(keys) == 6


def test_weights_content_is_part_of_the_key(case_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    import sys
    sys.path.insert(0, str(case_dir))
    import models  # the tests' model module, beside the case

    state = {k: v.contiguous() for k, v in models.small().state_dict().items()}
    save_file(state, str(case_dir / "w.safetensors"))
    path = write_case(case_dir, "w", BODY.replace("  seed: 3", "  seed: 3\n  weights: w.safetensors"))
    first = parity_run(tmp_path, path)
    state["fc.weight"] = state["fc.weight"] * 2
    save_file(state, str(case_dir / "w.safetensors"))
    second = parity_run(tmp_path, path)
    assert second.status == "passed", second.message
    assert second.metrics["artefact"]["cache_key"] != first.metrics["artefact"]["cache_key"]
    assert second.metrics["artefact"]["cached"] is False
    assert torch  # imported for safetensors.torch


COUNTING = '''
from pathlib import Path

CALLS = Path(__file__).with_name("calls.txt")


def counting_broken_export(model, example_inputs, path):
    CALLS.write_text(CALLS.read_text() + "x" if CALLS.exists() else "x")
    raise RuntimeError("converter exploded VERSION")
'''


def test_a_failed_export_is_cached_under_its_key_until_something_in_it_changes(case_dir, tmp_path):
    """A known-broken conversion is not retried on every run; a change to its key (here the export
    function's source) retries it, and --parity-no-cache always does."""
    exporter = case_dir / "counting.py"
    exporter.write_text(COUNTING.replace("VERSION", "v1"))
    path = write_case(case_dir, "b", BODY + "export:\n  onnx: {function: 'counting:counting_broken_export'}\n")
    first = parity_run(tmp_path, path)
    assert first.status == "error" and "converter exploded v1" in first.message
    assert not [p for p in (tmp_path / "build" / "cache" / "export").iterdir() if not p.name.endswith(".lock")]
    again = parity_run(tmp_path, path)
    assert again.status == "error" and again.cause == first.cause
    assert "converter exploded v1" in again.message and "a known failure, from the export cache" in again.message
    assert (case_dir / "calls.txt").read_text() == "x"  # not run again
    exporter.write_text(COUNTING.replace("VERSION", "v2"))
    assert "converter exploded v2" in parity_run(tmp_path, path).message
    assert (case_dir / "calls.txt").read_text() == "xx"
    assert "known failure" not in parity_run(tmp_path, path, use_cache=False).message


def test_cached_reference_equals_recomputed(case_dir, tmp_path):
    path = write_case(case_dir, "r", BODY)
    a = Session(tmp_path / "build", tmp_path / "g").case_run(load_case(path))
    ref = a.reference(3)["logits"]
    b = Session(tmp_path / "build", tmp_path / "g").case_run(load_case(path))
    assert b._model_results["cached"] is True and b._model is None  # the model was not built
    assert np.array_equal(b.reference(3)["logits"], ref)


def test_a_killed_runs_temporary_directories_are_swept_but_not_a_live_writers(tmp_path):
    from filelock import FileLock

    from parity.pipeline.cache import Cache

    kind = tmp_path / "cache" / "artefact"
    stale, scratch, live = kind / ".aaa111.x1y2", kind / ".scratch-aaa111.x1y2-z3", kind / ".bbb222.q9"
    for d in (stale, scratch, live):
        d.mkdir(parents=True)
    (kind / "keep").mkdir()
    with FileLock(str(kind / "bbb222") + ".lock"):  # another run is exporting bbb222 right now
        removed = Cache(tmp_path / "cache").sweep()
    assert sorted(p.name for p in removed) == sorted([stale.name, scratch.name])
    assert live.is_dir() and (kind / "keep").is_dir()


def test_a_file_swapped_into_the_cache_is_never_loaded(case_dir, tmp_path):
    """Each entry's files are checked against its manifest: a tampered artefact is re-exported."""
    from pathlib import Path

    path = write_case(case_dir, "c", BODY)
    cold = parity_run(tmp_path, path)
    artefact = Path(cold.metrics["artefact"]["path"])
    original = artefact.read_bytes()
    artefact.write_bytes(b"swapped in by someone else")
    again = parity_run(tmp_path, path)
    assert again.status == "passed", again.message
    assert again.metrics["artefact"]["cached"] is False  # re-made, not loaded
    assert artefact.read_bytes() == original
    assert parity_run(tmp_path, path).metrics["artefact"]["cached"] is True


FLAKY = '''
import errno
import os
import signal
from pathlib import Path

import torch

CALLS = Path(__file__).with_name("calls.txt")


def flaky_export(model, example_inputs, path):
    """Fails the first time as the machine would (a full disk, no memory, the OOM killer), then exports."""
    first = not CALLS.exists()
    CALLS.write_text(CALLS.read_text() + "x" if CALLS.exists() else "x")
    if first:
        FAILURE
    torch.onnx.export(model, example_inputs, str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "b"}, "logits": {0: "b"}})
    return {}
'''

FAILURES = {
    "disk-full": ('raise OSError(errno.ENOSPC, "No space left on device")', "no space left on device writing under "),
    "disk-full-in-process": ('raise OSError(errno.ENOSPC, "No space left on device")',
                             "no space left on device writing under "),
    "out-of-memory": ("raise MemoryError()", "ran out of memory"),
    "oom-killed": ("os.kill(os.getpid(), signal.SIGKILL)", "was killed (signal 9, SIGKILL)"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failure_of_the_machine_is_never_cached_as_a_known_failure(case_dir, tmp_path, failure):
    """A full disk, a MemoryError or a worker killed by SIGKILL (the OOM killer) says nothing about the
    export: the next run tries again, and the message says what ran out (and where, for the disk)."""
    raising, said = FAILURES[failure]
    (case_dir / "flaky.py").write_text(FLAKY.replace("FAILURE", raising), encoding="utf-8")
    isolate = ", isolate: false" if failure.endswith("in-process") else ""
    path = write_case(case_dir, "f", BODY + f"export:\n  onnx: {{function: 'flaky:flaky_export'{isolate}}}\n")
    first = parity_run(tmp_path, path)
    assert first.status == "error" and said in first.message, first.message
    assert "never cached" in first.message and len(first.message.splitlines()) == 1, first.message
    if failure.startswith("disk-full"):
        assert str(tmp_path / "build" / "cache" / "export") in first.message, first.message
    assert not (tmp_path / "build" / "cache" / "export-failed").exists() or \
        not any((tmp_path / "build" / "cache" / "export-failed").iterdir())
    again = parity_run(tmp_path, path)
    assert again.status == "passed", again.message
    assert (case_dir / "calls.txt").read_text() == "xx"  # tried again


def test_a_linted_artefact_is_still_reused_by_the_next_run(case_dir, tmp_path):
    """The lint's cached findings live in an entry of their own: written into the artefact's entry
    after its manifest, they made every warm run see a changed entry and export everything again."""
    path = write_case(case_dir, "l", BODY.replace("checks: [parity]", "checks: [parity, lint]"))

    def run(check, backend="cpu"):
        session = Session(tmp_path / "build", tmp_path / "golden")
        try:
            return session.run_check(load_case(path), "onnx", backend, check)
        finally:
            session.close()

    assert run("lint", "").status == "passed"
    assert run("parity").metrics["artefact"]["cached"] is True
    assert (tmp_path / "build" / "cache" / "lint").is_dir()
    assert run("lint", "").status == "passed"  # from its own cache entry
