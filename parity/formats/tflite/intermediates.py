"""Intermediate tensors of a TFLite artefact, mapped back to the PyTorch modules that produced them.

One run of the artefact itself, no re-export, in the LiteRT interpreter with
``experimental_preserve_all_tensors`` (every op's output stays readable after ``invoke``), on the
target's op resolver (``cpu``: default kernels with XNNPACK, ``cpu-ref``: reference kernels).

Where the names come from: litert-torch writes, as each tensor's name, the MLIR location of the op
that produced it, built from torch.export's ``nn_module_stack``: one class-and-attribute segment per
module level (``torchvision.models.resnet.ResNet/torch.nn.modules.container.Sequential_layer1/
torchvision.models.resnet.BasicBlock_0/torch.nn.modules.conv.Conv2d_conv1;``). When the converter
fuses ops, their locations are joined (``relu;;bn1;;conv1;``, the last applied first), and a digit
after the last ``;`` only makes the name unique. The output that the signature renames
(``serving_default_output_0_output``) loses its location; its op is then placed by its weights' names.

Fused activations: a CONV_2D, FULLY_CONNECTED, ADD or MUL with a fused RELU/RELU6/TANH keeps no
tensor before the activation, so the module before it (a BatchNorm folded into the convolution) could
never be compared. Before the run, each such op is split in the flatbuffer into the op without its
activation and the activation as an op of its own (the same arithmetic, in two kernels); the first
location goes to the activation, the next one not yet placed to the op, and the rest (a Conv folded
into the BatchNorm after it) have no tensor of their own: they are listed, not dropped.

Layout: litert-torch keeps PyTorch's channels-first semantics at the graph's edges and moves
convolutions to channels-last (NHWC) between TRANSPOSE ops. Each tensor's layout is followed from the
inputs through the graph (a TRANSPOSE by (0, 2, 3, 1) makes a channels-first tensor channels-last,
other ops keep their input's), and channels-last tensors are transposed back before they are
compared with eager. Float tensors only (the INT8 variants are triaged module by module).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from parity.formats.intermediates import Intermediates, Node, collect, module_tensors, strip

#: ActivationFunctionType -> the builtin op that applies it on its own (SIGN_BIT has none)
ACTIVATIONS = {1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
CHANNELS_FIRST, CHANNELS_LAST = "channels-first", "channels-last"
#: ops whose output keeps its input's layout only where the shape is kept
_RESHAPING = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "BROADCAST_TO", "GATHER", "GATHER_ND"}
#: ops that only move or pad data: the converter puts a Conv2d's padding (PAD, with the Conv's
#: location) before the CONV_2D that computes it, and that padded input is not the module's output
_MOVING = {"PAD", "PADV2", "MIRROR_PAD", "TRANSPOSE", "RESHAPE"}


@dataclass
class _Op:
    """One op of the (split) graph, as the mapping sees it."""

    name: str  # "op12", or "op12/RELU" for an activation split off op12
    kind: str  # the builtin op's name
    inputs: list[int]
    outputs: list[int]
    locations: list[str] = field(default_factory=list)  # module paths ("" for the root), as recorded
    constants: list[int] = field(default_factory=list)  # inputs with data in the file
    named: Optional[int] = None  # the file's tensor whose name holds the op's locations


def _attribute(segment: str, parent: str, known: set[str]) -> str:
    """The attribute name in one ``<module.Class>_<attribute>`` segment of a location.

    Class names and attributes may both hold underscores: the split that names a module the eager
    model ran wins, else the first underscore after the class name's leading ones."""
    tail = segment.rsplit(".", 1)[-1]  # the qualname's last part and the attribute (never dotted)
    cuts = [i for i, ch in enumerate(tail) if ch == "_" and tail[:i].strip("_") and i + 1 < len(tail)]
    names = [tail[i + 1:] for i in cuts] or [tail]
    for name in names:
        full = f"{parent}.{name}" if parent else name
        if full in known:
            return name
    for name in names:
        full = f"{parent}.{name}" if parent else name
        if strip(full, known) in known:
            return name
    # A ModuleList or Sequential indexed in forward() (BERT's encoder.layer[i], GPT-2's h[i]) is never
    # called, so no location names it: the child is found one level further down.
    base = strip(parent, known) if parent else ""
    base = base if base in known else ""
    for name in names:
        for module in sorted(known):
            rest = module[len(base) + 1:].split(".") if base and module.startswith(base + ".") else \
                module.split(".") if not base else []
            if len(rest) == 2 and rest[1] == name:
                return f"{rest[0]}.{name}"
    return names[0]


