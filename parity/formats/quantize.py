"""Shared steps of the INT8 routes (each route lives in its format's ``quantize`` module and goes
through the library that owns it; no hand-written quantizer). NumPy only."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def calibration_batches(calibration: dict[str, np.ndarray], size: int = 16) -> Iterator[dict[str, np.ndarray]]:
    """The calibration samples in batches of `size`."""
    n = len(next(iter(calibration.values())))
    for start in range(0, n, size):
        yield {k: v[start:start + size] for k, v in calibration.items()}


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
