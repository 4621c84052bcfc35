"""The HTML report: one self-contained file (inline CSS and SVG, no scripts, nothing fetched).

Sections: the case x target matrix; each failing or drifting target with its message and plots
(histogram of absolute error, expected vs obtained, error per batch size, accuracy and size vs
fp32); latency; artefacts; the environment. A plot is drawn only when the record carries what it
needs, so checks that do not exist yet (or metrics a check does not report) simply draw nothing:

- histogram and scatter: ``metrics.outputs.<output>.<row>.extra.profile`` (kept by the comparison
  for rows that failed or used at least half their tolerance, see :mod:`parity.profile`);
- error per batch size: two or more rows in ``metrics.outputs.<output>`` (rows are labelled by
  batch, ``b1``, ``b4``, ..., or by the size of a dynamic axis, ``seq=16``), plotting ``scaled_error``;
- accuracy and size vs fp32: ``metrics.accuracy`` with ``metrics.fp32_accuracy``, and
  ``metrics.artefact.size_bytes`` (or ``metrics.size_bytes``) with ``metrics.fp32_size_bytes``.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape

from parity.causes import severity
from parity.report.findings import cause_of, group
from parity.report import svg
from parity.report.environment import one_line
from parity.report.run import Run, fmt_bytes, fmt_error, number, outcome, target_id

#: Cell backgrounds (light) and badges (dark, white text) per outcome.
COLOURS = {"passed": "#dcf3e4", "drifting": "#fff1c2", "failed": "#f9d6d2", "error": "#f3c1bb",
           "xpassed": "#f9d6d2", "xfailed": "#ececec", "skipped": "#f3f3f3"}
BADGES = {"passed": "#1a7f37", "drifting": "#9a6700", "failed": "#cf222e", "error": "#82071e",
          "xpassed": "#cf222e", "xfailed": "#6e7781", "skipped": "#8c959f"}
#: Profiles drawn per target (each is a histogram and a scatter).
MAX_PROFILES = 6

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2328;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}.sub{color:#57606a;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;margin-right:4px;
color:#fff}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:8px;overflow-x:auto;font-size:12px;line-height:1.35}
.plots{display:flex;flex-wrap:wrap;gap:10px}.plots svg{border:1px solid #e1e4e8}
.target{border-left:4px solid #ccc;padding-left:12px;margin:16px 0}
td a,td a:visited{color:inherit}.check{white-space:nowrap}
.matrix{overflow-x:auto;max-width:100%}.matrix tr>th:first-child{position:sticky;left:0;z-index:1}
.finding{border-left:4px solid #cf222e;padding:4px 12px;margin:10px 0;background:#fff8f8}
.cause{font-weight:600;font-family:ui-monospace,monospace}.finding .fix{color:#1a7f37}
.finding .tests{font-size:12px;color:#57606a}
"""


def _badge(o: str) -> str:
    return f'<span class="badge" style="background:{BADGES.get(o, "#6e7781")}">{escape(o)}</span>'


def _anchor(record: dict) -> str:
    return "t-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in target_id(record))


#: Target columns per matrix table: wider runs get one table per group of format families, so the
#: page never scrolls sideways (12 formats x their backends would be ~30 columns).
MATRIX_COLUMNS = 6


def column_groups(columns: list[str], width: int = MATRIX_COLUMNS) -> list[list[str]]:
    """Columns packed into tables of at most `width`, a format family (onnx, onnx_int8) kept together
    where it fits, in the given order."""
    families: list[list[str]] = []
    for c in columns:
        family = c.split("/")[0].split("_")[0]
        if families and families[-1][0].split("/")[0].split("_")[0] == family:
            families[-1].append(c)
        else:
            families.append([c])
    tables: list[list[str]] = []
    for fam in families:
        while fam:
            room = width - len(tables[-1]) if tables else 0
            if tables and len(fam) <= room:
                tables[-1] += fam
                fam = []
            else:
                tables.append(fam[:width])
                fam = fam[width:]
    return tables or [[]]


def _matrix(run: Run, detailed: set[str]) -> str:
    cases, columns, cells = run.matrix()
    tables = [_matrix_table(run, detailed, cases, group, cells) for group in column_groups(columns)]
    return ("\n".join(tables) +
            '<p class="sub">Each check: outcome and worst error as a share of the output\'s largest magnitude '
            "(err/max|ref|), or p50 latency per batch size. <i>drifting</i>: passed, but an output used at least "
            "half its tolerance.</p>")


