"""Intermediate tensors of a TorchScript artefact (.pt), mapped back to the source modules.

One run of the saved program itself, no re-export: the loaded module's forward graph, inlined
(``module.inlined_graph``, a copy), gets an ``aten::clone`` after every node that yields a tensor, and
the clones are returned beside the original output; the graph becomes a function
(``torch._C._create_function_from_graph``) called on the loaded module, so it runs the program's own
ops on its own parameters. The clones are taken right after each node because TorchScript keeps
in-place ops (``hardswish_``, ResNet's ``out += identity``): a later op would overwrite the value.

Inlining keeps, on each node, the stack of module calls it came from, and that survives
``torch.jit.save`` + ``torch.jit.load`` (``node.getModuleHierarchy()``:
``'layer1(Sequential).0(BasicBlock).conv1(Conv2d)'``; the scope names that tracing records do not).
Function calls read ``UNKNOWN_INSTANCE`` and are skipped; a scripted model's containers indexed in
``forward`` (a ``ModuleDict`` key, a ``ModuleList`` loop) leave the container out of the stack, so
each name is resolved against the loaded module tree. Nothing is fused in the saved graph (ATen ops),
so every module that computes has a tensor; a ``prim::If``/``prim::Loop`` of a scripted model counts
as one node (its inner values are not visible outside it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from parity.formats.intermediates import Intermediates, Node, collect, module_tensors, strip

#: nodes that compute nothing: constants, attribute reads (parameters, submodules), list/tuple packing
_PLUMBING = {"prim::Constant", "prim::GetAttr", "prim::ListConstruct", "prim::TupleConstruct",
             "prim::DictConstruct"}
_FRAME = re.compile(r"([^.()]+)\(([^()]*)\)")
WRAPPER = "FlatOutputs"  # parity's output-flattening wrapper (parity.frameworks.pytorch), child `model`


def module_paths(hierarchy: str, tree: dict) -> list[str]:
    """The module paths, outermost first, of a node's ``getModuleHierarchy()`` string, resolved against
    `tree` ({path: loaded submodule}); a name that is no child of the module before it is looked up
    among that module's descendants of the same type (a container left out of the stack)."""
    paths: list[str] = []
    current = ""
    for name, kind in _FRAME.findall(hierarchy):
        if name == "UNKNOWN_INSTANCE":  # a function call, not a module
            continue
        candidate = f"{current}.{name}" if current else name
        if candidate not in tree:
            prefix = current + "." if current else ""
            candidate = next((p for p, m in tree.items() if p.startswith(prefix) and p.rsplit(".", 1)[-1] == name
                              and getattr(m, "original_name", None) == kind), candidate)
        current = candidate
        paths.append(current)
    return paths


def _sources(value) -> list[str]:
    """The tensors a value carries: a list or tuple packed in the graph stands for its elements."""
    node = value.node()
    if node.kind() in ("prim::ListConstruct", "prim::TupleConstruct"):
        return [name for v in node.inputs() for name in _sources(v)]
    return [value.debugName()]


def intermediates(path: Path, feeds: dict[str, np.ndarray], backend: str, known_modules: set[str]) -> Intermediates:
    """Run the TorchScript file at `path` once on `backend`, keeping every node's tensor output."""
    import torch

    from parity.formats.torchscript.runner import load_module
    from parity.frameworks.torch_tensors import tensor_to_numpy, to_torch

    module = load_module(Path(path), backend)
    tree = dict(module.named_modules())
    wrapped = str(getattr(module, "original_name", "")).startswith(WRAPPER) and "model" not in known_modules
    graph = module.inlined_graph  # a copy: the module's own forward is left as it is
    tensor = torch._C.TensorType.get()

    nodes: list[Node] = []
    kept = []  # (original value name, its clone)
    for n in list(graph.nodes()):
        if n.kind() in _PLUMBING:
            continue
        scopes = module_paths(n.getModuleHierarchy(), tree)
        if wrapped:
            scopes = [s for s in scopes if s != "model"]
        outputs = [v for v in n.outputs() if v.type().isSubtypeOf(tensor)]
        nodes.append(Node(f"%{n.outputsAt(0).debugName()}" if n.outputsSize() else n.kind(), n.kind(),
                          [strip(s, known_modules) for s in scopes],
                          [name for v in n.inputs() for name in _sources(v)], [v.debugName() for v in outputs]))
        anchor = n
        for v in outputs:
            none = graph.create("prim::Constant")
            none.output().setType(torch._C.NoneType.get())
            clone = graph.create("aten::clone", [v, none.output()], 1)
            clone.output().setType(v.type())
            none.insertAfter(anchor)
            clone.insertAfter(none)
            anchor = clone
            kept.append((v.debugName(), clone.output()))
    returned = list(graph.outputs())
    graph_outputs = {name for v in returned for name in _sources(v)}
    found, unmapped = module_tensors(nodes, graph_outputs, known_modules)
    # a known module with no op in the graph at all (an Identity, a forward that returns its input)
    scoped = {s for node in nodes for s in node.scopes}
    unmapped = sorted({*unmapped, *(m for m in known_modules if m not in scoped and m not in found)})

    packed = graph.create("prim::ListConstruct", [c for _, c in kept], 1)
    packed.output().setType(torch._C.ListType.ofTensors())
    graph.appendNode(packed)
    both = graph.create("prim::TupleConstruct", [returned[0], packed.output()], 1)
    both.output().setType(torch._C.TupleType([returned[0].type(), packed.output().type()]))
    graph.appendNode(both)
    graph.eraseOutput(0)
    graph.registerOutput(both.output())
    run = torch._C._create_function_from_graph("parity_intermediates", graph)

    with torch.inference_mode():
        _, tensors = run(module._c, *to_torch(feeds, backend))
        values = {name: tensor_to_numpy(t) for (name, _), t in zip(kept, tensors)}
    result = Intermediates(unmapped=unmapped, tensors=len(values),
                           note=f"every node's output recorded in one run of the saved program (torch "
                                f"{torch.__version__}, {backend}): its inlined graph, each tensor cloned as it "
                                "is made")
    return collect(nodes, values, found, result)
