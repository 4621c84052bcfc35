"""Lint of a Core ML ML Program: statistics over the batch axis (reduce_mean / reduce_sum whose
axes include 0, the pattern coremltools converts a training-mode BatchNorm to) and random ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import parity._triton_first  # noqa: F401  (coremltools imports tensorflow)
from parity.findings import Finding

_RANDOM = {"random_bernoulli", "random_categorical", "random_normal", "random_uniform"}


def lint(path: Path) -> list[Finding]:
    from parity.formats.coreml.mil_ref import load_program, operations

    program, _ = load_program(path)
    findings = []
    for function in program.functions.values():
        batch = _exported_batch(function)
        for op in operations(function):
            if op.op_type in ("reduce_mean", "reduce_sum") and "axes" in op.inputs:
                axes = op.inputs["axes"].val
                shape = op.inputs["x"].shape
                rank = len(shape)
                # an axis of size 1 in a program traced at a batch above 1 cannot carry the batch
                # (a LayerNorm lowered over [1, B*S, H])
                not_batch = rank >= 1 and shape[0] == 1 and batch is not None and batch > 1
                if axes is not None and rank >= 2 and not not_batch and \
                        0 in {int(a) % rank for a in np.atleast_1d(axes)}:
                    findings.append(Finding("batchnorm-training", op.name, op.op_type, None,
                                            f"{op.op_type} over the batch axis (axes {np.atleast_1d(axes).tolist()}): "
                                            "batch statistics at inference"))
            elif op.op_type in _RANDOM:
                findings.append(Finding("random-op", op.name, op.op_type, None, "random number generator"))
    return findings


def _exported_batch(function) -> int | None:
    """The batch size the program was converted at: dimension 0 of its inputs, when they agree."""
    sizes = {v.shape[0] for v in function.inputs.values() if getattr(v, "shape", None) and isinstance(v.shape[0], int)}
    return sizes.pop() if len(sizes) == 1 else None
