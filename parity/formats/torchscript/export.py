"""TorchScript export: ``torch.jit.trace`` (default) or ``torch.jit.script``."""

from __future__ import annotations

import warnings
from pathlib import Path

import parity._triton_first  # noqa: F401
import torch


def export(model: torch.nn.Module, example_inputs: tuple, path: Path, *, input_names: list[str],
           output_names: list[str], method: str = "trace") -> dict:
    """Trace or script `model` as it is (training flag included) and save it to `path`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if method == "trace":
            module = torch.jit.trace(model, example_inputs, check_trace=False)
        elif method == "script":
            module = torch.jit.script(model)
        else:
            raise ValueError(f"export.torchscript.options.method must be 'trace' or 'script', got {method!r}")
        torch.jit.save(module, str(path))
    messages = sorted({str(w.message).splitlines()[0] for w in caught if "deprecat" not in str(w.message).lower()})
    return {"method": method, "torch": str(torch.__version__), "warnings": messages}
