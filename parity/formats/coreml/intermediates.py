"""Intermediate tensors of a Core ML ML Program (.mlpackage), mapped back to the source modules.

One run of the saved program itself, no re-export: the package is read back into a MIL program and
evaluated once by parity's MIL reference evaluator (:mod:`parity.formats.coreml.mil_ref`), which
hands over every op's output as it goes. The Core ML runtime exposes no intermediate tensors (and
exists on macOS only), so on every backend the tensors are the evaluator's: what the converted
program computes in its own dtypes, not what Core ML on a given device computes. The note says so.

Which module an op came from is what parity's exporter wrote into the package
(:mod:`parity.formats.coreml.scopes`: coremltools' scope of each op, which a saved package does not
keep). Through a trace every op carries its module path; through torch.export (``coreml_pt2``) every
op made from a node inside a module. coremltools fuses, as onnxruntime does: a Conv followed by an
inference BatchNorm becomes one conv op in the BatchNorm's scope, so the Conv has no tensor of its
own and is listed as such. A package converted elsewhere has no scope file and maps nothing (triage
then exports module by module). Core ML keeps torch's NCHW layout, so tensors compare with eager as
they are; parity's export makes the batch a ``RangeDim`` from 1, so a lone sample runs too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parity.formats.intermediates import Intermediates, Node, collect, module_tensors, strip


def _names(value) -> list[str]:
    """The variable names of an op input (a Var, or a tuple of them for concat/stack)."""
    if isinstance(value, (tuple, list)):
        return [n for v in value for n in _names(v)]
    name = getattr(value, "name", None)
    return [name] if name else []


def intermediates(path: Path, feeds: dict[str, np.ndarray], backend: str, known_modules: set[str]) -> Intermediates:
    """Evaluate the ML Program at `path` once on the MIL reference evaluator, keeping every op's output."""
    import coremltools as ct

    from parity.formats.coreml import scopes
    from parity.formats.coreml.mil_ref import Evaluator, load_program

    result = Intermediates()
    recorded = scopes.read(Path(path))
    if recorded is None:
        result.note = (f"the package carries no module scopes ({scopes.FILE}, written by parity's Core ML export: "
                       "a saved ML Program keeps op names only), so no tensor maps to a module")
        return result
    program, _ = load_program(path)
    evaluator = Evaluator(program)
    ops = [op for op in evaluator.ops if op.op_type != "const"]
    by_op = recorded["ops"]
    if not any(op.name in by_op for op in ops):
        result.note = (f"none of the program's ops is named in its {scopes.FILE} (the package was changed after "
                       "parity exported it?), so no tensor maps to a module")
        return result
    nodes = [Node(op.name, op.op_type, [strip(s, known_modules) for s in by_op.get(op.name, [])],
                  [n for value in op.inputs.values() for n in _names(value)], [v.name for v in op.outputs])
             for op in ops]
    found, result.unmapped = module_tensors(nodes, set(evaluator.output_names), known_modules)
    if not found:
        result.note = (f"no op's scopes in the package's {scopes.FILE} name a module of the model (recorded through "
                       f"{recorded.get('frontend', 'an unknown frontend')}), so no tensor maps to a module")
        return result
    values: dict[str, np.ndarray] = {}

    def keep(op, outputs) -> None:
        for name, value in outputs.items():
            if value.is_floating_point():
                values[name] = value.detach().clone().numpy()  # a later kernel may reuse the buffer

    names = evaluator.input_names
    if len(feeds) != len(names):
        raise ValueError(f"the program takes {len(names)} inputs {names}, the case gives {len(feeds)}: {list(feeds)}")
    evaluator.run(dict(zip(names, feeds.values())), record=keep)
    result.tensors = len(values)
    where = "" if backend == "mil-ref" else (
        f"; the {backend} backend's own values are out of reach (the Core ML runtime exposes no intermediate tensors)")
    result.note = (f"per-op outputs from parity's MIL reference evaluator, not the Core ML runtime: the saved program "
                   f"(read by coremltools {ct.__version__}, op scopes from {recorded.get('frontend', 'the export')}) "
                   f"evaluated once with every op's output kept{where}")
    return collect(nodes, values, found, result)
