"""parity.outputs: one flattening of nested model outputs for every framework and runner."""

from __future__ import annotations

import numpy as np
import pytest

from parity.outputs import flatten


def test_nested_outputs_flatten_in_order():
    out = {"a": (np.zeros(1), [np.ones(2)]), "b": np.full(3, 2.0)}
    got = flatten(out, np.asarray)
    assert [a.shape for a in got] == [(1,), (2,), (3,)]


def test_signature_dicts_sort_numbered_keys_numerically():
    out = {f"output_{i}": np.array([i]) for i in (10, 2, 0, 1)}
    assert [int(a[0]) for a in flatten(out, np.asarray, sort_keys=True)] == [0, 1, 2, 10]
    assert [int(a[0]) for a in flatten(out, np.asarray)] == [10, 2, 0, 1]  # insertion order otherwise


def test_leaf_converter_errors_propagate():
    def only_arrays(value):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"not an array: {type(value).__name__}")
        return value

    with pytest.raises(TypeError, match="not an array: str"):
        flatten([np.zeros(1), "oops"], only_arrays)
