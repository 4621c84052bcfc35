"""Exports in a child process: a converter that segfaults, aborts or hangs fails its own format's
tests with a clear message, and the suite runs on.

The child (``python -m parity.pipeline.isolated_export FORMAT PATH``, the validated case as JSON on its
standard input) builds the model
from the same factory and seed (so it is the same model), exports it exactly as the parent would
and writes the exporter's metadata as JSON on its last stdout line. Costs one interpreter start,
the framework imports and one model build per isolated export.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from parity.case import Case
from parity.errors import ExportError

MARK = "PARITY-EXPORT-RESULT "
ERROR = "PARITY-EXPORT-ERROR "


def _tail(text: str, lines: int = 12) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def export_in_child(case: Case, fmt: str, out_dir: Path, timeout_s: float,
                    sizes: Optional[dict[str, int]] = None) -> tuple[dict, str]:
    """Write every file of `fmt` (at the shape variant `sizes`, if given) into `out_dir` from a
    child process; (metadata, source)."""
    # the child's scratch space lies beside out_dir (a hidden directory of the build dir) and is removed
    # here, so a child that segfaults or is killed for a hang leaves nothing behind
    scratch = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".scratch-{out_dir.name.strip('.')}-"))
    cmd = [sys.executable, "-m", "parity.pipeline.isolated_export", fmt, str(out_dir), json.dumps(sizes or {}),
           str(scratch)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # its own process group: a hang is killed whole
        try:
            out, err = proc.communicate(input=case.model_dump_json(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    except subprocess.TimeoutExpired:
        raise ExportError(f"the {fmt} export hung: killed after {timeout_s:g} s (export.{fmt}.timeout_s); "
                          "it ran in a child process, so the rest of the suite runs on") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        last = _tail(err)
        raise ExportError(f"the {fmt} exporter crashed its process with signal {-proc.returncode} ({name}); it "
                          "ran in a child process, so the rest of the suite runs on. " +
                          (f"Last output:\n{last}" if last else "It printed nothing before it died."))
    errors = [line for line in out.splitlines() if line.startswith(ERROR)]
    if errors:  # the exporter raised: its message, without the converter's chatter on stderr
        raise ExportError(json.loads(errors[-1][len(ERROR):]))
    results = [line for line in out.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not results:
        raise ExportError(_tail(err, 8) or f"the isolated {fmt} export exited with code {proc.returncode}")
    payload = json.loads(results[-1][len(MARK):])
    return payload["metadata"], payload["source"]
