"""TorchScript INT8: ``torch.ao.quantization.quantize_dynamic`` of the Linear layers, traced."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

import parity._triton_first  # noqa: F401
import torch



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
