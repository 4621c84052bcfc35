"""Checks: each takes a CaseRun and a target (format, backend) and returns a CheckResult.

Checks only read outputs through the CaseRun and compare them with :mod:`parity.compare`; they
never import a framework. Add a check by writing a function and registering it in ``CHECKS``
(and its name in ``parity.registry.CHECKS``).
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

import numpy as np

from parity.compare import OutputComparison, compare_output, compare_outputs, format_table
from parity.engine import CaseRun, CheckResult, short_error
from parity.golden import key
from parity.registry import FORMATS
from parity.latency import check_latency

if TYPE_CHECKING:
    from parity.engine import Session


def _summary(rows: list[tuple[str, OutputComparison]]) -> dict:
    """Worst figures over all rows, for the report's top level."""
    compared = [c for _, c in rows if c.size]
    if not compared:
        return {}
    top1 = [c.top1_agreement for c in compared if c.top1_agreement is not None]
    return {
        "max_abs": max(c.max_abs for c in compared),
        "max_rel": max(c.max_rel for c in compared),
        "scaled_error": max(c.scaled_error for c in compared),
        "min_cosine": min(c.cosine for c in compared),
        "n_outside": sum(c.n_outside for c in compared),
        "nonfinite": sum(c.nonfinite for c in compared),
        "min_scale": max(c.min_scale for c in compared),
        "min_atol": max(c.min_atol for c in compared),
        "tolerance_used": max(c.tolerance_used for c in compared),
        "top1_agreement": min(top1) if top1 else None,
        "vacuous": any(c.vacuous for c in compared),
    }


def _per_output(rows: list[tuple[str, OutputComparison]]) -> dict:
    out: dict = {}
    for label, c in rows:
        out.setdefault(c.name, {})[label] = c.metrics()
    return out


def _tolerance_lines(run: CaseRun, fmt: str, backend: str) -> str:
    return "; ".join(f"{name}: {run.case.tolerance_for(fmt, backend, name).describe()}"
                     for name in run.output_names)


def _verdict(title: str, rows: list[tuple[str, OutputComparison]], run: CaseRun, fmt: str, backend: str,
             metrics: dict, notes: list[str] = (), extra_problems: list[str] = (),
             tolerance_text: str = "") -> CheckResult:
    failed = [(label, c) for label, c in rows if not c.passed]
    metrics.update(_summary(rows))
    metrics["outputs"] = _per_output(rows)
    warnings = [f"{label} {c.name}: {c.problem}" for label, c in rows if c.passed and c.problem]
    if not failed and not extra_problems:
        return CheckResult("passed", "\n".join([*warnings, *notes]), metrics)
    problems = [f"  {label} {c.name}: {c.problem}" for label, c in failed] + [f"  {p}" for p in extra_problems]
    message = "\n".join([
        f"{title}: {len(failed)} of {len(rows)} comparisons failed"
        + (f", {len(extra_problems)} learned drift threshold(s) exceeded" if extra_problems else ""),
        format_table(rows),
        "problems:", *problems,
        f"tolerance (|obtained-expected| <= atol + rtol*|expected| + scale*max|expected|): "
        f"{tolerance_text or _tolerance_lines(run, fmt, backend)}",
        *notes,
    ])
    return CheckResult("failed", message, metrics)


def check_parity(run: CaseRun, fmt: str, backend: str, session: "Session") -> CheckResult:
    """Each artefact on each backend against the eager reference, for every batch size."""
    case = run.case
    rows: list[tuple[str, OutputComparison]] = []
    for size in case.batch_sizes:
        expected = run.reference(size)
        obtained = run.outputs(fmt, backend, size)
        for c in compare_outputs(expected, obtained, lambda name: case.tolerance_for(fmt, backend, name)):
            rows.append((f"b{size}", c))
    runner = run.runner(fmt, backend)
    info = run.artefact_info(fmt)
    metrics = {"runner": runner.name, "artefact": info, "batch_sizes": list(case.batch_sizes)}
    notes = [*info.get("notes", []), *runner.notes]  # e.g. a layout the harness transposed
    return _verdict(f"parity of {fmt}/{backend} against the eager model", rows, run, fmt, backend, metrics, notes)


