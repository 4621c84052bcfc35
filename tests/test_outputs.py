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


def test_key_paths_and_dotted_names_of_nested_outputs():
    from parity.outputs import dotted, has_names, leaf_paths, pick

    out = {"logits": np.zeros(1), "hidden_states": (np.ones(2), np.full(3, 2.0)), "loss": None}
    paths = leaf_paths(out, lambda v: False)
    assert paths == [("logits",), ("hidden_states", 0), ("hidden_states", 1)]  # None left out
    assert [dotted(p) for p in paths] == ["logits", "hidden_states.0", "hidden_states.1"]
    assert pick(out, ("hidden_states", 1)).shape == (3,)
    assert has_names(paths)
    bare = leaf_paths((np.zeros(1), np.zeros(2)), lambda v: False)
    assert [dotted(p) for p in bare] == ["output.0", "output.1"] and not has_names(bare)
    assert [dotted(p) for p in leaf_paths(np.zeros(1), lambda v: False)] == ["output"]
