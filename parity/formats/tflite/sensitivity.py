"""Each quantized op of an ai-edge-quantizer INT8 .tflite next to the same op of the fp32 .tflite of the
same case, for triage's precision sensitivity (:mod:`parity.sensitivity`).

What ai-edge-quantizer 0.10 does to the litert-torch float model (read from its output on the digits
CNN): the ops, their order and their tensors' names stay; a quantized op's tensors become INT8 (INT32
biases) with a scale and zero point each; an op kept in float (``no_quantize``, the ``float_ops``
option) reads a ``DEQUANTIZE`` output named ``<tensor>_dequant`` and writes its own tensor in float,
which a ``QUANTIZE`` (``<tensor>_quantized``) hands on. So an op of the INT8 file matches the op of the
fp32 file whose output tensor has the same name; its activation input is followed back through
QUANTIZE/DEQUANTIZE ops to a name the fp32 file has. Quantized tensors are dequantized,
``(q - zero_point) * scale``, before they are compared.

A layer is an op that computes (not a QUANTIZE/DEQUANTIZE, not an op that only moves values) and that
the quantizer touched: its output is quantized, or it reads quantized constants (weights). Its
identifier is the shortest ai-edge-quantizer scope regex that picks it alone among the fp32 file's
ops (:func:`scope_regex`): the string the ``float_ops`` option takes.

Both files run on the LiteRT interpreter with ``experimental_preserve_all_tensors``, in chunks of their
own (static) batch size, on the same inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from parity.formats.intermediates import LayerTensors

QDQ = {"QUANTIZE", "DEQUANTIZE"}
#: ops that only move or select values: a quantized one keeps its input's scale, so it adds no noise of its own
DATA_MOVEMENT = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "SPLIT", "SPLIT_V", "SLICE",
                 "STRIDED_SLICE", "GATHER", "GATHER_ND", "PAD", "PADV2", "MAX_POOL_2D", "DEPTH_TO_SPACE",
                 "SPACE_TO_DEPTH", "TILE", "BROADCAST_TO", "PACK", "UNPACK", "REDUCE_MAX", "REDUCE_MIN", "SHAPE",
                 "CAST", "RESIZE_NEAREST_NEIGHBOR"}
#: the tensor types of quantized values (schema TensorType: INT8, UINT8, INT16, INT32 and the int4/int2 weights)
_QUANTIZED_TYPES = {9, 3, 7, 2, 17, 18}


@dataclass
class _Graph:
    model: object
    ops: list[tuple[str, list[int], list[int]]]  # (builtin name, inputs, outputs)
    names: dict[int, str]
    constant: set[int]


def _graph(path: Path) -> _Graph:
    from ai_edge_litert.tools import flatbuffer_utils

    from parity.formats.tflite.intermediates import _op_names

    model = flatbuffer_utils.read_model(str(path))
    graph, kinds = model.subgraphs[0], _op_names()
    names = {i: (t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")) for i, t in
             enumerate(graph.tensors)}
    constant = set()
    for i, t in enumerate(graph.tensors):
        buffer = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if buffer is not None and buffer.data is not None and len(buffer.data) > 0:
            constant.add(i)
    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        ops.append((kinds.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM"),
                    [int(t) for t in op.inputs if t >= 0], [int(t) for t in op.outputs if t >= 0]))
    return _Graph(model, ops, names, constant)


def _scope(names: list[str]) -> str:
    """ai-edge-quantizer's scope of an op with these output names (tfl_flatbuffer_utils.get_op_scope)."""
    names = [n for n in names if n]
    return ";".join(names) + (";" if names else "")


def scope_regex(index: int, scopes: list[str]) -> str:
    """The shortest regex that ai-edge-quantizer's recipe matches (``re.search``) in the scope of op
    `index` alone among `scopes`: a module segment of its tensor name (``ReLU_5;``, ``Conv2d_0;``) when one
    is unique, else the whole scope, escaped and anchored."""
    scope = scopes[index]
    pieces = [p for p in scope.split(";") if p and not p.isdigit()]
    candidates = []
    for piece in reversed(pieces):  # litert-torch lists the last applied module first: try the op's own first
        tail = piece.rsplit("/", 1)[-1]
        candidates += [tail.rsplit(".", 1)[-1] + ";", re.escape(tail) + ";", re.escape(piece) + ";"]
    for candidate in sorted(dict.fromkeys(candidates), key=len):
        pattern = re.compile(candidate)
        if [i for i, s in enumerate(scopes) if pattern.search(s)] == [index]:
            return candidate
    return "^" + re.escape(scope) + "$"


