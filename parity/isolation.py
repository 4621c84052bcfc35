"""Exports in a child process: a converter that segfaults, aborts or hangs fails its own format's
tests with a clear message, and the suite runs on.

The child (``python -m parity.isolation CASE FORMAT PATH``) loads the case file, builds the model
from the same factory and seed (so it is the same model), exports it exactly as the parent would
and writes the exporter's metadata as JSON on its last stdout line. Costs one interpreter start,
the framework imports and one model build per isolated export.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from parity.errors import ExportError
from parity.spec import Case

_MARK = "PARITY-EXPORT-RESULT "


def _tail(text: str, lines: int = 12) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def export_in_child(case: Case, fmt: str, path: Path, timeout_s: float, batch: int | None = None) -> tuple[dict, str]:
    """Export in a child process; `batch` is the batch size of a static-batch format's export."""
    cmd = [sys.executable, "-m", "parity.isolation", case.path, fmt, str(path), str(batch or 0)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hang is killed whole
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ExportError(f"the {fmt} export hung: killed after {timeout_s:g} s (export.{fmt}.timeout_s); "
                          "it ran in a child process, so the rest of the suite runs on") from None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise ExportError(f"the {fmt} exporter crashed its process with signal {-proc.returncode} ({name}); it "
                          f"ran in a child process, so the rest of the suite runs on. Last output:\n{_tail(err)}")
    results = [line for line in out.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not results:
        raise ExportError(_tail(err, 8) or f"the isolated {fmt} export exited with code {proc.returncode}")
    payload = json.loads(results[-1][len(_MARK):])
    return payload["metadata"], payload["source"]


def _child(case_path: str, fmt: str, path: str, batch: str = "0") -> int:
    from parity.engine import CaseRun
    from parity.model import to_torch
    from parity.spec import load_case
    import copy
    import tempfile

    case = load_case(case_path)
    run = CaseRun(case, Path(tempfile.mkdtemp(prefix="parity-isolated-")))
    try:
        inputs = run.inputs(int(batch)) if int(batch) else run.example_inputs()
        metadata, source = run.export_module(fmt, copy.deepcopy(run.model), to_torch(inputs),
                                             Path(path), list(case.inputs), run.output_names)
    except ExportError as e:
        print(str(e), file=sys.stderr)
        return 3
    print(_MARK + json.dumps({"metadata": metadata, "source": source}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(*sys.argv[1:5]))