def _matrix_table(run: Run, detailed: set[str], cases: list[str], columns: list[str], cells: dict) -> str:
    errors = {r["case"]: r for r in run.case_errors}
    head = "".join(f"<th>{escape(c)}</th>" for c in columns) or "<th>result</th>"
    rows = []
    for case in cases:
        if case not in errors and columns and not any((case, c) in cells for c in columns):
            continue  # no target of this case in this table's formats
        tds = []
        if case in errors and not any((case, c) in cells for c in columns):
            r = errors[case]
            tds.append(f'<td colspan="{max(1, len(columns))}" style="background:{COLOURS["error"]}">'
                       f'<a href="#{_anchor(r)}">case file error</a></td>')
        for column in columns if case not in errors else []:
            cell = cells.get((case, column))
            if cell is None:
                tds.append("<td></td>")
                continue
            lines = []
            for r in cell.records:
                o = outcome(r)
                m = r.get("metrics", {})
                figure = fmt_error(number(m.get("scaled_error")))
                if m.get("latency_ms"):
                    figure = " ".join(f"{k}:{v['p50']:.3g}ms" for k, v in m["latency_ms"].items())
                name = escape(str(r.get("check")))
                if _anchor(r) in detailed:
                    name = f'<a href="#{_anchor(r)}">{name}</a>'
                lines.append(f'<div class="check">{name} {_badge(o)}{escape(figure)}</div>')
            tds.append(f'<td style="background:{COLOURS[cell.outcome]}">{"".join(lines)}</td>')
        rows.append(f"<tr><th>{escape(case)}</th>{''.join(tds)}</tr>")
    return f'<div class="matrix"><table><tr><th>case</th>{head}</tr>{"".join(rows)}</table></div>'


def _profile_plots(record: dict) -> list[str]:
    plots = []
    expected_label = "golden" if record.get("check") == "golden" else "reference"
    for output, rows in (record.get("metrics", {}).get("outputs") or {}).items():
        for label, row in rows.items():
            profile = (row.get("extra") or {}).get("profile")
            if not profile or len(plots) >= 2 * MAX_PROFILES:
                continue
            hist = profile.get("abs_error_hist", {})
            notes = []
            if hist.get("zeros"):
                notes.append(f"{hist['zeros']} exactly equal")
            if hist.get("nonfinite"):
                notes.append(f"{hist['nonfinite']} non-finite")
            plots.append(svg.histogram(hist.get("edges", []), hist.get("counts", []),
                                       f"{output} @ {label}: |error| distribution", "|obtained - expected|",
                                       note=", ".join(notes)))
            sample = profile.get("sample", {})
            shown = len(sample.get("expected", []))
            plots.append(svg.scatter(sample.get("expected", []), sample.get("obtained", []),
                                     f"{output} @ {label}: {expected_label} vs obtained",
                                     f"expected ({expected_label})", "obtained", highlight=sample.get("worst", 0),
                                     note=f"{shown} of {sample.get('of', shown)} elements; red: largest errors"))
    return plots


def _batch_plots(record: dict) -> list[str]:
    plots = []
    for output, rows in (record.get("metrics", {}).get("outputs") or {}).items():
        if len(rows) < 2:
            continue
        labels = list(rows)
        values = [number(r.get("scaled_error")) for r in rows.values()]
        tol = next(iter(rows.values())).get("tolerance") or {}
        limit = tol.get("scale") if not tol.get("atol") and not tol.get("rtol") else None
        colours = [svg.BLUE if r.get("passed", True) else svg.RED for r in rows.values()]
        per = "batch size" if all(str(label).startswith("b") for label in labels) else "size"  # seq=16 rows
        plots.append(svg.bars(labels, values, f"{record.get('check')}: {output} error per {per}",
                              "err / max|ref|", limit=limit, colours=colours))
    return plots


