"""Labelled data for accuracy checks. Built-in source: scikit-learn's bundled digits (offline).

``load(source, split)`` returns ``(images, labels)``: float32 images of shape [N, 1, 8, 8] scaled
to [0, 1] and int64 labels. The split is fixed (seeded): 1347 ``train`` / 450 ``test`` images, and
``calibration`` is the first 128 of ``train``, so calibration never overlaps evaluation.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SOURCES = ("digits",)
SPLITS = ("train", "test", "calibration")


@lru_cache(maxsize=None)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    return images[order], labels[order]


def load(source: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; built-in sources: {', '.join(SOURCES)}")
    images, labels = _digits()
    if split == "train":
        x, y = images[:1347], labels[:1347]
    elif split == "test":
        x, y = images[1347:], labels[1347:]
    elif split == "calibration":
        x, y = images[:128], labels[:128]
    else:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    return (x[:limit], y[:limit]) if limit else (x, y)
