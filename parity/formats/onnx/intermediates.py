"""Intermediate tensors of an ONNX artefact, mapped back to the PyTorch modules that produced them.

One run of the artefact itself, no re-export: every floating-point node output is added as a graph
output (Polygraphy's ``--onnx-outputs mark all``) and the file runs once on the target's
onnxruntime provider. The dynamo exporter records, on every node, the module path it came from
(``pkg.torch.onnx.name_scopes``: ``['', 'features', 'features.0', 'features.0.bn', <aten op>]``);
a module's output is the output of the last node inside its scope that is read outside it (or is a
graph output). Modules whose nodes were fused into another module's (a Conv folded into the
BatchNorm after it) have no tensor of their own, and files without that metadata (the TorchScript
exporter, tf2onnx, a prebuilt file) map nothing: both are listed, not dropped.

Marking tensors as outputs keeps onnxruntime from fusing across them, so the intermediate run may
differ from the plain session in the last bits; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

SCOPES = "pkg.torch.onnx.name_scopes"
FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass
class Intermediate:
    module: str  # the module path whose output this tensor is
    tensor: str  # the ONNX value name
    op: str  # the op type of the node that produced it
    value: np.ndarray
    position: int  # the producing node's index in the graph (execution order)


@dataclass
class Intermediates:
    """What one run of the artefact gave: the module outputs in execution order, the first node whose
    output turned non-finite, and what could not be mapped."""

    mapped: list[Intermediate] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    first_nonfinite: Optional[str] = None  # "node <name> (<op>) in <module>"
    tensors: int = 0
    note: str = ""


def _scope(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPES:
            try:
                import ast

                names = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [str(n) for n in names[1:-1]]  # drop the root ('') and the aten op
    return []


def _strip(path: str, known: set[str]) -> str:
    """A wrapper adds a prefix (``model.features`` for parity's output-flattening wrapper's ``model``)."""
    while path not in known and "." in path:
        path = path.split(".", 1)[1]
    return path


def module_tensors(model, known_modules: set[str]) -> tuple[dict[str, tuple[str, str, int]], list[str]]:
    """{module path: (tensor name, op type, node index)} of the modules whose output is one tensor of
    the graph, and the modules seen in the graph's metadata that have none."""
    graph = model.graph
    scopes = [[_strip(s, known_modules) for s in _scope(n)] for n in graph.node]
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    outputs = {o.name for o in graph.output}
    found: dict[str, tuple[str, str, int]] = {}
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        for module in scopes[i]:
            seen.add(module)
            for name in node.output:
                leaves = name in outputs or any(module not in scopes[j] for j in consumers.get(name, []))
                if name and leaves:
                    found[module] = (name, node.op_type, i)  # the last such node wins
    unmapped = sorted(m for m in seen if m not in found)
    return found, unmapped


def intermediates(path: Path, feeds: dict[str, np.ndarray], backend: str, known_modules: set[str]) -> Intermediates:
    """Run the ONNX file at `path` once on `backend` with every float tensor as an output."""
    import onnx
    import onnxruntime as ort

    from parity.formats.onnx.runner import PROVIDERS

    model = onnx.load(str(path))
    result = Intermediates()
    if not any(_scope(n) for n in model.graph.node):
        result.note = ("the file carries no module metadata (pkg.torch.onnx.name_scopes: written by the dynamo "
                       "exporter only), so no tensor maps to a module")
        return result
    found, result.unmapped = module_tensors(model, known_modules)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    except Exception:
        types = {}
    existing = {o.name for o in model.graph.output}
    marked: list[str] = []
    for node in model.graph.node:
        for name in node.output:
            if name and name not in existing and types.get(name, 1) in FLOAT_TYPES:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
                existing.add(name)
                marked.append(name)
    options = ort.SessionOptions()
    if backend == "cpu-noopt":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[PROVIDERS.get(backend, PROVIDERS["cpu"])])
    names = [i.name for i in session.get_inputs()]
    fetch = [o.name for o in session.get_outputs()]
    values = dict(zip(fetch, session.run(fetch, dict(zip(names, feeds.values())))))
    result.tensors = len(values)
    result.note = (f"{len(marked)} intermediate tensors marked as outputs and read in one run of the artefact on "
                   f"onnxruntime {ort.__version__} ({backend}); marking them keeps fusions across them from "
                   "happening, so their last bits may differ from the plain session's")
    by_tensor = {name: module for module, (name, _, _) in found.items()}
    for i, node in enumerate(model.graph.node):  # the first node whose output turns non-finite
        bad = [n for n in node.output if n in values and np.issubdtype(np.asarray(values[n]).dtype, np.floating)
               and not np.all(np.isfinite(values[n]))]
        inputs_finite = all(np.all(np.isfinite(values[n])) for n in node.input
                            if n in values and np.issubdtype(np.asarray(values[n]).dtype, np.floating))
        if bad and inputs_finite:
            where = next((s for s in reversed(_scope(node))), "") or by_tensor.get(bad[0], "")
            result.first_nonfinite = f"node {node.name or bad[0]} ({node.op_type})" + (f" in {where}" if where else "")
            break
    for module, (name, op, position) in sorted(found.items(), key=lambda kv: (kv[1][2], -kv[0].count("."))):
        if name in values:
            result.mapped.append(Intermediate(module, name, op, np.asarray(values[name]), position))
    return result
