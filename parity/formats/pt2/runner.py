"""torch.export programs (.pt2) on torch's CPU and CUDA devices."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import re
import traceback
import warnings
from typing import Optional, Sequence

import numpy as np

import parity._triton_first  # noqa: F401
import torch

from parity.frameworks.torch_tensors import flatten_outputs, to_torch
from parity.errors import short_error
from parity.formats.base import Runner
from parity.frameworks.torch_tensors import cuda_unavailable_reason


_UNREGISTERED = re.compile(r"Deserializing ([\w.]+) in pytree is not registered")


def load_program(path, imports: Sequence[str] = ()):
    """``torch.export.load``, first importing what the saved program needs.

    A program whose inputs or outputs are library types (a Hugging Face ``ModelOutput``) needs the
    module that registers them as pytree nodes imported first: `imports` (the model factory's
    module, recorded at export) are imported, and a type the deserialiser names as unregistered has
    its module imported before one retry. torchao's quantized ops are registered likewise for a
    PT2E-quantized program. When loading still fails, the deserialiser's warnings join the message
    (torch's own error only says to check them).
    """
    from parity.formats.pt2.safety import check_pt2, safe_torch_load

    from pathlib import Path

    for program in ([path] if Path(path).is_file() else []):
        check_pt2(program)  # before torch reads it: nothing in a .pt2 gets unpickled
    for module in imports:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - best effort: the program may not need it
            pass
    tried: set[str] = set()
    while True:
        with warnings.catch_warnings(record=True) as caught, _logged("torch.export") as logged:
            warnings.simplefilter("always")
            try:
                with safe_torch_load():
                    return torch.export.load(str(path))
            except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, KeyError, ...
                said = " ".join([*(str(w.message) for w in caught), *logged])
                needed = _needed_module(f"{e} {said}")
                if needed is not None and needed not in tried:
                    tried.add(needed)
                    importlib.import_module(needed)
                    continue
                if "torchao" not in tried and importlib.util.find_spec("torchao") is not None:
                    tried.add("torchao")
                    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (quantized_decomposed ops)
                    continue
                if said:
                    raise RuntimeError(f"{short_error(e, 2)}; torch.export.load warned: {said[:600]}") from e
                raise


@contextlib.contextmanager
def _logged(name: str):
    """The last line of each record `name`'s logger emits (torch logs the deserialiser's error, with
    its traceback, and raises only 'check the warnings above')."""
    found: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                found.append(lines[-1])

    handler = _Collect(level=logging.WARNING)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield found
    finally:
        logger.removeHandler(handler)


def _needed_module(text: str) -> Optional[str]:
    """The importable module of a type the pytree deserialiser says is not registered."""
    found = _UNREGISTERED.search(text)
    if not found:
        return None
    parts = found.group(1).split(".")
    for end in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:end])
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):
            continue
    return None


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
        return load_program(path, self.artefact.metadata.get("imports", ())).module().to(self.backend)

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
