"""The check protocol, the result every check returns, and helpers checks share. NumPy only.

A check is one module of :mod:`parity.checks` that defines ``CHECK``, an instance of a
:class:`Check` subclass. The registry (:mod:`parity.checks`) is derived from those modules and from
the ``parity.checks`` entry-point group; the plugin and the reports ask the check (is it per
backend, opt-in, does it apply to this case, is triage worth running when it fails), never a
hard-coded name.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np

from parity.compare import FP16_MAX, FP16_TINY, OutputComparison, format_table, jsonable, min_cosine
from parity.formats import FORMATS
from parity.pipeline.run import CaseRun

if TYPE_CHECKING:
    from parity.case import Case
    from parity.golden import GoldenStore

STATUSES = ("passed", "failed", "skipped", "error")


class Context(Protocol):
    """What a check may ask of the session running it (parity.session.Session provides it)."""

    golden: "GoldenStore"
    update_golden: bool
    rerun_prefix: str  # how this run was invoked, for commands that messages suggest


@dataclass
class CheckResult:
    """The outcome of one check of one target: a status, a message for people, metrics for machines.

    A result that is not passed or skipped carries a ``cause`` from the taxonomy
    (:mod:`parity.causes`), ``why`` (one sentence: what happened here) and ``fix`` (one sentence:
    what to do; default: the cause's generic fix).
    """

    status: str
    message: str = ""
    metrics: dict = field(default_factory=dict)
    cause: Optional[str] = None
    why: str = ""
    fix: str = ""

    def __post_init__(self) -> None:
        from parity.causes import CAUSES
        from parity.errors import strip_ansi

        # colour codes from converters stay out of reports (the why and fix reach them too)
        self.message, self.why, self.fix = strip_ansi(self.message), strip_ansi(self.why), strip_ansi(self.fix)
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.cause is not None and self.cause not in CAUSES:
            raise ValueError(f"cause must be one of {', '.join(CAUSES)}, got {self.cause!r}")
        if self.status in ("passed", "skipped"):
            self.cause, self.why, self.fix = None, "", ""
        elif self.cause is not None and not self.fix:
            self.fix = CAUSES[self.cause].fix


class Check:
    """One check: a name, where it applies, and ``run(case_run, format, backend, session) -> CheckResult``.

    Class attributes say how the harness treats it:

    - ``per_backend``: one test per (case, format, backend); False for static checks that read the
      model and the artefact (lint): one test per (case, format)
    - ``opt_in``: run only when a case lists it in ``checks``
    - ``config``: the case field holding this check's settings (``None`` when it has none)
    - ``triage``: when it fails, localising the first diverging module can explain it
    - ``order``: position in the registry (and in a case's default check list)
    """

    name: str = ""
    per_backend: bool = True
    opt_in: bool = False
    config: Optional[str] = None
    triage: bool = False
    order: int = 1000

    def applies(self, case: "Case", fmt: str) -> bool:
        """Whether this check has anything to measure for (case, format)."""
        return True

    def run(self, run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<check {self.name}>"


def summary(rows: list[tuple[str, OutputComparison]]) -> dict:
    """Worst figures over all rows, for the report's top level: JSON-ready like the per-output ones
    (a non-finite figure is the string "inf" or "nan")."""
    compared = [c for _, c in rows if c.size]
    if not compared:
        return {}
    top1 = [c.top1_agreement for c in compared if c.top1_agreement is not None]
    return jsonable({
        "max_abs": max(c.max_abs for c in compared),
        "max_rel": max(c.max_rel for c in compared),
        "scaled_error": max(c.scaled_error for c in compared),
        "min_cosine": min_cosine(c.cosine for c in compared),
        "n_outside": sum(c.n_outside for c in compared),
        "nonfinite": sum(c.nonfinite for c in compared),
        "min_scale": max(c.min_scale for c in compared),
        "min_atol": max(c.min_atol for c in compared),
        "tolerance_used": max(c.tolerance_used for c in compared),
        "top1_agreement": min(top1) if top1 else None,
        "vacuous": any(c.vacuous for c in compared),
    })


def per_output(rows: list[tuple[str, OutputComparison]]) -> dict:
    out: dict = {}
    for label, c in rows:
        out.setdefault(c.name, {})[label] = c.metrics()
    return out


def _tolerance_lines(run: CaseRun, fmt: str, backend: str) -> str:
    return "; ".join(f"{name}: {run.tolerance_for(fmt, backend, name).describe()}"
                     for name in run.output_names)


def numeric_cause(rows: list[tuple[str, OutputComparison]], fmt: str) -> tuple[Optional[str], str]:
    """(cause, why) of failed comparisons: Inf past fp16's range or values flushed to zero in a
    reduced-precision format (precision-limit), NaN/Inf (nonfinite), a check that cannot fail
    (vacuous), else wrong values (numerics)."""
    failed = [(label, c) for label, c in rows if not c.passed]
    if not failed:
        return None, ""
    reduced = precision(fmt) != "fp32"
    over = [(label, c) for label, c in failed if c.overflow]
    if over and reduced:
        label, c = over[0]
        return "precision-limit", (f"{c.name} at {label}: {c.overflow} value(s) beyond fp16's largest ({FP16_MAX:g}) "
                                   f"became Inf in {fmt} (overflow)")
    nonfinite = [(label, c) for label, c in failed if c.nonfinite]
    if nonfinite:
        label, c = nonfinite[0]
        return "nonfinite", f"{c.name} at {label}: {c.nonfinite} NaN/Inf value(s) where the eager model is finite"
    flushed = [(label, c) for label, c in failed if c.underflow and c.underflow >= 0.5 * c.size]
    if flushed and (reduced or all(c.ref_max_abs < FP16_TINY for _, c in flushed)):
        label, c = flushed[0]
        return "precision-limit", (f"{c.name} at {label}: values of magnitude {c.ref_max_abs:.2g} (below fp16's "
                                   f"smallest normal, {FP16_TINY:.2g}) come back as zeros from {fmt} (underflow)")
    if all(c.vacuous and c.n_outside == 0 for _, c in failed):
        label, c = failed[0]
        return "vacuous", f"{c.name} at {label}: {c.problem.replace('vacuous check: ', '')}"
    label, c = max(failed, key=lambda lc: lc[1].scaled_error)
    return "numerics", (f"{c.name} at {label}: error {c.scaled_error:.3g} of max|reference|, cosine "
                        f"{c.cosine:.6f}, {c.n_outside} of {c.size} elements outside tolerance")


def verdict(title: str, rows: list[tuple[str, OutputComparison]], run: CaseRun, fmt: str, backend: str,
             metrics: dict, notes: list[str] = (), extra_problems: list[str] = (),
             tolerance_text: str = "", extra_label: str = "learned drift threshold(s) exceeded",
             cause: Optional[str] = None, why: str = "", fix: str = "") -> CheckResult:
    """The result of a check that compares outputs: passed, or failed with the table, the problems and
    a cause (`cause`/`why`/`fix` where the check knows better than the numbers)."""
    failed = [(label, c) for label, c in rows if not c.passed]
    metrics.update(summary(rows))
    metrics["outputs"] = per_output(rows)
    warnings = [f"{label} {c.name}: {c.problem}" for label, c in rows if c.passed and c.problem]
    if not failed and not extra_problems:
        return CheckResult("passed", "\n".join([*warnings, *notes]), metrics)
    problems = [f"  {label} {c.name}: {c.problem}" for label, c in failed] + [f"  {p}" for p in extra_problems]
    message = "\n".join([
        f"{title}: {len(failed)} of {len(rows)} comparisons failed"
        + (f", {len(extra_problems)} {extra_label}" if extra_problems else ""),
        format_table(rows),
        "problems:", *problems,
        f"tolerance (|obtained-expected| <= atol + rtol*|expected| + scale*max|expected|): "
        f"{tolerance_text or _tolerance_lines(run, fmt, backend)}",
        *notes,
    ])
    found, found_why = numeric_cause(rows, fmt)
    if cause is None:
        cause, why = found or "numerics", why or found_why or (extra_problems[0].strip() if extra_problems else "")
    elif found in ("nonfinite", "precision-limit") and cause in ("numerics", "drift"):
        cause, why, fix = found, found_why, ""  # the specific reason beats the generic one
    return CheckResult("failed", message, metrics, cause=cause, why=why or found_why, fix=fix)


def golden_versions() -> dict[str, Any]:
    """Versions recorded with goldens: every package that can change an export or runtime result, and
    the CPU features that decide which kernels run (parity.versions.cpu_features)."""
    from parity.versions import cpu_features, packages

    return {"python": platform.python_version(), "numpy": np.__version__, **packages(),
            "cpu_features": cpu_features()}


def update_command(session: "Context", case: str, fmt: str = "", backend: str = "", check: str = "golden") -> str:
    """The command that re-records exactly these goldens, as this run was invoked.

    Test ids read ``<case>-<format>-<backend>-<check>`` inside ``test_parity[...]``; anchoring the
    expression on ``[`` and ``]`` selects this case alone (``-k net`` would also select ``net_small``).
    """
    target = "-".join(w for w in (case, fmt, backend) if w)
    words = f"[{target}-{check}]" if fmt and backend else f"[{target}- and {check}]"
    prefix = getattr(session, "rerun_prefix", "") or "pytest parity/"
    return f"{prefix} --update-golden -k '{words}'"



def training_findings(run: CaseRun, fmt: str) -> list:
    from parity.errors import ExportError

    found = list(run.model_findings)
    try:
        found += run.artefact_findings(fmt) or []
    except ExportError:  # no artefact to read: the model's findings are the hint
        pass
    return found


#: The fix when the model reaches the exporter in training mode.
EVAL_FIX = "call model.eval() before exporting (or return the model in eval mode from the factory)"
#: The fix when an eval-mode model itself computes across the batch.
MIXES_FIX = ("the model is in eval mode, so this is its own computation across the batch axis (x - x.mean(0), a "
             "reduction over dimension 0): remove it, or accept that a sample's output depends on its batch-mates")


def training_cause(run: CaseRun, fmt: str) -> Optional[tuple[str, str, str]]:
    """(cause, why, fix) from the training-mode lint of the model and the artefact, or None.

    BatchNorm (or any module) in training mode is ``batch-dependence`` with the fix ``model.eval()``;
    a batch-axis reduction found only in the artefact of a model in eval mode is the model's own
    computation (the fix is not ``model.eval()``); dropout or random ops are ``randomness``.
    """
    found = training_findings(run, fmt)
    model = set(run.model_findings)
    training = [f for f in found if f.kind in ("batchnorm-training", "training-mode")
                and (f in model or "norm" in f.op.lower())]
    mixes = [f for f in found if f.kind == "batchnorm-training" and f not in model and "norm" not in f.op.lower()]
    random = [f for f in found if f.kind in ("dropout-training", "random-op")]
    if training:
        return ("batch-dependence", f"the model reaches the exporter in training mode ({training[0].describe()})",
                EVAL_FIX)
    if mixes:
        return ("batch-dependence", f"the model mixes samples across the batch ({mixes[0].describe()})",
                MIXES_FIX)
    if random:
        return ("randomness", f"a random op is active at inference ({random[0].describe()})",
                EVAL_FIX if random[0].kind == "dropout-training" else
                "keep random ops off the inference path (or seed them inside the model)")
    return None


def precision(fmt: str) -> str:
    return FORMATS[fmt].precision if fmt in FORMATS else "fp32"
