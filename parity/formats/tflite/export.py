"""TFLite export with litert-torch (``litert_torch.convert``), at a static batch size.

litert-torch exports a static batch only: asking it for a dynamic batch fails, and
``Interpreter.resize_tensor_input`` on the static model fails as soon as the graph holds a reshape
with the batch baked in (a flatten before the classifier: tiny_cnn, resnet18). The registry marks
the format ``static_batch``: the engine exports at the largest batch size of the case, keeps that one
artefact for every batch size where resizing it gives the same rows, and otherwise calls this
exporter once per batch size.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import parity._triton_first  # noqa: F401  (litert_torch imports tensorflow)
import torch

LAYOUTS = ("nchw", "nhwc")


def export(model: torch.nn.Module, example_inputs: tuple, path: Path, *, input_names: list[str],
           output_names: list[str], layout: str = "nchw") -> dict:
    """Convert `model` at the batch size of `example_inputs` and write the .tflite file at `path`.

    ``layout: nhwc`` wraps the model with ``litert_torch.to_channel_last_io`` so that every input
    and output of rank 3 or more is channels-last (what mobile apps feed); the runner then
    transposes the case's channels-first tensors, and the metadata says so.
    """
    import litert_torch

    if layout not in LAYOUTS:
        raise ValueError(f"export.tflite.options.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "nhwc":
        with torch.no_grad():
            outputs = model(*example_inputs)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        moved = [i for i, x in enumerate(example_inputs) if x.dim() >= 3]
        model = litert_torch.to_channel_last_io(
            model, args=moved, outputs=[i for i, y in enumerate(outputs) if isinstance(y, torch.Tensor) and y.dim() >= 3])
        example_inputs = tuple(x.permute(0, *range(2, x.dim()), 1).contiguous() if i in moved else x
                               for i, x in enumerate(example_inputs))  # the wrapped model takes channels-last
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # litert-torch prints a progress line per conversion stage
        converted = litert_torch.convert(model, tuple(example_inputs))
        converted.export(str(path))
    import importlib.metadata as md

    return {"exporter": "litert_torch.convert", "litert_torch": md.version("litert-torch"), "torch": torch.__version__,
            "layout_requested": layout}
