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


#: The name of a model's output when it is one bare tensor; unnamed positions below it are numbered.
ROOT = "output"

KeyPath = tuple  # a key path into a nested output: str keys and int positions


def leaf_paths(out: Any, is_leaf: Callable[[Any], bool]) -> list[KeyPath]:
    """Key paths of every leaf of `out`, in :func:`flatten`'s order (dict order kept). ``None``
    entries, which Hugging Face models return for outputs they did not compute, are left out."""
    if isinstance(out, dict):
        return [(k, *p) for k, v in out.items() for p in leaf_paths(v, is_leaf)]
    if isinstance(out, (list, tuple)) and not is_leaf(out):
        return [(i, *p) for i, v in enumerate(out) for p in leaf_paths(v, is_leaf)]
    if out is None:
        return []
    return [()]


def dotted(path: KeyPath) -> str:
    """The stable name of a key path: ``logits``, ``hidden_states.0``; an unnamed root is ``output``
    (``output.0``, ``output.1`` for a returned tuple)."""
    parts = [str(p) for p in path]
    if not path or isinstance(path[0], int):
        parts.insert(0, ROOT)
    return ".".join(parts)


def pick(out: Any, path: KeyPath) -> Any:
    """The leaf of `out` at `path` (works for dicts, Hugging Face ``ModelOutput``, tuples and lists)."""
    for key in path:
        out = out[key]
    return out


def has_names(paths: list[KeyPath]) -> bool:
    """Whether any output carries a name (came from a dict), rather than a position only."""
    return any(isinstance(k, str) for p in paths for k in p)
