"""Source frameworks: how a case's model is built, run eagerly and linted, one module each.

Every framework module implements the same functions (the :class:`Framework` protocol), so the
pipeline never asks which framework it holds. Modules are named as strings and imported only when a
case of that framework runs.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np


class Framework(Protocol):
    """What the pipeline calls on a framework module."""

    def build_model(self, case: Any) -> Any:
        """Call the case's factory under its seed and load its weights; the model as the factory made it."""

    def reference_model(self, model: Any) -> Any:
        """The model the eager reference runs (inference mode), leaving `model` untouched."""

    def run_eager(self, model: Any, inputs: dict[str, np.ndarray]) -> list[tuple[tuple, np.ndarray]]:
        """Outputs of `model` on `inputs` (named, in the case's order): every tensor of its output
        structure, by key path (parity.outputs.leaf_paths), in a fixed order."""

    def export_inputs(self, inputs: dict[str, np.ndarray], device: str = "cpu") -> tuple:
        """What exporters receive as example inputs."""

    def keyword_inputs(self, model: Any, input_names: list[str]) -> Any:
        """The input names the model must be called with by keyword, or None for positional."""

    def model_for_export(self, model: Any, outputs: Any = None, keywords: Any = None) -> Any:
        """A copy for one export, so an exporter that mutates its model cannot change the reference;
        returning only the outputs at the key paths `outputs`, as a flat tuple, when given."""

    def vocabulary_size(self, model: Any) -> Any:
        """How many token ids the model embeds, or None when it cannot say."""

    def lint_model(self, model: Any) -> list:
        """Training-mode findings (parity.findings.Finding) of the model handed to exporters."""


#: name -> the module implementing :class:`Framework`.
FRAMEWORKS: dict[str, str] = {"torch": "parity.frameworks.pytorch", "keras": "parity.frameworks.keras"}

#: Installed packages whose versions change what a framework's models compute (and so the eager
#: reference); the example model libraries are here because a case's factory builds on them.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchvision", "safetensors", "timm", "transformers"),
    "keras": ("tensorflow", "tensorflow-cpu", "keras"),
}


def load(name: str) -> Framework:
    """The framework module of `name` (imports the framework)."""
    return importlib.import_module(FRAMEWORKS[name])  # type: ignore[return-value]
