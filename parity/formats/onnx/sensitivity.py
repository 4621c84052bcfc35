"""The tensors of each quantized layer of an onnxruntime QDQ file next to the same tensors of the fp32
file it was quantized from, for triage's precision sensitivity (:mod:`parity.sensitivity`).

What onnxruntime's quantizer does to names (read from its output on the digits CNN, onnxruntime
1.32): compute nodes keep their name (``node_Conv_39``); a quantized activation ``t`` gets
``t -> QuantizeLinear -> t_QuantizeLinear_Output -> DequantizeLinear -> t_DequantizeLinear_Output``,
and a graph output's producer writes ``<output>_QuantizeLinear_Input`` so that the DequantizeLinear
can keep the output's name. A ReLU that follows a Conv is dropped (the activation's quantization
clips at zero), the Conv writing the ReLU's tensor name. So a layer's quantized output is the
DequantizeLinear output after it (what the next layer reads), and its fp32 counterpart is the name
before the QuantizeLinear with ``_QuantizeLinear_Input`` stripped. Both files run once, with every
tensor marked as an output (:func:`parity.formats.onnx.intermediates.run_marked`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parity.formats.intermediates import LayerTensors

#: ops that only move or select values: they reuse their input's scale, so keeping one in float
#: changes nothing the quantizer decided; they are not layers to rank
DATA_MOVEMENT = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "GlobalMaxPool", "Concat",
                 "Split", "Gather", "Slice", "Identity", "Expand", "Pad", "Tile", "DepthToSpace", "SpaceToDepth",
                 "Resize", "Shape", "Cast"}
QDQ = {"QuantizeLinear", "DequantizeLinear"}
OUTPUT_SUFFIX = "_QuantizeLinear_Input"


def layer_tensors(fp32_path: Path, int8_path: Path, feeds: dict[str, np.ndarray],
                  backend: str) -> tuple[list[LayerTensors], list[str], str]:
    """(the quantized layers in graph order, what could not be matched and why, how it was read)."""
    import onnx
    import onnxruntime as ort

    from parity.formats.onnx.intermediates import _scope, run_marked

    model = onnx.load(str(int8_path))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def float_name(name: str) -> str:
        """The fp32 file's name of a tensor of the INT8 file (through DequantizeLinear <- QuantizeLinear)."""
        node = producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear":
            q = producer.get(node.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                return float_name(q.input[0])
        return name[:-len(OUTPUT_SUFFIX)] if name.endswith(OUTPUT_SUFFIX) else name

    def dequantized(name: str) -> str:
        """The DequantizeLinear output that carries `name` after its QuantizeLinear, or `name`."""
        for q in consumers.get(name, []):
            if q.op_type == "QuantizeLinear":
                for dq in consumers.get(q.output[0], []):
                    if dq.op_type == "DequantizeLinear":
                        return dq.output[0]
        return name

    def is_weight(name: str) -> bool:
        node = producer.get(name)
        return name in initializers or (node is not None and node.op_type == "DequantizeLinear"
                                        and node.input[0] in initializers)

    layers, unmatched = [], []
    for node in graph.node:
        if node.op_type in QDQ or node.op_type in DATA_MOVEMENT or not node.output:
            continue
        fed = [i for i in node.input if i and producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"]
        out = node.output[0]
        if not fed and dequantized(out) == out:
            continue  # left in float by the quantizer (or excluded)
        weights = [float_name(i) for i in node.input[1:] if i and is_weight(i)]
        weights = [w[:-len("_DequantizeLinear_Output")] if w.endswith("_DequantizeLinear_Output") else w
                   for w in weights]
        scope = _scope(node)
        module = next((w.rsplit(".", 1)[0] for w in weights if w.endswith(".weight")), scope[-1] if scope else "")
        activation = next((i for i in node.input if i and not is_weight(i)), None)
        layers.append((node.name or out, node.op_type, module, float_name(out), dequantized(out),
                       None if activation is None else float_name(activation), activation))

    fp32_model = onnx.load(str(fp32_path))
    fp32_values, _ = run_marked(fp32_model, feeds, backend)
    fp32_inputs = [i.name for i in fp32_model.graph.input if i.name not in {t.name for t in fp32_model.graph.initializer}]
    fp32_values.update(zip(fp32_inputs, feeds.values()))  # the first layer's input is a graph input
    int8_values, marked = run_marked(model, feeds, backend)
    found = []
    for name, op, module, tensor, quantized, input_fp32, input_quantized in layers:
        if tensor not in fp32_values or quantized not in int8_values:
            unmatched.append(f"{name} ({op}): its output {tensor} has no tensor of that name in the fp32 file")
            continue
        a, b = np.asarray(fp32_values[tensor]), np.asarray(int8_values[quantized])
        if a.shape != b.shape:
            unmatched.append(f"{name} ({op}): {tensor} is {list(a.shape)} in fp32, {list(b.shape)} in INT8")
            continue
        pair = (fp32_values.get(input_fp32), int8_values.get(input_quantized))
        if pair[0] is None or pair[1] is None or np.shape(pair[0]) != np.shape(pair[1]):
            pair = (None, None)
        found.append(LayerTensors(name, op, module, tensor, a, b, *pair))
    note = (f"the fp32 and INT8 files each run once on onnxruntime {ort.__version__} ({backend}) with every tensor "
            f"marked as an output ({marked} in the INT8 file); each quantized layer's dequantized output is compared "
            "with the fp32 tensor of the same name")
    return found, unmatched, note
