"""torch.export ExportedProgram (.pt2): dynamic batch, falling back to one program per batch size."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import parity._triton_first  # noqa: F401
import torch

from parity.formats.dims import axes_text, torch_dynamic_shapes


def export(model: torch.nn.Module, example_inputs: tuple, path: Path, *, input_names: list[str],
           output_names: list[str], batch_sizes: list[int], strict: bool = False,
           dynamic_axes: Optional[list[dict[int, str]]] = None) -> dict:
    """`torch.export.export` with dimension 0 of every input dynamic, and the case's named dynamic
    axes (`dynamic_axes`, per input), saved with `torch.export.save`.

    If the named axes cannot be dynamic (the model fixes their size), the batch alone is; if the
    model specialises the batch dimension too, one program per batch size is exported into `path`
    as a directory (``b<N>.pt2``); the metadata says which happened and why.
    The model is exported as it is: a model in training mode bakes ``batch_norm(training=True)`` and
    dropout into the program (and ``ep.module().eval()`` cannot undo it).
    """
    named = axes_text(dynamic_axes, input_names)
    meta: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                program = torch.export.export(model, example_inputs, strict=strict,
                                              dynamic_shapes=torch_dynamic_shapes(example_inputs, dynamic_axes))
                if named:
                    meta["dynamic_axes"] = named
            except Exception as e:
                if not named:
                    raise
                meta["dynamic_axes_failed"] = (f"{named} could not be exported dynamic, only the batch: "
                                               f"{_reason(e)}")
                meta["dynamic_axes"] = f"{named}: static (torch.export could not keep them dynamic)"
                program = torch.export.export(model, example_inputs, strict=strict,
                                              dynamic_shapes=torch_dynamic_shapes(example_inputs))
            torch.export.save(program, str(path))
            meta.update({"dynamic_batch": True, "range_constraints": {str(k): str(v) for k, v in
                                                                      program.range_constraints.items()}})
        except Exception as e:  # the model specialises the batch dimension
            reason = _reason(e)
            path.mkdir()
            for size in sorted(set(batch_sizes) | {max(batch_sizes, default=1)}):
                sized = tuple(_resize(t, size) for t in example_inputs)
                program = torch.export.export(model, sized, strict=strict)
                torch.export.save(program, str(path / f"b{size}.pt2"))
            meta.update({"dynamic_batch": False, "static_batch_sizes": sorted(set(batch_sizes)),
                         "fallback_reason": f"dynamic batch export failed, one program per batch size: {reason}"})
    messages = sorted({str(w.message).splitlines()[0] for w in caught if "deprecat" not in str(w.message).lower()})
    return {"torch": str(torch.__version__), "strict": strict, "warnings": messages, **meta}


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}" if str(e).strip() else type(e).__name__


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    reps = -(-size // t.shape[0])
    return t.repeat(reps, *([1] * (t.dim() - 1)))[:size]
