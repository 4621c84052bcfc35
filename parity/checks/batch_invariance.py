"""batch_invariance: a sample's output must not depend on the batch it is in."""

from __future__ import annotations


import numpy as np

from parity.checks.base import Check, CheckResult, Context
from parity.pipeline.run import CaseRun
from parity.checks.base import (EVAL_FIX, MIXES_FIX, numeric_cause, precision, training_cause, training_findings,
                                verdict)
from parity.compare import OutputComparison, compare_output
from parity.errors import short_error

BATCH_MATES_HINT = "outputs depend on batch-mates: batch statistics at inference — BatchNorm in training mode?"

MIXES_HINT = ("outputs depend on batch-mates, and no module is in training mode: the model itself computes across "
              "the batch axis (x - x.mean(0), a reduction over dimension 0)")

PER_BATCH_QUANT_HINT = ("each batch size is a separate INT8 artefact (static shapes), calibrated and quantized on "
                        "its own: different scales give small differences per batch size, not a batch dependence")

BATCH_SIZE_HINT = ("small differences per batch size, not gross ones: kernels chosen per batch size (raise "
                   "batch_invariance.scale if this is expected for the runtime)")

DYNAMIC_QUANT_HINT = ("outputs depend on batch-mates: dynamic quantization computes activation scales per batch "
                      "(a property of the route, not a bug in the export; use static quantization for "
                      "batch-independent predictions)")
#: Above this error (relative to max|output|) a batch difference is not float noise of kernel choice.
GROSS = {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.2}
RANDOM_HINT = "outputs are random: dropout or a random op left on at inference?"
VACUOUS_HINT = ("the artefact's outputs are all zeros or constant, so no batch size can differ from another: the "
                "comparison with the eager model (parity) says why")


def _slice(inputs: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in inputs.items()}


def _very_different(arr: np.ndarray) -> np.ndarray:
    """Batch-mates unlike the sample under test: shifted and scaled (floats), reversed (integers)."""
    if np.issubdtype(arr.dtype, np.floating):
        return (arr.astype(np.float64) * 10.0 + 5.0).astype(arr.dtype)
    return np.ascontiguousarray(np.flip(arr, axis=-1)) if arr.ndim > 1 else arr[::-1].copy()