def _triage_plots(record: dict) -> list[str]:
    """The error-by-depth curve of the triage attached to a failure (``--parity-triage``)."""
    found = record.get("metrics", {}).get("triage")
    if not isinstance(found, dict):
        return []
    rows = [r for r in found.get("rows") or [] if isinstance(r, dict) and r.get("status") in ("pass", "fail")]
    if len(rows) < 2:
        return []
    first = found.get("first_divergence")
    mark = next((i for i, r in enumerate(rows) if r.get("path") == first), None)
    tolerance = number(found.get("tolerance_scale"))
    return [svg.curve([str(r.get("path")) for r in rows], [number(r.get("rel_error")) for r in rows],
                      f"triage: error by module ({record.get('format')}/{record.get('backend')})", "err / max|ref|",
                      limit=tolerance, mark=mark, note=f"first divergence: {first}" if first else "no divergence")]


def _accuracy_plots(record: dict) -> list[str]:
    m = record.get("metrics", {})
    plots = []
    acc, ref = number(m.get("accuracy")), number(m.get("fp32_accuracy"))
    if acc is not None and ref is not None:
        plots.append(svg.bars(["fp32", str(record.get("format"))], [ref, acc], "accuracy vs fp32", "accuracy",
                              log=False, colours=[svg.GREY, svg.RED if acc < ref else svg.GREEN]))
    artefact = m.get("artefact")  # a dict on accuracy records, a list of findings on lint records
    size = number(m.get("size_bytes")) or number(artefact.get("size_bytes") if isinstance(artefact, dict) else None)
    ref_size = number(m.get("fp32_size_bytes"))
    if size is not None and ref_size is not None:
        plots.append(svg.bars(["fp32", str(record.get("format"))], [ref_size / 1e6, size / 1e6],
                              "artefact size vs fp32", "MB", log=False, colours=[svg.GREY, svg.BLUE],
                              note=f"ratio {size / ref_size:.2f}" if ref_size else ""))
    return plots


def _scalars(metrics: dict) -> str:
    keys = ("max_abs", "max_rel", "scaled_error", "tolerance_used", "min_cosine", "n_outside", "nonfinite",
            "top1_agreement", "accuracy", "fp32_accuracy", "reference_moved_max_abs", "runner")
    cells = [(k, metrics[k]) for k in keys if metrics.get(k) is not None]
    if not cells:
        return ""
    return "<table><tr>" + "".join(f"<th>{escape(k)}</th>" for k, _ in cells) + "</tr><tr>" + "".join(
        f'<td class="num">{escape(_short(v, 7 if "cosine" in k else 4))}</td>' for k, v in cells) + "</tr></table>"


def _short(v, digits: int = 4) -> str:
    n = number(v)
    if n is None:
        return str(v)
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (n.is_integer() and abs(n) < 1e9):
        return str(int(n))
    return "inf" if math.isinf(n) else f"{n:.{digits}g}"


def _target(record: dict) -> str:
    o = outcome(record)
    plots = [*_profile_plots(record), *_batch_plots(record), *_triage_plots(record), *_accuracy_plots(record)]
    parts = [f'<div class="target" id="{_anchor(record)}" style="border-color:{BADGES.get(o, "#ccc")}">',
             f"<h3>{_badge(o)} {escape(target_id(record))}</h3>"]
    if record.get("cause") and o in ("failed", "error", "xfailed"):
        parts.append(f'<p><span class="cause">{escape(record["cause"])}</span>: {escape(record.get("why") or "")}'
                     f'{"<br>fix: " + escape(record["fix"]) if record.get("fix") else ""}</p>')
    parts.append(_scalars(record.get("metrics", {})))
    if record.get("message"):
        parts.append(f"<pre>{escape(record['message'])}</pre>")
    if plots:
        parts.append(f'<div class="plots">{"".join(plots)}</div>')
    parts.append("</div>")
    return "\n".join(parts)


def _findings(run: Run, anchors: set[str]) -> str:
    """Each cause once, most severe first, with the tests it explains (linked to their details)."""
    found = group(run.records)
    if not found:
        return ""
    by_id = {target_id(r): _anchor(r) for r in run.records}
    parts = [f"<h2>Findings ({len(found)} cause{'s' if len(found) != 1 else ''}, most severe first)</h2>"]
    for f in found:
        tests = ", ".join(f'<a href="#{by_id[t]}">{escape(t)}</a>' if by_id.get(t) in anchors else escape(t)
                          for t in f.tests)
        parts.append(f'<div class="finding"><div><span class="cause">{escape(f.cause)}</span> '
                     f"<b>{escape(f.where)}</b>: {escape(f.why)}</div>"
                     f'<div class="sub">{escape(f.meaning)}</div>'
                     f'<div class="fix">fix: {escape(f.fix)}</div>'
                     f'<div class="tests">explains {escape(f.explains())}: {tests}</div></div>')
    return "\n".join(parts)


