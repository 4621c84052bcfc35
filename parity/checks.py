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

from parity.compare import OutputComparison, compare_outputs, format_table
from parity.engine import CaseRun, CheckResult
from parity.golden import key

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
             metrics: dict, notes: list[str] = ()) -> CheckResult:
    failed = [(label, c) for label, c in rows if not c.passed]
    metrics.update(_summary(rows))
    metrics["outputs"] = _per_output(rows)
    warnings = [f"{label} {c.name}: {c.problem}" for label, c in rows if c.passed and c.problem]
    if not failed:
        return CheckResult("passed", "\n".join([*warnings, *notes]), metrics)
    problems = [f"  {label} {c.name}: {c.problem}" for label, c in failed]
    message = "\n".join([
        f"{title}: {len(failed)} of {len(rows)} comparisons failed",
        format_table(rows),
        "problems:", *problems,
        f"tolerance (|obtained-expected| <= atol + rtol*|expected| + scale*max|expected|): "
        f"{_tolerance_lines(run, fmt, backend)}",
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
    import importlib.metadata as md

    found = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("torch", "onnx", "onnxruntime", "onnxscript", "litert-torch", "ai-edge-litert", "coremltools"):
        try:
            found[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return found


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
        parity_rows = [c for b in sizes for c in compare_outputs(run.reference(b), run.outputs(fmt, backend, b),
                                                                 lambda n: case.tolerance_for(fmt, backend, n))]
        store.write_arrays(case.name, f"{target}.npz", arrays)
        store.write_json(case.name, f"{target}.json", {
            "case": case.name, "format": fmt, "backend": backend,
            "input_fingerprint": fingerprint,
            "runner": run.runner(fmt, backend).name,
            "artefact": {k: v for k, v in run.artefact_info(fmt).items() if k not in ("path", "export_s")},
            "tolerance": {n: case.tolerance_for(fmt, backend, n).model_dump() for n in run.output_names},
            "error_vs_reference": {c.name: {"max_abs": c.max_abs, "scaled_error": c.scaled_error}
                                   for c in parity_rows},
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
    metrics = {"runner": run.runner(fmt, backend).name, "golden": str(store.path(case.name, target + ".npz")),
               "recorded": target_meta.get("recorded"), "recorded_versions": target_meta.get("versions"),
               "reference_moved_max_abs": reference_moved}
    return _verdict(f"golden drift of {fmt}/{backend} (today vs {target}.npz)", rows, run, fmt, backend, metrics, notes)


CHECKS: dict[str, Callable[[CaseRun, str, str, "Session"], CheckResult]] = {
    "parity": check_parity,
    "golden": check_golden,
}
