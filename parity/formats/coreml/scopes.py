"""Which source modules each op of a converted ML Program came from, kept inside the package.

coremltools' torch frontend records on every MIL op the scope it was converted in (``op.scopes``),
and its graph passes carry the scope over to the ops they make (a Conv fused into the BatchNorm
after it keeps the BatchNorm's scope). Through a trace that is the module hierarchy
(``ScopeSource.TORCHSCRIPT_MODULE_NAME``: ``['layer1', '0', 'bn1', 'input.5']``, relative names then
the TorchScript value's name); through torch.export it is only the fx node's stack trace and its
``debug_handle`` (``EXIR_DEBUG_HANDLE``), so the exporter numbers the nodes itself and maps the
numbers through torch.export's ``nn_module_stack``. None of it is serialised: a saved .mlpackage
keeps op names only, so the exporter writes ``{op name: module paths}`` to :data:`FILE` in the
package root, where coremltools itself writes ``executorch_debug_handle_mapping.json``. The
intermediate-tensor reader (:mod:`parity.formats.coreml.intermediates`) reads it back.

Imports nothing heavy at module level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

FILE = "parity_module_scopes.json"
VERSION = 1


def number_nodes(program) -> dict[int, list[str]]:
    """Give every node of a torch.export program a ``debug_handle`` (the one per-node fact coremltools'
    torch.export frontend carries onto the MIL ops it makes) and return {handle: module paths,
    outermost first}. Call it on the program that is converted (after ``run_decompositions``)."""
    paths: dict[int, list[str]] = {}
    for handle, node in enumerate(program.graph.nodes):
        node.meta["debug_handle"] = handle
        paths[handle] = [p for p, _ in (node.meta.get("nn_module_stack") or {}).values() if p]
    return paths


def op_scopes(mil_program, handles: Optional[dict[int, list[str]]] = None) -> dict[str, list[str]]:
    """{op name: module paths, outermost first} for every non-const op of the program's ``main``
    function (nested blocks included): from the trace's module names, or, with `handles` (from
    :func:`number_nodes`), from the debug handle of the torch.export node each op was made from."""
    from coremltools.converters.mil.mil.scope import ScopeSource

    def walk(block):
        for op in block.operations:
            yield op
            for inner in op.blocks:
                yield from walk(inner)

    found: dict[str, list[str]] = {}
    for op in walk(mil_program.functions["main"]):
        if op.op_type == "const":
            continue
        if handles is not None:
            handle = (op.scopes.get(ScopeSource.EXIR_DEBUG_HANDLE) or [None])[0]
            found[op.name] = list(handles.get(handle, [])) if isinstance(handle, int) else []
            continue
        names = list(op.scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME) or [])[:-1]  # the last is the value's name
        paths: list[str] = []
        for name in names:
            if name == "UNKNOWN_SCOPE_NAME":  # coremltools' placeholder for a scope it could not parse
                break
            paths.append(f"{paths[-1]}.{name}" if paths else name)
        found[op.name] = paths
    return found


def write(package: Path, scopes: dict[str, list[str]], frontend: str) -> Path:
    """Write `scopes` into the saved `package` (a .mlpackage directory); returns the file."""
    target = Path(package) / FILE
    target.write_text(json.dumps({"version": VERSION, "frontend": frontend, "ops": scopes}, indent=0,
                                 sort_keys=True))
    return target


def record(mlmodel, package: Path, frontend: str, handles: Optional[dict[int, list[str]]] = None,
           root: str = "") -> Optional[Path]:
    """Write the converted `mlmodel`'s op scopes into its saved `package`; None (and no file) when the
    model holds no MIL program (coremltools keeps it in a private attribute). `root` is the path of
    the user's model inside the converted one (``model`` in parity's output-flattening wrapper): it is
    dropped, so the paths written are the user's own."""
    program = getattr(mlmodel, "_mil_program", None)
    if program is None or "main" not in getattr(program, "functions", {}):
        return None
    found = op_scopes(program, handles)
    if root:
        found = {op: [p.removeprefix(root + ".") for p in paths if p != root] for op, paths in found.items()}
    return write(package, found, frontend)


def read(package: Path) -> Optional[dict]:
    """The scopes file of `package` as written by :func:`write`, or None when there is none."""
    target = Path(package) / FILE
    if not target.is_file():
        return None
    data = json.loads(target.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("ops"), dict):
        raise ValueError(f"{target} is not a module-scope file written by parity (no 'ops' mapping)")
    return data
