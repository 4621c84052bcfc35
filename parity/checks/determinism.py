"""determinism: repeated runs in one session, and one in a fresh session, must agree."""

from __future__ import annotations


import numpy as np

from parity.checks.base import Check, CheckResult, Context
from parity.pipeline.run import CaseRun
from parity.checks.base import training_findings
from parity.checks.batch_invariance import RANDOM_HINT
from parity.compare import compare_output


def check_determinism(run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
    """Repeated runs in one session, and one in a fresh session, must be bitwise identical
    (or within the case's per-backend determinism tolerance)."""
    case = run.case
    size = max(case.batch_sizes)
    inputs = run.inputs(size)
    first = run.outputs(fmt, backend, size)
    attempts = [(f"run {i + 2} of {case.determinism.runs}", run.run_target(fmt, backend, inputs))
                for i in range(case.determinism.runs - 1)]
    with run.fresh_runner(fmt, backend) as fresh:
        attempts.append(("fresh session", dict(zip(run.output_names, fresh.infer(inputs)))))
    tol = run.determinism_tolerance(backend)
    differences = []
    table: dict[str, dict[str, float]] = {}
    for label, outputs in attempts:
        for name, arr in outputs.items():
            ref = first[name]
            same_shape = arr.shape == ref.shape
            diff = float(np.nanmax(np.abs(arr.astype(np.float64) - ref))) if same_shape and arr.size else 0.0
            table.setdefault(name, {})[label] = diff
            if tol is None:
                ok = same_shape and np.array_equal(arr, ref, equal_nan=True)
            else:
                ok = compare_output(name, ref, arr, tol).passed
            if not ok:
                differences.append(f"  {name}: {label} differs from run 1 by up to {diff:.3g}"
                                   + ("" if same_shape else f" (shape {arr.shape} vs {ref.shape})"))
    metrics = {"runner": run.runner(fmt, backend).name, "runs": case.determinism.runs, "batch_size": size,
               "max_abs_difference": table, "bitwise": tol is None,
               "tolerance": None if tol is None else tol.model_dump()}
    if not differences:
        return CheckResult("passed", "", metrics)
    random_nodes = [f for f in training_findings(run, fmt) if f.kind in ("dropout-training", "random-op")]
    lines = [f"determinism of {fmt}/{backend}: outputs differ between runs on the same input (batch {size}, "
             f"{'bitwise' if tol is None else 'tolerance ' + tol.describe()})", *differences,
             "likely cause: " + RANDOM_HINT]
    if random_nodes:
        lines += ["random nodes found:", *[f"  {f.describe()}" for f in random_nodes[:8]]]
    metrics["random_nodes"] = [f.as_dict() for f in random_nodes]
    why = differences[0].strip() + (f"; random node {random_nodes[0].where} ({random_nodes[0].op})" if random_nodes
                                    else "")
    return CheckResult("failed", "\n".join(lines), metrics, cause="randomness", why=why)


class DeterminismCheck(Check):
    name = "determinism"
    order = 40
    config = "determinism"

    def run(self, run, fmt, backend, session):
        return check_determinism(run, fmt, backend, session)


CHECK = DeterminismCheck()
