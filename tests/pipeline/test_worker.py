"""Crash containment: every export runs in the framework's worker process; one that kills its
process or hangs fails its format only, and the next export gets a fresh worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import SMALL_CASE, write_case
from parity.catalog import load_case
from parity.pipeline import worker
from parity.session import Session

BODY = SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {function: 'models:FUNCTION', timeout_s: 8}\n"

PRINTING = '''
import torch


def printing_export(model, example_inputs, path):
    """A chatty user exporter: its prints must not be mistaken for (or corrupt) the worker's answer."""
    print("PARITY-EXPORT-RESULT {not json")
    print("hello from the exporter")
    torch.onnx.export(model, example_inputs, str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "b"}, "logits": {0: "b"}})
    return {"exporter": "printing"}
'''


def run_both(case_dir, tmp_path, function):
    case = load_case(write_case(case_dir, function, BODY.replace("FUNCTION", function)))
    session = Session(tmp_path / "b", tmp_path / "g")
    return (session.run_check(case, "onnx", "cpu", "parity"), session.run_check(case, "torchscript", "cpu", "parity"))


def leftovers(build) -> list[str]:
    """Hidden directories (temporary export dirs) left in the build dir."""
    return sorted(str(p.relative_to(build)) for p in build.rglob(".*") if p.is_dir())


def test_segfaulting_exporter_fails_only_its_format_and_the_next_export_gets_a_fresh_worker(case_dir, tmp_path):
    before = set(Path(tempfile.gettempdir()).glob("parity-worker-*"))
    onnx, torchscript = run_both(case_dir, tmp_path, "crashing_export")
    worker.close_all()
    assert set(Path(tempfile.gettempdir()).glob("parity-worker-*")) <= before  # the crashed one's scratch too
    assert onnx.status == "error" and onnx.cause == "export-failed", onnx.message
    assert "crashed its process with signal 11 (SIGSEGV)" in onnx.message
    assert not onnx.message.rstrip().endswith("Last output:")
    assert torchscript.status == "passed", torchscript.message  # exported by the restarted worker
    assert torchscript.metrics["artefact"]["isolated"] is True
    assert leftovers(tmp_path / "b") == []


def test_hanging_exporter_is_killed(case_dir, tmp_path):
    start = time.perf_counter()
    onnx, torchscript = run_both(case_dir, tmp_path, "hanging_export")
    assert onnx.status == "error" and "hung: killed after 8 s" in onnx.message
    assert time.perf_counter() - start < 60
    assert torchscript.status == "passed"
    assert leftovers(tmp_path / "b") == []


def test_exports_are_contained_by_default_and_match_in_process_ones(case_dir, tmp_path):
    results = {}
    for isolate in ("", ", isolate: false"):
        body = SMALL_CASE + f"checks: [parity]\nexport:\n  onnx: {{options: {{opset: 17}}{isolate}}}\n"
        result = Session(tmp_path / f"b{bool(isolate)}", tmp_path / "g").run_check(
            load_case(write_case(case_dir, "iso", body)), "onnx", "cpu", "parity")
        assert result.status == "passed", result.message
        results[bool(isolate)] = result.metrics
    assert results[False]["artefact"]["isolated"] is True  # the default
    assert results[True]["artefact"]["isolated"] is False
    assert results[False]["artefact"]["opset_written"] == results[True]["artefact"]["opset_written"] == 17


def test_one_worker_serves_every_export_of_a_framework(case_dir, tmp_path):
    worker.close_all()
    case = load_case(write_case(case_dir, "two", SMALL_CASE + "checks: [parity]\n"))
    session = Session(tmp_path / "b", tmp_path / "g")
    for fmt in ("torchscript", "onnx", "pt2"):
        assert session.run_check(case, fmt, "cpu", "parity").status == "passed"
    w = worker.worker("torch")
    assert w.starts == 1 and w.exports == 3


def test_error_inside_the_exporter_is_reported(case_dir, tmp_path):
    body = SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {function: 'models:broken_export'}\n"
    result = Session(tmp_path / "b", tmp_path / "g").run_check(load_case(write_case(case_dir, "br", body)),
                                                               "onnx", "cpu", "parity")
    assert result.status == "error"
    assert "converter exploded: unsupported operator aten::frobnicate" in result.message


def test_what_an_exporter_prints_never_corrupts_the_answer(case_dir, tmp_path):
    (case_dir / "chatty.py").write_text(PRINTING, encoding="utf-8")
    body = SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {function: 'chatty:printing_export'}\n"
    result = Session(tmp_path / "b", tmp_path / "g").run_check(load_case(write_case(case_dir, "chatty", body)),
                                                               "onnx", "cpu", "parity")
    assert result.status == "passed", result.message
    assert result.metrics["artefact"]["exporter"] == "printing"


WORKER_OF_A_KILLED_PARENT = '''
import sys, time
from pathlib import Path
from parity.catalog import load_case
from parity.pipeline.worker import worker
case = load_case(sys.argv[1])
w = worker(case.framework)
w._start()
print(w.proc.pid, w.scratch, flush=True)
time.sleep(3600)
'''


def test_a_worker_whose_parent_is_killed_cleans_up_and_exits(case_dir, tmp_path):
    path = write_case(case_dir, "orphan", SMALL_CASE)
    parent = subprocess.Popen([sys.executable, "-c", WORKER_OF_A_KILLED_PARENT, str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    pid, scratch = parent.stdout.readline().split()
    child, scratch = int(pid), Path(scratch)
    assert scratch.is_dir()
    time.sleep(3)  # the worker is up, reading its input
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    if not _gone_within(child, 20):
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the worker outlived its killed parent by 20 s")
    assert not scratch.exists()


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` exits within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


COPY_FAILS = '''
import errno
import sys
from pathlib import Path

