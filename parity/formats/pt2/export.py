"""torch.export ExportedProgram (.pt2): dynamic batch, falling back to one program per batch size."""

from __future__ import annotations

import warnings
from pathlib import Path

import parity._triton_first  # noqa: F401
import torch


def export(model: torch.nn.Module, example_inputs: tuple, path: Path, *, input_names: list[str],
           output_names: list[str], batch_sizes: list[int], strict: bool = False) -> dict:
    """`torch.export.export` with dimension 0 of every input dynamic, saved with `torch.export.save`.

    If the model specialises the batch dimension (dynamic export fails), one program per batch size
    is exported into `path` as a directory (``b<N>.pt2``); the metadata says which happened and why.
    The model is exported as it is: a model in training mode bakes ``batch_norm(training=True)`` and
    dropout into the program (and ``ep.module().eval()`` cannot undo it).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dims = tuple({0: torch.export.Dim.DYNAMIC} for _ in example_inputs)
            program = torch.export.export(model, example_inputs, dynamic_shapes=dims, strict=strict)
            torch.export.save(program, str(path))
            meta = {"dynamic_batch": True, "range_constraints": {str(k): str(v) for k, v in
                                                                 program.range_constraints.items()}}
        except Exception as e:  # the model specialises the batch dimension
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
            path.mkdir()
            for size in sorted(set(batch_sizes) | {max(batch_sizes, default=1)}):
                sized = tuple(_resize(t, size) for t in example_inputs)
                program = torch.export.export(model, sized, strict=strict)
                torch.export.save(program, str(path / f"b{size}.pt2"))
            meta = {"dynamic_batch": False, "static_batch_sizes": sorted(set(batch_sizes)),
                    "fallback_reason": f"dynamic batch export failed, one program per batch size: {reason}"}
    messages = sorted({str(w.message).splitlines()[0] for w in caught if "deprecat" not in str(w.message).lower()})
    return {"torch": str(torch.__version__), "strict": strict, "warnings": messages, **meta}


def _resize(t: torch.Tensor, size: int) -> torch.Tensor:
    reps = -(-size // t.shape[0])
    return t.repeat(reps, *([1] * (t.dim() - 1)))[:size]