def _versions() -> dict:
    """Versions recorded with goldens: the frameworks an export or runtime result depends on."""
    from parity.report.environment import packages

    return {"python": platform.python_version(), "numpy": np.__version__,
            **packages(("torch", "onnx", "onnxruntime", "onnxscript", "litert-torch", "ai-edge-litert", "coremltools",
                        "tensorflow-cpu", "tensorflow", "keras", "tf2onnx"))}


def _update_command(case: str, fmt: str = "", backend: str = "") -> str:
    words = " and ".join(w for w in (case, fmt, backend, "golden") if w)
    return f"pytest parity/ --update-golden -k '{words}'"


def _write_case_golden(run: CaseRun, session: "Session") -> None:
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
        "versions": _versions(),
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    run.golden_case_written = True


def _errors_vs_reference(run: CaseRun, fmt: str, backend: str) -> dict[str, dict[str, float]]:
    """Per output, the worst error of the target against the eager reference over all batch sizes."""
    worst: dict[str, dict[str, float]] = {}
    for size in run.case.batch_sizes:
        for c in compare_outputs(run.reference(size), run.outputs(fmt, backend, size),
                                 lambda n: run.case.tolerance_for(fmt, backend, n)):
            w = worst.setdefault(c.name, {"max_abs": 0.0, "scaled_error": 0.0})
            w["max_abs"] = max(w["max_abs"], c.max_abs)
            w["scaled_error"] = max(w["scaled_error"], c.scaled_error)
    return worst


def _learned_drift(run: CaseRun, fmt: str, backend: str, recorded: dict) -> tuple[dict, list[str]]:
    """Compare today's error vs the reference with the error recorded with the golden.

    A target may still be "within tolerance" of both the eager model and its golden while having
    become much less accurate (a runtime upgrade 100x less precise, still inside 1e-4): the
    threshold learned at recording time, ``max(drift_factor x recorded, floor)``, catches that.
    """
    now = _errors_vs_reference(run, fmt, backend)
    table: dict[str, dict] = {}
    problems: list[str] = []
    for name, err in now.items():
        tol = run.case.tolerance_for(fmt, backend, name)
        before = recorded.get(name, {}).get("scaled_error")
        if before is None or isinstance(before, str):
            continue
        limit = max(before * tol.drift_factor, tol.drift_floor)
        table[name] = {"recorded_error": before, "error_now": err["scaled_error"], "limit": limit,
                       "drift_factor": tol.drift_factor, "floor": tol.drift_floor}
        if err["scaled_error"] > limit:
            problems.append(f"{name}: error vs the eager reference grew from {before:.3g} (recorded with the golden) "
                            f"to {err['scaled_error']:.3g} of max|ref| now, beyond the learned limit {limit:.3g} "
                            f"(max({tol.drift_factor:g} x recorded, floor {tol.drift_floor:g})): the export or "
                            f"runtime became less accurate")
    return table, problems


