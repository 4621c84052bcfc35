"""Lint of the Keras model handed to exporters: layers called with ``training=True``.

Keras has no model-wide training flag. A functional model records each layer call with its
arguments, so a ``BatchNormalization()(x, training=True)`` baked into the graph (BatchNorm in training mode, in
Keras) is visible without running anything; a subclassed layer or model whose ``call`` passes
``training=True`` is found in its source.
"""

from __future__ import annotations

import inspect
import re

import parity._triton_first  # noqa: F401  (before tensorflow)

import keras  # noqa: E402
from parity.findings import Finding  # noqa: E402

_BATCH_STATS = (keras.layers.BatchNormalization,)
_RANDOM = (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.GaussianNoise, keras.layers.AlphaDropout)
_TRAINING_TRUE = re.compile(r"training\s*=\s*True\b")


def _layers(model, prefix: str = ""):
    """(path, layer) of every layer, depth first; nested models and layers get 'outer/inner' paths."""
    for layer in getattr(model, "layers", []) or []:
        path = f"{prefix}{layer.name}"
        yield path, layer
        if getattr(layer, "layers", None):
            yield from _layers(layer, path + "/")


def _called_training(layer) -> bool:
    for node in getattr(layer, "_inbound_nodes", []) or []:
        arguments = getattr(node, "arguments", None)
        if arguments is not None and arguments.kwargs.get("training") is True:
            return True
    return False


def _source_sets_training(cls: type) -> bool:
    if cls.__module__.startswith(("keras.", "tf_keras.", "tensorflow.")):
        return False
    try:
        return bool(_TRAINING_TRUE.search(inspect.getsource(cls.call)))
    except (OSError, TypeError):
        return False


def lint_model(model) -> list[Finding]:
    findings = []
    for path, layer in _layers(model):
        op = type(layer).__name__
        if _called_training(layer):
            if isinstance(layer, _BATCH_STATS):
                findings.append(Finding("batchnorm-training", path, op, path,
                                        "called with training=True: batch statistics at inference"))
            elif isinstance(layer, _RANDOM):
                rate = getattr(layer, "rate", getattr(layer, "stddev", None))
                detail = "called with training=True: random at inference" + (f" (rate {rate:g})" if rate else "")
                findings.append(Finding("dropout-training", path, op, path, detail))
            else:
                findings.append(Finding("training-mode", path, op, path, "called with training=True"))
        elif _source_sets_training(type(layer)):
            findings.append(Finding("training-mode", path, op, path, "its call() passes training=True"))
    if _source_sets_training(type(model)):
        findings.append(Finding("training-mode", "<root>", type(model).__name__, None,
                                "its call() passes training=True"))
    return findings