def check_batch_invariance(run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
    """A sample's output must not depend on the batch it is in.

    Each sample is run alone (batch 1) and compared with the same sample inside a batch of every
    listed size, and inside a batch whose other samples are very different (shifted and scaled).
    """
    case = run.case
    n = max(case.batch_sizes)
    tol = run.invariance_tolerance(fmt)
    unsupported: dict[int, str] = {}
    solo: list[dict[str, np.ndarray]] = []
    from parity.errors import ExportError

    run.runner(fmt, backend)  # an artefact that does not load is an error, never a skip
    try:
        for i in range(n):
            solo.append(run.run_target(fmt, backend, _slice(run.pool, i, i + 1)))
    except ExportError:
        raise  # no artefact at all: an error, not a batch size the artefact lacks
    except Exception as e:
        try:  # a fixed-batch artefact that runs at the case's own sizes lacks batch 1; anything else is broken
            run.outputs(fmt, backend, n)
        except Exception:
            raise e from None
        return _fixed_batch(run, fmt, backend, n, tol, short_error(e, 2))
    rows: list[tuple[str, OutputComparison]] = []
    ran = [1]

    def compare(label: str, batched: dict[str, np.ndarray], count: int) -> None:
        for name, arr in batched.items():
            if arr.ndim == 0 or arr.shape[0] != count:
                continue  # not batched along dim 0: nothing to compare per sample
            expected = np.concatenate([solo[j][name] for j in range(count)])
            rows.append((label, compare_output(name, expected, arr, tol)))

    for size in case.batch_sizes:
        if size == 1:
            continue
        try:
            batched = run.outputs(fmt, backend, size)
        except Exception as e:
            unsupported[size] = short_error(e, 2)
            continue
        ran.append(size)
        compare(f"b{size}", batched, size)

    m = max(n, 2)
    mates = {k: _very_different(np.concatenate([v[1:m]] if n > 1 else [v[:1]])) for k, v in run.pool.items()}
    mixed_inputs = {k: np.concatenate([run.pool[k][:1], mates[k]]) for k in run.pool}
    try:
        mixed = run.run_target(fmt, backend, mixed_inputs)
        compare("mixed", {k: v[:1] for k, v in mixed.items()}, 1)
    except Exception as e:
        unsupported[m] = short_error(e, 2)

    if n in ran:
        random = _is_random(run, fmt, backend, run.inputs(n), run.outputs(fmt, backend, n))
    else:
        random = _is_random(run, fmt, backend, _slice(run.pool, 0, 1), solo[0])
    return _verdict(run, fmt, backend, rows, tol, ran, m, unsupported, random, [])


def _is_random(run: CaseRun, fmt: str, backend: str, inputs: dict[str, np.ndarray],
               first: dict[str, np.ndarray], tries: int = 2) -> bool:
    """Whether running `inputs` again gives other outputs than `first`. A whole batch, twice: dropout
    on a handful of values can repeat itself once (p=0.3 on 5 logits: 7% of the time)."""
    for _ in range(tries):
        again = run.run_target(fmt, backend, inputs)
        if any(not np.array_equal(again[k], first[k], equal_nan=True) for k in again):
            return True
    return False


def _fixed_batch(run: CaseRun, fmt: str, backend: str, n: int, tol, why_not_one: str) -> CheckResult:
    """Batch invariance of an artefact that runs only at the case's largest batch size `n`.

    No sample can run alone, but a sample's output can still be compared across batches of `n`: the
    same samples in reverse order (every row), and the first sample among very different batch-mates.
    """
    if n < 2:
        return CheckResult("skipped", f"the artefact runs only at batch {n} ({why_not_one}): no other batch to "
                           "put a sample in", {"unsupported_batch_sizes": {1: why_not_one}})
    base = run.outputs(fmt, backend, n)
    rows: list[tuple[str, OutputComparison]] = []
    batched = [k for k, v in base.items() if v.ndim and v.shape[0] == n]
    order = np.arange(n)[::-1]
    reversed_out = run.run_target(fmt, backend, {k: np.ascontiguousarray(v[order]) for k, v in run.inputs(n).items()})
    for name in batched:
        rows.append(("reversed", compare_output(name, base[name], reversed_out[name][order], tol)))
    first = run.inputs(n)
    mates = {k: _very_different(v[1:n]) for k, v in first.items()}
    mixed = run.run_target(fmt, backend, {k: np.concatenate([first[k][:1], mates[k]]) for k in first})
    for name in batched:
        rows.append(("mixed", compare_output(name, base[name][:1], mixed[name][:1], tol)))
    random = _is_random(run, fmt, backend, run.inputs(n), base)
    note = (f"no sample can run alone, so each was compared across batches of {n} instead (the batch reversed, "
            "and the first sample among very different batch-mates)")
    return _verdict(run, fmt, backend, rows, tol, [n], n, {1: why_not_one}, random, [note])


def _verdict(run: CaseRun, fmt: str, backend: str, rows: list, tol, ran: list, m: int,
             unsupported: dict, random: bool, notes: list[str]) -> CheckResult:
    if not rows:
        return CheckResult("skipped", "no batched output to compare (no output has the batch as dimension 0)")
    failed_labels = {label for label, c in rows if not c.passed}
    if unsupported:
        notes.append("batch sizes the artefact does not run at (skipped): " +
                     "; ".join(f"{b}: {msg}" for b, msg in unsupported.items()))
    hint = ""
    cause: tuple = (None, "", "")
    if failed_labels:
        route = str(run.artefact_info(fmt).get("route", ""))
        lint = training_cause(run, fmt)
        gross = max(c.scaled_error for _, c in rows) > GROSS[precision(fmt)]
        vacuous = all(c.vacuous and c.n_outside == 0 for _, c in rows if not c.passed)
        if vacuous and not random:
            hint = VACUOUS_HINT
            cause = _vacuous_cause(run, fmt, backend, ran, rows)
        elif random:
            hint = RANDOM_HINT
            cause = ("randomness", lint[1] if lint and lint[0] == "randomness" else
                     "a second run of the same sample gave other outputs", lint[2] if lint else "")
        elif "dynamic" in route:
            hint = DYNAMIC_QUANT_HINT
            if lint and lint[0] == "batch-dependence" and lint[2] == EVAL_FIX:
                hint += " Batch statistics (BatchNorm in training mode) may add to it."
            cause = ("batch-dependence", f"the {route} route computes activation scales per batch",
                     "use static quantization for batch-independent predictions")
        elif gross and lint and lint[0] == "batch-dependence":
            hint = BATCH_MATES_HINT if lint[2] == EVAL_FIX else MIXES_HINT
            cause = lint
        elif gross:
            hint = MIXES_HINT  # far beyond kernel noise, and nothing is in training mode
            cause = ("batch-dependence", "outputs depend on batch-mates while the model is in eval mode", MIXES_FIX)
        elif precision(fmt) == "int8" and run.static_shape(fmt):
            hint = PER_BATCH_QUANT_HINT
            cause = ("numerics", "each batch size is its own INT8 artefact, calibrated and quantized separately",
                     "compare INT8 artefacts with the accuracy check, or widen batch_invariance for this format")
        else:
            hint = BATCH_SIZE_HINT
            cause = ("numerics", "small differences per batch size", "")
        suspects = [f for f in training_findings(run, fmt) if f.kind in ("batchnorm-training", "training-mode")
                    or (random and f.kind in ("dropout-training", "random-op"))]
        notes.insert(0, "likely cause: " + hint)
        notes += [f"  {f.describe()}" for f in suspects[:8]]
    worst = {label: max(c.scaled_error for lab, c in rows if lab == label) for label in dict.fromkeys(l for l, _ in rows)}
    metrics = {"runner": run.runner(fmt, backend).name, "batch_sizes_run": ran, "mixed_batch_size": m,
               "unsupported_batch_sizes": unsupported, "error_by_batch": worst, "random": random, "hint": hint,
               "tolerance": tol.model_dump()}
    return verdict(f"batch-size invariance of {fmt}/{backend} (each sample alone vs inside a batch)", rows, run,
                   fmt, backend, metrics, notes, tolerance_text=f"all outputs: {tol.describe()} (batch_invariance)",
                   cause=cause[0], why=cause[1], fix=cause[2])


def _vacuous_cause(run: CaseRun, fmt: str, backend: str, ran: list, rows: list) -> tuple[str, str, str]:
    """(cause, why, fix) of a batch comparison that cannot fail (the artefact's outputs are zeros or
    constant at every batch size): what the artefact's outputs are next to the eager model's, with
    parity's own rules, so that both checks name one cause. Outputs of 1e-14 that an fp16 program
    returns as zeros are underflow (precision-limit), never small differences per batch size."""
    compared = []
    for size in ran:
        try:
            obtained = run.outputs(fmt, backend, size)
            expected = run.reference(size)
        except Exception:
            continue  # the eager model at that size is another check's business
        compared += [(f"b{size}", compare_output(name, expected[name], obtained[name],
                                                 run.tolerance_for(fmt, backend, name)))
                     for name in expected if name in obtained]
    found, why = numeric_cause(compared, fmt)
    if found in ("precision-limit", "nonfinite", "numerics"):
        return found, why, ""
    label, c = next((label, c) for label, c in rows if not c.passed)
    return ("vacuous", f"{c.name} at {label}: the eager model's output is as constant as the artefact's "
            f"({c.problem.replace('vacuous check: ', '')}): no batch size can differ from another", "")


class BatchInvarianceCheck(Check):
    name = "batch_invariance"
    order = 30
    config = "batch_invariance"
    triage = True

    def run(self, run, fmt, backend, session):
        return check_batch_invariance(run, fmt, backend, session)


CHECK = BatchInvarianceCheck()
