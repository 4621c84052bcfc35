"""The Markdown summary (`--parity-summary`, GitHub's step summary) and the terminal matrix."""

from __future__ import annotations

from parity.report.environment import one_line
from parity.causes import failure_text, severity
from parity.report.findings import cause_of, group
from parity.report.run import Cell, Run, fmt_bytes, fmt_error, outcome, target_id

ICONS = {"passed": "✅", "drifting": "⚠️", "failed": "❌", "error": "💥", "xpassed": "❗", "xfailed": "✖️",
         "skipped": "⏭️"}
WORDS = {"passed": "ok", "drifting": "DRIFT", "failed": "FAIL", "error": "ERROR", "xpassed": "XPASS",
         "xfailed": "xfail", "skipped": "skip"}
#: Lines of a failure message shown in the summary (GitHub caps a step summary at 1 MiB).
MESSAGE_LINES = 40


def _cell_text(cell: Cell, icons: bool) -> str:
    o = cell.outcome
    parts = [ICONS[o] if icons else WORDS[o]]
    if cell.problems and o != "skipped":
        parts.append(" ".join(dict.fromkeys(cell.problems)))
    err = fmt_error(cell.error)
    if err:
        parts.append(err)
    return " ".join(parts)


def matrix_rows(run: Run, icons: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the case x format/backend matrix: outcome, checks at fault, worst err/max|ref|."""
    cases, columns, cells = run.matrix()
    errors = {r["case"] for r in run.case_errors}
    header = ["case", *columns] if columns else ["case", "result"]
    rows = []
    for case in cases:
        if case in errors and not any((case, c) in cells for c in columns):
            bad = ICONS["error"] + " case file error" if icons else "ERROR case file"
            rows.append([case, *([bad] * max(1, len(columns)))])
            continue
        rows.append([case, *[_cell_text(cells[(case, c)], icons) if (case, c) in cells else "" for c in columns]])
    return header, rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[str(v).replace("|", "\\|") for v in row] for row in [header, *rows]]
    return ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(r) + " |" for r in esc[1:]]]


def _message(text: str, keep_last: bool = False) -> list[str]:
    """A message as a code block, cut at MESSAGE_LINES (`keep_last`: the last line, the fix, stays)."""
    lines = (text or "").splitlines() or ["(no message)"]
    if len(lines) > MESSAGE_LINES:
        last = lines[-1:] if keep_last else []
        lines = [*lines[:MESSAGE_LINES], f"... ({len(lines) - MESSAGE_LINES - len(last)} more lines in the JSON "
                 "report)", *last]
    return ["```text", *[line.replace("```", "'''") for line in lines], "```"]


def render(run: Run, title: str = "parity") -> str:
    """The summary: counts, the matrix, latency, then each failure with its message."""
    out = [f"## {title}", ""]
    out.append(" · ".join(f"{ICONS[o]} {text}" for o, text in run.pytest_counts()) or "no tests ran")
    out += ["", f"<sub>{one_line(run.environment)}</sub>", ""]
    findings = group(run.records)
    if findings:
        out += [f"### Findings ({len(findings)} cause{'s' if len(findings) != 1 else ''}, most severe first)", ""]
        for f in findings:
            out.append(f"- **{f.cause}** `{f.where}`: {f.why}  \n  explains {f.explains()}  \n  fix: {f.fix}")
        out.append("")
    header, rows = matrix_rows(run)
    out += _table(header, rows)
    out += ["", "Cells: outcome, the checks at fault, and the worst error as a share of the output's largest "
            "magnitude (err/max|ref|). ⚠️ drifting: passed, but an output used at least half its tolerance.", ""]

    latencies = run.latencies()
    if latencies:
        out += ["### Latency", ""]
        lat_rows = []
        for r, label, s in latencies:
            limit = s.get("max_p50")
            lat_rows.append([r["case"], f"{r['format']}/{r['backend']}", label.lstrip("b"), f"{s['p50']:.3g}",
                             f"{s['p90']:.3g}", "" if limit is None else f"{limit:g}", ICONS[outcome(r)]])
        out += _table(["case", "target", "batch", "p50 ms", "p90 ms", "max p50 ms", ""], lat_rows)
        out.append("")

    artefacts = run.artefacts()
    if artefacts:
        out += ["### Artefacts", ""]
        art_rows = [[c, f, a.get("source", ""), fmt_bytes(a.get("size_bytes")),
                     "" if a.get("export_s") is None else f"{a['export_s']:.2f}"] for c, f, a in artefacts]
        out += _table(["case", "format", "source", "size", "export s"], art_rows)
        out.append("")

    problems = sorted(run.problems(), key=lambda r: severity(cause_of(r)))  # in the findings' order
    if problems:
        out += [f"### Failures ({len(problems)})", ""]
        for r in problems:
            text = failure_text(r.get("message", ""), r.get("cause"), r.get("why", ""), r.get("fix", ""))
            out += [f"#### {ICONS[outcome(r)]} `{target_id(r)}`", "", *_message(text, keep_last=bool(r.get("fix"))),
                    ""]
    drifting = run.drifting()
    if drifting:
        out += [f"### Drifting ({len(drifting)})", ""]
        for r in drifting:
            used = r.get("metrics", {}).get("tolerance_used")
            out.append(f"- `{target_id(r)}`: {float(used):.0%} of its tolerance used")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_text(run: Run) -> str:
    """The matrix for a terminal: fixed-width, words instead of icons."""
    header, rows = matrix_rows(run, icons=False)
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, run.summary_line()]) + "\n"
