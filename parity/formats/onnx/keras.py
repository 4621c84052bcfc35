"""ONNX from Keras: tf2onnx ``convert.from_keras``; INT8 through the same onnxruntime.quantization
step as the PyTorch route."""

from __future__ import annotations

from pathlib import Path

import parity._triton_first  # noqa: F401  (before tensorflow)
import numpy as np

from parity.frameworks.keras_export import LAYOUT, input_signature, quiet, versions  # noqa: E402


def onnx(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
         opset: int = 17) -> dict:
    import onnx as onnx_lib
    import tf2onnx

    with quiet():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=input_signature(model, example_inputs),
                                              opset=int(opset))
    onnx_lib.save(proto, str(path))
    written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return {"exporter": "tf2onnx.convert.from_keras", "tf2onnx": tf2onnx.__version__, "opset_requested": int(opset),
            "opset_written": written, "batch": "dynamic", "io_layout": LAYOUT, **versions("onnx")}


def onnx_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
              calibration: dict[str, np.ndarray], mode: str = "static", per_channel: bool = True,
              reduce_range: bool = True, nodes_to_exclude: tuple = ()) -> dict:
    from parity.formats.onnx.quantize import quantize_onnx
    from parity.formats.quantize import via_fp32

    meta = via_fp32(onnx, ".onnx", model, example_inputs, input_names, output_names,
                    lambda fp32: quantize_onnx(fp32, path, calibration, mode, per_channel, reduce_range,
                                               nodes_to_exclude))
    return {**meta, "route": f"tf2onnx, then onnxruntime.quantization {mode}" + (" QDQ" if mode == "static" else ""),
            "per_channel": per_channel, "reduce_range": reduce_range,
            **({"nodes_to_exclude": list(nodes_to_exclude)} if nodes_to_exclude else {})}
