"""Input generators: token ids, attention masks with padding, the edge profile; all from the seed."""

from __future__ import annotations

import numpy as np
import pytest

from parity.case import Case
from parity.pipeline.inputs import make_pool


def case(inputs: dict, batch_sizes=(1, 6), seed=0) -> Case:
    return Case(name="c", model={"factory": "m:f", "seed": seed}, inputs=inputs, batch_sizes=list(batch_sizes))


def test_masks_pad_on_the_right_and_tokens_follow_them():
    pool = make_pool(case({
        "ids": {"shape": [10], "dtype": "int64", "distribution": "tokens", "low": 5, "high": 30, "bos": 1, "eos": 2,
                "pad": 0, "mask": "mask"},
        "mask": {"shape": [10], "dtype": "int64", "distribution": "mask", "padding": "mixed", "empty_row": True},
    }))
    ids, mask = pool["ids"], pool["mask"]
    assert list(pool) == ["ids", "mask"]  # the case's order, though masks are drawn first
    assert ids.dtype == np.int64 and mask.shape == (6, 10)
    lengths = mask.sum(1)
    assert lengths[0] == 10 and lengths[-1] == 0  # first row unpadded, last fully padded
    assert (lengths[1:-1] < 10).any()  # some rows padded
    for row, n in zip(mask, lengths):  # ones then zeros: right padding
        assert (row[:n] == 1).all() and (row[n:] == 0).all()
    for row, m, n in zip(ids, mask, lengths):
        assert (row[m == 0] == 0).all()  # pad id where the mask is zero
        if n:
            assert row[0] == 1 and row[n - 1] == 2  # bos first, eos at the last real token
            body = row[1:n - 1]
            assert ((body >= 5) & (body < 30)).all()


def test_no_padding_means_all_ones():
    pool = make_pool(case({"mask": {"shape": [4], "dtype": "int64", "distribution": "mask", "padding": "none"}}))
    assert (pool["mask"] == 1).all()


def test_edge_profile_mixes_large_values_ties_zeros_and_negatives():
    x = make_pool(case({"x": {"shape": [400], "distribution": "edge", "large": 30.0}}))["x"]
    for row in x:
        assert (np.abs(row) == 30.0).sum() > 10  # past fp16's exp overflow (exp(30) > 65504)
        assert (row == 0).sum() > 10
        values, counts = np.unique(row, return_counts=True)
        assert (counts[values != 0] > 10).any()  # an exact tie
        assert (row < 0).sum() > 50


def test_generators_are_deterministic_from_the_seed():
    spec = {"ids": {"shape": [8], "dtype": "int64", "distribution": "tokens", "high": 50}}
    assert (make_pool(case(spec))["ids"] == make_pool(case(spec))["ids"]).all()
    assert (make_pool(case(spec))["ids"] != make_pool(case(spec, seed=1))["ids"]).any()


@pytest.mark.parametrize("inputs,match", [
    ({"ids": {"shape": [8], "distribution": "tokens", "high": 50}}, "set dtype to int64"),
    ({"ids": {"shape": [8], "dtype": "int64", "distribution": "tokens", "high": 50, "bos": 50}},
     "'bos' \\(50\\) must be a token id below 'high'"),
    ({"ids": {"shape": [8], "dtype": "int64", "distribution": "tokens", "high": 50, "mask": "attn"}},
     "'attn' is not an input with distribution: mask"),
    ({"ids": {"shape": [8], "dtype": "int64", "distribution": "tokens", "high": 50, "mask": "m"},
      "m": {"shape": [9], "dtype": "int64", "distribution": "mask"}}, "a mask has one entry per token"),
])
def test_bad_generator_fields_are_refused_naming_the_fix(inputs, match):
    with pytest.raises(ValueError, match=match):
        case(inputs)