from models import small

CALLS = Path(__file__).with_name("copies.txt")


class _FailsInWorker(type(small())):
    """Fails where parity copies the model for an export, inside the export worker only: an error
    outside the converter call. The parent's copy (the eager reference) is an ordinary one."""

    def fail(self):
        raise NotImplementedError

    def __deepcopy__(self, memo):
        if "worker_main" in (getattr(sys.modules["__main__"], "__file__", "") or ""):  # the export worker
            self.fail()
        clone = small()
        clone.load_state_dict(self.state_dict())
        return clone.train(self.training)


class Uncopyable(_FailsInWorker):
    def fail(self):
        raise RuntimeError("this model refuses to be copied in the export worker")


class FullDisk(_FailsInWorker):
    """The worker's first copy of the model meets a full disk."""

    def fail(self):
        if not CALLS.exists():
            CALLS.write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device")


def uncopyable():
    model = small()
    model.__class__ = Uncopyable
    return model


def full_disk():
    model = small()
    model.__class__ = FullDisk
    return model
'''


def test_an_error_in_the_worker_outside_the_exporter_reads_as_its_own_message(case_dir, tmp_path):
    """Not the child's last stderr lines (a traceback's line of carets): the exception, with where it
    happened."""
    (case_dir / "copyfails.py").write_text(COPY_FAILS, encoding="utf-8")
    body = SMALL_CASE.replace("models:small", "copyfails:uncopyable").replace("[torchscript, onnx]", "[onnx]")
    session = Session(tmp_path / "b", tmp_path / "g")
    try:
        result = session.run_check(load_case(write_case(case_dir, "uncopyable", body)), "onnx", "cpu", "parity")
    finally:
        session.close()
    assert result.status == "error" and result.cause == "export-failed", (result.cause, result.message)
    assert "the onnx export failed in parity's export worker: RuntimeError: this model refuses to be copied " \
           "in the export worker" in result.message, result.message
    lines = result.message.splitlines()
    assert not any(line.lstrip().startswith(("^", "~", "Traceback", "File ")) for line in lines), result.message
    assert "Last output" not in result.message


SLEEPY = '''
from pathlib import Path


def sleepy_export(model, example_inputs, path):
    """A converter that hangs: it says it started, then sleeps far past the test."""
    import time

    (Path(path).parent / "started").write_text("")
    time.sleep(3600)
'''

PARENT_OF_A_BUSY_WORKER = '''
import sys
from pathlib import Path
from parity.catalog import load_case
from parity.pipeline.worker import worker
case = load_case(sys.argv[1])
w = worker(case.framework)
w._start()
print(w.proc.pid, w.scratch, flush=True)
w.export(case, "onnx", Path(sys.argv[2]), timeout_s=3600)
'''


def test_a_worker_busy_in_a_hung_converter_when_its_parent_is_killed_cleans_up_and_exits(case_dir, tmp_path):
    """It reads no input while it hangs: it must notice the parent's death on its own."""
    (case_dir / "sleepy.py").write_text(SLEEPY, encoding="utf-8")
    body = SMALL_CASE + "checks: [parity]\nexport:\n  onnx: {function: 'sleepy:sleepy_export', timeout_s: 3600}\n"
    path = write_case(case_dir, "sleepy", body)
    out = tmp_path / "out"
    out.mkdir()
    parent = subprocess.Popen([sys.executable, "-c", PARENT_OF_A_BUSY_WORKER, str(path), str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pid, scratch = parent.stdout.readline().split()
    child, scratch = int(pid), Path(scratch)
    try:
        for _ in range(600):  # the worker builds the model, then enters the converter
            if (out / "started").exists():
                break
            assert parent.poll() is None, "the parent ended before the export started"
            time.sleep(0.2)
        else:
            raise AssertionError("the export never started")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _gone_within(child, 15), "the busy worker outlived its killed parent by 15 s"
        assert not scratch.exists()
    finally:
        for p in (parent.pid, child):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.wait()





def test_a_full_disk_in_the_worker_outside_the_exporter_is_named_and_retried_next_run(case_dir, tmp_path):
    (case_dir / "copyfails.py").write_text(COPY_FAILS, encoding="utf-8")
    body = SMALL_CASE.replace("models:small", "copyfails:full_disk").replace("[torchscript, onnx]", "[onnx]")
    path = write_case(case_dir, "fulldisk", body)
    results = []
    for _ in range(2):
        session = Session(tmp_path / "b", tmp_path / "g")
        try:
            results.append(session.run_check(load_case(path), "onnx", "cpu", "parity"))
        finally:
            session.close()
    first, again = results
    assert first.status == "error", first.message
    assert "the onnx export failed: no space left on device writing under " in first.message, first.message
    assert str(tmp_path / "b") in first.message and len(first.message.splitlines()) == 1, first.message
    assert again.status == "passed", again.message  # retried: not a known failure
