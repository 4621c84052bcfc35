"""What drifted between two runs: status changes and metrics that got worse beyond a threshold.

Targets are matched by id (`case-format-backend-check`). A target *drifted* when its status
changed, or when one of its figures got worse by more than the thresholds allow:

- error relative to the output (``scaled_error``, per output and batch where recorded, else the
  worst): grew by more than ``factor`` *and* now exceeds ``floor`` (so noise at 1e-8 does not count);
- ``1 - cosine`` likewise; a new non-finite value or a new element outside tolerance: any increase;
- ``top1_agreement`` and ``accuracy``: fell by more than ``accuracy_drop``;
- p50 latency per batch size: grew by more than ``latency_factor`` *and* by more than
  ``latency_min_ms`` (timings on shared machines are noisy; ``latency_factor=0`` ignores latency).

Targets present in one run only, environment changes (package versions, CPU, GPU) and artefact size
changes are listed too, as context; they are not drift of a target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from parity.report.run import Run, fmt_bytes, number, target_id


@dataclass(frozen=True)
class Thresholds:
    factor: float = 2.0
    floor: float = 1e-6
    accuracy_drop: float = 0.005
    latency_factor: float = 2.0
    latency_min_ms: float = 1.0
    size_change: float = 0.1


@dataclass
class RunDiff:
    drifted: dict[str, list[str]] = field(default_factory=dict)
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    artefacts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"drifted": self.drifted, "only_old": self.only_old, "only_new": self.only_new,
                "environment": self.environment, "artefacts": self.artefacts}


def _ratio(old: float, new: float) -> str:
    if old == 0:
        return "from 0"
    return f"x{new / old:.3g}"


def _grew(old: Optional[float], new: Optional[float], t: Thresholds) -> bool:
    if old is None or new is None:
        return False
    if math.isinf(new) and not math.isinf(old):
        return True
    return new > t.floor and new > t.factor * old


def _rows(metrics: dict) -> dict[str, dict]:
    """{"<output>@<row>": row metrics} from metrics.outputs, or {"": metrics} when there are none."""
    rows = {f"{o}@{label}": r for o, by in (metrics.get("outputs") or {}).items() for label, r in by.items()}
    return rows or {"": metrics}


def _compare_target(old: dict, new: dict, t: Thresholds) -> list[str]:
    reasons = []
    if old.get("status") != new.get("status"):
        reasons.append(f"status {old.get('status')} -> {new.get('status')}")
    om, nm = old.get("metrics") or {}, new.get("metrics") or {}
    old_rows, new_rows = _rows(om), _rows(nm)
    for name, nr in new_rows.items():
        orow = old_rows.get(name)
        if orow is None:
            continue
        where = f"{name} " if name else ""
        oe, ne = number(orow.get("scaled_error")), number(nr.get("scaled_error"))
        if _grew(oe, ne, t):
            reasons.append(f"{where}err/max|ref| {oe:.3g} -> {ne:.3g} ({_ratio(oe, ne)})")
        cos_key = "cosine" if "cosine" in nr else "min_cosine"
        oc, nc = number(orow.get(cos_key)), number(nr.get(cos_key))
        if oc is not None and nc is not None and _grew(1 - oc, 1 - nc, t):
            reasons.append(f"{where}1-cosine {1 - oc:.3g} -> {1 - nc:.3g}")
        for key in ("nonfinite", "n_outside"):
            o, n = number(orow.get(key)), number(nr.get(key))
            if o is not None and n is not None and n > o:
                reasons.append(f"{where}{key} {o:g} -> {n:g}")
        o, n = number(orow.get("top1_agreement")), number(nr.get("top1_agreement"))
        if o is not None and n is not None and o - n > t.accuracy_drop:
            reasons.append(f"{where}top-1 agreement {o:.4g} -> {n:.4g}")
    o, n = number(om.get("accuracy")), number(nm.get("accuracy"))
    if o is not None and n is not None and o - n > t.accuracy_drop:
        reasons.append(f"accuracy {o:.4g} -> {n:.4g}")
    if t.latency_factor > 0:
        old_lat = om.get("latency_ms") or {}
        for label, stats in (nm.get("latency_ms") or {}).items():
            if label not in old_lat:
                continue
            o, n = number(old_lat[label].get("p50")), number(stats.get("p50"))
            if o is not None and n is not None and n > t.latency_factor * o and n - o > t.latency_min_ms:
                reasons.append(f"{label} p50 latency {o:.3g} ms -> {n:.3g} ms ({_ratio(o, n)})")
    return reasons


def _environment(old: Run, new: Run) -> list[str]:
    oe, ne = old.environment, new.environment
    if not oe or not ne:
        return []
    changes = []
    op, np_ = oe.get("packages") or {}, ne.get("packages") or {}
    for name in sorted(set(op) | set(np_)):
        if op.get(name) != np_.get(name):
            changes.append(f"{name} {op.get(name, 'absent')} -> {np_.get(name, 'absent')}")
    for key in ("python", "platform", "cpu", "gpus"):
        if key == "platform":
            a = {k: v for k, v in (oe.get(key) or {}).items() if k != "node"}
            b = {k: v for k, v in (ne.get(key) or {}).items() if k != "node"}
        elif key == "python":
            a, b = (oe.get(key) or {}).get("version"), (ne.get(key) or {}).get("version")
        else:
            a, b = oe.get(key), ne.get(key)
        if a != b:
            changes.append(f"{key} {a} -> {b}")
    return changes


def diff(old: Run, new: Run, thresholds: Thresholds = Thresholds()) -> RunDiff:
    """Compare two runs target by target."""
    result = RunDiff()
    old_by, new_by = old.by_id(), new.by_id()
    result.only_old = [k for k in old_by if k not in new_by]
    result.only_new = [k for k in new_by if k not in old_by]
    for key, record in new_by.items():
        if key in old_by:
            reasons = _compare_target(old_by[key], record, thresholds)
            if reasons:
                result.drifted[key] = reasons
    result.environment = _environment(old, new)
    old_art = {(c, f): a for c, f, a in old.artefacts()}
    for c, f, a in new.artefacts():
        before = old_art.get((c, f))
        if before is None:
            continue
        o, n = number(before.get("size_bytes")), number(a.get("size_bytes"))
        if o and n is not None and abs(n - o) / o > thresholds.size_change:
            result.artefacts.append(f"{c} {f}: size {fmt_bytes(o)} -> {fmt_bytes(n)} ({(n - o) / o:+.0%})")
    return result


def render(d: RunDiff, old_name: str, new_name: str, old: Run, new: Run) -> str:
    lines = [f"parity diff: {old_name} ({len(old.records)} tests) -> {new_name} ({len(new.records)} tests)"]
    if d.environment:
        lines.append("environment changed: " + "; ".join(d.environment))
    if d.drifted:
        lines.append(f"drifted: {len(d.drifted)} target(s)")
        for key, reasons in d.drifted.items():
            lines.append(f"  {key}: {reasons[0]}")
            lines += [f"  {' ' * len(key)}  {r}" for r in reasons[1:]]
    else:
        lines.append("no target drifted")
    if d.artefacts:
        lines.append("artefacts changed: " + "; ".join(d.artefacts))
    if d.only_old:
        lines.append(f"only in {old_name}: " + ", ".join(d.only_old))
    if d.only_new:
        lines.append(f"only in {new_name}: " + ", ".join(d.only_new))
    return "\n".join(lines) + "\n"


__all__ = ["RunDiff", "Thresholds", "diff", "render", "target_id"]
