"""ONNX export with torch.onnx (dynamo exporter by default), with a dynamic batch axis."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import parity._triton_first  # noqa: F401
import torch

from parity.formats.dims import axes_text, torch_dynamic_shapes


def export(model: torch.nn.Module, example_inputs: tuple, path: Path, *, input_names: list[str],
           output_names: list[str], opset: int = 18, dynamo: bool = True,
           dynamic_axes: Optional[list[dict[int, str]]] = None) -> dict:
    """Export with every input's dimension 0 dynamic, and the case's named dynamic axes
    (`dynamic_axes`, per input); records the opset actually written.

    ``external_data=False`` keeps the weights inside the .onnx file (no ``.onnx.data`` beside it).
    The dynamo exporter may write another opset than the one asked (17 gives 18): the metadata's
    ``opset_written`` is read back from the file.
    """
    import onnx

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if dynamo:
            torch.onnx.export(model, example_inputs, str(path), dynamo=True, opset_version=opset,
                              external_data=False, input_names=input_names, output_names=output_names,
                              dynamic_shapes=torch_dynamic_shapes(example_inputs, dynamic_axes), verbose=False)
        else:
            axes = {n: {0: "batch", **found} for n, found in zip(input_names, dynamic_axes or [{}] * len(input_names))}
            torch.onnx.export(model, example_inputs, str(path), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes={**axes, **{n: {0: "batch"} for n in output_names}})
    proto = onnx.load(str(path), load_external_data=False)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    messages = sorted({str(w.message).splitlines()[0] for w in caught if "deprecat" not in str(w.message).lower()})
    named = axes_text(dynamic_axes, input_names)
    return {**({"dynamic_axes": named} if named else {}),
            "exporter": "dynamo" if dynamo else "torchscript-based (legacy)", "opset_requested": opset,
            "opset_written": written, "torch": str(torch.__version__), "onnx": onnx.__version__, "warnings": messages}


def export_legacy(model: torch.nn.Module, example_inputs: tuple, path: Path, *, input_names: list[str],
                  output_names: list[str], opset: int = 17,
                  dynamic_axes: Optional[list[dict[int, str]]] = None) -> dict:
    """The ``onnx_legacy`` route: torch.onnx's TorchScript-based exporter (``dynamo=False``), which
    still ships and which many pipelines still use. It traces with ``torch.jit.trace`` and exports the
    model in eval mode (``training=TrainingMode.EVAL``) whatever its flags say, so a BatchNorm left
    in training mode becomes running statistics and a Dropout an identity."""
    return export(model, example_inputs, path, input_names=input_names, output_names=output_names, opset=opset,
                  dynamo=False, dynamic_axes=dynamic_axes)
