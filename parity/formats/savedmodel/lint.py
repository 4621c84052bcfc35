"""Lint of a TensorFlow SavedModel's serving graph: what ``training=True`` leaves behind.

Keras 3 lowers BatchNormalization in training mode to ``moments`` (``Mean`` over the batch axis
with the spatial axes) and an ``AssignVariableOp`` that updates the moving statistics on every
call; Dropout in training mode to a (stateless) random uniform. Each finding names the node and the
Keras layer from the node's name scope (``functional/<layer>/...``).
"""

from __future__ import annotations

from pathlib import Path

import parity._triton_first  # noqa: F401  (before tensorflow)
import numpy as np

from parity.findings import Finding

_RANDOM_OPS = {"RandomUniform", "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt", "Multinomial",
               "StatelessRandomUniformV2", "StatelessRandomNormalV2", "StatelessRandomUniform",
               "StatelessRandomNormal", "StatelessTruncatedNormalV2", "StatelessRandomUniformIntV2"}


def _layer(node_name: str) -> str | None:
    """'functional_1/batch_normalization_1/moments/mean' -> 'batch_normalization_1'."""
    parts = node_name.split("/")
    return parts[1] if len(parts) > 2 else None


def _functions(graph_def):
    """The nodes of the graph, then of each function in its library (the model's call lives there)."""
    yield list(graph_def.node)
    for function in graph_def.library.function:
        yield list(function.node_def)


def lint(path: Path) -> list[Finding]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures.get("serving_default") or next(iter(loaded.signatures.values()))
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for nodes in _functions(signature.graph.as_graph_def()):
        consts = {n.name: n for n in nodes if n.op == "Const"}
        for node in nodes:
            layer = _layer(node.name)
            if node.op == "Mean":
                axes_node = consts.get(node.input[1].split(":")[0]) if len(node.input) > 1 else None
                if axes_node is None:
                    continue
                axes = np.atleast_1d(tf.make_ndarray(axes_node.attr["value"].tensor)).tolist()
                if 0 in axes and (layer, "batch") not in seen:
                    seen.add((layer, "batch"))
                    findings.append(Finding("batchnorm-training", node.name, "Mean", layer, f"mean over the batch axis "
                                            f"(axes {axes}): batch statistics at inference"))
            elif node.op in _RANDOM_OPS and (layer, "random") not in seen:
                seen.add((layer, "random"))
                kind = "dropout-training" if layer and "dropout" in node.name.lower() else "random-op"
                findings.append(Finding(kind, node.name, node.op, layer, "random number generator at inference"))
            elif node.op == "AssignVariableOp" and (layer, "assign") not in seen and layer:
                seen.add((layer, "assign"))
                findings.append(Finding("training-mode", node.name, node.op, layer,
                                        "writes a variable at inference (moving statistics updated by every call)"))
    return findings
