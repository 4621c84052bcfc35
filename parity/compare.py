"""Comparing outputs: pure NumPy, knows no runtime.

One rule decides pass or fail for every element: ``|obtained - expected| <= atol + rtol*|expected|
+ scale*max|expected|``. The ``scale`` term makes the default scale-aware (float error grows with the
magnitude of the whole tensor, not of each element); ``atol``/``rtol`` give the classic elementwise
rule when a case asks for it. A comparison whose tolerance is as large as the signal it guards (or
whose reference is all zeros or constant) is *vacuous*: it fails and says so unless the case allows it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

from parity.profile import PROFILE_AT, error_profile, tolerance_used
from parity.tolerance import ResolvedTolerance

#: fp16's largest finite value and smallest normal: beyond them values overflow to Inf or lose
#: their precision and flush towards zero (the precision-limit cause).
FP16_MAX = 65504.0
FP16_TINY = 6.104e-05


@dataclass
class OutputComparison:
    """Metrics and verdict for one output tensor."""

    name: str
    passed: bool
    shape: list[int]
    expected_shape: list[int]
    tolerance: dict
    problem: str = ""  # why it failed (or the vacuous-check warning when allowed)
    size: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    cosine: float = 1.0
    n_outside: int = 0
    share_outside: float = 0.0
    worst_index: Optional[list[int]] = None
    worst_obtained: Optional[float] = None
    worst_expected: Optional[float] = None
    ref_max_abs: float = 0.0
    scaled_error: float = 0.0  # max_abs / max|expected|
    min_scale: float = 0.0  # smallest `scale` that passes with atol = rtol = 0
    min_atol: float = 0.0  # smallest `atol` that passes with this rtol and scale
    tolerance_used: float = 0.0  # max over elements of |obtained-expected| / bound: 1.0 is the limit
    nonfinite: int = 0  # elements non-finite in obtained but finite in expected (or mismatched)
    top1_agreement: Optional[float] = None
    vacuous: bool = False
    underflow: int = 0  # elements the reference has as non-zero, tiny (< fp16's smallest normal), obtained as 0
    overflow: int = 0  # non-finite elements where the reference is finite but beyond fp16's largest (65504)
    extra: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        """JSON-ready metrics (non-finite floats become strings)."""
        return {k: jsonable(v) for k, v in asdict(self).items()}


def jsonable(v):
    """`v` with non-finite floats as the strings "inf", "-inf", "nan" (the JSON report is strict JSON)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v


def compare_output(name: str, expected: np.ndarray, obtained: np.ndarray, tol: ResolvedTolerance) -> OutputComparison:
    """Compare one output against its reference under `tol`."""
    expected = np.asarray(expected)
    obtained = np.asarray(obtained)
    result = OutputComparison(name=name, passed=False, shape=list(obtained.shape),
                              expected_shape=list(expected.shape), tolerance=tol.model_dump())
    if expected.shape != obtained.shape:
        result.problem = f"shape {tuple(obtained.shape)} but expected {tuple(expected.shape)}"
        return result
    exp = expected.astype(np.float64)
    obt = obtained.astype(np.float64)
    result.size = int(exp.size)
    if exp.size == 0:
        result.passed = True
        return result

    exp_finite = np.isfinite(exp)
    obt_finite = np.isfinite(obt)
    both_same_nonfinite = ~exp_finite & ~obt_finite & ((exp == obt) | (np.isnan(exp) & np.isnan(obt)))
    bad_nonfinite = (exp_finite != obt_finite) | (~exp_finite & ~obt_finite & ~both_same_nonfinite)
    result.nonfinite = int(bad_nonfinite.sum())
    comparable = exp_finite & obt_finite
    result.overflow = int((bad_nonfinite & exp_finite & (np.abs(np.where(exp_finite, exp, 0.0)) > FP16_MAX)).sum())
    flushed = comparable & (obt == 0) & (exp != 0)
    result.underflow = int((flushed & (np.abs(exp) < FP16_TINY)).sum())

    diff = np.where(comparable, np.abs(obt - exp), 0.0)
    ref_abs = np.where(exp_finite, np.abs(exp), 0.0)
    ref_max = float(ref_abs.max())
    result.ref_max_abs = ref_max
    result.max_abs = float(diff.max())
    result.mean_abs = float(diff[comparable].mean()) if comparable.any() else 0.0
    nz = comparable & (ref_abs > 0)
    result.max_rel = float((diff[nz] / ref_abs[nz]).max()) if nz.any() else (math.inf if result.max_abs > 0 else 0.0)
    result.scaled_error = result.max_abs / ref_max if ref_max > 0 else (math.inf if result.max_abs > 0 else 0.0)
    result.cosine = _cosine(np.where(comparable, exp, 0.0), np.where(comparable, obt, 0.0))

    bound = tol.atol + tol.rtol * ref_abs + tol.scale * ref_max
    outside = (diff > bound) | bad_nonfinite
    result.n_outside = int(outside.sum())
    result.share_outside = result.n_outside / result.size
    result.min_scale = result.scaled_error
    result.min_atol = float(np.maximum(diff - tol.rtol * ref_abs - tol.scale * ref_max, 0.0).max())
    result.tolerance_used = tolerance_used(diff, bound)

    if result.nonfinite:
        # A NaN or Inf where the reference is finite is an unbounded error: the figures say so, so
        # that nothing keyed on them (a matrix, a diff, a dashboard) reads a broken export as exact.
        for figure in ("max_abs", "max_rel", "mean_abs", "scaled_error", "min_scale", "min_atol", "tolerance_used"):
            setattr(result, figure, math.inf)
        result.cosine = math.nan

    score = np.where(bad_nonfinite, np.inf, diff - bound)
    worst = np.unravel_index(int(np.argmax(score)), exp.shape)
    result.worst_index = [int(i) for i in worst]
    result.worst_obtained = float(obtained[worst])
    result.worst_expected = float(expected[worst])

    if exp.ndim == 2 and exp.shape[1] > 1 and np.issubdtype(expected.dtype, np.floating):
        result.top1_agreement = float((np.argmax(np.nan_to_num(exp), 1) == np.argmax(np.nan_to_num(obt), 1)).mean())

    vacuous = _vacuous_reason(exp[exp_finite], ref_max, tol)
    problems = []
    if result.nonfinite:
        problems.append(f"{result.nonfinite} non-finite value(s) (NaN/Inf) where the reference has none")
    if result.n_outside > result.nonfinite:
        problems.append(f"{result.n_outside - result.nonfinite} of {result.size} elements outside tolerance")
    if vacuous:
        result.vacuous = True
        if not tol.allow_vacuous:
            problems.append(f"vacuous check: {vacuous}")
        elif not problems:
            result.problem = f"warning, vacuous check allowed by the case: {vacuous}"
    if problems:
        result.problem = "; ".join(problems)
    result.passed = not problems
    if not result.passed or result.tolerance_used >= PROFILE_AT:
        result.extra["profile"] = error_profile(exp, obt)
    return result


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a.ravel(), b.ravel()) / (na * nb))


