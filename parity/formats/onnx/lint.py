"""Lint of an ONNX model: BatchNormalization(training_mode=1), Dropout with training on, random ops."""

from __future__ import annotations

import ast
from pathlib import Path

from parity.findings import Finding

_RANDOM = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _module(node) -> str | None:
    """The source module: from the dynamo exporter's name scopes, or the legacy exporter's node name."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(prop.value) if s]
            except (ValueError, SyntaxError):
                break
            return scopes[-2] if len(scopes) >= 2 else (scopes[0] if scopes else None)
    parts = [p for p in node.name.split("/") if p]
    return parts[-2] if len(parts) >= 2 else None


def lint(path: Path) -> list[Finding]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    # weights in a .data file beside the model (torch.onnx.export's default, external_data=True) are read
    # from the model's directory, not the working directory
    constants = {init.name: numpy_helper.to_array(init, base_dir=str(Path(path).parent)) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            try:
                constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            except Exception:  # non-tensor constants (value_float etc.) are not needed here
                pass
    findings = []
    for node in graph.node:
        name = node.name or f"{node.op_type}#{len(findings)}"
        if node.op_type == "BatchNormalization":
            if any(a.name == "training_mode" and a.i == 1 for a in node.attribute):
                findings.append(Finding("batchnorm-training", name, node.op_type, _module(node),
                                        "training_mode=1: batch statistics at inference"))
        elif node.op_type == "Dropout":
            training = node.input[2] if len(node.input) > 2 and node.input[2] else None
            value = constants.get(training) if training else None
            if training is not None and (value is None or bool(value)):
                findings.append(Finding("dropout-training", name, node.op_type, _module(node),
                                        "training_mode input is true" if value is not None else
                                        "training_mode input is computed at run time"))
        elif node.op_type in _RANDOM:
            findings.append(Finding("random-op", name, node.op_type, _module(node), "random number generator"))
    return findings
