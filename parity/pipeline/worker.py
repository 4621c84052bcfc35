"""Exports in a persistent child process: a converter that segfaults, aborts or hangs fails its own
format's tests with a clear message, and the session runs on.

One worker per source framework (``torch``, ``keras``) per session process, started on the first
export that needs it, imports the converters once and serves every later export of that
framework (``python -m parity.pipeline.worker_main``, one JSON request per line on its standard
input, one result line on its standard output). It builds each case's model from the same factory
and seed as the parent (so it is the same model), keeping the last case's built model for the next
export of that case. A crash or a hang kills the worker and fails only that export; the next export
starts a fresh worker. A worker whose parent dies reads the end of its input, removes its scratch
directory and exits; one busy in a converter then is ended by its own watchdog thread.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from parity.case import Case
from parity.errors import ExportError

MARK = "PARITY-EXPORT-RESULT "
ERROR = "PARITY-EXPORT-ERROR "
#: The lines of a worker's standard error kept for a crash message.
TAIL_LINES = 12


def _tail(lines: collections.deque, count: int = TAIL_LINES) -> str:
    kept = [line.rstrip() for line in lines if line.strip()]
    return "\n".join(kept[-count:])


class ExportWorker:
    """One persistent export process; :meth:`export` restarts it after a crash or a hang."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.proc: Optional[subprocess.Popen] = None
        self.started_s = 0.0  # seconds the last start took until the worker was ready
        self.exports = 0  # served by the current process
        self.starts = 0

    # ---- the process
    def _start(self) -> None:
        start = time.perf_counter()
        # its scratch directory: removed by the worker at the end of its input (also when this process
        # dies), and here when the worker dies (a crash or a kill runs none of its clean-up)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"parity-worker-{self.framework}-"))
        self.proc = subprocess.Popen([sys.executable, "-m", "parity.pipeline.worker_main", self.framework,
                                      str(self.scratch)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, start_new_session=True,  # a hang is killed whole
                                     env={**os.environ, "PARITY_WORKER_PARENT": str(os.getpid())})  # its watchdog's
        self.lines: queue.Queue = queue.Queue()
        self.stderr: collections.deque = collections.deque(maxlen=200)
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._collect, args=(self.proc.stderr, self.stderr), daemon=True).start()
        self.starts += 1
        self.exports = 0
        self.started_s = time.perf_counter() - start

    @staticmethod
    def _read(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)  # the worker's end

    @staticmethod
    def _collect(stream, kept: collections.deque) -> None:
        for line in stream:
            kept.append(line)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._gone()

    def _gone(self) -> None:
        self.proc = None
        scratch = getattr(self, "scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def close(self, grace_s: float = 10.0) -> None:
        """End the worker: its input closed (it removes its scratch and exits), killed if it does not."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=grace_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill()

    # ---- one export
    def export(self, case: Case, fmt: str, out_dir: Path, timeout_s: float,
               sizes: Optional[dict[str, int]] = None, cache_root: Optional[Path] = None,
               use_cache: bool = True) -> tuple[dict, str]:
        """Write every file of `fmt` (at the shape variant `sizes`, if given) into `out_dir` in the
        worker; (metadata, source). ExportError on the exporter's error, a crash or a hang. With
        `cache_root`, the worker reads the model's cached results (its output selection) from there."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        from parity.pipeline.cache import model_key

        # the model key (factory source, weights content, ...) tells the worker when its built model is stale
        request = json.dumps({"case": json.loads(case.model_dump_json()), "model_key": model_key(case),
                              "format": fmt, "out_dir": str(out_dir),
                              "sizes": sizes or {}, "cache": str(cache_root) if cache_root else None,
                              "use_cache": use_cache})
        self.stderr.clear()
        try:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
        except OSError:  # it died between two exports: once more with a fresh one
            self._kill()
            self._start()
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                self._kill()
                raise ExportError(f"the {fmt} export hung: killed after {timeout_s:g} s (export.{fmt}.timeout_s); "
                                  "it ran in parity's export worker, so the rest of the suite runs on",
                                  transient=True) from None
            if line is None:
                return self._died(fmt)
            if line.startswith(ERROR):
                self.exports += 1
                said = json.loads(line[len(ERROR):])  # {"message", "transient"}
                raise ExportError(said["message"], transient=bool(said.get("transient")))
            if line.startswith(MARK):
                self.exports += 1
                payload = json.loads(line[len(MARK):])
                return payload["metadata"], payload["source"]

    def _died(self, fmt: str):
        code = self.proc.wait()
        time.sleep(0.05)  # the last lines of its standard error
        last = _tail(self.stderr)
        self._gone()
        said = f"Last output:\n{last}" if last else "It printed nothing before it died."
        if code == -signal.SIGKILL:  # from outside: the system's out-of-memory killer, most often; not cached
            raise ExportError(f"parity's export worker was killed (signal 9, SIGKILL) during the {fmt} export: most "
                              "often the system's out-of-memory killer (see dmesg); free memory or run fewer exports "
                              f"at once, then run again (a failure like this is never cached as a known failure). "
                              f"{said}", transient=True)
        if code < 0:
            name = signal.Signals(-code).name
            raise ExportError(f"the {fmt} exporter crashed its process with signal {-code} ({name}); it ran in "
                              f"parity's export worker, so the rest of the suite runs on. {said}")
        raise ExportError(f"parity's export worker exited with code {code} during the {fmt} export. {said}")


_WORKERS: dict[str, ExportWorker] = {}


def worker(framework: str) -> ExportWorker:
    """This process's worker for `framework`, created on first use (closed at exit)."""
    if framework not in _WORKERS:
        _WORKERS[framework] = ExportWorker(framework)
    return _WORKERS[framework]


def close_all() -> None:
    for w in list(_WORKERS.values()):
        w.close()
    _WORKERS.clear()


atexit.register(close_all)


def export_in_worker(case: Case, fmt: str, out_dir: Path, timeout_s: float, sizes: Optional[dict[str, int]] = None,
                     cache_root: Optional[Path] = None, use_cache: bool = True) -> tuple[dict, str]:
    return worker(case.framework).export(case, fmt, out_dir, timeout_s, sizes, cache_root, use_cache)