def _vacuous_reason(finite_ref: np.ndarray, ref_max: float, tol: ResolvedTolerance) -> str:
    """Why this comparison cannot fail, or '' if it can."""
    if finite_ref.size == 0:
        return ""
    if ref_max == 0.0:
        return "the reference is all zeros, so the comparison cannot tell a right export from a wrong one"
    if finite_ref.size > 1 and np.all(finite_ref == finite_ref.flat[0]):
        return f"the reference is constant ({finite_ref.flat[0]:.6g}): the output does not depend on the input"
    if tol.atol >= ref_max:
        return (f"atol {tol.atol:g} is {tol.atol / ref_max:.3g} x the largest reference value {ref_max:.3g}: "
                "this comparison cannot fail")
    if tol.rtol >= 1.0 or tol.scale >= 1.0:
        return f"a relative tolerance of {max(tol.rtol, tol.scale):g} (100% or more) cannot fail"
    return ""


def compare_outputs(expected: dict[str, np.ndarray], obtained: dict[str, np.ndarray],
                    tolerance_for: Callable[[str], ResolvedTolerance]) -> list[OutputComparison]:
    """Compare every expected output; a missing or unexpected output is a failed comparison."""
    results = []
    for name, exp in expected.items():
        tol = tolerance_for(name)
        if name not in obtained:
            results.append(OutputComparison(name=name, passed=False, shape=[], expected_shape=list(np.shape(exp)),
                                            tolerance=tol.model_dump(),
                                            problem=f"missing; the artefact produced: {', '.join(obtained) or 'nothing'}"))
            continue
        results.append(compare_output(name, exp, obtained[name], tol))
    for name in obtained:
        if name not in expected:
            results.append(OutputComparison(name=name, passed=False, shape=list(np.shape(obtained[name])),
                                            expected_shape=[], tolerance={},
                                            problem=f"unexpected output; the reference has: {', '.join(expected)}"))
    return results


def min_cosine(values) -> float:
    """The smallest cosine, NaN (undefined: a non-finite output) winning over every number."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else min(values)


def format_table(rows: list[tuple[str, OutputComparison]]) -> str:
    """A small fixed-width table, one line per (label, comparison), for failure messages."""
    header = ("where", "output", "shape", "max_abs", "max_rel", "err/max|ref|", "cosine", "outside", "worst [index] obtained vs expected")
    lines = [header]
    for label, c in rows:
        if c.size == 0 and c.problem:
            lines.append((label, c.name, "x".join(map(str, c.shape)) or "-", "-", "-", "-", "-", "-", c.problem))
            continue
        worst = "-"
        if c.worst_index is not None:
            worst = f"{c.worst_index} {c.worst_obtained:.6g} vs {c.worst_expected:.6g}"
        outside = f"{c.n_outside}/{c.size} ({100 * c.share_outside:.1f}%)"
        lines.append((label, c.name, "x".join(map(str, c.shape)), f"{c.max_abs:.3g}", f"{c.max_rel:.3g}",
                      f"{c.scaled_error:.3g}", f"{c.cosine:.6f}", outside, worst))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
