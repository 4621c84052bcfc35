"""Model outputs as a flat list of arrays, whatever nesting a framework returns. Imports only NumPy."""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

_TRAILING_NUMBER = re.compile(r"(\d+)$")


def flatten(out: Any, leaf: Callable[[Any], np.ndarray], sort_keys: bool = False) -> list[np.ndarray]:
    """The arrays of `out` in a fixed order: a leaf (converted by `leaf`), or nested tuples, lists and
    dicts of leaves. Dicts keep their order, or with `sort_keys` are ordered by key with numbered keys
    in numeric order (a TensorFlow signature's output_0, output_1, ..., output_10)."""
    if isinstance(out, dict):
        keys = sorted(out, key=_natural) if sort_keys else list(out)
        return [a for k in keys for a in flatten(out[k], leaf, sort_keys)]
    if isinstance(out, (list, tuple)):
        return [a for v in out for a in flatten(v, leaf, sort_keys)]
    return [leaf(out)]


def _natural(key: Any) -> tuple:
    text = str(key)
    number = _TRAILING_NUMBER.search(text)
    return (text[:number.start()], int(number.group(1))) if number else (text, -1)
