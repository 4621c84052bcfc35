"""Building a case's PyTorch model and computing the eager reference. Imports torch.

One source-framework module (see :mod:`parity.frameworks`; :mod:`parity.frameworks.keras` is the
other), with the functions the pipeline calls: ``build_model``, ``reference_model``, ``run_eager``,
``export_inputs``, ``model_for_export`` and ``lint_model``.
"""

from __future__ import annotations

import copy
import inspect
import random
from pathlib import Path
from typing import Any, Optional

import parity._triton_first  # noqa: F401  (before anything may import tensorflow)
import numpy as np
import torch

from parity.case import Case, import_from_case
from parity.errors import CaseError
from parity.frameworks.torch_tensors import tensor_to_numpy, to_torch
from parity.outputs import KeyPath, leaf_paths, pick


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


def model_for_export(model: torch.nn.Module, outputs: Optional[list[KeyPath]] = None,
                     keywords: Optional[list[str]] = None, arity: int = 1) -> torch.nn.Module:
    """A pristine copy for each export: tracing may mutate the model (a training-mode model's statistics).

    With `outputs` (key paths into a structured output: dicts, ``ModelOutput``, nested tuples) the copy
    is wrapped in :class:`FlatOutputs`, which returns exactly those tensors as a flat tuple, so every
    exporter sees the same outputs in the same order; with `keywords`, the wrapper passes its
    positional inputs to ``forward`` by those names.
    """
    clone = copy.deepcopy(model)
    if outputs is None and not keywords:
        return clone
    return flat_outputs_class(arity)(clone, outputs, keywords)


class FlatOutputs(torch.nn.Module):
    """`model` returning the tensors at `paths` of its output as one flat tuple (exporters cannot all
    emit dicts, and TorchScript's trace rejects them). Leaves the wrapped model's training flags as
    they are: a model left in training mode stays so, which is what the exporters must see."""

    def __init__(self, model: torch.nn.Module, paths: Optional[list[KeyPath]], keywords: Optional[list[str]]):
        super().__init__()
        self.model = model
        self.paths = [tuple(p) for p in paths] if paths is not None else None
        self.keywords = list(keywords or [])
        self.training = model.training  # not .train(): that would set every submodule's flag too

    def call(self, *args: torch.Tensor) -> Any:
        out = self.model(**dict(zip(self.keywords, args))) if self.keywords else self.model(*args)
        if self.paths is None:
            return out
        return tuple(pick(out, p) for p in self.paths)


_FLAT: dict[int, type] = {}


def flat_outputs_class(arity: int) -> type:
    """:class:`FlatOutputs` with a ``forward`` of exactly `arity` positional tensors (torch.export
    and the ONNX exporter match example inputs and dynamic shapes to named parameters, not to
    ``*args``)."""
    if arity not in _FLAT:
        params = ", ".join(f"input{i}" for i in range(arity))
        namespace: dict = {}
        exec(f"def forward(self, {params}):\n    return self.call({params})\n", namespace)  # noqa: S102
        _FLAT[arity] = type(f"FlatOutputs{arity}", (FlatOutputs,), {"forward": namespace["forward"],
                                                                      "__module__": __name__})
    return _FLAT[arity]


def keyword_inputs(model: torch.nn.Module, input_names: list[str]) -> Optional[list[str]]:
    """The input names to pass by keyword, when every one names a parameter of ``forward`` but not in
    its positional order (a text model's ``attention_mask`` listed before ``input_ids``); else None."""
    try:
        params = [p for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):
        return None
    names = [p.name for p in params]
    if not set(input_names) <= set(names):
        return None
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    return None if positional[:len(input_names)] == list(input_names) else list(input_names)


def vocabulary_size(model: torch.nn.Module) -> Optional[int]:
    """How many token ids the model embeds: a Hugging Face config's ``vocab_size``, else the size of
    its only ``nn.Embedding``; None when it cannot say."""
    config = getattr(model, "config", None)
    if isinstance(getattr(config, "vocab_size", None), int):
        return config.vocab_size
    embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    return embeddings[0].num_embeddings if len(embeddings) == 1 else None


def lint_model(model: torch.nn.Module) -> list:
    from parity.frameworks.pytorch_lint import lint_model as lint

    return lint(model)


@torch.inference_mode()
def run_eager(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> list[tuple[KeyPath, np.ndarray]]:
    """Every tensor the model returns, by its key path (see parity.outputs). Inputs go by keyword
    where :func:`keyword_inputs` says so, else by position in the case's order."""
    tensors = to_torch(inputs)
    keywords = keyword_inputs(model, list(inputs))
    out = model(**dict(zip(keywords, tensors))) if keywords else model(*tensors)
    return [(p, tensor_to_numpy(pick(out, p))) for p in leaf_paths(out, torch.is_tensor)]