def module_path(piece: str, known: set[str]) -> str:
    """The module path of one location piece (``""``: the root module's own code)."""
    path = ""
    for segment in piece.split("/")[1:]:
        path = f"{path}.{_attribute(segment, path, known)}" if path else _attribute(segment, path, known)
    return path


def locations(name: str, known: set[str]) -> Optional[list[str]]:
    """The module paths a tensor name records, last applied first; None when it records none."""
    if ";" not in name:
        return None
    found: list[str] = []
    for piece in name.split(";"):
        if piece and not piece.isdigit():
            path = module_path(piece, known)
            if path not in found:
                found.append(path)
    return found


def scopes(path: str, known: set[str]) -> list[str]:
    """Every module that `path` lies in, outermost first, as the eager model names them."""
    parts = path.split(".") if path else []
    out: list[str] = []
    for i in range(1, len(parts) + 1):
        s = strip(".".join(parts[:i]), known)
        if (s in known or not known) and s not in out:
            out.append(s)
    return out


def _op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def split_activations(model) -> list[_Op]:
    """Split every op with a fused activation into the op and the activation (in place, on the
    flatbuffer's object form); the ops of the first subgraph in execution order, with their names."""
    from ai_edge_litert import schema_py_generated as schema

    names = _op_names()
    codes = model.operatorCodes
    graph = model.subgraphs[0]

    def kind(op) -> str:
        code = codes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        return names.get(builtin, "CUSTOM") if builtin != schema.BuiltinOperator.CUSTOM else \
            f"CUSTOM:{(code.customCode or b'').decode() if isinstance(code.customCode, bytes) else code.customCode}"

    def opcode(name: str) -> int:
        builtin = getattr(schema.BuiltinOperator, name)
        for i, code in enumerate(codes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
                return i
        codes.append(schema.OperatorCodeT(deprecatedBuiltinCode=min(builtin, 127), builtinCode=builtin, version=1))
        return len(codes) - 1

    def constant(index: int) -> bool:
        number = graph.tensors[index].buffer
        buffer = model.buffers[number] if number < len(model.buffers) else None
        return buffer is not None and buffer.data is not None and len(buffer.data) > 0

    ops: list[_Op] = []
    rewritten = []
    for i, op in enumerate(graph.operators):
        inputs = [int(t) for t in op.inputs if t >= 0]
        consts = [t for t in inputs if constant(t)]
        act = getattr(op.builtinOptions, "fusedActivationFunction", 0) if op.builtinOptions is not None else 0
        if act not in ACTIVATIONS or len(op.outputs) != 1:
            rewritten.append(op)
            ops.append(_Op(f"op{i}", kind(op), inputs, [int(t) for t in op.outputs], constants=consts,
                           named=int(op.outputs[0]) if len(op.outputs) else None))
            continue
        out = int(op.outputs[0])
        before = copy.copy(graph.tensors[out])
        name = graph.tensors[out].name
        before.name = f"{name.decode() if isinstance(name, bytes) else name}/before-{ACTIVATIONS[act]}"
        model.buffers.append(schema.BufferT())
        before.buffer = len(model.buffers) - 1
        graph.tensors.append(before)
        index = len(graph.tensors) - 1
        op.builtinOptions.fusedActivationFunction = 0
        op.outputs = [index]
        activation = schema.OperatorT()
        activation.opcodeIndex = opcode(ACTIVATIONS[act])
        activation.inputs, activation.outputs = [index], [out]
        rewritten += [op, activation]
        ops += [_Op(f"op{i}", kind(op), inputs, [index], constants=consts, named=out),
                _Op(f"op{i}/{ACTIVATIONS[act]}", ACTIVATIONS[act], [index], [out])]
    graph.operators = rewritten
    return ops


def _place(ops: list[_Op], names: dict[int, str], known: set[str], outputs: set[int]) -> None:
    """Give each op the locations it carries: an activation split off an op takes the op's first
    location, the op the rest; an output renamed by the signature takes its weights' names."""
    for i, op in enumerate(ops):
        if "/" in op.name:
            continue
        found = locations(names[op.named], known) if op.named is not None else None
        if found is None and op.named in outputs:
            found = next((f for f in (locations(names[c], known) for c in op.constants) if f), None)
        found = found or []
        # A computing op named only after an enclosing module while its weights name a module inside it:
        # the converter moved a reshape across it (Swin's window reverse around attn.proj) and the names
        # moved with the positions, so the reshape before it carries the Linear's location. The weights say
        # whose op it is.
        if found and op.kind not in _MOVING and op.constants:
            weights = next((f for f in (locations(names[c], known) for c in op.constants) if f), None) or []
            inner = [w for w in weights[:1] if w not in found and any(w.startswith(f + ".") for f in found if f)]
            found = inner + found
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if nxt is not None and nxt.name.startswith(op.name + "/") and found:
            nxt.locations = found[:1]
            found = found[1:] or found[:1]
        op.locations = found
    # An activation module that goes on computing after its split-off op (Hardsigmoid is relu6(x + 3) / 6,
    # and the converter folds the + 3 into the conv's bias) left part of itself in the op before it:
    # that op's tensor is no module's output, and the op after the activation is the activation's alone
    # (the conv is then named with the activation's tensor).
    for i, op in enumerate(ops[:-2]):
        act, after = ops[i + 1], ops[i + 2]
        if act.name.startswith(op.name + "/") and act.locations and after.kind in ("MUL", "DIV", "ADD", "SUB") \
                and after.locations[:1] == act.locations[:1] and act.locations[0] not in op.locations:
            after.locations = [p for p in after.locations if p not in op.locations]
            op.locations = []


def _primary(op: _Op, placed: set[str]) -> Optional[str]:
    """The module whose output an op's tensor is: its first location not already some earlier op's
    (a cancelled TRANSPOSE leaves the previous module's location on the next op)."""
    if not op.locations:
        return None
    fresh = [p for p in op.locations if p not in placed]
    pick = (fresh or op.locations)[0]
    # An enclosing module's own code fused into the same kernel (attention's 1/d**0.25 scale folded into
    # the query and key Linears' weights; the order of the locations does not say which came last): the
    # tensor is the enclosing module's, not the child's output.
    enclosing = [p for p in op.locations if pick.startswith(p + ".")]
    return enclosing[0] if enclosing else pick


def _layouts(ops: list[_Op], shapes: dict[int, tuple], values: dict[int, np.ndarray],
             start: dict[int, str]) -> dict[int, Optional[str]]:
    """Each tensor's layout against eager, followed from the inputs' (`start`)."""
    layout: dict[int, Optional[str]] = dict(start)
    for op in ops:
        dynamic = [t for t in op.inputs if t not in op.constants]
        for out in op.outputs:
            if out not in shapes:
                continue
            rank = len(shapes[out])
            if rank < 3:
                layout[out] = CHANNELS_FIRST  # nothing to transpose
                continue
            if op.kind == "TRANSPOSE" and dynamic and len(op.inputs) > 1 and op.inputs[1] in values:
                perm = tuple(int(p) for p in values[op.inputs[1]])
                to_last, to_first = (0, *range(2, rank), 1), (0, rank - 1, *range(1, rank - 1))
                source = layout.get(dynamic[0])
                layout[out] = CHANNELS_LAST if (source, perm) == (CHANNELS_FIRST, to_last) else \
                    CHANNELS_FIRST if (source, perm) == (CHANNELS_LAST, to_first) else None
                continue
            same = [t for t in dynamic if shapes.get(t) == shapes[out]]
            if op.kind not in _RESHAPING:
                same += [t for t in dynamic if t not in same and len(shapes.get(t, ())) == rank]
            layout[out] = next((layout[t] for t in same if layout.get(t)), None)
    return layout


def _channels_first(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, x.ndim - 1, *range(1, x.ndim - 1)))


