"""Tensor helpers for PyTorch: NumPy in, NumPy out. Shared by the PyTorch framework module and the
runners of PyTorch artefacts (TorchScript, pt2), which need no model-building code. Imports torch."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

import parity._triton_first  # noqa: F401  (before anything may import tensorflow)
import torch

from parity.outputs import flatten


def to_torch(inputs: dict[str, np.ndarray], device: str = "cpu") -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in inputs.values())


def flatten_outputs(out: Any) -> list[np.ndarray]:
    """Tensors of a model's output in a fixed order: a tensor, or nested tuples/lists/dicts of them."""
    return flatten(out, tensor_to_numpy)


def tensor_to_numpy(value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"model output of type {type(value).__name__} is not a tensor, tuple, list or dict of tensors")
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.detach().cpu().numpy()


def cuda_unavailable_reason() -> Optional[str]:
    if not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        return f"CUDA backend skipped: torch {torch.__version__} ({built}) sees no CUDA device"
    return None
