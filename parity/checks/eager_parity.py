"""parity: each artefact on each backend against the eager reference, for every batch size."""

from __future__ import annotations


from parity.checks.base import Check, CheckResult, Context
from parity.pipeline.run import CaseRun
from parity.checks.base import numeric_cause, training_cause, verdict
from parity.checks.blame import blame
from parity.compare import OutputComparison, compare_outputs


#: What an INT8 target's error against fp32 means when nothing judges its accuracy.
INT8_WITHOUT_ACCURACY = ("INT8 without an accuracy section: the error above is quantization noise on the case's "
                         "inputs (on random weights often 0.2-0.4 of max|logit|), not a verdict on the model; add "
                         "an 'accuracy' section with labelled data to gate accuracy drop and top-1 agreement")


def check_parity(run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
    """Each artefact on each backend against the eager reference, for every batch size."""
    case = run.case
    rows: list[tuple[str, OutputComparison]] = []
    for size in case.batch_sizes:
        expected = run.reference(size)
        obtained = run.outputs(fmt, backend, size)
        for c in compare_outputs(expected, obtained, lambda name: run.tolerance_for(fmt, backend, name)):
            rows.append((f"b{size}", c))
    runner = run.runner(fmt, backend)
    info = run.artefact_info(fmt)
    metrics = {"runner": runner.name, "artefact": info, "batch_sizes": list(case.batch_sizes)}
    notes = [*info.get("notes", []), *runner.notes]  # e.g. a layout the harness transposed
    if run.precision(fmt) == "int8" and case.accuracy is None:
        notes.append(INT8_WITHOUT_ACCURACY)
    if info.get("wrapped"):
        notes.append(f"exported through a wrapper: {info['wrapped']}")
    cause = training_cause(run, fmt) if any(not c.passed for _, c in rows) else None
    explained = {}
    if cause is not None:  # the numbers differ because the model is not what eval-mode eager computes
        notes.insert(0, f"likely cause: {cause[1]}, while the eager reference runs in eval mode; fix: {cause[2]}")
        explained = {"cause": cause[0], "why": cause[1], "fix": cause[2]}
    elif any(not c.passed for _, c in rows) and numeric_cause(rows, fmt)[0] in (None, "numerics", "nonfinite"):
        # wrong values: the format's reference backends say whether the export or the runtime is wrong
        failing = sorted({int(label[1:]) for label, c in rows if not c.passed})
        found = blame(run, fmt, backend, failing)
        if found is not None:
            metrics["blame"] = found.as_dict()
            if numeric_cause(rows, fmt)[0] != "nonfinite":  # there the NaN is the first thing to read
                explained = {"why": found.sentence, "fix": found.fix}  # the message opens and ends with them
                notes.insert(0, f"blame: {found.sentence}")
            else:
                notes.insert(0, f"blame: {found.sentence}; fix: {found.fix}")
    return verdict(f"parity of {fmt}/{backend} against the eager model", rows, run, fmt, backend, metrics, notes,
                   **explained)


class ParityCheck(Check):
    name = "parity"
    order = 10
    triage = True

    def run(self, run, fmt, backend, session):
        return check_parity(run, fmt, backend, session)


CHECK = ParityCheck()