def _latency(run: Run) -> str:
    rows = run.latencies()
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(r['case'])}</td><td>{escape(r['format'])}/{escape(r['backend'])}</td>"
        f'<td class="num">{escape(label.lstrip("b"))}</td><td class="num">{s["p50"]:.3g}</td>'
        f'<td class="num">{s["p90"]:.3g}</td><td class="num">{s.get("min", 0):.3g}</td>'
        f'<td class="num">{"" if s.get("max_p50") is None else format(s["max_p50"], "g")}</td>'
        f'<td class="num">{s.get("runs", "")} after {s.get("warmup", "")}</td><td>{_badge(outcome(r))}</td></tr>'
        for r, label, s in rows)
    return ("<h2>Latency</h2><table><tr><th>case</th><th>target</th><th>batch</th><th>p50 ms</th><th>p90 ms</th>"
            f"<th>min ms</th><th>max p50 ms</th><th>runs</th><th></th></tr>{body}</table>")


def _artefacts(run: Run) -> str:
    rows = run.artefacts()
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(c)}</td><td>{escape(f)}</td><td>{escape(str(a.get('source', '')))}</td>"
        f'<td class="num">{escape(fmt_bytes(a.get("size_bytes")))}</td>'
        f'<td class="num">{"" if a.get("export_s") is None else format(a["export_s"], ".2f")}</td>'
        f"<td>{escape(str(a.get('exporter', '')))}</td>"
        f'<td class="num">{escape(str(a.get("opset_written", "")))}</td></tr>' for c, f, a in rows)
    return ("<h2>Artefacts</h2><table><tr><th>case</th><th>format</th><th>source</th><th>size</th><th>export s</th>"
            f"<th>exporter</th><th>opset</th></tr>{body}</table>")


def _environment(run: Run) -> str:
    env = run.environment
    if not env:
        return "<h2>Environment</h2><p class=\"sub\">not recorded (no run file beside the report)</p>"
    rows = []
    for key in ("python", "platform", "cpu"):
        value = env.get(key) or {}
        rows.append((key, ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)))
    rows.append(("memory", f"{env.get('memory_gb')} GB"))
    rows.append(("GPUs", ", ".join(f"{g.get('name')} (driver {g.get('driver')}, {g.get('memory_mb')} MB)"
                                   for g in env.get("gpus") or []) or "none"))
    if env.get("git"):
        rows.append(("git", f"{env['git'].get('commit')}{' (dirty)' if env['git'].get('dirty') else ''}"))
    rows += [(name, version) for name, version in (env.get("packages") or {}).items()]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<h2>Environment</h2><table>{body}</table>"


def render(run: Run, title: str = "parity report") -> str:
    """The whole page as a string."""
    info = run.info
    detailed = [*sorted(run.problems(), key=lambda r: (severity(cause_of(r)), target_id(r))), *run.drifting()]
    anchors = {_anchor(r) for r in detailed}
    counts = " ".join(f"{_badge(o)}{escape(text)}" for o, text in run.pytest_counts()) or "no tests ran"
    when = info.get("finished") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = f"{escape(str(when))}"
    if info.get("duration_s") is not None:
        meta += f" · {info['duration_s']:.1f} s"
    if info.get("exitstatus") is not None:
        meta += f" · pytest exit status {info['exitstatus']}"
    accuracy = [r for r in run.records if number(r.get("metrics", {}).get("accuracy")) is not None
                and _anchor(r) not in anchors]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>", f'<div class="sub">{meta}</div>',
        f'<div class="sub">{escape(one_line(run.environment))}</div>',
        f"<p>{counts}</p>",
        _findings(run, anchors),
        "<h2>Matrix</h2>", _matrix(run, anchors),
    ]
    if detailed:
        parts.append(f"<h2>Failing and drifting targets ({len(detailed)})</h2>")
        parts += [_target(r) for r in detailed]
    if accuracy:
        parts.append("<h2>Accuracy</h2>")
        parts += [_target(r) for r in accuracy]
    parts += [_latency(run), _artefacts(run), _environment(run), "</body></html>"]
    return "\n".join(p for p in parts if p) + "\n"
