"""Building a case's Keras model and computing the eager reference. Imports TensorFlow and Keras.

The Keras counterpart of :mod:`parity.frameworks.pytorch`, with the same functions, so the pipeline
never asks which framework it holds: ``build_model``, ``reference_model``, ``run_eager``,
``export_inputs``, ``model_for_export`` and ``lint_model``.

The reference is ``model(x, training=False)``, what Keras code calls at inference. Keras has no
model-wide training flag: a layer is in training mode only where a call passes ``training=True``,
and a functional model records such a call in its graph (BatchNorm in training mode, in Keras). :func:`lint_model` reads those records.
"""

from __future__ import annotations

from typing import Any, Optional

import parity._triton_first  # noqa: F401  (before tensorflow: tensorflow, then triton, segfaults)
import numpy as np

import keras  # noqa: E402
from parity.case import Case, import_from_case  # noqa: E402
from parity.errors import CaseError  # noqa: E402
from parity.outputs import leaf_paths, pick  # noqa: E402


def build_model(case: Case) -> keras.Model:
    """Call the factory under the case's seed and load weights (``.weights.h5``)."""
    factory = import_from_case(case, case.model.factory)
    keras.utils.set_random_seed(case.model.seed)
    model = factory(**case.model.kwargs)
    if not isinstance(model, keras.Model):
        hint = " (a torch.nn.Module: set model.framework: torch)" if type(model).__module__.startswith("torch") else ""
        raise CaseError(case.path, "model.framework", f"{case.model.factory} returned {type(model).__name__}, "
                        f"expected a keras.Model for a keras case{hint}")
    if case.model.weights is not None:
        try:
            model.load_weights(str(case.resolve(case.model.weights)))
        except Exception as e:  # noqa: BLE001 - keras raises ValueError or h5py errors
            first = " ".join(str(e).strip().splitlines()[:2])
            raise CaseError(case.path, "model.weights", f"weights do not fit the model: {first}") from None
    return model


def reference_model(model: keras.Model) -> keras.Model:
    """The reference is the model itself, always called with ``training=False`` (Keras has no mode to copy)."""
    return model


def _feed(inputs: dict[str, np.ndarray]) -> Any:
    """One array for a single-input model, else a list in the case's input order."""
    arrays = [np.ascontiguousarray(a) for a in inputs.values()]
    return arrays[0] if len(arrays) == 1 else arrays


def run_eager(model: keras.Model, inputs: dict[str, np.ndarray]) -> list[tuple[tuple, np.ndarray]]:
    """Every tensor the model returns, by its key path (see parity.outputs)."""
    out = model(_feed(inputs), training=False)
    return [(p, np.asarray(keras.ops.convert_to_numpy(pick(out, p)))) for p in leaf_paths(out, lambda v: False)]


def export_inputs(inputs: dict[str, np.ndarray], device: str = "cpu") -> tuple[np.ndarray, ...]:
    """What Keras exporters receive as example inputs: the arrays, in the case's order."""
    return tuple(np.ascontiguousarray(a) for a in inputs.values())


def keyword_inputs(model: keras.Model, input_names: list[str]) -> None:
    """Keras models take their inputs as one list, in the case's order: never by keyword."""
    return None


def model_for_export(model: keras.Model, outputs: Optional[list[tuple]] = None,
                     keywords: Optional[list[str]] = None, arity: int = 1) -> keras.Model:
    """A copy for each export (``keras.models.clone_model`` with the same weights), so an export
    function that edits the model cannot change the reference; the clone keeps every recorded
    ``training=`` call argument. A subclassed model, which Keras cannot clone, is passed itself."""
    if outputs is not None:
        model = _select_outputs(model, outputs)
    try:
        clone = keras.models.clone_model(model)
    except (ValueError, TypeError, NotImplementedError):
        return model
    clone.set_weights(model.get_weights())
    return clone


def vocabulary_size(model: keras.Model) -> Optional[int]:
    """How many token ids the model embeds: the ``input_dim`` of its only Embedding layer, else None."""
    embeddings = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Embedding)]
    return embeddings[0].input_dim if len(embeddings) == 1 else None


def lint_model(model: keras.Model) -> list:
    from parity.frameworks.keras_lint import lint_model as lint

    return lint(model)


def _select_outputs(model: keras.Model, paths: list[tuple]) -> keras.Model:
    """A functional model computing only the outputs at `paths`, as a flat list (the case selected or
    reordered them); a subclassed model, whose graph Keras cannot cut, is a case error upstream."""
    structure = getattr(model, "_outputs_struct", None)
    if structure is None:
        structure = model.outputs if len(model.outputs) > 1 else model.outputs[0]
    return keras.Model(model.inputs, [pick(structure, p) for p in paths], name=model.name)
