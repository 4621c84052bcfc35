"""golden: today's outputs of each target on the golden inputs against the outputs recorded for it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import numpy as np

from parity.checks.base import Check, CheckResult, Context
from parity.pipeline.run import CaseRun
from parity.checks.base import golden_versions, precision, update_command, verdict
from parity.compare import FP16_TINY, OutputComparison, compare_outputs
from parity.errors import GoldenError
from parity.golden import key
from parity.pipeline.cache import model_identity

#: Artefact facts that vary with the machine's cache and timing, not with what the artefact computes:
#: kept out of goldens, so a warm --update-golden rewrites nothing that did not change.
VOLATILE = ("path", "export_s", "size_bytes", "cached", "cache_key", "isolated")




def _no_golden(message: str) -> CheckResult:
    """No usable golden for the target: the message says which and gives the command that records it."""
    return CheckResult("failed", message, cause="no-golden", why=message.split("; ")[0].split(". Re-record")[0])


def what_changed(run: CaseRun, target_meta: dict, reference_moved: float) -> tuple[list[str], str]:
    """(the changes since the golden was recorded, one sentence): the model's key (factory source,
    kwargs, seed, weights), the eager reference, and the versions of the packages that compute."""
    changes = []
    recorded_key = target_meta.get("model_key")
    if recorded_key is not None and recorded_key != model_identity(run.case):
        changes.append("the model changed (its factory source, kwargs, seed or weights)")
    if reference_moved > 0:
        changes.append(f"the eager reference moved by up to {reference_moved:.3g}")
    before, now = target_meta.get("versions") or {}, golden_versions()
    # only what both recorded: a golden older than a key (cpu_features) is no evidence of a change
    moved = [f"{k} {before[k] or '(none)'} -> {now[k] or '(none)'}" for k in sorted(set(before) & set(now))
             if before[k] != now[k]]
    if moved:
        changes.append("the environment changed: " + ", ".join(moved))
    if not changes:
        unknown = " (the golden predates model keys)" if recorded_key is None else ""
        return [], ("nothing parity tracks changed (same model key, same versions)" + unknown +
                    ": the export or runtime does not reproduce its own output")
    return changes, "; ".join(changes)


def _malformed_inputs(run: CaseRun, golden_inputs: dict[str, np.ndarray]) -> str:
    """Why the recorded inputs cannot be fed to this case's model ('' if they can): what a hand-edited
    or truncated inputs.npz would otherwise turn into a runtime's traceback."""
    case = run.case
    for name, spec in case.inputs.items():
        arr = golden_inputs.get(name)
        if arr is None:
            continue  # the list of names is checked with a message of its own
        want = run.pool[name]
        if arr.ndim != want.ndim or arr.shape[1:] != want.shape[1:]:
            return (f"input {name!r} holds samples of shape {list(arr.shape[1:])} but the case feeds "
                    f"{list(want.shape[1:])}")
        if arr.shape[0] < max(case.batch_sizes):
            return f"input {name!r} holds {arr.shape[0]} samples, fewer than the largest batch size {max(case.batch_sizes)}"
        if arr.dtype != want.dtype:
            return f"input {name!r} is {arr.dtype}, the case feeds {want.dtype}"
    return ""


def _write_case_golden(run: CaseRun, session: "Context") -> None:
    """inputs.npz, reference.npz and meta.json for the case, once per session."""
    if run.golden_case_written:
        return
    case = run.case
    store = session.golden
    sizes = case.batch_sizes
    reference = {key(name, b): arr for b in sizes for name, arr in run.reference(b).items()}
    store.write_arrays(case.name, "inputs.npz", run.pool)
    store.write_arrays(case.name, "reference.npz", reference)
    store.write_json(case.name, "meta.json", {
        "case": case.name,
        "input_fingerprint": case.input_fingerprint(),
        "batch_sizes": sizes,
        "inputs": {name: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)} for name, a in run.pool.items()},
        "outputs": run.output_names,
        "versions": golden_versions(),
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    run.golden_case_written = True


