"""Just enough SVG charting for the HTML report: a log-x histogram, a scatter with its diagonal, bars,
and a curve of values along an ordered axis (error by depth).

Inline SVG keeps the page one self-contained file that any browser renders without scripts, and
keeps the report free of a plotting dependency (matplotlib would add about 40 MB to a harness
whose core needs none). Each function returns an ``<svg>`` element as a string.
"""

from __future__ import annotations

import math
from html import escape
from typing import Optional, Sequence

W, H = 380, 250
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 30, 46
BLUE, RED, GREY, GREEN = "#3b6fb6", "#c8372d", "#8a8f98", "#2e8b57"


class Scale:
    """Maps data values to pixels, linear or log10."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False) -> None:
        self.log = log
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            pad = abs(lo) * 0.05 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.a, self.b = lo, hi, a, b

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 1e-300))
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self) -> list[float]:
        if self.log:
            first, last = math.ceil(self.lo - 1e-9), math.floor(self.hi + 1e-9)
            step = max(1, math.ceil((last - first + 1) / 6))
            found = [10.0 ** e for e in range(first, last + 1, step)]
            return found or [10 ** self.lo, 10 ** self.hi]
        span = self.hi - self.lo
        raw = span / 5
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
        start = math.ceil(self.lo / step - 1e-9) * step
        return [start + i * step for i in range(int((self.hi - start) / step + 1e-9) + 1)]


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        m, e = f"{v:.0e}".split("e")
        return f"{m}e{int(e)}"
    return f"{v:.3g}"


def _frame(title: str, xlabel: str, ylabel: str, x: Optional[Scale], y: Scale, body: list[str],
           xticks: Optional[list[tuple[float, str]]] = None) -> str:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
           f'<title>{escape(title)}</title>',
           f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>',
           f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="12" font-weight="bold">{escape(title)}</text>']
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP
    for t in y.ticks():
        py = y(t)
        if y1 - 0.5 <= py <= y0 + 0.5:
            out.append(f'<line x1="{x0}" x2="{x1}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e6e6e6"/>')
            out.append(f'<text x="{x0 - 4}" y="{py + 4:.1f}" text-anchor="end">{_num(t)}</text>')
    ticks = xticks if xticks is not None else [(t, _num(t)) for t in x.ticks()] if x is not None else []
    for t, label in ticks:
        px = x(t) if x is not None else t
        if x0 - 0.5 <= px <= x1 + 0.5:
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y0}" y2="{y0 + 4}" stroke="#555"/>')
            out.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle">{escape(label)}</text>')
    out += body
    out.append(f'<polyline points="{x0},{y1} {x0},{y0} {x1},{y0}" fill="none" stroke="#555"/>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{H - 8}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(14,{(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(ylabel)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def histogram(edges: Sequence[float], counts: Sequence[int], title: str, xlabel: str, note: str = "") -> str:
    """Bars between log-spaced `edges`; `note` goes under the title (e.g. how many errors are exactly 0)."""
    if not edges or not counts:
        return _empty(title, note or "no non-zero errors")
    x = Scale(edges[0], edges[-1], LEFT, W - RIGHT, log=True)
    y = Scale(0, max(max(counts), 1) * 1.08, H - BOTTOM, TOP)
    body = []
    for lo, hi, n in zip(edges, edges[1:], counts):
        if n:
            body.append(f'<rect x="{x(lo) + 0.5:.1f}" y="{y(n):.1f}" width="{max(x(hi) - x(lo) - 1, 1):.1f}" '
                        f'height="{y(0) - y(n):.1f}" fill="{BLUE}"><title>{_num(lo)} - {_num(hi)}: {n}</title></rect>')
    if note:
        body.append(f'<text x="{W - RIGHT}" y="{TOP + 10}" text-anchor="end" fill="#555">{escape(note)}</text>')
    return _frame(title, xlabel, "elements", x, y, body)


def scatter(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str, ylabel: str,
            highlight: int = 0, note: str = "") -> str:
    """Points (x, y) on equal axes with the y = x diagonal; the first `highlight` points in red."""
    if not xs:
        return _empty(title, "no finite values")
    lo, hi = min(min(xs), min(ys)), max(max(xs), max(ys))
    pad = (hi - lo) * 0.04 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    x = Scale(lo, hi, LEFT, W - RIGHT)
    y = Scale(lo, hi, H - BOTTOM, TOP)
    body = [f'<line x1="{x(lo):.1f}" y1="{y(lo):.1f}" x2="{x(hi):.1f}" y2="{y(hi):.1f}" stroke="{GREY}" '
            f'stroke-dasharray="4 3"/>']
    order = list(range(len(xs)))[highlight:] + list(range(min(highlight, len(xs))))  # worst drawn on top
    for i in order:
        colour = RED if i < highlight else BLUE
        body.append(f'<circle cx="{x(xs[i]):.1f}" cy="{y(ys[i]):.1f}" r="2.6" fill="{colour}" fill-opacity="0.75"/>')
    if note:
        body.append(f'<text x="{LEFT + 6}" y="{TOP + 10}" fill="#555">{escape(note)}</text>')
    return _frame(title, xlabel, ylabel, x, y, body)


def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, limit: Optional[float] = None,
         limit_label: str = "tolerance", log: Optional[bool] = None, colours: Optional[Sequence[str]] = None,
         note: str = "") -> str:
    """One bar per label; a dashed horizontal line at `limit`. Log scale when values span > 2 decades."""
    if not values:
        return _empty(title, "no values")
    shown = [v for v in [*values, *([limit] if limit is not None else [])] if v is not None and math.isfinite(v)]
    positive = [v for v in shown if v > 0]
    if log is None:
        log = len(positive) == len(shown) and len(positive) > 1 and max(positive) / min(positive) > 100
    if log and positive:
        y = Scale(min(positive) / 2, max(positive) * 2, H - BOTTOM, TOP, log=True)
        base = y.a
    else:
        top = max([*shown, 0.0]) or 1.0
        y = Scale(min([0.0, *shown]), top * 1.1, H - BOTTOM, TOP)
        base = y(0)
    n = len(labels)
    slot = (W - RIGHT - LEFT) / n
    width = min(slot * 0.7, 60)
    body, ticks = [], []
    for i, (label, v) in enumerate(zip(labels, values)):
        cx = LEFT + slot * (i + 0.5)
        ticks.append((cx, label))
        if v is None or not math.isfinite(v):
            body.append(f'<text x="{cx:.1f}" y="{base - 4:.1f}" text-anchor="middle" fill="{RED}">'
                        f'{"n/a" if v is None else escape(str(v))}</text>')
            continue
        top_px = y(v) if not log or v > 0 else base
        colour = colours[i] if colours else BLUE
        body.append(f'<rect x="{cx - width / 2:.1f}" y="{min(top_px, base):.1f}" width="{width:.1f}" '
                    f'height="{abs(base - top_px):.1f}" fill="{colour}"><title>{escape(label)}: {_num(v)}</title></rect>')
        body.append(f'<text x="{cx:.1f}" y="{min(top_px, base) - 3:.1f}" text-anchor="middle" fill="#333">'
                    f'{_num(v)}</text>')
    if limit is not None and math.isfinite(limit) and (not log or limit > 0):
        body += _limit_line(y, limit, limit_label)
    if note:
        body.append(f'<text x="{LEFT + 6}" y="{TOP + 10}" fill="#555">{escape(note)}</text>')
    return _frame(title, "", ylabel, None, y, body, xticks=ticks)


def _limit_line(y: Scale, limit: float, label: str) -> list[str]:
    """A dashed red horizontal line at `limit`, labelled."""
    py = y(limit)
    return [f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="{RED}" stroke-dasharray="5 3"/>',
            f'<text x="{LEFT + 4}" y="{py - 4:.1f}" fill="{RED}" stroke="#fff" stroke-width="3" '
            f'paint-order="stroke">{escape(label)} {_num(limit)}</text>']


def curve(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, limit: Optional[float] = None,
          limit_label: str = "tolerance", mark: Optional[int] = None, note: str = "") -> str:
    """Values in order (modules in execution order) as a line on a log scale, a dashed line at `limit`
    and the point at index `mark` (the first divergence) in red; every k-th label on the x axis."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    positive = [v for v in [*finite, *([limit] if limit else [])] if v > 0]
    if not values or not positive:
        return _empty(title, "no values above zero")
    floor = min(positive) / 2
    y = Scale(floor, max(positive) * 2, H - BOTTOM, TOP, log=True)
    n = len(values)
    step_px = (W - RIGHT - LEFT) / max(n - 1, 1)

    def x_at(i: int) -> float:
        return LEFT + step_px * i if n > 1 else (LEFT + W - RIGHT) / 2

    points, body = [], []
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            body.append(f'<text x="{x_at(i):.1f}" y="{TOP + 12}" text-anchor="middle" fill="{RED}">inf</text>')
            continue
        points.append(f"{x_at(i):.1f},{y(max(v, floor)):.1f}")
    if points:
        body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{BLUE}" stroke-width="1.5"/>')
    for i, (label, v) in enumerate(zip(labels, values)):
        if v is None or not math.isfinite(v):
            continue
        colour = RED if i == mark else BLUE
        radius = 4 if i == mark else 2
        body.append(f'<circle cx="{x_at(i):.1f}" cy="{y(max(v, floor)):.1f}" r="{radius}" fill="{colour}">'
                    f'<title>{escape(label)}: {_num(v)}</title></circle>')
    if limit is not None and math.isfinite(limit) and limit > 0:
        body += _limit_line(y, limit, limit_label)
    if note:
        body.append(f'<text x="{LEFT + 6}" y="{TOP + 10}" fill="#555">{escape(note)}</text>')
    every = max(1, math.ceil(n / 6))
    ticks = [(x_at(i), labels[i] if len(labels[i]) <= 14 else "..." + labels[i][-11:]) for i in range(0, n, every)]
    return _frame(title, "modules in execution order", ylabel, None, y, body, xticks=ticks)


def _empty(title: str, why: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            f'font-family="sans-serif" font-size="12"><rect width="{W}" height="{H}" fill="#fff"/>'
            f'<text x="{W / 2}" y="16" text-anchor="middle" font-weight="bold">{escape(title)}</text>'
            f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#777">{escape(why)}</text></svg>')
