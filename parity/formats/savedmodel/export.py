"""SavedModel from Keras: ``model.export`` (the SavedModel many Keras teams ship), run in TensorFlow."""

from __future__ import annotations

from pathlib import Path

import parity._triton_first  # noqa: F401  (before tensorflow)

from parity.frameworks.keras_export import LAYOUT, quiet, versions  # noqa: E402


def export(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str]) -> dict:
    """``model.export(path)``: a SavedModel whose ``serve`` endpoint takes the model's inputs."""
    with quiet():
        model.export(str(path), format="tf_saved_model", verbose=False)
    return {"exporter": "keras.Model.export(format='tf_saved_model')", "endpoint": "serve", "batch": "dynamic",
            "io_layout": LAYOUT, **versions()}
