"""Lint of a TFLite flatbuffer: statistics over the batch axis (BatchNorm in training mode, as
litert-torch lowers it: MEAN over axes [0, 2, 3]) and random ops."""

from __future__ import annotations

import re
from pathlib import Path

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


def lint(path: Path) -> list[Finding]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    findings = []
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        if name in ("MEAN", "SUM") and len(op["inputs"]) > 1:
            data, axes = tensors.get(op["inputs"][0]), op["inputs"][1]
            try:
                axis = np.atleast_1d(interpreter.get_tensor(axes))
            except ValueError:  # not a constant
                continue
            if data is not None and len(data["shape"]) >= 2 and 0 in {int(a) % len(data["shape"]) for a in axis}:
                source = _module(data["name"])
                findings.append(Finding("batchnorm-training", f"{name}#{op['index']}", name, None,
                                        f"{name} over the batch axis (axes {axis.tolist()}) of the output of "
                                        f"{source or 'an earlier op'}: batch statistics at inference"))
        elif name in _RANDOM:
            findings.append(Finding("random-op", f"{name}#{op['index']}", name, None, "random number generator"))
    return findings
