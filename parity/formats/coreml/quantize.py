"""CoreML INT8: the fp32 ML Program, then ``coremltools.optimize.coreml.linear_quantize_weights``
(weight-only int8, per channel by default)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional


import parity._triton_first  # noqa: F401

from parity.formats.quantize import via_fp32


def coreml_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                granularity: str = "per_channel", dynamic_axes: Optional[list[dict[int, str]]] = None,
                dynamic_sizes: Optional[dict[str, list[int]]] = None) -> dict:
    """The fp32 mlprogram, then ``coremltools.optimize.coreml.linear_quantize_weights`` (weight-only
    int8, symmetric): the package stores int8 weights with ``constexpr`` dequantization ops."""
    from functools import partial

    from parity.formats.coreml.export import export_fp32

    fp32_export = partial(export_fp32, dynamic_axes=dynamic_axes, dynamic_sizes=dynamic_sizes)
    meta = via_fp32(fp32_export, ".mlpackage", model, example_inputs, input_names, output_names,
                    lambda fp32: quantize_coreml_weights(fp32, path, granularity))
    return {**meta, "route": f"coremltools.optimize linear_quantize_weights int8 {granularity} (weight-only)",
            "granularity": granularity}


def quantize_coreml_weights(fp32: Path, path: Path, granularity: str) -> None:
    """An fp32 .mlpackage to int8 weights at `path` (shared by the PyTorch and Keras routes)."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    mlmodel = ct.models.MLModel(str(fp32), skip_model_load=True)
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity=granularity))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = cto.linear_quantize_weights(mlmodel, config=config)
    quantized.save(str(path))
