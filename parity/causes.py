"""The failure taxonomy: every test that does not pass carries one cause, with a sentence of what it
means and one of what to do. Plain Python: checks, the session and the reports all read it.

Causes are ordered by severity (what a person should read first); the reports group the failures
of a case that share a cause into one finding (:mod:`parity.report.findings`). A cause's ``scope``
says how far one occurrence explains other failures: ``case`` (the model itself, so every format of
the case) or ``format`` (one case x format).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    name: str
    scope: str  # "case" or "format"
    meaning: str  # one sentence: what this kind of failure is
    fix: str  # one sentence: what to do about it


_CAUSES = (
    Cause("case-error", "case", "the case file (or a file it names) is invalid, so nothing of it ran",
          "fix the field the message names"),
    Cause("reference-failed", "case", "the eager model raised on the case's inputs, so there is nothing to compare "
          "the artefacts with", "make the factory's model run on the declared inputs, or declare the inputs it takes"),
    Cause("batch-dependence", "case", "a sample's output depends on the other samples in its batch (batch "
          "statistics, or an op across the batch axis, at inference)",
          "call model.eval() before exporting, or remove the computation across the batch"),
    Cause("randomness", "case", "outputs change from run to run (dropout or a random op active at inference, or a "
          "nondeterministic kernel)", "call model.eval() and keep random ops off the inference path, or give the "
          "backend a determinism tolerance"),
    Cause("export-failed", "format", "the converter raised: no artefact was written",
          "read the converter's own line in the message; change the model there or export through another route"),
    Cause("load-failed", "format", "the artefact was written, but its runtime cannot load it, or raises when "
          "running it on the case's inputs", "check the runtime's version against the exporter's and the inputs the "
          "artefact declares against the case's, or re-export"),
    Cause("nonfinite", "format", "the artefact returns NaN or Inf where the eager model has finite values",
          "find the first op producing them (--parity-triage) and keep it in range (fp32, a clamp, a stable form)"),
    Cause("numerics", "format", "the artefact computes other values than the eager model, beyond tolerance",
          "run with --parity-triage to find the first module that diverges; widen the tolerance only if the "
          "difference is expected of the format"),
    Cause("shape-dependence", "format", "the artefact is wrong, or refuses to run, at a size of a dynamic axis other "
          "than the one it was exported at", "export the axis dynamic (torch.export, ONNX dynamo) or keep sizes "
          "out of Python numbers while tracing"),
    Cause("precision-limit", "format", "values lie outside what the format's precision represents (fp16 underflow "
          "or overflow, int8 saturation): the export is faithful, the numbers do not fit",
          "rescale the model's outputs, compute the affected part in fp32, or compare this model in an fp32 format"),
    Cause("accuracy", "format", "accuracy on the labelled data fell past the case's gates",
          "calibrate with more representative data, or keep the sensitive layers in float"),
    Cause("drift", "format", "today's outputs differ from the goldens committed for this target",
          "if the change is intended (the message says what changed), re-record the goldens; else the export or "
          "runtime now computes something else"),
    Cause("slow", "format", "the median latency exceeds the case's limit", "profile the artefact, or raise "
          "latency.max_p50_ms if the runtime is expected to be this slow"),
    Cause("unsupported", "format", "a documented limit of the converter or of parity's evaluator (an op without a "
          "kernel, data-dependent control flow, a dtype the format lacks)",
          "export a part of the model the route supports, or use another route; mark the limit as an expected "
          "failure with xfail_checks"),
    Cause("vacuous", "format", "the check cannot fail: the reference is all zeros or constant, or the tolerance "
          "is as large as the signal", "feed inputs that give a signal, or set allow_vacuous where that is intended"),
    Cause("no-golden", "format", "no usable golden is recorded for this target (missing, or recorded for other "
          "inputs)", "record it with the --update-golden command in the message"),
    Cause("harness-error", "format", "parity itself failed while checking", "report it with the message; the "
          "other tests are unaffected"),
)

CAUSES: dict[str, Cause] = {c.name: c for c in _CAUSES}
#: Most severe first: the order findings are reported in.
ORDER: tuple[str, ...] = tuple(CAUSES)


def failure_text(message: str, cause: str | None, why: str = "", fix: str = "") -> str:
    """A failure as people read it (pytest's failure block, hence JUnit's failure text, and the
    Markdown summary): ``[cause] why`` first, then the check's message, then ``fix: ...`` last.
    Without a cause, the message as it is."""
    if not cause:
        return message
    lines = (message or "").splitlines()
    if why and lines and lines[0].strip() == why.strip():
        lines = lines[1:]  # the why is the message's own first line: once is enough
    return "\n".join([f"[{cause}] {why}".rstrip(), *lines, *([f"fix: {fix}"] if fix else [])])


def severity(name: str | None) -> int:
    """Position in the reporting order (unknown or missing causes last)."""
    return ORDER.index(name) if name in CAUSES else len(ORDER)

