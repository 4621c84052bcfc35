"""Intermediate tensors of a torch.export program (.pt2), mapped back to the source modules.

One run of the saved program itself (``torch.export.load(path).module()``, no re-export) under a
``torch.fx.Interpreter`` that keeps every node's output. torch.export records on each node the stack
of modules it was traced in (``nn_module_stack``: ``{..: ('layer1.0.conv1', 'Conv2d')}``), which
:func:`parity.formats.intermediates.module_tensors` turns into each module's output tensor. Nothing is
fused at this level (the program is ATen ops), so every module that computes has a tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parity.formats.intermediates import Intermediates, Node, collect, module_tensors, strip


def intermediates(path: Path, feeds: dict[str, np.ndarray], backend: str, known_modules: set[str]) -> Intermediates:
    """Run the program at `path` (a file, or a directory of per-batch programs) once on `backend`."""
    import torch
    import torch.fx

    from parity.formats.pt2.runner import load_program
    from parity.frameworks.torch_tensors import to_torch

    size = int(next(iter(feeds.values())).shape[0])
    path = Path(path)
    if path.is_dir():
        path = path / f"b{size}.pt2"
    module = load_program(path).module().to(backend)
    graph = module.graph
    fx_nodes = [n for n in graph.nodes if n.op == "call_function"]
    nodes = [Node(n.name, getattr(n.target, "__name__", str(n.target)),
                  [strip(p, known_modules) for p, _ in (n.meta.get("nn_module_stack") or {}).values() if p],
                  [a.name for a in n.all_input_nodes], [n.name]) for n in fx_nodes]
    outputs = {a.name for n in graph.nodes if n.op == "output" for a in n.all_input_nodes}
    found, unmapped = module_tensors(nodes, outputs, known_modules)
    values: dict[str, np.ndarray] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function" and isinstance(out, torch.Tensor) and out.is_floating_point():
                values[n.name] = out.detach().to("cpu").clone().numpy()
            return out

    with torch.no_grad():
        Recorder(module).run(*to_torch(feeds, backend))
    result = Intermediates(unmapped=unmapped, tensors=len(values),
                           note=f"every node's output recorded in one run of the saved program (torch {torch.__version__}, "
                                f"{backend}) under torch.fx.Interpreter")
    return collect(nodes, values, found, result)