def check_golden(run: CaseRun, fmt: str, backend: str, session: "Session") -> CheckResult:
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
        _write_case_golden(run, session)
        arrays = {key(name, b): arr for b in sizes for name, arr in run.outputs(fmt, backend, b).items()}
        errors = _errors_vs_reference(run, fmt, backend)
        store.write_arrays(case.name, f"{target}.npz", arrays)
        store.write_json(case.name, f"{target}.json", {
            "case": case.name, "format": fmt, "backend": backend,
            "input_fingerprint": fingerprint,
            "runner": run.runner(fmt, backend).name,
            # export time and size vary from run to run (zip timestamps): the report has them, the golden not
            "artefact": {k: v for k, v in run.artefact_info(fmt).items() if k not in ("path", "export_s", "size_bytes")},
            "tolerance": {n: case.tolerance_for(fmt, backend, n).model_dump() for n in run.output_names},
            "error_vs_reference": errors,
            "versions": _versions(),
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        return CheckResult("passed", f"golden written: {store.path(case.name, target + '.npz')}",
                           {"golden_written": True})

    meta = store.read_json(case.name, "meta.json")
    if meta is None:
        return CheckResult("failed", f"no golden for case {case.name!r} in {store.case_dir(case.name)}; create it "
                           f"with: {_update_command(case.name)}")
    if meta.get("input_fingerprint") != fingerprint:
        return CheckResult("failed", f"the golden of {case.name!r} was recorded for another input spec (fingerprint "
                           f"{meta.get('input_fingerprint')} vs {fingerprint} now): the case's inputs, batch sizes "
                           f"or seed changed since. Re-record it with: {_update_command(case.name)}")
    target_meta = store.read_json(case.name, f"{target}.json")
    recorded = store.read_arrays(case.name, f"{target}.npz")
    if recorded is None or target_meta is None:
        return CheckResult("failed", f"no golden for {case.name} {fmt}/{backend} "
                           f"({store.path(case.name, target + '.npz')}); create it with: "
                           f"{_update_command(case.name, fmt, backend)}")
    if target_meta.get("input_fingerprint") != fingerprint:
        return CheckResult("failed", f"the golden of {case.name} {fmt}/{backend} was recorded for other inputs than "
                           f"the case's golden inputs; re-record it with: {_update_command(case.name, fmt, backend)}")
    golden_inputs = store.read_arrays(case.name, "inputs.npz") or {}
    golden_reference = store.read_arrays(case.name, "reference.npz") or {}

    rows: list[tuple[str, OutputComparison]] = []
    reference_moved = 0.0
    for size in sizes:
        inputs = {name: arr[:size] for name, arr in golden_inputs.items()}
        if list(inputs) != list(case.inputs):
            return CheckResult("failed", f"golden inputs of {case.name} hold {list(inputs)}, the case declares "
                               f"{list(case.inputs)}; re-record with: {_update_command(case.name)}")
        same = all(np.array_equal(inputs[n], run.inputs(size)[n]) for n in inputs)
        obtained = run.outputs(fmt, backend, size) if same else run.run_target(fmt, backend, inputs)
        expected = {name: recorded.get(key(name, size)) for name in run.output_names}
        missing = [n for n, a in expected.items() if a is None]
        if missing:
            return CheckResult("failed", f"the golden of {case.name} {fmt}/{backend} has no {missing[0]!r} at batch "
                               f"{size}; re-record it with: {_update_command(case.name, fmt, backend)}")
        for c in compare_outputs(expected, obtained, lambda name: case.tolerance_for(fmt, backend, name)):
            rows.append((f"b{size}", c))
        eager_now = run.reference(size) if same else run.run_eager(inputs)
        for name in run.output_names:
            old = golden_reference.get(key(name, size))
            if old is not None and old.shape == eager_now[name].shape:
                reference_moved = max(reference_moved, float(np.abs(old.astype(np.float64) - eager_now[name]).max()))
    notes = []
    if reference_moved > 0:
        notes.append(f"note: the eager reference itself moved by up to {reference_moved:.3g} since the golden was "
                     "recorded: the model, its weights or torch changed, not only the export")
    drift, drift_problems = _learned_drift(run, fmt, backend, target_meta.get("error_vs_reference", {}))
    metrics = {"runner": run.runner(fmt, backend).name, "golden": str(store.path(case.name, target + ".npz")),
               "recorded": target_meta.get("recorded"), "recorded_versions": target_meta.get("versions"),
               "reference_moved_max_abs": reference_moved, "learned_drift": drift}
    return _verdict(f"golden drift of {fmt}/{backend} (today vs {target}.npz)", rows, run, fmt, backend, metrics, notes,
                    drift_problems)


# ---------------------------------------------------------------- frozen-graph checks

BATCH_MATES_HINT = "outputs depend on batch-mates: batch statistics at inference — BatchNorm in training mode?"
BATCH_SIZE_HINT = ("small differences per batch size, not gross ones: kernels chosen per batch size (raise "
                   "batch_invariance.scale if this is expected for the runtime)")
DYNAMIC_QUANT_HINT = ("outputs depend on batch-mates: dynamic quantization computes activation scales per batch "
                      "(a property of the route, not a bug in the export; use static quantization for "
                      "batch-independent predictions)")
#: Above this error (relative to max|output|) a batch difference is not float noise of kernel choice.
GROSS = {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.2}
RANDOM_HINT = "outputs are random: dropout or a random op left on at inference?"


def _slice(inputs: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in inputs.items()}


def _very_different(arr: np.ndarray) -> np.ndarray:
    """Batch-mates unlike the sample under test: shifted and scaled (floats), reversed (integers)."""
    if np.issubdtype(arr.dtype, np.floating):
        return (arr.astype(np.float64) * 10.0 + 5.0).astype(arr.dtype)
    return np.ascontiguousarray(np.flip(arr, axis=-1)) if arr.ndim > 1 else arr[::-1].copy()


def _training_findings(run: CaseRun, fmt: str) -> list:
    from parity.errors import ExportError

    found = list(run.model_findings)
    try:
        found += run.artefact_findings(fmt) or []
    except ExportError:  # no artefact to read: the model's findings are the hint
        pass
    return found


def check_batch_invariance(run: CaseRun, fmt: str, backend: str, session: "Session") -> CheckResult:
    """A sample's output must not depend on the batch it is in.

    Each sample is run alone (batch 1) and compared with the same sample inside a batch of every
    listed size, and inside a batch whose other samples are very different (shifted and scaled).
    """
    case = run.case
    n = max(case.batch_sizes)
    tol = case.invariance_tolerance(fmt)
    unsupported: dict[int, str] = {}
    solo: list[dict[str, np.ndarray]] = []
    from parity.errors import ExportError

    try:
        for i in range(n):
            solo.append(run.run_target(fmt, backend, _slice(run.pool, i, i + 1)))
    except ExportError:
        raise  # no artefact at all: an error, not a batch size the artefact lacks
    except Exception as e:
        return CheckResult("skipped", f"the artefact does not run at batch 1 ({short_error(e, 2)}); batch-size "
                           "invariance needs each sample alone", {"unsupported_batch_sizes": {1: str(e)}})
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

    if not rows:
        return CheckResult("skipped", "no batched output to compare (no output has the batch as dimension 0)")
    failed_labels = {label for label, c in rows if not c.passed}
    again = run.run_target(fmt, backend, _slice(run.pool, 0, 1))
    random = any(not np.array_equal(again[k], solo[0][k], equal_nan=True) for k in again)
    notes: list[str] = []
    if unsupported:
        notes.append("batch sizes the artefact does not run at (skipped): " +
                     "; ".join(f"{b}: {msg}" for b, msg in unsupported.items()))
    hint = ""
    if failed_labels:
        route = str(run.artefact_info(fmt).get("route", ""))
        if random:
            hint = RANDOM_HINT
        elif "dynamic" in route:
            hint = DYNAMIC_QUANT_HINT
            if any(f.kind == "batchnorm-training" for f in _training_findings(run, fmt)):
                hint += " Batch statistics (BatchNorm in training mode) may add to it."
        elif max(c.scaled_error for _, c in rows) > GROSS[FORMATS[fmt].precision]:
            hint = BATCH_MATES_HINT  # far beyond what kernel choice per batch size does to fp32
        else:
            hint = BATCH_SIZE_HINT
        suspects = [f for f in _training_findings(run, fmt) if f.kind in ("batchnorm-training", "training-mode")
                    or (random and f.kind in ("dropout-training", "random-op"))]
        notes.insert(0, "likely cause: " + hint)
        notes += [f"  {f.describe()}" for f in suspects[:8]]
    worst = {label: max(c.scaled_error for lab, c in rows if lab == label) for label in dict.fromkeys(l for l, _ in rows)}
    metrics = {"runner": run.runner(fmt, backend).name, "batch_sizes_run": ran, "mixed_batch_size": m,
               "unsupported_batch_sizes": unsupported, "error_by_batch": worst, "random": random, "hint": hint,
               "tolerance": tol.model_dump()}
    return _verdict(f"batch-size invariance of {fmt}/{backend} (each sample alone vs inside a batch)", rows, run,
                    fmt, backend, metrics, notes, tolerance_text=f"all outputs: {tol.describe()} (batch_invariance)")


def check_determinism(run: CaseRun, fmt: str, backend: str, session: "Session") -> CheckResult:
    """Repeated runs in one session, and one in a fresh session, must be bitwise identical
    (or within the case's per-backend determinism tolerance)."""
    case = run.case
    size = max(case.batch_sizes)
    inputs = run.inputs(size)
    first = run.outputs(fmt, backend, size)
    attempts = [(f"run {i + 2} of {case.determinism.runs}", run.run_target(fmt, backend, inputs))
                for i in range(case.determinism.runs - 1)]
    fresh = run.fresh_runner(fmt, backend)
    try:
        attempts.append(("fresh session", dict(zip(run.output_names, fresh.infer(inputs)))))
    finally:
        fresh.deactivate()
    tol = case.determinism_tolerance(backend)
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
    random_nodes = [f for f in _training_findings(run, fmt) if f.kind in ("dropout-training", "random-op")]
    lines = [f"determinism of {fmt}/{backend}: outputs differ between runs on the same input (batch {size}, "
             f"{'bitwise' if tol is None else 'tolerance ' + tol.describe()})", *differences,
             "likely cause: " + RANDOM_HINT]
    if random_nodes:
        lines += ["random nodes found:", *[f"  {f.describe()}" for f in random_nodes[:8]]]
    metrics["random_nodes"] = [f.as_dict() for f in random_nodes]
    return CheckResult("failed", "\n".join(lines), metrics)


def check_lint(run: CaseRun, fmt: str, backend: str, session: "Session") -> CheckResult:
    """Training-mode lint: modules of the model, and nodes of the artefact, that behave as in training."""
    from parity.errors import ExportError

    model = run.model_findings
    export_error = ""
    try:
        artefact = run.artefact_findings(fmt)
        name = run.artefact(fmt).path.name
    except ExportError as e:
        if not model:
            raise  # nothing to lint: the export failure is the news
        artefact, name, export_error = None, "", str(e).splitlines()[0]
    metrics = {"model": [f.as_dict() for f in model],
               "artefact": None if artefact is None else [f.as_dict() for f in artefact],
               "artefact_linted": artefact is not None, "export_error": export_error or None}
    if not model and not artefact:
        note = "" if artefact is not None else f"no static lint exists for {fmt} artefacts; only the model was linted"
        return CheckResult("passed", note, metrics)
    lines = [f"training-mode lint of {run.case.name}/{fmt}: {len(model) + len(artefact or [])} finding(s)"]
    if model:
        lines.append("model handed to the exporter (module is in training mode):")
        lines += [f"  {f.where} ({f.op}): {f.detail}" for f in model]
    if artefact:
        lines.append(f"artefact {name}:")
        lines += [f"  {f.describe()}" for f in artefact]
    elif artefact is not None and model:
        lines.append(f"artefact {name}: no training-mode node; the {fmt} exporter silently switched to inference "
                     "behaviour, so this artefact differs from what the model computes in its current mode")
    elif export_error:
        lines.append(f"artefact: the {fmt} export failed, so only the model was linted ({export_error})")
    lines.append("fix: call model.eval() before exporting (or return the model in eval mode from the factory)")
    return CheckResult("failed", "\n".join(lines), metrics)


# ---------------------------------------------------------------- accuracy (quantization gates)


def _predict(run: CaseRun, inputs: dict[str, np.ndarray], infer) -> np.ndarray:
    """First output over the whole data set, in chunks of the case's largest batch size (the last
    chunk padded, so static-batch artefacts run too)."""
    chunk = max(run.case.batch_sizes)
    n = len(next(iter(inputs.values())))
    outs = []
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in inputs.items()}
        m = len(next(iter(part.values())))
        if m < chunk:
            part = {k: np.concatenate([v, np.repeat(v[-1:], chunk - m, axis=0)]) for k, v in part.items()}
        outs.append(np.asarray(infer(part))[:m])
    return np.concatenate(outs)


def _sqnr_db(reference: np.ndarray, obtained: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - obtained) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def check_accuracy(run: CaseRun, fmt: str, backend: str, session: "Session") -> CheckResult:
    """Accuracy on the case's labelled data, against fp32 eager and against the golden record.

    Gates: accuracy drop (points) vs the fp32 eager model, top-1 agreement with it, optional SQNR,
    collapse (near-chance agreement, one class predicted for nearly everything), and drift below
    the accuracy recorded with the golden by more than ``drift_margin`` points.
    """

    case, acc = run.case, run.case.accuracy
    inputs, labels = run.load_data(acc.evaluation)
    if labels is None:
        return CheckResult("error", f"{case.path}: accuracy.evaluation has no labels "
                           f"('{acc.evaluation.labels_key}' array); add them or remove the accuracy section")
    if run.eval_reference is None:  # once per case: every target is compared with the same fp32 scores
        run.eval_reference = _predict(run, inputs, lambda feed: run.run_eager(feed)[run.output_names[0]])
    reference = run.eval_reference
    runner = run.runner(fmt, backend)
    obtained = _predict(run, inputs, lambda feed: runner.infer(feed)[0])
    ref_pred, pred = reference.argmax(1), obtained.argmax(1)
    fp32_accuracy = 100.0 * float((ref_pred == labels).mean())
    accuracy = 100.0 * float((pred == labels).mean())
    agreement = float((pred == ref_pred).mean())
    classes = reference.shape[1]
    size = run.artefact(fmt).size_bytes
    base = FORMATS[fmt].fp32
    fp32_size = run.artefact(base).size_bytes if base else None
    metrics = {"runner": runner.name, "samples": int(len(labels)), "accuracy": accuracy,
               "fp32_accuracy": fp32_accuracy, "accuracy_drop": fp32_accuracy - accuracy,
               "top1_agreement": agreement, "sqnr_db": _sqnr_db(reference, obtained),
               "max_abs": float(np.abs(reference.astype(np.float64) - obtained).max()),
               "size_bytes": size, "fp32_size_bytes": fp32_size,
               "size_ratio": (size / fp32_size) if fp32_size else None, "precision": FORMATS[fmt].precision}
    problems = []
    counts = np.bincount(pred, minlength=classes)
    top_share = float(counts.max() / len(pred))
    fp32_share = float((ref_pred == int(counts.argmax())).mean())  # an imbalanced data set is not a collapse
    if agreement < 2.0 / classes or (top_share > 0.9 and fp32_share < 0.5) or float(np.std(obtained)) == 0.0:
        problems.append(f"collapsed: top-1 agreement with fp32 {100 * agreement:.1f}% (chance {100 / classes:.1f}%), "
                        f"{100 * top_share:.0f}% of samples predicted as one class; outputs saturated or the "
                        f"calibration/scales are wrong")
    if metrics["accuracy_drop"] > acc.max_accuracy_drop:
        problems.append(f"accuracy {accuracy:.2f}% is {metrics['accuracy_drop']:.2f} points below fp32 eager "
                        f"{fp32_accuracy:.2f}% (max_accuracy_drop {acc.max_accuracy_drop:g})")
    if agreement < acc.min_top1_agreement:
        problems.append(f"top-1 agreement with fp32 eager {100 * agreement:.2f}% < min_top1_agreement "
                        f"{100 * acc.min_top1_agreement:.2f}%")
    if acc.min_sqnr_db is not None and metrics["sqnr_db"] < acc.min_sqnr_db:
        problems.append(f"SQNR {metrics['sqnr_db']:.1f} dB < min_sqnr_db {acc.min_sqnr_db:g}")

    name = f"{fmt}-{backend}.accuracy.json"
    store = session.golden
    if session.update_golden:
        store.write_json(case.name, name, {"accuracy": accuracy, "fp32_accuracy": fp32_accuracy,
                                           "samples": int(len(labels)), "versions": _versions(),
                                           "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        metrics["golden_written"] = True
    else:
        golden = store.read_json(case.name, name)
        if golden is None:
            problems.append(f"no golden accuracy for {fmt}/{backend} ({store.path(case.name, name)}); record it with: "
                            f"{_update_command(case.name, fmt, backend).replace(' and golden', ' and accuracy')}")
        else:
            metrics["golden_accuracy"] = golden["accuracy"]
            if accuracy < golden["accuracy"] - acc.drift_margin:
                problems.append(f"quantization drift: accuracy {accuracy:.2f}% fell {golden['accuracy'] - accuracy:.2f} "
                                f"points below the golden {golden['accuracy']:.2f}% (drift_margin {acc.drift_margin:g})")
    summary = (f"{fmt}/{backend} on {len(labels)} labelled samples: accuracy {accuracy:.2f}% (fp32 eager "
               f"{fp32_accuracy:.2f}%, drop {metrics['accuracy_drop']:.2f} points), top-1 agreement "
               f"{100 * agreement:.2f}%, SQNR {metrics['sqnr_db']:.1f} dB, size {size / 1024:.0f} KiB"
               + (f" ({100 * metrics['size_ratio']:.0f}% of fp32 {base})" if fp32_size else ""))
    if problems:
        return CheckResult("failed", "\n".join([summary, *[f"  {p}" for p in problems]]), metrics)
    return CheckResult("passed", summary, metrics)


CHECKS: dict[str, Callable[[CaseRun, str, str, "Session"], CheckResult]] = {
    "parity": check_parity,
    "golden": check_golden,
    "batch_invariance": check_batch_invariance,
    "determinism": check_determinism,
    "lint": check_lint,
    "accuracy": check_accuracy,
    "latency": check_latency,
}
