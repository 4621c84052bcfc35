"""Exporters for Keras models, each through TensorFlow's or the format owner's own converter.

- ``tflite``: ``tf.lite.TFLiteConverter.from_keras_model`` (fp32). The artefact keeps the model's
  dynamic batch (``shape_signature`` -1): one file, resized by the runner per batch size.
- ``tflite_dynamic``: the same with ``Optimize.DEFAULT`` and no data: dynamic-range quantization
  (int8 weights, activations quantized per call), the seed's Keras route.
- ``tflite_int8``: full integer quantization, calibrated with a representative dataset from the
  case's calibration data; int8 inputs and outputs (the LiteRT runner (de)quantizes them).
- ``onnx`` / ``onnx_int8``: tf2onnx ``convert.from_keras``, then (int8) the same
  onnxruntime.quantization step as the PyTorch route.
- ``coreml_fp32`` / ``coreml_fp16`` / ``coreml_int8``: ``coremltools.convert`` of the Keras model
  (source ``tensorflow``), flexible batch, explicit compute precision; int8 through the same
  ``linear_quantize_weights`` step as the PyTorch route.
- ``savedmodel``: ``model.export`` (the SavedModel many teams ship), run in TensorFlow.

Keras models take the case's tensors as declared (usually channels-last): no exporter transposes
anything, and the metadata says so. The converters trace the model as TensorFlow sees it; what
each one does with a layer called with ``training=True`` is measured in README ("Keras models").
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
import warnings
from pathlib import Path
from typing import Optional

import parity._triton_first  # noqa: F401  (before tensorflow)
import numpy as np

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

LAYOUT = "as the case: the Keras model's own tensors (no transpose)"


def _versions(*names: str) -> dict:
    return {"tensorflow": tf.__version__, "keras": keras.__version__, **{n: md.version(n) for n in names}}


@contextlib.contextmanager
def _quiet():
    """Converters print progress bars and logs on stdout/stderr; keep them out of the test output."""
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        warnings.simplefilter("ignore")
        yield


def _input_signature(model: keras.Model, example_inputs: tuple) -> list:
    """TensorSpecs with a free batch dimension, named as the model's inputs."""
    names = [t.name for t in model.inputs] if getattr(model, "inputs", None) else []
    if len(names) != len(example_inputs):
        names = [f"input_{i}" for i in range(len(example_inputs))]
    return [tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype), name=n) for n, x in zip(names, example_inputs)]


def _tflite(model: keras.Model, path: Path, route: str, setup=None) -> dict:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if setup is not None:
        setup(converter)
    with _quiet():
        path.write_bytes(converter.convert())
    return {"exporter": route, "batch": "dynamic (shape_signature -1); the runner resizes per batch size",
            "io_layout": LAYOUT, **_versions()}


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

    def representative():
        for i in range(count):
            yield [a[i:i + 1] for a in arrays]

    def setup(converter):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8

    return {**_tflite(model, path, "tf.lite.TFLiteConverter.from_keras_model", setup),
            "route": f"TFLiteConverter full integer (TFLITE_BUILTINS_INT8, int8 I/O), representative dataset of "
                     f"{count} calibration samples"}


def onnx(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
         opset: int = 17) -> dict:
    import onnx as onnx_lib
    import tf2onnx

    with _quiet():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=_input_signature(model, example_inputs),
                                              opset=int(opset))
    onnx_lib.save(proto, str(path))
    written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return {"exporter": "tf2onnx.convert.from_keras", "tf2onnx": tf2onnx.__version__, "opset_requested": int(opset),
            "opset_written": written, "batch": "dynamic", "io_layout": LAYOUT, **_versions("onnx")}


def onnx_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
              calibration: dict[str, np.ndarray], mode: str = "static", per_channel: bool = True,
              reduce_range: bool = True) -> dict:
    from parity.exporters.quantized import quantize_onnx, via_fp32

    meta = via_fp32(onnx, ".onnx", model, example_inputs, input_names, output_names,
                    lambda fp32: quantize_onnx(fp32, path, calibration, mode, per_channel, reduce_range))
    return {**meta, "route": f"tf2onnx, then onnxruntime.quantization {mode}" + (" QDQ" if mode == "static" else ""),
            "per_channel": per_channel, "reduce_range": reduce_range}


def _coreml(model, example_inputs: tuple, path: Path, input_names: list[str], output_names: list[str],
            precision: str, minimum_deployment_target: Optional[str] = None) -> dict:
    import coremltools as ct

    from parity.exporters.coreml import PRECISIONS, deployment_target

    target = deployment_target(minimum_deployment_target)
    batch = int(example_inputs[0].shape[0])
    batch_dim = ct.RangeDim(lower_bound=1, upper_bound=batch, default=batch)
    signature = _input_signature(model, example_inputs)
    inputs = [ct.TensorType(name=spec.name, shape=(batch_dim, *x.shape[1:]))
              for spec, x in zip(signature, example_inputs)]
    with _quiet():
        mlmodel = ct.convert(model, source="tensorflow", inputs=inputs, convert_to="mlprogram",
                             compute_precision=getattr(ct.precision, PRECISIONS[precision]),
                             minimum_deployment_target=target, skip_model_load=True)
        spec = mlmodel.get_spec()
        # The case's names, so the structural checks and reports line up with the other formats.
        renames = [(f.name, new) for f, new in zip(spec.description.input, input_names) if f.name != new] + \
                  [(f.name, new) for f, new in zip(spec.description.output, output_names) if f.name != new]
        if renames:
            for old, new in renames:
                ct.utils.rename_feature(spec, old, new)
            mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
        mlmodel.save(str(path))
    return {"exporter": "coremltools.convert(keras model, source='tensorflow', convert_to='mlprogram')",
            "coremltools": ct.__version__, "compute_precision": PRECISIONS[precision],
            "minimum_deployment_target": "coremltools default" if target is None else str(minimum_deployment_target),
            "batch": f"flexible: ct.RangeDim(1, {batch})", "io_layout": LAYOUT, **_versions()}


def coreml_fp32(model, example_inputs, path, *, input_names, output_names, **options) -> dict:
    return _coreml(model, example_inputs, path, input_names, output_names, "fp32", **options)


def coreml_fp16(model, example_inputs, path, *, input_names, output_names, **options) -> dict:
    return _coreml(model, example_inputs, path, input_names, output_names, "fp16", **options)


def coreml_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                granularity: str = "per_channel") -> dict:
    from parity.exporters.quantized import quantize_coreml_weights, via_fp32

    meta = via_fp32(coreml_fp32, ".mlpackage", model, example_inputs, input_names, output_names,
                    lambda fp32: quantize_coreml_weights(fp32, path, granularity))
    return {**meta, "route": f"coremltools.optimize linear_quantize_weights int8 {granularity} (weight-only)",
            "granularity": granularity}


def savedmodel(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str]) -> dict:
    """``model.export(path)``: a SavedModel whose ``serve`` endpoint takes the model's inputs."""
    with _quiet():
        model.export(str(path), format="tf_saved_model", verbose=False)
    return {"exporter": "keras.Model.export(format='tf_saved_model')", "endpoint": "serve", "batch": "dynamic",
            "io_layout": LAYOUT, **_versions()}
