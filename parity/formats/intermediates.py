"""What a format's intermediate-tensor reader returns, and the mapping from graph nodes to the source
modules that produced them, shared by every format that exposes its tensors (triage's first path).

A reader runs the artefact once and returns :class:`Intermediates`: for each module of the source
model whose output is one tensor of the graph, that tensor's value, in execution order. The mapping
(:func:`module_tensors`) needs, per node in execution order, the module scopes the exporter recorded
on it; a module's output is the output of the last node inside its scope that is read outside it
(or is a graph output). Pure Python and NumPy: the readers import their runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


@dataclass
class Intermediate:
    module: str  # the module path whose output this tensor is
    tensor: str  # the tensor's name in the artefact
    op: str  # the op that produced it
    value: np.ndarray
    position: int  # the producing node's index (execution order)
    #: the recorded tensors its nodes read from outside it, in order: (name, value, the producer's scopes)
    inputs: list[tuple[str, np.ndarray, list[str]]] = field(default_factory=list)


@dataclass
class Intermediates:
    """What one run of the artefact gave: the module outputs in execution order, the first node whose
    output turned non-finite, and what could not be mapped."""

    mapped: list[Intermediate] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    first_nonfinite: Optional[str] = None  # "node <name> (<op>) in <module>"
    tensors: int = 0
    note: str = ""



@dataclass
class LayerTensors:
    """One reduced-precision layer, for precision sensitivity: its output and its activation input as the
    fp32 artefact and as the INT8/fp16 artefact compute them (each format's ``sensitivity.layer_tensors``)."""

    node: str  # the name the format's own exclusion option takes (nodes_to_exclude, float_ops, fp32_ops)
    op: str
    module: str  # the source module it belongs to
    tensor: str  # the fp32 artefact's tensor compared
    fp32: np.ndarray
    quantized: np.ndarray
    input_fp32: Optional[np.ndarray] = None
    input_quantized: Optional[np.ndarray] = None
    keep_with: list[str] = field(default_factory=list)  # layers kept in fp32 with it (its output overflows fp16)

@dataclass
class Node:
    """One node of the artefact's graph, as the mapping sees it."""

    name: str
    op: str
    scopes: list[str]  # the module paths it belongs to, outermost first
    inputs: list[str]
    outputs: list[str]


def strip(path: str, known: set[str]) -> str:
    """A wrapper adds a prefix (``model.features`` for parity's output-flattening wrapper's ``model``)."""
    while path not in known and "." in path:
        path = path.split(".", 1)[1]
    return path


def module_tensors(nodes: Sequence[Node], graph_outputs: set[str],
                   known_modules: set[str]) -> tuple[dict[str, tuple[str, str, int]], list[str]]:
    """{module path: (tensor name, op, node index)} of the modules whose output is one tensor of the
    graph, and the known modules that have none: seen in the nodes' scopes without a tensor read outside
    them, or in no node's scopes at all (a Conv the exporter folded into the BatchNorm after it, whose
    one node carries the BatchNorm's scope; a module without ops, an Identity)."""
    scopes = [[strip(s, known_modules) for s in n.scopes] for n in nodes]
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            consumers.setdefault(name, []).append(i)
    found: dict[str, tuple[str, str, int]] = {}
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        for module in scopes[i]:
            seen.add(module)
            for name in node.outputs:
                leaves = name in graph_outputs or any(module not in scopes[j] for j in consumers.get(name, []))
                if name and leaves:
                    found[module] = (name, node.op, i)  # the last such node wins
    return found, sorted((seen | set(known_modules)) - set(found))


def collect(nodes: Sequence[Node], values: dict[str, np.ndarray], found: dict[str, tuple[str, str, int]],
            result: Intermediates) -> Intermediates:
    """Fill `result` with the mapped module outputs in execution order and the first node whose output
    turned non-finite while its inputs were finite."""
    def floating(name: str) -> bool:
        return name in values and np.issubdtype(np.asarray(values[name]).dtype, np.floating)

    by_tensor = {name: module for module, (name, _, _) in found.items()}
    for node in nodes:
        bad = [n for n in node.outputs if floating(n) and not np.all(np.isfinite(values[n]))]
        if bad and all(np.all(np.isfinite(values[n])) for n in node.inputs if floating(n)):
            where = (node.scopes[-1] if node.scopes else "") or by_tensor.get(bad[0], "")
            result.first_nonfinite = f"node {node.name or bad[0]} ({node.op})" + (f" in {where}" if where else "")
            break
    producer = {name: node for node in nodes for name in node.outputs}
    for module, (name, op, position) in sorted(found.items(), key=lambda kv: (kv[1][2], -kv[0].count("."))):
        if name in values:
            entering = dict.fromkeys(i for node in nodes if module in node.scopes for i in node.inputs
                                     if floating(i) and i in producer and module not in producer[i].scopes)
            result.mapped.append(Intermediate(module, name, op, np.asarray(values[name]), position,
                                              [(i, np.asarray(values[i]), producer[i].scopes) for i in entering]))
    return result
