"""latency (opt-in): how long each artefact takes on each backend, per batch size.

Reported, not gated, unless the case declares ``latency.max_p50_ms``. What is timed is the
runner's ``infer()`` exactly as the other checks use it: NumPy arrays in, NumPy arrays out, so on
a GPU backend the host-device copies (and the synchronisation they imply) are included.
Each batch size gets ``warmup`` untimed runs first (session initialisation, TorchScript's
profiling runs, allocator and cache warm-up), then ``runs`` timed ones; each phase stops early
after ``budget_s`` seconds, so a loaded machine cannot stall the suite (the metrics say how many
runs were made). Timings are only as quiet as the machine: on a CPU shared with other processes,
a runtime using several threads (TorchScript) can be tens of times slower than when alone.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from parity.checks.base import Check, CheckResult, Context
from parity.pipeline.run import CaseRun

#: Warm-up and timed runs made even when the time budget is spent.
MIN_RUNS = 3


def measure(fn: Callable[[], object], warmup: int, runs: int, budget_s: float = float("inf")) -> dict:
    """Call `fn` `warmup` times untimed, then `runs` times timed; milliseconds, rounded to 0.1 us.

    Each phase stops early once it has taken `budget_s` seconds, but only after ``MIN_RUNS`` runs
    (or all of them, if fewer were asked), so a slow model or a loaded machine cannot stall the suite; the result
    says how many runs were actually made.
    """
    start = time.perf_counter()
    done_warmup = 0
    while done_warmup < warmup and (done_warmup < MIN_RUNS or time.perf_counter() - start < budget_s):
        fn()
        done_warmup += 1
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (len(times) < MIN_RUNS or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    arr = np.asarray(times)
    p50, p90 = np.percentile(arr, [50, 90])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "mean": round(float(arr.mean()), 4),
            "min": round(float(arr.min()), 4), "max": round(float(arr.max()), 4), "runs": len(times),
            "warmup": done_warmup}


def check_latency(run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
    """p50/p90 latency of the target at every batch size; fails only above a declared maximum."""
    case = run.case
    spec = case.latency
    runner = run.runner(fmt, backend)
    per_batch: dict[str, dict] = {}
    over: list[str] = []
    for size in case.batch_sizes:
        inputs = run.inputs(size)
        stats = measure(lambda: runner.infer(inputs), spec.warmup, spec.runs, spec.budget_s)
        limit = spec.limit_for(size)
        if limit is not None:
            stats["max_p50"] = limit
            if stats["p50"] > limit:
                over.append(f"batch {size}: p50 {stats['p50']:.3g} ms > {limit:g} ms (p90 {stats['p90']:.3g} ms)")
        per_batch[f"b{size}"] = stats
    metrics = {"runner": runner.name, "artefact": run.artefact_info(fmt), "latency_ms": per_batch}
    summary = "; ".join(f"{b}: p50 {s['p50']:.3g} ms, p90 {s['p90']:.3g} ms ({s['runs']} runs)"
                        for b, s in per_batch.items())
    if over:
        return CheckResult("failed", f"latency of {fmt}/{backend} above the case's latency.max_p50_ms "
                           f"(after {spec.warmup} warm-up runs):\n  " + "\n  ".join(over)
                           + f"\nmeasured: {summary}", metrics, cause="slow", why=over[0])
    return CheckResult("passed", f"latency of {fmt}/{backend}: {summary}", metrics)


class LatencyCheck(Check):
    name = "latency"
    order = 70
    opt_in = True  # timed runs cost time and gate nothing unless the case declares a maximum
    config = "latency"

    def run(self, run, fmt, backend, session):
        return check_latency(run, fmt, backend, session)


CHECK = LatencyCheck()