def _unrecordable(run: CaseRun, fmt: str, backend: str) -> tuple[str, str]:
    """(why, cause) these outputs must not become a golden (('', '') if they may): a golden that cannot
    tell a right export from a wrong one, or one that records a broken export, would pass every later run.

    Zeros where the eager model is not are underflow (precision-limit) by parity's rule for the
    parity check (checks.base.numeric_cause): at least half the elements nonzero and below fp16's
    smallest normal, in a reduced-precision format or with every value that small; else the export
    computes wrong values (numerics)."""
    for b in run.case.batch_sizes:
        reference, obtained = run.reference(b), run.outputs(fmt, backend, b)
        for name, ref in reference.items():
            ref = np.asarray(ref)
            out = np.asarray(obtained.get(name, ref))
            if not np.issubdtype(ref.dtype, np.floating):
                continue
            allowed = run.tolerance_for(fmt, backend, name).allow_vacuous
            if np.isfinite(ref).all() and not np.isfinite(out).all():
                return f"output {name!r} at batch {b} has NaN/Inf where the eager model has none", "nonfinite"
            if not allowed and ref.size and not np.any(ref):
                return (f"the eager reference of {name!r} is all zeros at batch {b}, so a golden could not fail "
                        "(set tolerance.allow_vacuous if that is intended)"), "vacuous"
            if not allowed and np.any(ref) and not np.any(out):
                largest = float(np.nanmax(np.abs(ref)))
                tiny = int(((ref != 0) & (np.abs(ref) < FP16_TINY)).sum())
                zeros = f"output {name!r} at batch {b} is all zeros where the eager model's is not (largest |value| "
                if tiny >= 0.5 * ref.size and (precision(fmt) != "fp32" or largest < FP16_TINY):
                    return (f"{zeros}{largest:.3g}): values below {fmt}'s precision underflow (fp16's smallest "
                            f"normal is {FP16_TINY:.2g})"), "precision-limit"
                return f"{zeros}{largest:.3g}): the export returns zeros", "numerics"
    return "", ""


def _errors_vs_reference(run: CaseRun, fmt: str, backend: str) -> dict[str, dict[str, float]]:
    """Per output, the worst error of the target against the eager reference over all batch sizes."""
    worst: dict[str, dict[str, float]] = {}
    for size in run.case.batch_sizes:
        for c in compare_outputs(run.reference(size), run.outputs(fmt, backend, size),
                                 lambda n: run.tolerance_for(fmt, backend, n)):
            w = worst.setdefault(c.name, {"max_abs": 0.0, "scaled_error": 0.0})
            w["max_abs"] = max(w["max_abs"], c.max_abs)
            w["scaled_error"] = max(w["scaled_error"], c.scaled_error)
    return worst


def _learned_drift(run: CaseRun, fmt: str, backend: str, recorded: dict, changed: str = "") -> tuple[dict, list[str]]:
    """Compare today's error vs the reference with the error recorded with the golden.

    A target may still be "within tolerance" of both the eager model and its golden while having
    become much less accurate (a runtime upgrade 100x less precise, still inside 1e-4): the
    threshold learned at recording time, ``max(drift_factor x recorded, floor)``, catches that.
    """
    now = _errors_vs_reference(run, fmt, backend)
    table: dict[str, dict] = {}
    problems: list[str] = []
    for name, err in now.items():
        tol = run.tolerance_for(fmt, backend, name)
        before = recorded.get(name, {}).get("scaled_error")
        if before is None or isinstance(before, str):
            continue
        limit = max(before * tol.drift_factor, tol.drift_floor)
        table[name] = {"recorded_error": before, "error_now": err["scaled_error"], "limit": limit,
                       "drift_factor": tol.drift_factor, "floor": tol.drift_floor}
        if err["scaled_error"] > limit:
            problems.append(f"{name}: error vs the eager reference grew from {before:.3g} (recorded with the golden) "
                            f"to {err['scaled_error']:.3g} of max|ref| now, beyond the learned limit {limit:.3g} "
                            f"(max({tol.drift_factor:g} x recorded, floor {tol.drift_floor:g})); since then: "
                            f"{changed or 'see the golden versions'}")
    return table, problems


