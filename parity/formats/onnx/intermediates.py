"""Intermediate tensors of an ONNX artefact, mapped back to the PyTorch modules that produced them.

One run of the artefact itself, no re-export: every floating-point node output is added as a graph
output (Polygraphy's ``--onnx-outputs mark all``) and the file runs once on the target's
onnxruntime provider. The dynamo exporter records, on every node, the module path it came from
(``pkg.torch.onnx.name_scopes``: ``['', 'features', 'features.0', 'features.0.bn', <aten op>]``);
the mapping to module outputs is :func:`parity.formats.intermediates.module_tensors`. Modules whose
nodes were fused into another module's (a Conv folded into the BatchNorm after it) have no tensor of
their own, and files without that metadata (the TorchScript-based exporter, tf2onnx, a prebuilt file)
map nothing: both are listed, not dropped.

Marking tensors as outputs keeps onnxruntime from fusing across them, so the intermediate run may
differ from the plain session in the last bits; the report says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from parity.formats.intermediates import Intermediates, Node, collect, module_tensors, strip

SCOPES = "pkg.torch.onnx.name_scopes"
FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _scope(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPES:
            try:
                names = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return []
            return [str(n) for n in names[1:-1]]  # drop the root ('') and the aten op
    return []


def run_marked(model, feeds: dict[str, np.ndarray], backend: str) -> tuple[dict[str, np.ndarray], int]:
    """({tensor name: value} of every float node output and graph output, how many were marked) from
    one run of the loaded ONNX `model` (marked in place) on `backend`, fed `feeds` in input order."""
    import onnx
    import onnxruntime as ort

    from parity.formats.onnx.runner import PROVIDERS

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    except Exception:
        types = {}
    existing = {o.name for o in model.graph.output}
    marked = 0
    for node in model.graph.node:
        for name in node.output:
            if name and name not in existing and types.get(name, 1) in FLOAT_TYPES:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
                existing.add(name)
                marked += 1
    options = ort.SessionOptions()
    if backend == "cpu-noopt":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=[PROVIDERS.get(backend, PROVIDERS["cpu"])])
    names = [i.name for i in session.get_inputs()]
    fetch = [o.name for o in session.get_outputs()]
    return dict(zip(fetch, session.run(fetch, dict(zip(names, feeds.values()))))), marked


def intermediates(path: Path, feeds: dict[str, np.ndarray], backend: str, known_modules: set[str]) -> Intermediates:
    """Run the ONNX file at `path` once on `backend` with every float tensor as an output."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    result = Intermediates()
    if not any(_scope(n) for n in model.graph.node):
        result.note = ("the file carries no module metadata (pkg.torch.onnx.name_scopes: written by the dynamo "
                       "exporter only), so no tensor maps to a module")
        return result
    nodes = [Node(n.name, n.op_type, [strip(s, known_modules) for s in _scope(n)], list(n.input), list(n.output))
             for n in model.graph.node]
    found, result.unmapped = module_tensors(nodes, {o.name for o in model.graph.output}, known_modules)
    values, marked = run_marked(model, feeds, backend)
    result.tensors = len(values)
    result.note = (f"{marked} intermediate tensors marked as outputs and read in one run of the artefact on "
                   f"onnxruntime {ort.__version__} ({backend}); marking them keeps fusions across them from "
                   "happening, so their last bits may differ from the plain session's")
    return collect(nodes, values, found, result)
