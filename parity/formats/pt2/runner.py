"""torch.export programs (.pt2) on torch's CPU and CUDA devices."""

from __future__ import annotations

from typing import Optional

import numpy as np

import parity._triton_first  # noqa: F401
import torch

from parity.frameworks.torch_tensors import flatten_outputs, to_torch
from parity.formats.base import Runner
from parity.frameworks.torch_tensors import cuda_unavailable_reason


def load_program(path):
    """``torch.export.load``, registering torchao's quantized ops first when the program needs them
    (a PT2E-quantized program cannot be deserialized in a process that never imported torchao)."""
    try:
        return torch.export.load(str(path))
    except RuntimeError:
        import importlib.util

        if importlib.util.find_spec("torchao") is None:
            raise
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (registers quantized_decomposed ops)

        return torch.export.load(str(path))


class ExportedProgramRunner(Runner):
    """Runs ``torch.export.load(path).module()``; a directory holds one program per batch size."""

    backends = ("cpu", "cuda")

    @classmethod
    def unavailable_reason(cls, backend: str) -> Optional[str]:
        return super().unavailable_reason(backend) or (cuda_unavailable_reason() if backend == "cuda" else None)

    @property
    def name(self) -> str:
        return f"torch {torch.__version__} torch.export program on {self.backend}"

    def activate_impl(self) -> None:
        self.modules: dict[int | None, torch.nn.Module] = {}
        if not self.artefact.path.is_dir():
            self.modules[None] = self._load(self.artefact.path)

    def _load(self, path) -> torch.nn.Module:
        # Not .eval(): a program exported in training mode cannot be switched (NotImplementedError),
        # and the harness runs what was exported.
        return load_program(path).module().to(self.backend)

    def _module_for(self, size: int) -> torch.nn.Module:
        if None in self.modules:
            return self.modules[None]
        if size not in self.modules:
            path = self.artefact.path / f"b{size}.pt2"
            if not path.exists():
                have = sorted(p.stem for p in self.artefact.path.glob("b*.pt2"))
                raise ValueError(f"no program for batch size {size} (static batch; exported: {', '.join(have)})")
            self.modules[size] = self._load(path)
        return self.modules[size]

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        size = next(iter(inputs.values())).shape[0]
        with torch.no_grad():
            return flatten_outputs(self._module_for(size)(*to_torch(inputs, self.backend)))

    def deactivate_impl(self) -> None:
        self.modules.clear()
        if self.backend == "cuda":
            torch.cuda.empty_cache()
