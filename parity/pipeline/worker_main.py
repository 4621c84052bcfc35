"""The child side of the export worker (see :mod:`parity.pipeline.worker`).

``python -m parity.pipeline.worker_main FRAMEWORK SCRATCH_DIR`` reads one request per line on its standard
input (the validated case as JSON, the format, the output directory, the shape variant), exports
exactly as the parent would and answers with one line on its standard output: the exporter's
metadata, or its error message. Whatever the user's code or a converter prints goes to standard
error, never into the answers. At the end of its input (the parent closed it, or died) it removes
its scratch directory and exits. A watchdog thread does the same when the parent dies while the
worker is busy in a converter (which reads no input, and may hang): an orphan never runs on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from parity.pipeline.worker import ERROR, MARK


#: How often the watchdog looks for its parent, in seconds.
WATCH_EVERY_S = 0.5


def _watch_parent(parent: int, scratch: Path) -> None:
    """Exit, after removing `scratch`, once this process's parent is no longer `parent` (it died: the
    worker was re-parented), whatever the main thread is doing."""
    while os.getppid() == parent:
        time.sleep(WATCH_EVERY_S)
    for _ in range(2):  # a second pass for what a busy main thread wrote meanwhile
        shutil.rmtree(scratch, ignore_errors=True)
    if os.name == "posix" and os.getpgrp() == os.getpid():  # its own session: a converter's children too
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


def main(framework: str, scratch_dir: str = "") -> int:
    # the pid the parent passed: a parent that died before this line ran is noticed too
    parent = int(os.environ.get("PARITY_WORKER_PARENT") or os.getppid())
    import parity._triton_first  # noqa: F401  (before anything imports TensorFlow)

    from parity.case import Case
    from parity.errors import CaseError, ExportError, exhausted_export, short_error
    from parity.pipeline.cache import Cache
    from parity.pipeline.run import CaseRun

    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's own copy of standard output
    os.dup2(2, 1)  # stdout (Python's and C's) now goes to stderr: prints cannot corrupt an answer
    sys.stdout = sys.stderr
    scratch = Path(scratch_dir) if scratch_dir else Path(tempfile.mkdtemp(prefix=f"parity-worker-{framework}-"))
    threading.Thread(target=_watch_parent, args=(parent, scratch), daemon=True, name="parent-watchdog").start()
    last: tuple[str, CaseRun] | None = None  # the last case's run: its built model serves the next export

    def answer(prefix: str, payload) -> None:
        answers.write(prefix + json.dumps(payload, default=str) + "\n")
        answers.flush()

    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            request: dict = {}
            try:
                request = json.loads(line)
                text = json.dumps([request["case"], request.get("model_key"), request.get("cache"), request.get("use_cache")],
                                  sort_keys=True)
                if last is None or last[0] != text:
                    last = None  # free the previous model first
                    cache = Cache(request["cache"] or scratch / "cache", enabled=bool(request.get("use_cache", True)))
                    last = (text, CaseRun(Case.model_validate(request["case"]), scratch / "build", cache))
                run = last[1]
                metadata, source = run.export_files(request["format"], Path(request["out_dir"]),
                                                    request.get("sizes") or None)
            except (ExportError, CaseError) as e:
                answer(ERROR, {"message": str(e), "transient": bool(getattr(e, "transient", False))})
                continue
            except Exception as e:  # outside the exporter call: its message, not a traceback's last lines
                exhausted = exhausted_export(e, request.get("format", "?"), request.get("out_dir", scratch))
                if exhausted is not None:  # a full disk or no memory: never cached as a known failure
                    answer(ERROR, {"message": str(exhausted), "transient": True})
                    continue
                answer(ERROR, {"message": f"the {request.get('format', '?')} export failed in parity's export "
                                          f"worker: {short_error(e, 3)}", "transient": False})
                continue
            answer(MARK, {"metadata": metadata, "source": source})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
