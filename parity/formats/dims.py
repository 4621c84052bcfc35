"""Dynamic shapes for the torch exporters: the batch axis, plus the case's named dynamic axes.

Imports torch only inside its functions (``import parity.formats`` stays framework-free).
"""

from __future__ import annotations

from typing import Optional


def torch_dynamic_shapes(example_inputs: tuple, dynamic_axes: Optional[list[dict[int, str]]] = None,
                         batch: bool = True) -> tuple[dict, ...]:
    """``dynamic_shapes`` for ``torch.export`` / ``torch.onnx.export(dynamo=True)``: per input,
    axis 0 (the batch, when `batch`) and each named axis ``Dim.DYNAMIC``.

    ``Dim.DYNAMIC`` lets torch.export infer equalities between axes (a mask and its token ids share
    ``seq``) and ranges (``seq <= 512`` from a position table) itself, and fail, rather than
    silently specialise, when the model fixes an axis's size.
    """
    import torch

    axes = list(dynamic_axes or [{} for _ in example_inputs])
    shapes = []
    for i, _ in enumerate(example_inputs):
        dims = {0: torch.export.Dim.DYNAMIC} if batch else {}
        dims.update({int(a): torch.export.Dim.DYNAMIC for a in (axes[i] if i < len(axes) else {})})
        shapes.append(dims)
    return tuple(shapes)


def axes_text(dynamic_axes: Optional[list[dict[int, str]]], input_names: list[str]) -> str:
    """``input_ids[1]=seq, attention_mask[1]=seq`` for metadata; '' without named axes."""
    return ", ".join(f"{name}[{a}]={n}" for name, found in zip(input_names, dynamic_axes or [])
                     for a, n in sorted(found.items()))
