"""Inputs for a case: generated from a seed or read from a data file. NumPy only."""

from __future__ import annotations

from typing import Optional

import numpy as np

from parity.case import Case, InputSpec


def make_pool(case: Case, sizes: Optional[dict[str, int]] = None) -> dict[str, np.ndarray]:
    """`max(batch_sizes)` samples per input; batch b is always the first b of them.

    Using one pool for every batch size means a sample's expected output is the same whatever
    batch it is in, which is what lets batch-size invariance be checked at all. `sizes` sets
    dynamic axes to other sizes than the export sizes (for shape invariance).
    """
    n = max(case.batch_sizes)
    pool: dict[str, np.ndarray] = {}
    order = list(case.inputs)
    index = {name: i for i, name in enumerate(order)}
    # masks first: token ids read their row's mask (pad ids where it is zero)
    for name in sorted(order, key=lambda k: case.inputs[k].distribution != "mask"):
        spec = case.inputs[name]
        if spec.file is not None:
            with np.load(case.resolve(spec.file), allow_pickle=False) as data:
                arr = np.asarray(data[spec.key or name][:n])
            pool[name] = arr.astype(spec.dtype, copy=False)
        else:
            rng = np.random.default_rng([case.model.seed, index[name]])
            mask = pool.get(spec.mask) if spec.mask else None
            pool[name] = _draw(rng, spec, (n, *case.sample_shape(name, sizes)), mask)
    return {name: pool[name] for name in order}


def _draw(rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...],
          mask: Optional[np.ndarray] = None) -> np.ndarray:
    if spec.distribution == "normal":
        arr = rng.normal(spec.mean, spec.std, size=shape)
    elif spec.distribution == "uniform":
        arr = rng.uniform(spec.low, spec.high, size=shape)
    elif spec.distribution == "randint":  # integers in [low, high)
        arr = rng.integers(int(spec.low), int(spec.high), size=shape)
    elif spec.distribution == "mask":
        arr = _mask(rng, spec, shape)
    elif spec.distribution == "tokens":
        arr = _tokens(rng, spec, shape, mask)
    else:
        arr = _edge(rng, spec, shape)
    return arr.astype(spec.dtype)


def _mask(rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...]) -> np.ndarray:
    """Ones, right-padded with zeros along the last axis: per row a length in [1, seq]."""
    n, seq = shape[0], shape[-1]
    lengths = np.full(n, seq)
    if spec.padding != "none":
        lengths = rng.integers(1, seq + 1, size=n)
        if spec.padding == "mixed":
            lengths[0] = seq
            if n > 1 and (lengths[1:] == seq).all() and seq > 1:  # at least one padded row
                lengths[1] = max(1, seq // 2)
    if spec.empty_row and n > 1:
        lengths[-1] = 0
    positions = np.arange(seq)
    mask = (positions[None, :] < lengths[:, None]).astype(np.int64)
    return np.broadcast_to(mask.reshape(n, *([1] * (len(shape) - 2)), seq), shape).copy()


def _tokens(rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...],
            mask: Optional[np.ndarray]) -> np.ndarray:
    """Ids in [low, high) avoiding the special ids; bos first, eos last, pad where the mask is 0."""
    specials = {v for v in (spec.bos, spec.eos, spec.pad if mask is not None else None) if v is not None}
    choices = np.setdiff1d(np.arange(int(spec.low), int(spec.high)), np.array(sorted(specials), dtype=np.int64))
    if choices.size == 0:
        choices = np.arange(int(spec.low), int(spec.high))
    ids = rng.choice(choices, size=shape)
    real = np.ones(shape, dtype=bool) if mask is None else mask.astype(bool)
    if spec.bos is not None:
        ids[..., 0] = spec.bos
    if spec.eos is not None:
        last = real.sum(axis=-1) - 1  # last unpadded position per row
        for row in np.ndindex(*shape[:-1]):
            if last[row] >= 0:
                ids[row + (last[row],)] = spec.eos
    if mask is not None:
        ids[~real] = spec.pad
    return ids


def _edge(rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...]) -> np.ndarray:
    """Normal values (mean, std) where, per sample, about a tenth each are replaced by +/- `large`,
    by zeros, and by one repeated value (exact ties); negatives come with the normals."""
    arr = rng.normal(spec.mean, spec.std, size=shape)
    kind = rng.integers(0, 10, size=shape)
    arr = np.where(kind == 0, spec.large * np.where(rng.random(shape) < 0.5, -1.0, 1.0), arr)
    arr = np.where(kind == 1, 0.0, arr)
    tie = rng.normal(spec.mean, spec.std, size=(shape[0],) + (1,) * (len(shape) - 1))
    return np.where(kind == 2, tie, arr)


def batch(pool: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """The first `size` samples of every input."""
    return {name: np.ascontiguousarray(arr[:size]) for name, arr in pool.items()}