def _run(path: Path, graph: _Graph, feeds: dict[str, np.ndarray], backend: str, wanted: set[int]) -> dict:
    """{tensor index: value, dequantized, over all samples} for the `wanted` tensors of one file."""
    from parity.formats.tflite.intermediates import open_interpreter
    from parity.formats.tflite.runner import CHANNELS_LAST, _quantize, match_layout, to_channels_last

    interpreter, details = open_interpreter(None, path, backend, list(feeds))
    interpreter.allocate_tensors()
    batch = int(details[0]["shape"][0])
    n = len(next(iter(feeds.values())))
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    chunks: dict[int, list[np.ndarray]] = {t: [] for t in wanted}
    for start in range(0, n, batch):
        m = min(batch, n - start)
        for (name, array), detail in zip(feeds.items(), details):
            part = array[start:start + batch]
            if m < batch:  # the last chunk padded to the static batch
                part = np.concatenate([part, np.repeat(part[-1:], batch - m, axis=0)])
            if match_layout(tuple(int(d) for d in detail["shape"]), part.shape) == CHANNELS_LAST:
                part = to_channels_last(part)
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(_quantize(part, detail)))
        interpreter.invoke()
        for t in wanted:
            value = np.array(interpreter.get_tensor(t))
            q = tensors[t]["quantization_parameters"]
            if value.dtype.kind in "iu" and len(q["scales"]) == 1:
                value = (value.astype(np.float32) - q["zero_points"][0]) * q["scales"][0]
            chunks[t].append(value[:m] if value.ndim and value.shape[0] == batch else value)
    return {t: np.concatenate(v) if v[0].ndim else v[0] for t, v in chunks.items()}


def layer_tensors(fp32_path: Path, int8_path: Path, feeds: dict[str, np.ndarray],
                  backend: str) -> tuple[list[LayerTensors], list[str], str]:
    """(the quantized ops in execution order, what could not be matched and why, how it was read)."""
    from parity.formats.tflite.intermediates import locations
    from parity.formats.tflite.runner import _version

    g32, g8 = _graph(fp32_path), _graph(int8_path)
    by_name32 = {name: i for i, name in g32.names.items() if name}
    scopes32 = [_scope([g32.names[t] for t in outs]) for _, _, outs in g32.ops]
    producer8 = {t: (kind, ins) for kind, ins, outs in g8.ops for t in outs}
    types8 = {i: t.type for i, t in enumerate(g8.model.subgraphs[0].tensors)}

    def fp32_of(t: int) -> Optional[int]:
        """The fp32 file's tensor that tensor `t` of the INT8 file carries (through QUANTIZE/DEQUANTIZE)."""
        seen = 0
        while seen < 8:
            if g8.names.get(t) in by_name32:
                return by_name32[g8.names[t]]
            kind, ins = producer8.get(t, ("", []))
            if kind not in QDQ or not ins:
                return None
            t, seen = ins[0], seen + 1
        return None

    def quantized_weight(t: int) -> bool:
        if t in g8.constant:
            return types8[t] in _QUANTIZED_TYPES
        kind, ins = producer8.get(t, ("", []))
        return kind == "DEQUANTIZE" and bool(ins) and ins[0] in g8.constant

    layers, unmatched = [], []
    for kind, ins, outs in g8.ops:
        if kind in QDQ or kind in DATA_MOVEMENT or not outs:
            continue
        out = outs[0]
        weights = [t for t in ins if quantized_weight(t)]
        if types8[out] not in _QUANTIZED_TYPES and not weights:
            continue  # kept in float (float_ops) or left alone by the quantizer
        twin = by_name32.get(g8.names[out])
        op32 = next((i for i, (_, _, o) in enumerate(g32.ops) if twin in o), None)
        if twin is None or op32 is None:
            unmatched.append(f"{kind} {g8.names[out]}: no tensor of that name in the fp32 file")
            continue
        activation = next((t for t in ins if t not in g8.constant and not quantized_weight(t)), None)
        names = [g8.names[out], *(g32.names[t] for t in g32.ops[op32][1] if t in g32.constant)]
        module = next((found[-1] for found in (locations(n, set()) for n in names) if found), "")
        layers.append((scope_regex(op32, scopes32), kind, module, g8.names[out], twin, out,
                       None if activation is None else fp32_of(activation), activation))

    values32 = _run(fp32_path, g32, feeds, backend, {t for layer in layers for t in (layer[4], layer[6]) if t is not None})
    values8 = _run(int8_path, g8, feeds, backend, {t for layer in layers for t in (layer[5], layer[7]) if t is not None})
    found = []
    for node, kind, module, tensor, t32, t8, in32, in8 in layers:
        a, b = values32[t32], values8[t8]
        if a.shape != b.shape:
            unmatched.append(f"{node} ({kind}): {tensor} is {list(a.shape)} in fp32, {list(b.shape)} in INT8")
            continue
        pair = (None, None) if in32 is None or in8 is None else (values32[in32], values8[in8])
        if pair[0] is not None and pair[0].shape != pair[1].shape:
            pair = (None, None)
        found.append(LayerTensors(node, kind, module, tensor, a, b, *pair))
    note = (f"the fp32 and INT8 .tflite files each run on LiteRT {_version()} with experimental_preserve_all_tensors "
            "in chunks of their own batch size; each quantized op's output, dequantized with its scale and zero point, "
            "compared with the fp32 tensor of the same name; each op named by the ai-edge-quantizer scope regex that "
            "picks it alone")
    return found, unmatched, note