def _check_pair(store, case: str, target: str, meta: Optional[dict], has_npz: bool, command: str) -> None:
    """GoldenError when a target's JSON and npz are not one recording: one without the other (an update
    interrupted between the two), or an npz whose SHA-256 is not the one its JSON records (files from
    different recordings). A JSON recorded before digests (no npz_sha256) is taken as it is."""
    npz, js = store.path(case, f"{target}.npz"), store.path(case, f"{target}.json")
    if meta is None and has_npz:
        raise GoldenError(f"half-written golden: {npz} has no {js.name} beside it (an interrupted --update-golden?); "
                          f"re-record it with: {command}")
    if meta is not None and not has_npz:
        raise GoldenError(f"half-written golden: {js} has no {npz.name} beside it; re-record it with: {command}")
    if meta is None or "npz_sha256" not in meta:
        return
    actual = store.sha256(case, f"{target}.npz")
    if meta["npz_sha256"] != actual:
        raise GoldenError(f"{npz} is not the file {js.name} was recorded with (SHA-256 {str(actual)[:12]}..., the JSON "
                          f"records {str(meta['npz_sha256'])[:12]}...): the two come from different recordings; "
                          f"re-record it with: {command}")


def check_golden(run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
    """Today's outputs of the target on the golden inputs against the outputs recorded for it.

    This catches export drift (a new exporter or runtime version computing something else) even
    when the target still agrees with today's eager model.
    """
    case = run.case
    store = session.golden
    target = f"{fmt}-{backend}"
    sizes = case.batch_sizes
    fingerprint = case.input_fingerprint()

    if session.update_golden:
        refused, cause = _unrecordable(run, fmt, backend)
        if refused:
            return CheckResult("failed", f"golden of {case.name} {fmt}/{backend} not recorded: {refused}; nothing "
                               "was written for this target", {"golden_refused": refused}, cause=cause, why=refused)
        _write_case_golden(run, session)
        arrays = {key(name, b): arr for b in sizes for name, arr in run.outputs(fmt, backend, b).items()}
        errors = _errors_vs_reference(run, fmt, backend)
        store.write_arrays(case.name, f"{target}.npz", arrays)  # the npz first, the JSON that vouches for it last
        store.write_json(case.name, f"{target}.json", {
            "npz_sha256": store.sha256(case.name, f"{target}.npz"),
            "case": case.name, "format": fmt, "backend": backend,
            "input_fingerprint": fingerprint,
            "runner": run.runner(fmt, backend).name,
            # export time and size vary from run to run (zip timestamps): the report has them, the golden not
            "artefact": {k: v for k, v in run.artefact_info(fmt).items() if k not in VOLATILE},
            "model_key": model_identity(case),
            "tolerance": {n: run.tolerance_for(fmt, backend, n).model_dump() for n in run.output_names},
            "error_vs_reference": errors,
            "versions": golden_versions(),
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        return CheckResult("passed", f"golden written: {store.path(case.name, target + '.npz')}",
                           {"golden_written": True})

    meta = store.read_json(case.name, "meta.json")
    if meta is None:
        return _no_golden(f"no golden for case {case.name!r} in {store.case_dir(case.name)}; create it "
                          f"with: {update_command(session, case.name)}")
    if meta.get("input_fingerprint") != fingerprint:
        return _no_golden(f"the golden of {case.name!r} was recorded for another input spec (fingerprint "
                          f"{meta.get('input_fingerprint')} vs {fingerprint} now): the case's inputs, batch sizes "
                          f"or seed changed since. Re-record it with: {update_command(session, case.name)}")
    target_meta = store.read_json(case.name, f"{target}.json")
    recorded = store.read_arrays(case.name, f"{target}.npz")
    _check_pair(store, case.name, target, target_meta, recorded is not None,
                update_command(session, case.name, fmt, backend))
    if recorded is None or target_meta is None:
        return _no_golden(f"no golden for {case.name} {fmt}/{backend} "
                          f"({store.path(case.name, target + '.npz')}); create it with: "
                          f"{update_command(session, case.name, fmt, backend)}")
    if target_meta.get("input_fingerprint") != fingerprint:
        return _no_golden(f"the golden of {case.name} {fmt}/{backend} was recorded for other inputs than "
                          f"the case's golden inputs; re-record it with: {update_command(session, case.name, fmt, backend)}")
    golden_inputs = store.read_arrays(case.name, "inputs.npz") or {}
    golden_reference = store.read_arrays(case.name, "reference.npz") or {}
    malformed = _malformed_inputs(run, golden_inputs)
    if malformed:
        return _no_golden(f"{store.path(case.name, 'inputs.npz')}: {malformed}; re-record it with: "
                          f"{update_command(session, case.name)}")
    recorded_errors = target_meta.get("error_vs_reference")
    unjudged = [n for n in run.output_names if not isinstance(recorded_errors, dict) or
                not isinstance((recorded_errors.get(n) or {}).get("scaled_error"), (int, float))]
    if unjudged:
        return _no_golden(f"the golden of {case.name} {fmt}/{backend} records no error vs the eager reference for "
                          f"{unjudged[0]!r} ({store.path(case.name, target + '.json')}: error_vs_reference), so "
                          f"its learned drift limit cannot be applied; re-record it with: "
                          f"{update_command(session, case.name, fmt, backend)}")

    rows: list[tuple[str, OutputComparison]] = []
    reference_moved = 0.0
    for size in sizes:
        inputs = {name: arr[:size] for name, arr in golden_inputs.items()}
        if list(inputs) != list(case.inputs):
            return _no_golden(f"golden inputs of {case.name} hold {list(inputs)}, the case declares "
                              f"{list(case.inputs)}; re-record with: {update_command(session, case.name)}")
        same = all(np.array_equal(inputs[n], run.inputs(size)[n]) for n in inputs)
        obtained = run.outputs(fmt, backend, size) if same else run.run_target(fmt, backend, inputs)
        expected = {name: recorded.get(key(name, size)) for name in run.output_names}
        missing = [n for n, a in expected.items() if a is None]
        if missing:
            return _no_golden(f"the golden of {case.name} {fmt}/{backend} has no {missing[0]!r} at batch "
                              f"{size}; re-record it with: {update_command(session, case.name, fmt, backend)}")
        for c in compare_outputs(expected, obtained, lambda name: run.tolerance_for(fmt, backend, name)):
            rows.append((f"b{size}", c))
        eager_now = run.reference(size) if same else run.run_eager(inputs)
        for name in run.output_names:
            old = golden_reference.get(key(name, size))
            if old is None:
                continue
            if old.shape != np.shape(eager_now[name]):
                return _no_golden(f"{store.path(case.name, 'reference.npz')} holds {name!r} at batch {size} with "
                                  f"shape {list(old.shape)}, the eager model returns {list(np.shape(eager_now[name]))}:"
                                  f" the golden is malformed or the model's outputs changed; re-record it with: "
                                  f"{update_command(session, case.name)}")
            reference_moved = max(reference_moved, float(np.abs(old.astype(np.float64) - eager_now[name]).max()))
    changes, changed = what_changed(run, target_meta, reference_moved)
    notes = [f"since the golden was recorded: {changed}"] if any(not c.passed for _, c in rows) or changes else []
    drift, drift_problems = _learned_drift(run, fmt, backend, target_meta.get("error_vs_reference", {}), changed)
    metrics = {"runner": run.runner(fmt, backend).name, "golden": str(store.path(case.name, target + ".npz")),
               "recorded": target_meta.get("recorded"), "recorded_versions": target_meta.get("versions"),
               "reference_moved_max_abs": reference_moved, "learned_drift": drift, "changed": changes}
    return verdict(f"golden drift of {fmt}/{backend} (today vs {target}.npz)", rows, run, fmt, backend, metrics, notes,
                   drift_problems, cause="drift", why=changed)


# ---------------------------------------------------------------- frozen-graph checks


class GoldenCheck(Check):
    name = "golden"
    order = 20
    triage = True

    def run(self, run, fmt, backend, session):
        return check_golden(run, fmt, backend, session)


CHECK = GoldenCheck()
