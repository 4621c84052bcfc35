"""One finding per cause: the failures of a run grouped by what caused them, most severe first.

pytest reports every test; a person wants to read each cause once. A finding is one cause
(:mod:`parity.causes`) in one case (a model-level cause: training mode, randomness, a failed
reference, a bad case file) or in one case x format (everything else), with the tests it explains.
A model-level cause also explains the numerics and drift failures of its case: a BatchNorm left in
training mode fails parity, golden, batch invariance and lint, and reads as one finding. Expected
failures (xfail) and skips are not findings. Plain JSON in, plain data out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from parity.causes import CAUSES, severity
from parity.report.run import outcome, target_id

#: Failures a model-level cause of the same case explains.
EXPLAINED_BY_THE_MODEL = ("numerics", "drift", "nonfinite", "shape-dependence")


@dataclass
class CauseFinding:
    cause: str
    case: str
    format: Optional[str]  # None: the whole case (a model-level cause)
    why: str
    fix: str
    tests: list[str] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)  # check -> number of tests
    formats: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        if self.format is not None:
            return f"{self.case}/{self.format}"
        return f"{self.case} ({', '.join(self.formats)})" if self.formats else self.case

    @property
    def meaning(self) -> str:
        return CAUSES[self.cause].meaning if self.cause in CAUSES else ""

    def explains(self) -> str:
        """`9 tests: parity x3, batch_invariance x3, lint x3`."""
        parts = ", ".join(f"{c} x{n}" if n > 1 else c for c, n in self.checks.items())
        return f"{len(self.tests)} test{'s' if len(self.tests) != 1 else ''}: {parts}"

    def line(self) -> str:
        """One line for a terminal or a list."""
        return f"[{self.cause}] {self.where}: {self.why} (explains {self.explains()}); fix: {self.fix}"

    def as_dict(self) -> dict:
        return {"cause": self.cause, "case": self.case, "format": self.format, "formats": self.formats,
                "why": self.why, "fix": self.fix, "meaning": self.meaning, "tests": self.tests, "checks": self.checks}


def cause_of(record: dict) -> str:
    """The record's cause; records written before causes existed get one from their status."""
    cause = record.get("cause")
    if cause in CAUSES:
        return cause
    if record.get("check") == "load":
        return "case-error"
    return "harness-error" if record.get("status") == "error" else "numerics"


def group(records: Iterable[dict]) -> list[CauseFinding]:
    """The findings of a run, most severe first (then by case and format)."""
    failing = [r for r in records if outcome(r) in ("failed", "error")]
    findings: dict[tuple, CauseFinding] = {}
    case_level: dict[str, list[tuple]] = {}
    for r in sorted(failing, key=lambda r: severity(cause_of(r))):  # the most severe cause claims a test first
        cause = cause_of(r)
        case, fmt = str(r.get("case")), r.get("format")
        scope = CAUSES[cause].scope if cause in CAUSES else "format"
        if scope == "format" and cause in EXPLAINED_BY_THE_MODEL and case_level.get(case):
            k = case_level[case][0]  # a numerics failure of a model in training mode: the model is the cause
        elif scope == "case":
            k = (cause, case, None)
            case_level.setdefault(case, [])
            if k not in case_level[case]:
                case_level[case].append(k)
        else:
            k = (cause, case, fmt)
        f = findings.get(k)
        if f is None:
            f = findings[k] = CauseFinding(k[0], case, k[2], r.get("why") or _first_line(r.get("message", "")),
                                           r.get("fix") or (CAUSES[k[0]].fix if k[0] in CAUSES else ""))
        f.tests.append(target_id(r))
        check = str(r.get("check"))
        f.checks[check] = f.checks.get(check, 0) + 1
        if fmt and fmt not in f.formats:
            f.formats.append(str(fmt))
    return sorted(findings.values(), key=lambda f: (severity(f.cause), f.case, f.format or ""))


def _first_line(message: str) -> str:
    lines = [line for line in (message or "").splitlines() if line.strip()]
    return lines[0][:300] if lines else ""
