"""Lint of a TFLite flatbuffer: statistics over the batch axis (BatchNorm in training mode, as
litert-torch lowers it: MEAN over axes [0, 2, 3]) and random ops."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from parity.findings import Finding

_RANDOM = {"RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL"}


def _module(tensor_name: str) -> str | None:
    """The module path from a litert-torch tensor name.

    litert-torch names tensors 'pkg.Model/torch.nn...ModuleList_h/pkg.Block_0/torch.nn...LayerNorm_ln_1;2':
    each part is a qualified class name, '_', then the attribute that holds the module. The attribute
    starts after the first underscore of the class's own name (attributes may hold underscores and
    ModuleList indices are digits): this one reads 'h.0.ln_1'.
    """
    parts = tensor_name.split(";")[0].split("/")[1:]
    names = []
    for part in parts:
        cls, sep, attr = part.rsplit(".", 1)[-1].partition("_")
        if sep and cls and attr:
            names.append(attr)
    return ".".join(names) or None


def _reductions(path: Path) -> tuple[list[tuple[int, str, tuple, list, str]], list[tuple[int, str]]]:
    """(index, op, input shape, axes, input tensor name) of every constant-axes MEAN/SUM, and the
    random ops, of one flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    reductions, random_ops = [], []
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        if name in ("MEAN", "SUM") and len(op["inputs"]) > 1:
            data = tensors.get(op["inputs"][0])
            try:
                axes = np.atleast_1d(interpreter.get_tensor(op["inputs"][1]))
            except ValueError:  # not a constant
                continue
            if data is not None and len(data["shape"]) >= 2:
                rank = len(data["shape"])
                reductions.append((op["index"], name, tuple(int(d) for d in data["shape"]),
                                   sorted({int(a) % rank for a in axes}), data["name"]))
        elif name in _RANDOM:
            random_ops.append((op["index"], name))
    return reductions, random_ops


def batch_axes(shapes: dict[int, tuple]) -> Optional[set[int]]:
    """The axes of one tensor that carry the batch: those whose size changes with the batch size
    across artefacts exported at different sizes. None when there is one size only (unknown)."""
    distinct = set(shapes.values())
    if len(shapes) < 2 or len({len(s) for s in distinct}) != 1:
        return None
    return {axis for axis in range(len(next(iter(distinct)))) if len({s[axis] for s in distinct}) > 1}


def lint(path: Path, batch_paths: Optional[dict[int, Path]] = None) -> list[Finding]:
    """Findings of the flatbuffer at `path`. Given the artefacts of every batch size (`batch_paths`),
    the batch axis of each reduction's input is found by comparing shapes across them: a MEAN over
    axes [0, 2] of litert-torch's ``[1, B*S, H]`` LayerNorm input reduces no batch axis. With one
    artefact, axis 0 is taken to be the batch unless it has size 1 where the batch is larger."""
    batch_paths = {b: Path(p) for b, p in (batch_paths or {}).items()}
    here = next((b for b, p in batch_paths.items() if p == Path(path)), None)
    reductions, random_ops = _reductions(path)
    others = {b: _reductions(p)[0] for b, p in batch_paths.items() if Path(p) != Path(path)}
    others = {b: r for b, r in others.items() if [x[:2] for x in r] == [x[:2] for x in reductions]}
    findings = []
    for position, (index, name, shape, axes, tensor) in enumerate(reductions):
        traced = batch_axes({**{b: r[position][2] for b, r in others.items()}, **({here: shape} if here else {})}) \
            if others and here is not None else None
        if traced is not None:
            over = sorted(set(axes) & traced)
        else:
            over = [0] if 0 in axes and not (shape[0] == 1 and (here or 1) > 1) else []
        if over:
            source = _module(tensor)
            findings.append(Finding("batchnorm-training", f"{name}#{index}", name, None,
                                    f"{name} over the batch axis (axes {axes}) of the output of "
                                    f"{source or 'an earlier op'}: batch statistics at inference"))
    for index, name in random_ops:
        findings.append(Finding("random-op", f"{name}#{index}", name, None, "random number generator"))
    return findings
