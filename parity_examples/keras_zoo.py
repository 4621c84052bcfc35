"""Keras twins of the shipped example models (imports keras, only when a case builds one of them).

Channels-last, as Keras models are. Random weights from the case's seed (the pipeline seeds Keras
before calling a factory); BatchNormalization moving statistics are settled on random data, so a
model that computes batch statistics at inference visibly differs from one that does not.
"""

from __future__ import annotations

import parity._triton_first  # noqa: F401  (before tensorflow)
import numpy as np

import keras  # noqa: E402
from keras import layers  # noqa: E402


def settle_batchnorm(model: keras.Model, sample_shape: tuple[int, ...], batch: int = 32) -> keras.Model:
    """Set every BatchNormalization's moving statistics to the batch statistics of standard-normal
    data (momentum 0 for one training-mode call), then restore the momentum."""
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(np.random.default_rng(0).standard_normal((batch, *sample_shape)).astype("float32"), training=True)
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum
    return model


def _block(x, width: int, training: bool | None):
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x, training=training) if training else layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    return layers.MaxPooling2D(2)(x)


def tiny_cnn(channels: int = 3, num_classes: int = 10, width: int = 16, size: int = 32,
             training: bool = False) -> keras.Model:
    """A small CNN in Keras: (Conv-BN-ReLU-MaxPool) x 2, dropout, dense.

    ``training=True`` builds BatchNorm in training mode, the Keras way: BatchNormalization and Dropout *called* with
    ``training=True``, which a functional model bakes into its graph.
    """
    image = keras.Input((size, size, channels), name="image")
    x = _block(image, width, training)
    x = _block(x, 2 * width, training)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.25)(x, training=True) if training else layers.Dropout(0.25)(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return settle_batchnorm(keras.Model(image, logits, name="tiny_cnn"), (size, size, channels))


def digits_cnn(width: int = 16) -> keras.Model:
    """Small CNN with BatchNormalization for 8x8 digits, channels-last (weights trained by
    scripts/train_digits_keras.py and committed as cases/weights/digits_keras.weights.h5)."""
    image = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(image)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.Conv2D(2 * width, 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.2)(layers.Flatten()(x))
    return keras.Model(image, layers.Dense(10, name="logits")(x), name="digits_cnn")


def two_inputs(size: int = 16, features: int = 6, width: int = 8, num_classes: int = 4) -> keras.Model:
    """A Keras functional model with two inputs: an image (channels-last) and a feature vector,
    joined before the classifier."""
    image = keras.Input((size, size, 3), name="image")
    extra = keras.Input((features,), name="features")
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(image)
    x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    y = layers.Dense(width, activation="relu")(extra)
    joined = layers.Concatenate()([x, y])
    return keras.Model([image, extra], layers.Dense(num_classes, name="logits")(joined), name="two_inputs")
