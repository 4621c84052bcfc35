"""Keras models that reproduce real upstream bugs on the pinned stack (the Keras canary cases).

Kept apart from :mod:`parity_examples.canaries` so that the framework is inferred from the imports
(this module imports keras, not torch). No weights: what each computes is defined by its layer alone.
"""

from __future__ import annotations

import parity._triton_first  # noqa: F401  (before tensorflow)

import keras  # noqa: E402
from keras import layers  # noqa: E402


def area_resize(size: int = 8, out: int = 4, channels: int = 1) -> keras.Model:
    """``Resizing(interpolation="area")``: each output pixel is the mean of the input pixels its box
    covers (a 2x downsample averages 2 x 2 blocks)."""
    image = keras.Input((size, size, channels), name="image")
    resized = layers.Resizing(out, out, interpolation="area", name="resized")(image)
    return keras.Model(image, resized, name="area_resize")
