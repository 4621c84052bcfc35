"""The child side of an isolated export (see :mod:`parity.pipeline.isolation`).

``python -m parity.pipeline.isolated_export FORMAT OUT_DIR SIZES_JSON SCRATCH_DIR`` reads the validated case as JSON on
its standard input, builds the model from the same factory and seed (so it is the same model),
exports it exactly as the parent would and prints the exporter's metadata as JSON on its last
stdout line. Its scratch directory is the parent's, which removes it even when the child is killed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from parity.case import Case
from parity.errors import CaseError, ExportError
from parity.pipeline.isolation import ERROR, MARK


def _child(fmt: str, out_dir: str, sizes: str, scratch: str) -> int:
    from parity.pipeline.run import CaseRun

    from parity.errors import short_error

    try:
        case = Case.model_validate_json(sys.stdin.read())  # validated by the parent: the same case
    except Exception as e:  # a parent and child that disagree on the schema: say so in one line
        print(ERROR + json.dumps(f"the isolated export could not read the case: {short_error(e, 3)}"), flush=True)
        return 3
    run = CaseRun(case, Path(scratch))
    try:
        metadata, source = run.export_files(fmt, Path(out_dir), json.loads(sizes) or None)
    except (ExportError, CaseError) as e:
        print(ERROR + json.dumps(str(e)), flush=True)
        return 3
    except Exception as e:  # outside the exporter call: its message, not a traceback's last lines
        print(ERROR + json.dumps(f"the isolated {fmt} export failed: {short_error(e, 3)}"), flush=True)
        return 3
    print(MARK + json.dumps({"metadata": metadata, "source": source}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(*sys.argv[1:5]))
