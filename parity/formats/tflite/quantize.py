"""TFLite INT8: the litert-torch float model, then ai-edge-quantizer with a static recipe."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import parity._triton_first  # noqa: F401


def tflite_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                calibration: dict[str, np.ndarray], recipe_name: str = "static_wi8_ai8") -> dict:
    """The litert-torch float model, then ai-edge-quantizer with a static recipe calibrated on the
    case's calibration data (at this artefact's batch size). A fully-int8 model takes and returns
    int8 tensors: the LiteRT runner quantizes inputs and dequantizes outputs with their scales."""
    from ai_edge_quantizer import quantizer, recipe

    from parity.formats.tflite.export import export as export_float

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
