"""What the reports need to draw an error: a histogram and a bounded sample of value pairs. NumPy only.

A comparison keeps these only when it failed or came close to failing (used at least
``PROFILE_AT`` of its tolerance), so a clean run's JSON report stays small: a profile is about
3 kB whatever the size of the output (24 histogram bins, at most 128 (expected, obtained) pairs).
"""

from __future__ import annotations

import math

import numpy as np

#: A comparison that used at least this share of its tolerance is "drifting": it keeps a profile
#: for the HTML report's plots, and the reports mark it even though it passed.
PROFILE_AT = 0.5
#: Bins of the absolute-error histogram, log-spaced, 4 per decade, at most this many.
HIST_BINS = 24
#: (expected, obtained) pairs kept for the scatter plot: the worst elements first, then a seeded sample.
SAMPLE_WORST = 32
SAMPLE_SIZE = 128


def tolerance_used(diff: np.ndarray, bound: np.ndarray) -> float:
    """max(|obtained - expected| / bound) over the elements: below 1 passes, 1 is the limit.

    Where the bound is zero (a zero tolerance), any difference counts as infinitely over.
    """
    if diff.size == 0:
        return 0.0
    positive = bound > 0
    over_zero_bound = bool(np.any(diff[~positive] > 0))
    if over_zero_bound:
        return math.inf
    if not positive.any():
        return 0.0
    return float((diff[positive] / bound[positive]).max())


def _sig(values: np.ndarray, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values.tolist()]


def error_profile(expected: np.ndarray, obtained: np.ndarray) -> dict:
    """Histogram of |obtained - expected| and a bounded sample of (expected, obtained) pairs.

    Only elements finite in both arrays are drawn; the others are counted in ``nonfinite``.
    The sample holds the ``SAMPLE_WORST`` largest errors first (``sample.worst`` says how many),
    then a seeded uniform draw from the rest, so the same outputs always give the same profile.
    """
    exp = np.asarray(expected, dtype=np.float64).ravel()
    obt = np.asarray(obtained, dtype=np.float64).ravel()
    finite = np.isfinite(exp) & np.isfinite(obt)
    exp, obt = exp[finite], obt[finite]
    diff = np.abs(obt - exp)
    nonzero = diff[diff > 0]
    hist: dict = {"edges": [], "counts": [], "zeros": int(diff.size - nonzero.size),
                  "nonfinite": int(finite.size - finite.sum())}
    if nonzero.size:
        hi = math.ceil(math.log10(float(nonzero.max())) * 4) / 4
        lo = math.floor(math.log10(float(nonzero.min())) * 4) / 4
        lo = max(lo, hi - HIST_BINS / 4)
        if hi <= lo:
            hi = lo + 0.25
        bins = int(round((hi - lo) * 4))
        edges = np.logspace(lo, hi, bins + 1)
        counts, _ = np.histogram(np.clip(nonzero, edges[0], edges[-1]), bins=edges)
        hist["edges"] = _sig(edges, 4)
        hist["counts"] = [int(c) for c in counts]

    order = np.argsort(-diff, kind="stable")
    worst = order[:SAMPLE_WORST]
    rest = order[SAMPLE_WORST:]
    take = min(SAMPLE_SIZE - worst.size, rest.size)
    picked = np.sort(np.random.default_rng(0).choice(rest, size=take, replace=False)) if take else rest[:0]
    index = np.concatenate([worst, picked])
    return {
        "abs_error_hist": hist,
        "sample": {"expected": _sig(exp[index]), "obtained": _sig(obt[index]), "worst": int(worst.size),
                   "of": int(diff.size)},
    }
