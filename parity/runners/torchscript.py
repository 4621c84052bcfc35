"""TorchScript on torch's CPU and CUDA devices."""

from __future__ import annotations

from typing import Optional

import numpy as np

import parity._triton_first  # noqa: F401
import torch

from parity.model import flatten_outputs, to_torch
from parity.runners.base import Runner


def cuda_unavailable_reason() -> Optional[str]:
    if not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        return f"CUDA backend skipped: torch {torch.__version__} ({built}) sees no CUDA device"
    return None


class TorchScriptRunner(Runner):
    backends = ("cpu", "cuda")

    @classmethod
    def unavailable_reason(cls, backend: str) -> Optional[str]:
        return super().unavailable_reason(backend) or (cuda_unavailable_reason() if backend == "cuda" else None)

    @property
    def name(self) -> str:
        return f"torch {torch.__version__} TorchScript on {self.backend}"

    def activate_impl(self) -> None:
        self.module = torch.jit.load(str(self.artefact.path), map_location=self.backend)

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return flatten_outputs(self.module(*to_torch(inputs, self.backend)))

    def deactivate_impl(self) -> None:
        del self.module
        if self.backend == "cuda":
            torch.cuda.empty_cache()
