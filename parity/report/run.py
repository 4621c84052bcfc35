"""A saved run: the JSON report (one record per test) and its run file (environment, counts, times).

The report is a JSON list with one object per test; what belongs to the
run as a whole goes in a second file beside it, ``<report stem>.run.json`` (see :func:`run_path`),
so a consumer that iterates the list sees tests only. Everything here is plain JSON; nothing
imports a framework.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

#: Version of the run file's layout.
RUN_FORMAT = 1

#: How a record reads in the reports, worst first. "drifting": passed, but some output used at least
#: half its tolerance; "xfailed"/"xpassed": a case marked `xfail` that failed as expected / passed.
OUTCOMES = ("error", "failed", "xpassed", "drifting", "passed", "xfailed", "skipped")
#: Outcomes that make a run fail.
FAILING = ("error", "failed", "xpassed")


def run_path(report: str | Path) -> Path:
    """`report.json` -> `report.run.json` (any other name gets `.run.json` appended)."""
    report = Path(report)
    stem = report.name[:-5] if report.name.endswith(".json") else report.name
    return report.with_name(f"{stem}.run.json")


def target_id(record: dict) -> str:
    """`case-format-backend-check`, as in the test ids; a case file error reads `case-case-error`."""
    if record.get("format") is None and record.get("check") == "load":
        return f"{record.get('case')}-case-error"
    parts = (record.get("case"), record.get("format"), record.get("backend"), record.get("check"))
    return "-".join(str(p) for p in parts if p)  # backend-free checks (lint) have no backend


def number(value) -> Optional[float]:
    """A metric as a float: JSON numbers, and the strings 'inf'/'nan' the report writes for non-finite ones."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def drift_threshold() -> float:
    from parity.profile import PROFILE_AT

    return PROFILE_AT


def outcome(record: dict) -> str:
    """One of OUTCOMES for a record."""
    status = record.get("status")
    if record.get("xfail"):
        if status in ("failed", "error"):
            return "xfailed"
        if status == "passed":
            return "xpassed"
    if status == "passed":
        used = number(record.get("metrics", {}).get("tolerance_used"))
        if used is not None and used >= drift_threshold():
            return "drifting"
    return status if status in OUTCOMES else "error"


def worst(outcomes: Iterable[str]) -> str:
    found = list(outcomes)
    for o in OUTCOMES:
        if o in found and o not in ("skipped", "xfailed"):
            return o
    return "xfailed" if "xfailed" in found else "skipped"


def worst_error(records: Iterable[dict]) -> Optional[float]:
    """The largest err/max|ref| (`scaled_error`) over records that compared outputs."""
    values = [number(r.get("metrics", {}).get("scaled_error")) for r in records]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def fmt_error(value: Optional[float]) -> str:
    if value is None:
        return ""
    if math.isinf(value):
        return "inf"
    if math.isnan(value):
        return "nan"
    return "0" if value == 0 else f"{value:.2g}"


def fmt_bytes(n) -> str:
    n = number(n)
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _column_order(column: str) -> tuple:
    """Formats and backends in registry order (torchscript before onnx, cpu before cuda); unknown ones last."""
    from parity.formats import FORMATS, backends

    BACKENDS = backends()
    fmt, _, backend = column.partition("/")
    formats = list(FORMATS)
    return (formats.index(fmt) if fmt in formats else len(formats), fmt,
            BACKENDS.index(backend) if backend in BACKENDS else len(BACKENDS), backend)


def _check_order(check: str) -> tuple:
    """Checks in registry order (parity, golden, batch_invariance, ...); unknown ones last."""
    from parity.checks import CHECKS

    names = list(CHECKS)
    return (names.index(check) if check in names else len(names), check)


@dataclass
class Cell:
    """All records of one (case, format/backend)."""

    records: list[dict] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return worst(outcome(r) for r in self.records)

    @property
    def error(self) -> Optional[float]:
        return worst_error(r for r in self.records if r.get("status") != "skipped")

    @property
    def problems(self) -> list[str]:
        """Checks of this cell that failed, errored, passed unexpectedly or drift."""
        return [r.get("check") for r in self.records if outcome(r) in (*FAILING, "drifting")]

    @property
    def latency(self) -> dict:
        for r in self.records:
            lat = r.get("metrics", {}).get("latency_ms")
            if lat:
                return lat
        return {}