def plain_run_agreement(plain: dict[int, np.ndarray], kept: dict[int, np.ndarray]) -> str:
    """How the final outputs of the run that kept every tensor compare with the plain run's, for the note
    (LiteRT's preserve-all-tensors is reported upstream to change outputs in some models)."""
    worst, scale = 0.0, 0.0
    for i, a in plain.items():
        b = kept.get(i)
        if b is None or b.shape != a.shape or not a.size:
            continue
        if not np.array_equal(np.isfinite(a), np.isfinite(b)):
            return ("its final outputs have NaN/Inf where the plain run has none (or the reverse): "
                    "preserve-all-tensors changed the run, so its tensors may not be the plain run's")
        both = np.isfinite(a)
        if both.any():
            worst = max(worst, float(np.max(np.abs(a[both].astype(np.float64) - b[both]))))
            scale = max(scale, float(np.max(np.abs(a[both]))))
    if worst == 0.0:
        return ("its final outputs equal the plain run's bit for bit (preserve-all-tensors, reported upstream "
                "to change outputs in some models, does not here)")
    return (f"its final outputs differ from the plain run's by up to {worst:.3g} "
            f"({worst / scale if scale else 0:.3g} of max|output|): preserve-all-tensors (and the split "
            "activations) changed the arithmetic, so differences of that size are the run's, not the export's")


