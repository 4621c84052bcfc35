"""Building a case's PyTorch model and computing the eager reference. Imports torch.

One source-framework module (see :mod:`parity.frameworks`; :mod:`parity.frameworks.keras` is the
other), with the functions the pipeline calls: ``build_model``, ``reference_model``, ``run_eager``,
``export_inputs``, ``model_for_export`` and ``lint_model``.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import parity._triton_first  # noqa: F401  (before anything may import tensorflow)
import numpy as np
import torch

from parity.case import Case, import_from_case
from parity.errors import CaseError
from parity.frameworks.torch_tensors import flatten_outputs, to_torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(case: Case) -> torch.nn.Module:
    """Call the factory under the case's seed and load weights. Returned exactly as the factory made it.

    The harness never switches the model to eval mode here: exporters must see what the user's
    pipeline would export (a model left in training mode is the bug this tool exists to catch).
    """
    factory = import_from_case(case, case.model.factory)
    seed_everything(case.model.seed)
    model = factory(**case.model.kwargs)
    if not isinstance(model, torch.nn.Module):
        hint = " (a Keras model: set model.framework: keras)" if type(model).__module__.startswith("keras") else ""
        raise CaseError(case.path, "model.framework" if hint else "model.factory", f"{case.model.factory} returned "
                        f"{type(model).__name__}, expected a torch.nn.Module for a torch case{hint}")
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


def export_inputs(inputs: dict[str, np.ndarray], device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """What PyTorch exporters receive as example inputs: tensors, in the case's order."""
    return to_torch(inputs, device)


def model_for_export(model: torch.nn.Module) -> torch.nn.Module:
    """A pristine copy for each export: tracing may mutate the model (a training-mode model's statistics)."""
    return copy.deepcopy(model)


def lint_model(model: torch.nn.Module) -> list:
    from parity.frameworks.pytorch_lint import lint_model as lint

    return lint(model)


@torch.inference_mode()
def run_eager(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return flatten_outputs(model(*to_torch(inputs)))