@dataclass
class Run:
    """A run's records and (when recorded) its run file."""

    records: list[dict]
    info: dict = field(default_factory=dict)
    source: Optional[Path] = None

    @property
    def environment(self) -> dict:
        return self.info.get("environment") or {}

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            o = outcome(r)
            counts[o] = counts.get(o, 0) + 1
        return {o: counts[o] for o in OUTCOMES if o in counts}

    @property
    def failed(self) -> bool:
        return any(outcome(r) in FAILING for r in self.records)

    @property
    def case_errors(self) -> list[dict]:
        return [r for r in self.records if r.get("check") == "load" and r.get("format") is None]

    def by_id(self) -> dict[str, dict]:
        return {target_id(r): r for r in self.records}

    def matrix(self) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
        """(cases, columns "format/backend", cells). Case file errors are rows without cells."""
        cases: list[str] = []
        columns: list[str] = []
        cells: dict[tuple[str, str], Cell] = {}
        for r in self.records:
            case = str(r.get("case"))
            if case not in cases:
                cases.append(case)
            if r.get("format") is None:
                continue
            column = f"{r['format']}/{r['backend'] or 'static'}"  # lint looks at the artefact, not a backend
            if column not in columns:
                columns.append(column)
            cells.setdefault((case, column), Cell()).records.append(r)
        for cell in cells.values():  # checks in registry order, whatever order workers finished them
            cell.records.sort(key=lambda r: _check_order(str(r.get("check"))))
        return sorted(cases), sorted(columns, key=_column_order), cells  # rows by name, not by who finished first

    def problems(self) -> list[dict]:
        """Records that make the run fail, in run order."""
        return [r for r in self.records if outcome(r) in FAILING]

    def drifting(self) -> list[dict]:
        return [r for r in self.records if outcome(r) == "drifting"]

    def artefacts(self) -> list[tuple[str, str, dict]]:
        """(case, format, artefact metrics) once per artefact, from whichever record carries them."""
        seen: dict[tuple[str, str], dict] = {}
        for r in self.records:
            art = r.get("metrics", {}).get("artefact")
            if isinstance(art, dict) and (r["case"], r["format"]) not in seen:
                seen[(r["case"], r["format"])] = art
        return [(c, f, a) for (c, f), a in seen.items()]

    def latencies(self) -> list[tuple[dict, str, dict]]:
        """(record, batch label, stats) for every timed batch size."""
        rows = []
        for r in self.records:
            for label, stats in (r.get("metrics", {}).get("latency_ms") or {}).items():
                rows.append((r, label, stats))
        return rows

    def pytest_counts(self) -> list[tuple[str, str]]:
        """(outcome, text) per count in pytest's own terms (an errored check, a strict xpass fail their
        test; a drifting pass passes), with parity's finer outcomes in brackets: ``("failed", "8 failed
        (3 errors)")``. The terminal line, the Markdown summary and the HTML report all count this way,
        so they agree with pytest's own summary."""
        c = self.counts
        parts = []
        failed = sum(c.get(o, 0) for o in FAILING)
        if failed:
            words = {"error": ("error", "errors"), "xpassed": ("strict xpass", "strict xpasses")}
            detail = ", ".join(f"{c[o]} {words[o][c[o] > 1]}" for o in ("error", "xpassed") if c.get(o))
            parts.append(("failed", f"{failed} failed" + (f" ({detail})" if detail else "")))
        passed = c.get("passed", 0) + c.get("drifting", 0)
        if passed:
            parts.append(("passed", f"{passed} passed" + (f" ({c['drifting']} drifting)" if c.get("drifting") else "")))
        parts += [(o, f"{c[o]} {o}") for o in ("xfailed", "skipped") if c.get(o)]
        return parts

    def summary_line(self) -> str:
        """The counts as pytest counts (see `pytest_counts`), on one line."""
        return f"parity: {', '.join(text for _, text in self.pytest_counts()) or 'no tests'}"


def load(path: str | Path) -> Run:
    """Read a report written by `--parity-report` and, when present, its run file."""
    path = Path(path)
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: not a parity report (expected a JSON list of test records)")
    info_path = run_path(path)
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    return Run(records, info, path)


def write_text(path: str | Path, text: str) -> Path:
    """Write atomically (temporary file in the same directory, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:  # a full disk, say: no temporary file left beside the report
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return target


def strict(value):
    """`value` with every non-finite float as the string the per-output metrics use ("inf", "-inf",
    "nan"), so that the report is strict JSON (json.dumps would write bare Infinity/NaN tokens,
    which strict parsers, jq and browsers reject); `number` reads them back as floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def save(path: str | Path, run: Run, default=str) -> tuple[Path, Path]:
    """Write the report (the list) and its run file, as strict JSON; returns both paths."""
    def dumps(value) -> str:  # through `default` first: it may turn objects into floats
        return json.dumps(strict(json.loads(json.dumps(value, default=default))), indent=2, allow_nan=False) + "\n"

    report = write_text(path, dumps(run.records))
    info = write_text(run_path(path), dumps({**run.info, "report": Path(path).name}))
    return report, info
