"""TFLite from Keras: ``tf.lite.TFLiteConverter.from_keras_model``.

- ``tflite``: fp32. The artefact keeps the model's dynamic batch (``shape_signature`` -1): one file,
  resized by the runner per batch size.
- ``tflite_dynamic``: the same with ``Optimize.DEFAULT`` and no data: dynamic-range quantization
  (int8 weights, activations quantized per call).
- ``tflite_int8``: full integer quantization, calibrated with a representative dataset from the
  case's calibration data; int8 inputs and outputs (the LiteRT runner (de)quantizes them).
"""

from __future__ import annotations

from pathlib import Path

import parity._triton_first  # noqa: F401  (before tensorflow)
import numpy as np

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from parity.frameworks.keras_export import LAYOUT, quiet, versions  # noqa: E402


def _tflite(model: keras.Model, path: Path, route: str, setup=None) -> dict:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if setup is not None:
        setup(converter)
    with quiet():
        path.write_bytes(converter.convert())
    return {"exporter": route, "batch": "dynamic (shape_signature -1); the runner resizes per batch size",
            "io_layout": LAYOUT, **versions()}


def tflite(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str]) -> dict:
    return _tflite(model, path, "tf.lite.TFLiteConverter.from_keras_model")


def tflite_dynamic(model, example_inputs: tuple, path: Path, *, input_names: list[str],
                   output_names: list[str]) -> dict:
    def setup(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

    return {**_tflite(model, path, "tf.lite.TFLiteConverter.from_keras_model", setup),
            "route": "TFLiteConverter Optimize.DEFAULT, no representative data (dynamic range: int8 weights)"}


def tflite_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                calibration: dict[str, np.ndarray]) -> dict:
    arrays = list(calibration.values())
    count = len(arrays[0])
    # by name: the converter orders a multi-input model's inputs its own way (not the model's), so
    # a positional list would feed an image to a vector input
    names = [t.name.split(":")[0] for t in model.inputs] if len(arrays) > 1 else []

    def representative():
        for i in range(count):
            samples = [a[i:i + 1] for a in arrays]
            yield dict(zip(names, samples)) if names else samples

    def setup(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8

    return {**_tflite(model, path, "tf.lite.TFLiteConverter.from_keras_model", setup),
            "route": f"TFLiteConverter full integer (TFLITE_BUILTINS_INT8, int8 I/O), representative dataset of "
                     f"{count} calibration samples"}