def open_interpreter(content: bytes | None, path: Path, backend: str, names: list[str], preserve: bool = True):
    """(a LiteRT interpreter of `content` (else the file at `path`) on `backend`'s op resolver, keeping every
    tensor when `preserve`; its input details in the case's order of `names`)."""
    from ai_edge_litert import interpreter as litert

    from parity.formats.tflite.runner import RESOLVERS, _ordered

    source = {"model_content": content} if content is not None else {"model_path": str(path)}
    with warnings.catch_warnings():  # "intended for debugging purposes only": that is what this is
        warnings.simplefilter("ignore", UserWarning)
        interpreter = litert.Interpreter(**source, experimental_preserve_all_tensors=preserve,
                                         experimental_op_resolver_type=getattr(litert.OpResolverType,
                                                                               RESOLVERS.get(backend, "AUTO")))
    signatures = interpreter._get_full_signature_list() or {}
    signature = next(iter(signatures.values())) if len(signatures) == 1 else {}
    details = _ordered(interpreter.get_input_details(), signature.get("inputs", {}), names)
    if len(details) != len(names):
        raise ValueError(f"{Path(path).name} takes {len(details)} inputs, the case gives {len(names)}")
    return interpreter, details


def intermediates(path: Path, feeds: dict[str, np.ndarray], backend: str, known_modules: set[str]) -> Intermediates:
    """Run the .tflite file at `path` once on `backend` with every op's output kept."""
    from ai_edge_litert.tools import flatbuffer_utils

    from parity.formats.tflite.runner import (AS_CASE, CHANNELS_LAST as INPUT_LAST, _version, match_layout,
                                              to_channels_last)

    known = set(known_modules)
    data = Path(path).read_bytes()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    graph = model.subgraphs[0]
    names = {i: (t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")) for i, t in
             enumerate(graph.tensors)}
    ops = split_activations(model)
    split = sum(1 for op in ops if "/" in op.name)
    outputs = {int(t) for t in graph.outputs}
    _place(ops, names, known, outputs)
    if not any(op.locations for op in ops):
        return Intermediates(note="the file's tensor names carry no module locations (litert-torch writes them "
                                  "from torch.export's nn_module_stack; other converters do not), so no tensor "
                                  "maps to a module")
    content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))

    def run(model_bytes: bytes, preserve: bool):
        interpreter, details = open_interpreter(model_bytes, path, backend, list(feeds), preserve)
        fed, layouts = [], {}
        for (name, array), detail in zip(feeds.items(), details):
            shape = (int(array.shape[0]), *(int(d) for d in detail["shape"][1:]))
            layout = match_layout(shape, array.shape) or AS_CASE
            fed.append((detail["index"], (to_channels_last(array) if layout == INPUT_LAST else array)
                        .astype(detail["dtype"], copy=False)))
            layouts[detail["index"]] = CHANNELS_LAST if layout == INPUT_LAST else CHANNELS_FIRST
            if shape[0] != int(detail["shape"][0]):
                interpreter.resize_tensor_input(detail["index"], list(shape))
        interpreter.allocate_tensors()
        for index, array in fed:
            interpreter.set_tensor(index, np.ascontiguousarray(array))
        interpreter.invoke()
        return interpreter, layouts

    plain, _ = run(data, False)
    final = {i: np.array(plain.get_tensor(i)) for i in outputs}
    del plain
    interpreter, start = run(content, True)
    values: dict[int, np.ndarray] = {}
    for op in ops:
        # small constants too: a TRANSPOSE's permutation (for the layout), and a PADV2's -inf before a
        # max pool, which is padding on purpose and not where a NaN/Inf starts
        for t in (*op.inputs, *op.outputs):
            shape = graph.tensors[t].shape
            small = shape is None or int(np.prod(shape)) <= 8
            if t not in values and (t not in op.constants or small):
                try:
                    values[t] = np.array(interpreter.get_tensor(t))
                except ValueError:  # a tensor without data (an optional input)
                    pass
    del interpreter
    shapes = {t: tuple(v.shape) for t, v in values.items()}
    layout = _layouts(ops, shapes, values, start)

    placed: set[str] = set()
    nodes: list[Node] = []
    seen: set[str] = set()
    for op in ops:
        primary = _primary(op, placed)
        for p in op.locations:
            seen.update(scopes(p, known))
        if primary is not None:
            placed.add(primary)
        nodes.append(Node(op.name, op.kind, scopes(primary, known) if primary else [],
                          [f"#{t}" for t in op.inputs if t in values], [f"#{t}" for t in op.outputs]))
    found, unmapped = module_tensors(nodes, {f"#{t}" for t in outputs}, known)
    holders: dict[str, list[set[str]]] = {}
    for op in ops:
        held = {s for p in op.locations for s in scopes(p, known)}
        for t in op.inputs:
            holders.setdefault(f"#{t}", []).append(held)
    for module, (name, kind, _) in list(found.items()):
        if kind in _MOVING and any(module in held for held in holders.get(name, [])):
            del found[module]  # its padded input: the op that reads it computes the module
    compared = {name for name, _, _ in found.values()}
    floating: dict[str, np.ndarray] = {}
    moved = 0
    for t, v in values.items():
        if np.issubdtype(v.dtype, np.floating):
            if layout.get(t) == CHANNELS_LAST and v.ndim >= 3:
                v = _channels_first(v)
                moved += f"#{t}" in compared
            floating[f"#{t}"] = v
    result = Intermediates(unmapped=sorted(set(unmapped) | (seen - set(found))),
                           tensors=sum(1 for op in ops for t in op.outputs if f"#{t}" in floating))
    result = collect(nodes, floating, found, result)
    same = plain_run_agreement(final, {i: values[i] for i in outputs if i in values})
    kernels = "default resolver (XNNPACK)" if backend == "cpu" else "reference kernels (BUILTIN_REF)"
    result.note = (f"every op's output read in one run of the artefact on LiteRT {_version()} ({kernels}) with "
                   "experimental_preserve_all_tensors; "
                   + (f"{split} fused activation(s) split into ops of their own so that the tensor before each "
                      "is kept; " if split else "") + same
                   + (f"; {moved} channels-last (NHWC) tensor(s) transposed to channels-first to compare with eager"
                      if moved else ""))
    return result
