"""TorchScript on torch's CPU and CUDA devices."""

from __future__ import annotations

import importlib
import importlib.util
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

import parity._triton_first  # noqa: F401
import torch

from parity.frameworks.torch_tensors import flatten_outputs, to_torch
from parity.formats.base import Runner
from parity.frameworks.torch_tensors import cuda_unavailable_reason


def load_module(path: Path, backend: str) -> torch.jit.ScriptModule:
    """The TorchScript module saved at `path`, its tensors on `backend`."""
    def load():
        with warnings.catch_warnings():  # torch 2.9+ calls torch.jit.load deprecated: testing TorchScript is the point
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.load.*")
            return torch.jit.load(str(path), map_location=backend)

    try:
        return load()
    except RuntimeError as e:
        # a program calling a library's registered ops (torchvision::nms) needs the library imported
        library = re.search(r"Unknown builtin op: (\w+)::", str(e))
        if library is None or importlib.util.find_spec(library.group(1)) is None:
            raise
        importlib.import_module(library.group(1))
        return load()


class TorchScriptRunner(Runner):
    backends = ("cpu", "cuda")

    @classmethod
    def unavailable_reason(cls, backend: str) -> Optional[str]:
        return super().unavailable_reason(backend) or (cuda_unavailable_reason() if backend == "cuda" else None)

    @property
    def name(self) -> str:
        return f"torch {torch.__version__} TorchScript on {self.backend}"

    def activate_impl(self) -> None:
        self.module = load_module(self.artefact.path, self.backend)

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return flatten_outputs(self.module(*to_torch(inputs, self.backend)))

    def deactivate_impl(self) -> None:
        del self.module
        if self.backend == "cuda":
            torch.cuda.empty_cache()
