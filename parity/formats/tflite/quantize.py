"""TFLite INT8: the litert-torch float model, then ai-edge-quantizer with a static recipe.

Ops are kept in float through ai-edge-quantizer's own recipe: each ``float_ops`` entry becomes a
recipe entry ``{"regex": entry, "operation": "*", "algorithm_key": "no_quantize"}`` added after the
named recipe (later entries win). ai-edge-quantizer matches ``regex`` with ``re.search`` against an
op's *scope*: its output tensors' names joined by ``;``, with a trailing ``;``
(``tfl_flatbuffer_utils.get_op_scope``); litert-torch names a tensor after the modules that produced
it (``...Sequential_features/torch.nn.modules.conv.Conv2d_3;1``), so a regex such as ``ReLU_5;``
picks the ops of one module. The quantizer leaves such an op's tensors in float and puts a
DEQUANTIZE before it and a QUANTIZE after it.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

import parity._triton_first  # noqa: F401

NO_QUANTIZE = "no_quantize"  # ai_edge_quantizer.algorithm_manager.AlgorithmName.NO_QUANTIZE


def op_scopes(path: Path) -> list[tuple[str, str]]:
    """(builtin op name, ai-edge-quantizer's scope) of each op of the first subgraph of the .tflite at
    `path`, in execution order: the strings a recipe entry's ``regex`` is searched in."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils
    from ai_edge_litert.tools import flatbuffer_utils

    from parity.formats.tflite.intermediates import _op_names

    model = flatbuffer_utils.read_model(str(path))
    graph, names = model.subgraphs[0], _op_names()
    out = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append((names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM"),
                    tfl_flatbuffer_utils.get_op_scope(op, graph.tensors)))
    return out


def float_recipe(float_ops, scopes: list[tuple[str, str]]) -> tuple[list[dict], dict[str, list[str]]]:
    """(the recipe entries keeping the ops that `float_ops` names in float, {entry: the ops it keeps, as
    ``KIND #index``}); an entry that is no valid regex, or that matches no op's scope, is refused."""
    entries, kept = [], {}
    for entry in float_ops or ():
        entry = str(entry)
        try:
            pattern = re.compile(entry)
        except re.error as e:
            raise ValueError(f"float_ops entry {entry!r} is not a regular expression ({e}); ai-edge-quantizer "
                             "searches each entry in an op's scope (its output tensor names joined by ';')") from None
        hits = [f"{kind} #{i}" for i, (kind, scope) in enumerate(scopes) if pattern.search(scope)]
        if not hits:
            listed = "; ".join(f"#{i} {kind}: {scope}" for i, (kind, scope) in enumerate(scopes))
            raise ValueError(f"float_ops entry {entry!r} matches no op of the float model (ai-edge-quantizer searches "
                             f"it in each op's scope, its output tensor names joined by ';'); the ops' scopes: {listed}")
        kept[entry] = hits
        entries.append({"regex": entry, "operation": "*", "algorithm_key": NO_QUANTIZE})
    return entries, kept


def tflite_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                calibration: dict[str, np.ndarray], recipe_name: str = "static_wi8_ai8",
                recipe: Optional[list[dict]] = None, float_ops: Optional[list[str]] = None) -> dict:
    """The litert-torch float model, then ai-edge-quantizer with a static recipe calibrated on the
    case's calibration data (at this artefact's batch size). A fully-int8 model takes and returns
    int8 tensors: the LiteRT runner quantizes inputs and dequantizes outputs with their scales.

    `recipe`: ai-edge-quantizer recipe entries (``regex``, ``operation``, ``algorithm_key``,
    ``op_config``) added after `recipe_name`'s; `float_ops`: regexes of op scopes to keep in float
    (after both, so they win; see the module docstring)."""
    from ai_edge_quantizer import quantizer, recipe as recipes

    from parity.formats.tflite.export import export as export_float

    if not hasattr(recipes, recipe_name):
        raise ValueError(f"export.tflite_int8.options.recipe_name: ai_edge_quantizer.recipe has no {recipe_name!r}")
    batch = int(example_inputs[0].shape[0])
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        meta = export_float(model, example_inputs, fp32, input_names=input_names, output_names=output_names)
        kept_entries, kept = float_recipe(float_ops, op_scopes(fp32))
        q = quantizer.Quantizer(str(fp32))
        q.load_quantization_recipe([*getattr(recipes, recipe_name)(), *(dict(e) for e in recipe or ()),
                                    *kept_entries])
        from ai_edge_litert.interpreter import Interpreter

        signatures = Interpreter(model_path=str(fp32)).get_signature_list()
        key = next(iter(signatures))
        names = signatures[key]["inputs"]
        n = len(next(iter(calibration.values())))
        feeds = [{name: v[start:start + batch] for name, v in zip(names, calibration.values())}
                 for start in range(0, n - batch + 1, batch)]
        result = q.calibrate({key: feeds})
        # its report goes to stdout, where it would run into parity's own (triage prints its table there)
        q.quantize(result, enable_progress_report=False).export_model(str(path), overwrite=True)
    return {**meta, "route": f"ai-edge-quantizer {recipe_name} on the litert-torch float model",
            **({"recipe": [dict(e) for e in recipe]} if recipe else {}),
            **({"float_ops": kept} if kept else {})}
