"""ONNX INT8: the fp32 ONNX export, then onnxruntime.quantization: ``quantize_static`` (QDQ,
per-tensor or per-channel, calibrated on the case's calibration data) or ``quantize_dynamic``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import parity._triton_first  # noqa: F401
import torch

from parity.formats.quantize import calibration_batches, via_fp32


def onnx_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
              calibration: dict[str, np.ndarray], mode: str = "static", per_channel: bool = True,
              reduce_range: bool = True, dynamic_axes: Optional[list[dict[int, str]]] = None,
              nodes_to_exclude: Sequence[str] = ()) -> dict:
    from functools import partial

    from parity.formats.onnx.export import export as export_fp32

    meta = via_fp32(partial(export_fp32, dynamic_axes=dynamic_axes), ".onnx", model, example_inputs, input_names,
                    output_names, lambda fp32: quantize_onnx(fp32, path, calibration, mode, per_channel, reduce_range,
                                                             nodes_to_exclude))
    return {"route": f"onnxruntime.quantization {mode}" + (" QDQ" if mode == "static" else ""),
            "per_channel": per_channel, "reduce_range": reduce_range, "opset_written": meta["opset_written"],
            "torch": str(torch.__version__), **({"nodes_to_exclude": list(nodes_to_exclude)} if nodes_to_exclude
                                                 else {})}


def quantize_onnx(fp32: Path, path: Path, calibration: dict[str, np.ndarray], mode: str, per_channel: bool,
                  reduce_range: bool = True, nodes_to_exclude: Sequence[str] = (),
                  extra_options: Optional[dict] = None) -> None:
    """An fp32 .onnx file to INT8 at `path` with onnxruntime.quantization (static QDQ calibrated on
    `calibration`, or dynamic). Shared by the PyTorch and Keras routes.

    ``nodes_to_exclude`` (node names of the graph, as the INT8 file keeps them) stay in float: the
    quantizer's own option, which ``parity triage --sensitivity`` recommends and verifies.
    ``extra_options`` go to the quantizer unchanged (``TensorQuantOverrides``, ...).

    ``reduce_range`` (7-bit weights) is on by default: on x86-64 CPUs without VNNI (AVX2 only, such
    as this project's CI machine) onnxruntime runs int8 convolutions with an instruction whose
    16-bit intermediate sums saturate, as its documentation warns. Measured on the digits CNNs:
    static per-channel QDQ moved the logits by 19% of max|logit| (PyTorch) and 18% (Keras) with
    8-bit weights, 1.7% and 2.2% with reduce_range; on a CPU with VNNI 8-bit weights gave 0.9%.
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, nodes_to_exclude=list(nodes_to_exclude),
                             extra_options=dict(extra_options or {}))
        elif mode == "static":
            import onnx

            graph = onnx.load(str(prepared), load_external_data=False).graph
            initializers = {t.name for t in graph.initializer}
            names = [i.name for i in graph.input if i.name not in initializers]  # the model's own input names

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.it = iter(calibration_batches(calibration))

                def get_next(self):
                    feed = next(self.it, None)
                    return None if feed is None else dict(zip(names, feed.values()))

            quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=reduce_range, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(nodes_to_exclude),
                            extra_options=dict(extra_options or {}))
        else:
            raise ValueError(f"export.onnx_int8.options.mode must be 'static' or 'dynamic', got {mode!r}")
