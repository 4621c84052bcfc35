"""Building a case's PyTorch model and computing the eager reference. Imports torch."""

from __future__ import annotations

import copy
import importlib.util
import random
import sys
from pathlib import Path
from typing import Any

import parity._triton_first  # noqa: F401  (before anything may import tensorflow)
import numpy as np
import torch

from parity.errors import CaseError
from parity.registry import load_object
from parity.spec import Case


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def import_from_case(case: Case, target: str):
    """Import 'module:attr', looking beside the case file too.

    A module beside the case file is (re)loaded from that file when the module of that name in
    sys.modules came from elsewhere or the file changed since, so two case directories with a
    models.py each, or an edited models.py, never get a stale module.
    """
    directory = str(case.directory)
    if directory not in sys.path:
        sys.path.append(directory)
    top = target.partition(":")[0].split(".")[0]
    local = case.directory / f"{top}.py"
    if local.is_file():
        stamp = (str(local.resolve()), local.stat().st_mtime_ns)
        if getattr(sys.modules.get(top), "__parity_stamp__", None) != stamp:
            _load_file(top, local).__parity_stamp__ = stamp
    return load_object(target)


def _load_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_model(case: Case) -> torch.nn.Module:
    """Call the factory under the case's seed and load weights. Returned exactly as the factory made it.

    The harness never switches the model to eval mode here: exporters must see what the user's
    pipeline would export (a model left in training mode is the bug this tool exists to catch).
    """
    factory = import_from_case(case, case.model.factory)
    seed_everything(case.model.seed)
    model = factory(**case.model.kwargs)
    if not isinstance(model, torch.nn.Module):
        raise CaseError(case.path, "model.factory", f"{case.model.factory} returned {type(model).__name__}, "
                        "expected a torch.nn.Module")
    if case.model.weights is not None:
        state = load_weights(case.resolve(case.model.weights))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0:3]
            raise CaseError(case.path, "model.weights", "weights do not fit the model: " + " ".join(first)) from None
    return model


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a .pt/.pth file, never unpickling arbitrary objects."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CaseError(str(path), "model.weights", "expected a state dict (a mapping of tensor names to tensors)")
    return state


def reference_model(model: torch.nn.Module) -> torch.nn.Module:
    """The reference: a deep copy in eval mode, so the exporters' model is untouched."""
    return copy.deepcopy(model).eval()


def to_torch(inputs: dict[str, np.ndarray], device: str = "cpu") -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in inputs.values())


def flatten_outputs(out: Any) -> list[np.ndarray]:
    """Tensors of a model's output in a fixed order: a tensor, or nested tuples/lists/dicts of them."""
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, dict):
        return [a for v in out.values() for a in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [a for v in out for a in flatten_outputs(v)]
    raise TypeError(f"model output of type {type(out).__name__} is not a tensor, tuple, list or dict of tensors")


@torch.inference_mode()
def run_eager(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return flatten_outputs(model(*to_torch(inputs)))
