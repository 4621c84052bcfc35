"""Helpers shared by the Keras export routes of every format. Imports TensorFlow and Keras."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
import warnings

import parity._triton_first  # noqa: F401  (before tensorflow)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

#: What every Keras route records as its I/O layout.
LAYOUT = "as the case: the Keras model's own tensors (no transpose)"


def versions(*names: str) -> dict:
    return {"tensorflow": tf.__version__, "keras": keras.__version__, **{n: md.version(n) for n in names}}


@contextlib.contextmanager
def quiet():
    """Converters print progress bars and logs on stdout/stderr; keep them out of the test output."""
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        warnings.simplefilter("ignore")
        yield


def input_signature(model: keras.Model, example_inputs: tuple) -> list:
    """TensorSpecs with a free batch dimension, named as the model's inputs."""
    names = [t.name for t in model.inputs] if getattr(model, "inputs", None) else []
    if len(names) != len(example_inputs):
        names = [f"input_{i}" for i in range(len(example_inputs))]
    return [tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype), name=n) for n, x in zip(names, example_inputs)]
