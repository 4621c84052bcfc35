"""ONNX export with torch.onnx (dynamo exporter by default), with a dynamic batch axis."""

from __future__ import annotations

import warnings
from pathlib import Path

import parity._triton_first  # noqa: F401
import torch


def export(model: torch.nn.Module, example_inputs: tuple, path: Path, *, input_names: list[str],
           output_names: list[str], opset: int = 18, dynamo: bool = True) -> dict:
    """Export with every input's dimension 0 dynamic; records the opset actually written.

    ``external_data=False`` keeps the weights inside the .onnx file (no ``.onnx.data`` beside it).
    The dynamo exporter may write another opset than the one asked (17 gives 18): the metadata's
    ``opset_written`` is read back from the file.
    """
    import onnx

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if dynamo:
            batch = torch.export.Dim.DYNAMIC
            torch.onnx.export(model, example_inputs, str(path), dynamo=True, opset_version=opset,
                              external_data=False, input_names=input_names, output_names=output_names,
                              dynamic_shapes=tuple({0: batch} for _ in example_inputs), verbose=False)
        else:
            torch.onnx.export(model, example_inputs, str(path), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes={n: {0: "batch"} for n in [*input_names, *output_names]})
    proto = onnx.load(str(path), load_external_data=False)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    messages = sorted({str(w.message).splitlines()[0] for w in caught if "deprecat" not in str(w.message).lower()})
    return {"exporter": "dynamo" if dynamo else "torchscript-based (legacy)", "opset_requested": opset,
            "opset_written": written, "torch": str(torch.__version__), "onnx": onnx.__version__, "warnings": messages}
