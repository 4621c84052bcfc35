"""Each op of an fp16 Core ML program next to the same op of the fp32 program of the same case, for
triage's precision sensitivity (:mod:`parity.sensitivity`).

What coremltools 9.0 does to names (read from its output): converting to FLOAT16 rewrites every op it
casts (``FP16ComputePrecision``) into ``<name>_cast_fp16``, whose output carries that name too, and
adds ``cast`` ops (``<var>_to_fp16``, and a last one back to fp32 that takes the output's name); an op
it keeps in fp32 (a constant beyond fp16's range, or one named in the case's ``fp32_ops``) keeps its
name. So an fp16 op matches the fp32 op of its name without ``_cast_fp16``; failing that, the one op
of the same type and the same module in both programs' scope files
(:mod:`parity.formats.coreml.scopes`). Outputs match in order; a ``cast`` carries its input's match.

Both packages are evaluated once by parity's MIL reference evaluator with every op's output kept: the
values are what the programs compute in their own dtypes, not what the Core ML runtime does on a
device. An op's input is taken before the ``cast`` that feeds it (kept in fp32, the op would read
that value), so the overflow of a cast into fp16 is the noise of the op after it. An op kept in fp32
whose fp32 output exceeds fp16's largest value (65504) would overflow at the cast back to fp16, so
its consumers must stay in fp32 too: each op says which (``keep_with``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parity.formats.coreml.intermediates import _names
from parity.formats.intermediates import LayerTensors

FP16_MAX = 65504.0
SUFFIX = "_cast_fp16"

#: ops that only move or select values: exact in fp16, so they add no noise of their own
DATA_MOVEMENT = {"reshape", "transpose", "squeeze", "expand_dims", "slice_by_index", "slice_by_size", "concat",
                 "split", "gather", "gather_nd", "gather_along_axis", "tile", "pad", "identity", "stack",
                 "max_pool", "reduce_max", "reduce_min", "depth_to_space", "space_to_depth", "pixel_shuffle",
                 "shape", "cast", "flatten2d", "reverse", "upsample_nearest_neighbor"}


def _run(path: Path, feeds: dict[str, np.ndarray]):
    """(evaluator, {output name: value} for every float op output and input)."""
    from parity.formats.coreml.mil_ref import Evaluator, load_program

    evaluator = Evaluator(load_program(path)[0])
    names = evaluator.input_names
    if len(feeds) != len(names):
        raise ValueError(f"the program takes {len(names)} inputs {names}, the case gives {len(feeds)}: {list(feeds)}")
    values = {n: np.asarray(v, np.float32) for n, v in zip(names, feeds.values())}

    def keep(op, outputs) -> None:
        for name, value in outputs.items():
            if value.is_floating_point():
                values[name] = value.detach().float().numpy().copy()

    evaluator.run(dict(zip(names, feeds.values())), record=keep)
    return evaluator, values


def layer_tensors(fp32_path: Path, fp16_path: Path, feeds: dict[str, np.ndarray],
                  backend: str) -> tuple[list[LayerTensors], list[str], str]:
    """(the ops computed in fp16, in program order; what could not be matched and why; how it was read)."""
    import coremltools as ct
    from coremltools.converters.mil.mil import types

    from parity.formats.coreml import scopes

    ev32, values32 = _run(fp32_path, feeds)
    ev16, values16 = _run(fp16_path, feeds)
    scopes32 = (scopes.read(Path(fp32_path)) or {}).get("ops", {})
    scopes16 = (scopes.read(Path(fp16_path)) or {}).get("ops", {})
    ops32 = {op.name: op for op in ev32.ops if op.op_type != "const"}

    keys32: dict = {}
    for o in ops32.values():
        keys32.setdefault((o.op_type, tuple(scopes32.get(o.name, []))), []).append(o)
    unique32 = {k: v[0] for k, v in keys32.items() if len(v) == 1 and k[1]}  # one op of its type in its module
    consumers: dict[str, list] = {}
    for op in ops32.values():
        for value in op.inputs.values():
            for n in _names(value):
                consumers.setdefault(n, []).append(op)

    def overflow_chain(op) -> list[str]:
        """The fp32 program's ops downstream of `op` that stay in fp32 with it: while a tensor crossing
        back to fp16 would overflow (its fp32 values exceed 65504), its consumers join."""
        chain, todo = [], [op]
        while todo:
            current = todo.pop(0)
            for out in current.outputs:
                v = values32.get(out.name)
                if v is None or not np.isfinite(v).all() or np.abs(v).max(initial=0.0) <= FP16_MAX:
                    continue
                for c in consumers.get(out.name, []):
                    if c.name not in chain and c.name != op.name and c.op_type != "cast":
                        chain.append(c.name)
                        todo.append(c)
        return chain

    var_map = {n: n for n in ev16.input_names}
    precast: dict[str, str] = {}  # a cast's output -> its input
    used: set[str] = set()
    found, unmatched = [], []
    for op in ev16.ops:
        if op.op_type == "const":
            continue
        if op.op_type == "cast":
            source = _names(op.inputs.get("x"))
            if source and source[0] in var_map:
                var_map[op.outputs[0].name] = var_map[source[0]]
                precast[op.outputs[0].name] = source[0]
            continue
        module16 = scopes16.get(op.name, [])
        twin = ops32.get(op.name.removesuffix(SUFFIX))
        if twin is None or twin.op_type != op.op_type or twin.name in used:
            twin = unique32.get((op.op_type, tuple(module16)))
            twin = None if twin is None or twin.name in used else twin
        if twin is None:
            unmatched.append(f"{op.name} ({op.op_type}): no op of that name (without {SUFFIX}) in the fp32 program, "
                             "nor a single one of its type in the same module")
            continue
        used.add(twin.name)
        for a, b in zip(op.outputs, twin.outputs):
            var_map[a.name] = b.name
        out = op.outputs[0]
        if types.builtin_to_string(out.dtype) != "fp16" or op.op_type in DATA_MOVEMENT:
            continue  # left in fp32 (by coremltools or fp32_ops), or only moves values
        a, b = values32.get(twin.outputs[0].name), values16.get(out.name)
        if a is None or b is None or a.shape != b.shape:
            unmatched.append(f"{twin.name} ({op.op_type}): its output {twin.outputs[0].name} is "
                             f"{None if a is None else list(a.shape)} in fp32, {None if b is None else list(b.shape)} "
                             "in fp16")
            continue
        activation = next((n for v in op.inputs.values() for n in _names(v)
                           if n in values16 and n in var_map and var_map[n] in values32), None)
        if activation in precast and precast[activation] in values16:
            # the cast into fp16 is part of running this op in fp16: kept in fp32, it reads the value before
            activation = precast[activation]
        pair = (None, None) if activation is None else (values32[var_map[activation]], values16[activation])
        if pair[0] is not None and pair[0].shape != pair[1].shape:
            pair = (None, None)
        module = (scopes32.get(twin.name) or module16 or [""])[-1]
        found.append(LayerTensors(twin.name, op.op_type, module, twin.outputs[0].name, a, b, *pair,
                                  keep_with=overflow_chain(twin)))
    note = (f"the fp32 and fp16 packages each evaluated once by parity's MIL reference evaluator (programs read by "
            f"coremltools {ct.__version__}; not the Core ML runtime) with every op's output kept; each fp16 op matched "
            f"with the fp32 op of its name without {SUFFIX} (else its type and module)")
    return found, unmatched, note
