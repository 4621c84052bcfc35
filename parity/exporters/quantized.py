"""INT8 exporters, each through the library that owns the route (no hand-written quantizer):

- ``onnx_int8``: the fp32 ONNX export, then onnxruntime.quantization: ``quantize_static`` (QDQ,
  per-tensor or per-channel, calibrated on the case's calibration data) or ``quantize_dynamic``.
- ``torchscript_int8``: ``torch.ao.quantization.quantize_dynamic`` of the Linear layers (the seed's
  route), traced.
- ``pt2_int8``: PyTorch 2 export quantization through torchao (``X86InductorQuantizer``, static,
  calibrated), saved as a torch.export program.

``calibration`` is a dict of input name -> array of samples (the case's ``quantization.calibration``
source), separate from the evaluation data.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

import parity._triton_first  # noqa: F401
import torch


def _batches(calibration: dict[str, np.ndarray], size: int = 16):
    n = len(next(iter(calibration.values())))
    for start in range(0, n, size):
        yield {k: v[start:start + size] for k, v in calibration.items()}


def onnx_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
              calibration: dict[str, np.ndarray], mode: str = "static", per_channel: bool = True,
              reduce_range: bool = True) -> dict:
    from parity.exporters.onnx import export as export_fp32

    meta = via_fp32(export_fp32, ".onnx", model, example_inputs, input_names, output_names,
                    lambda fp32: quantize_onnx(fp32, path, calibration, mode, per_channel, reduce_range))
    return {"route": f"onnxruntime.quantization {mode}" + (" QDQ" if mode == "static" else ""),
            "per_channel": per_channel, "reduce_range": reduce_range, "opset_written": meta["opset_written"],
            "torch": str(torch.__version__)}


def via_fp32(export_fp32, suffix: str, model, example_inputs: tuple, input_names: list[str],
             output_names: list[str], quantize) -> dict:
    """Export the fp32 artefact into a temporary directory with `export_fp32`, call `quantize(fp32
    path)` on it, and return the fp32 export's metadata: every INT8 route that quantizes an fp32
    artefact (ONNX, CoreML; PyTorch and Keras alike) goes through here."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / f"fp32{suffix}"
        meta = export_fp32(model, example_inputs, fp32, input_names=input_names, output_names=output_names)
        quantize(fp32)
    return meta


def quantize_onnx(fp32: Path, path: Path, calibration: dict[str, np.ndarray], mode: str, per_channel: bool,
                  reduce_range: bool = True) -> None:
    """An fp32 .onnx file to INT8 at `path` with onnxruntime.quantization (static QDQ calibrated on
    `calibration`, or dynamic). Shared by the PyTorch and Keras routes.

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
                             reduce_range=reduce_range)
        elif mode == "static":
            import onnx

            graph = onnx.load(str(prepared), load_external_data=False).graph
            initializers = {t.name for t in graph.initializer}
            names = [i.name for i in graph.input if i.name not in initializers]  # the model's own input names

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.it = iter(_batches(calibration))

                def get_next(self):
                    feed = next(self.it, None)
                    return None if feed is None else dict(zip(names, feed.values()))

            quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=reduce_range, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8)
        else:
            raise ValueError(f"export.onnx_int8.options.mode must be 'static' or 'dynamic', got {mode!r}")


def torchscript_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                     calibration: dict[str, np.ndarray], mode: str = "dynamic") -> dict:
    if mode != "dynamic":
        raise ValueError("export.torchscript_int8.options.mode: torch.ao quantize_dynamic is the TorchScript route; "
                         "use pt2_int8 for static quantization")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        torch.jit.save(torch.jit.trace(quantized, example_inputs, check_trace=False), str(path))
    return {"route": "torch.ao.quantization.quantize_dynamic (Linear)", "torch": str(torch.__version__)}


def pt2_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
             calibration: dict[str, np.ndarray]) -> dict:
    """Static INT8 with torchao's X86InductorQuantizer default config (per-channel weights)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    dims = tuple({0: torch.export.Dim.DYNAMIC} for _ in example_inputs)
    graph = torch.export.export(model, example_inputs, dynamic_shapes=dims).module()
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for feed in _batches(calibration):
            prepared(*(torch.from_numpy(v) for v in feed.values()))
    converted = convert_pt2e(prepared)
    torch.export.save(torch.export.export(converted, example_inputs, dynamic_shapes=dims), str(path))
    import torchao

    return {"route": "torchao PT2E X86InductorQuantizer (static)", "per_channel": True,
            "torchao": torchao.__version__, "torch": str(torch.__version__), "dynamic_batch": True}


def coreml_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                granularity: str = "per_channel") -> dict:
    """The fp32 mlprogram, then ``coremltools.optimize.coreml.linear_quantize_weights`` (weight-only
    int8, symmetric): the package stores int8 weights with ``constexpr`` dequantization ops."""
    from parity.exporters.coreml import export_fp32

    meta = via_fp32(export_fp32, ".mlpackage", model, example_inputs, input_names, output_names,
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


def tflite_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                calibration: dict[str, np.ndarray], recipe_name: str = "static_wi8_ai8") -> dict:
    """The litert-torch float model, then ai-edge-quantizer with a static recipe calibrated on the
    case's calibration data (at this artefact's batch size). A fully-int8 model takes and returns
    int8 tensors: the LiteRT runner quantizes inputs and dequantizes outputs with their scales."""
    from ai_edge_quantizer import quantizer, recipe

    from parity.exporters.tflite import export as export_float

    if not hasattr(recipe, recipe_name):
        raise ValueError(f"export.tflite_int8.options.recipe_name: ai_edge_quantizer.recipe has no {recipe_name!r}")
    batch = int(example_inputs[0].shape[0])
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        meta = export_float(model, example_inputs, fp32, input_names=input_names, output_names=output_names)
        q = quantizer.Quantizer(str(fp32))
        q.load_quantization_recipe(getattr(recipe, recipe_name)())
        from ai_edge_litert.interpreter import Interpreter

        signatures = Interpreter(model_path=str(fp32)).get_signature_list()
        key = next(iter(signatures))
        names = signatures[key]["inputs"]
        n = len(next(iter(calibration.values())))
        feeds = [{name: v[start:start + batch] for name, v in zip(names, calibration.values())}
                 for start in range(0, n - batch + 1, batch)]
        result = q.calibrate({key: feeds})
        q.quantize(result).export_model(str(path), overwrite=True)
    return {**meta, "route": f"ai-edge-quantizer {recipe_name} on the litert-torch float model"}
