"""lint: modules of the model, and nodes of the artefact, that behave as in training (static)."""

from __future__ import annotations


from parity.checks.base import EVAL_FIX, Check, CheckResult, Context, training_cause
from parity.pipeline.run import CaseRun


def check_lint(run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
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
    cause = training_cause(run, fmt) or ("batch-dependence", lines[-1].strip(), EVAL_FIX)
    lines.append(f"fix: {cause[2]}")
    return CheckResult("failed", "\n".join(lines), metrics, cause=cause[0], why=cause[1], fix=cause[2])


# ---------------------------------------------------------------- accuracy (quantization gates)


class LintCheck(Check):
    name = "lint"
    order = 50
    per_backend = False

    def run(self, run, fmt, backend, session):
        return check_lint(run, fmt, backend, session)


CHECK = LintCheck()
