"""shape_invariance: the artefact must agree with eager at every size of the case's dynamic axes.

A case that names dynamic axes (``shape: [seq]`` or ``dynamic: {0: seq}``, with ``sizes: {seq: [...]}``)
promises that the exported model works at each of those sizes, not only at the size it was traced
at. Each shape variant (every combination of the listed sizes, the export sizes first) is run on the
artefact at the largest batch size and compared with eager on the same inputs, at the case's parity
tolerance. Only per-size parity is checked: that a sample's prefix gives the prefix of its output
is not a promise every model makes.
"""

from __future__ import annotations

from parity.checks.base import Check, CheckResult, Context, verdict
from parity.compare import OutputComparison, compare_outputs
from parity.errors import CaseError, ExportError, short_error
from parity.pipeline.run import CaseRun, variant_label

#: The artefact is right where it was traced and wrong elsewhere.
SPECIALISED_HINT = ("correct at the export size ({export}) only: the artefact is specialised to the shape it was "
                    "traced at. A size read as a Python number while tracing (int(x.shape[1]), x.size(1) in "
                    "arithmetic, a shape-dependent branch) is baked in as a constant; export with dynamic shapes "
                    "(torch.export, ONNX dynamo), script the shape logic, or drop the size from `sizes`")
#: The artefact cannot take another size at all.
REJECTS_HINT = ("the artefact does not accept other sizes of a dynamic axis: it was exported with a static shape "
                "there ({why}); export that axis dynamic, or drop the sizes it cannot take")
TRACER_WARNING = ("TracerWarning", "might not generalize", "might cause the trace to be incorrect",
                  "treated as a constant")


def check_shape_invariance(run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
    """Each size of each dynamic axis on the artefact against eager on the same inputs."""
    case = run.case
    variants = case.shape_variants()
    export_label = variant_label(case.export_sizes)
    run.runner(fmt, backend)  # no artefact, or one that does not load: an error, as in every check
    rows: list[tuple[str, OutputComparison]] = []
    rejected: dict[str, str] = {}
    worst: dict[str, float | None] = {}
    for sizes in variants:
        label = variant_label(sizes)
        expected = run.variant_reference(sizes)  # CaseError when eager itself fails at this size
        try:
            obtained = run.run_target(fmt, backend, run.variant_inputs(sizes), sizes)
        except (ExportError, CaseError):
            raise
        except Exception as e:
            rejected[label] = short_error(e, 2)
            worst[label] = None
            continue
        found = compare_outputs(expected, obtained, lambda name: run.tolerance_for(fmt, backend, name))
        rows += [(label, c) for c in found]
        worst[label] = max((c.scaled_error for c in found), default=0.0)

    failed = {label for label, c in rows if not c.passed} | set(rejected)
    info = run.artefact_info(fmt)
    notes: list[str] = []
    hint = ""
    if failed:
        right = [v for v in worst if v not in failed]
        if rejected:
            why = info.get("dynamic_axes_failed") or info.get("fallback_reason") or info.get("shape") or \
                next(iter(rejected.values()))
            hint = REJECTS_HINT.format(why=why)
        elif export_label in right:
            hint = SPECIALISED_HINT.format(export=export_label)
        if hint:
            notes.append("likely cause: " + hint)
        traced = [w for w in info.get("warnings", []) if any(t in w for t in TRACER_WARNING)]
        notes += [f"  exporter warning: {w}" for w in traced[:4]]
    if info.get("dynamic_axes"):
        notes.append(f"dynamic axes: {info['dynamic_axes']}")
    extra = [f"{label}: the artefact does not run at this size: {why}" for label, why in rejected.items()]
    metrics = {"runner": run.runner(fmt, backend).name, "batch_size": run.variant_batch,
               "export_sizes": case.export_sizes, "variants": [variant_label(v) for v in variants],
               "error_by_size": worst, "rejected_sizes": rejected, "hint": hint}
    if not rows and not rejected:
        return CheckResult("skipped", "no output to compare at any size")
    result = verdict(f"shape invariance of {fmt}/{backend} (each size of {', '.join(case.sizes)} against eager, "
                     f"batch {run.variant_batch})", rows, run, fmt, backend, metrics, notes, extra_problems=extra,
                     extra_label="size(s) the artefact does not run at", cause="shape-dependence",
                     why=(f"right at {export_label}, wrong or refused at {', '.join(sorted(failed))}" if failed
                          else ""))
    return result


class ShapeInvarianceCheck(Check):
    name = "shape_invariance"
    order = 35
    config = "sizes"
    triage = False

    def applies(self, case, fmt):
        return bool(case.sizes)

    def run(self, run, fmt, backend, session):
        return check_shape_invariance(run, fmt, backend, session)


CHECK = ShapeInvarianceCheck()
