"""Inputs for a case: generated from a seed or read from a data file. NumPy only."""

from __future__ import annotations

import numpy as np

from parity.case import Case, InputSpec


def make_pool(case: Case) -> dict[str, np.ndarray]:
    """`max(batch_sizes)` samples per input; batch b is always the first b of them.

    Using one pool for every batch size means a sample's expected output is the same whatever
    batch it is in, which is what lets batch-size invariance be checked at all.
    """
    n = max(case.batch_sizes)
    pool: dict[str, np.ndarray] = {}
    for index, (name, spec) in enumerate(case.inputs.items()):
        if spec.file is not None:
            with np.load(case.resolve(spec.file), allow_pickle=False) as data:
                arr = np.asarray(data[spec.key or name][:n])
            pool[name] = arr.astype(spec.dtype, copy=False)
        else:
            rng = np.random.default_rng([case.model.seed, index])
            pool[name] = _draw(rng, spec, (n, *spec.shape))
    return pool


def _draw(rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...]) -> np.ndarray:
    if spec.distribution == "normal":
        arr = rng.normal(spec.mean, spec.std, size=shape)
    elif spec.distribution == "uniform":
        arr = rng.uniform(spec.low, spec.high, size=shape)
    else:  # randint: integers in [low, high)
        arr = rng.integers(int(spec.low), int(spec.high), size=shape)
    return arr.astype(spec.dtype)


def batch(pool: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """The first `size` samples of every input."""
    return {name: np.ascontiguousarray(arr[:size]) for name, arr in pool.items()}
