"""TFLite on the LiteRT interpreter (``ai_edge_litert``): two CPU backends, and the layout question.

Backends: ``cpu`` is the default op resolver (XNNPACK delegate applied), ``cpu-ref`` the reference
kernels (``OpResolverType.BUILTIN_REF``). They are never bitwise equal (measured up to 6e-8 apart),
so they are distinct targets with their own goldens. LiteRT has no GPU delegate for Linux Python:
``cuda`` is always skipped with that reason.

Layout: the case's tensors are channels-first (NCHW); a TFLite artefact may take or return
channels-last (NHWC) tensors (``layout: nhwc``, or onnx2tf's default). :func:`inspect` decides each
tensor's layout once from its shape against the case's (preferring what the exporter declared when
both fit), records it in the artefact's metadata and notes, and the runner transposes accordingly,
so comparisons always happen in the case's layout.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
from ai_edge_litert import interpreter as litert

from parity.artefact import Artefact, Expected
from parity.formats.base import Runner, output_order

AS_CASE = "as the case"
CHANNELS_LAST = "channels-last"
RESOLVERS = {"cpu": "AUTO", "cpu-ref": "BUILTIN_REF"}
_LITERT_TORCH_NAME = re.compile(r"^(args|output)_(\d+)$")


def _version() -> str:
    try:
        return md.version("ai-edge-litert")
    except md.PackageNotFoundError:  # pragma: no cover
        return "?"


def channels_last_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(N, C, *D) -> (N, *D, C)."""
    return (shape[0], *shape[2:], shape[1]) if len(shape) >= 3 else tuple(shape)


def to_channels_last(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, *range(2, x.ndim), 1)) if x.ndim >= 3 else x


def to_channels_first(x: np.ndarray) -> np.ndarray:
    return np.transpose(x, (0, x.ndim - 1, *range(1, x.ndim - 1))) if x.ndim >= 3 else x


def match_layout(artefact_shape, case_shape, prefer: str = AS_CASE) -> Optional[str]:
    """The layout in which a tensor of `case_shape` (channels-first) has `artefact_shape`, or None.

    When both fit (a tensor whose channel count equals its spatial sizes), `prefer` decides.
    """
    artefact_shape, case_shape = tuple(int(d) for d in artefact_shape), tuple(int(d) for d in case_shape)
    fits = [layout for layout, shape in ((AS_CASE, case_shape), (CHANNELS_LAST, channels_last_shape(case_shape)))
            if shape == artefact_shape]
    if not fits:
        return None
    return prefer if prefer in fits else fits[0]


def _ordered(details: list[dict], signature: dict[str, int], case_names: list[str]) -> list[dict]:
    """Tensors in the model's own order: litert-torch's args_N/output_N, else the case's names, else as listed."""
    by_index = {d["index"]: d for d in details}
    if signature and len(signature) == len(details) and set(signature.values()) <= set(by_index):
        if all(_LITERT_TORCH_NAME.match(n) for n in signature):
            return [by_index[i] for _, i in sorted(signature.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1]))]
        if sorted(signature) == sorted(case_names):
            return [by_index[signature[n]] for n in case_names]
    return list(details)


class _Loaded:
    """One .tflite file in one interpreter, with its inputs and outputs in the model's order."""

    def __init__(self, path: Path, resolver: str, artefact: Artefact) -> None:
        self.path = path
        self.interpreter = litert.Interpreter(model_path=str(path),
                                              experimental_op_resolver_type=getattr(litert.OpResolverType, resolver))
        signatures = self.interpreter._get_full_signature_list() or {}
        signature = next(iter(signatures.values())) if len(signatures) == 1 else {}
        self.inputs = _ordered(self.interpreter.get_input_details(), signature.get("inputs", {}),
                               artefact.input_names)
        outputs = _ordered(self.interpreter.get_output_details(), signature.get("outputs", {}), artefact.output_names)
        named = {i: n for n, i in signature.get("outputs", {}).items()}  # signature keys, else tensor names
        order = output_order([named.get(d["index"], d["name"]) for d in outputs], artefact)
        self.outputs = [outputs[i] for i in order]
        self.batch = int(self.inputs[0]["shape"][0]) if self.inputs and len(self.inputs[0]["shape"]) else None
        signature = self.inputs[0].get("shape_signature") if self.inputs else None
        #: the batch is declared dynamic (-1, as onnx2tf writes it): its shape's batch is only a default
        self.dynamic_batch = signature is not None and len(signature) > 0 and int(signature[0]) == -1
        self.resized_from: Optional[int] = None

    def resize(self, batch: int) -> None:
        """Set every input's batch dimension to `batch` (for an artefact exported at another batch size)."""
        try:
            for d in self.inputs:
                self.interpreter.resize_tensor_input(d["index"], [batch, *d["shape"][1:]])
            self.interpreter.allocate_tensors()
        except Exception as e:
            raise RuntimeError(f"{self.path.name} has a static batch size of {self.batch} and cannot be resized to "
                               f"{batch} ({str(e).splitlines()[0]}). Note: parity's own TFLite export writes one "
                               "artefact per batch size; give one for each batch size or a dynamic-batch model") from None
        self.resized_from, self.batch = self.batch, batch


def inspect(artefact: Artefact, expected: Expected) -> dict:
    """Structural checks of a TFLite artefact against the case, once after export.

    Every artefact (one per batch size) must take as many inputs and return as many outputs as the
    case, each with the case's shape either as it is or channels-last; the layout found is recorded
    (``layout``) with a note when the harness has to transpose, and the op inventory of the largest
    batch's artefact is recorded (``ops``). Raises ValueError naming the tensor that does not fit.
    """
    prefer = CHANNELS_LAST if artefact.metadata.get("layout_requested") == "nhwc" else AS_CASE
    # per tensor, what the exporter says it wrote (onnx2tf reports each output's layout): wins a tie
    declared = artefact.metadata.get("layout_declared") or {}
    layouts: dict[str, dict[str, str]] = {"inputs": {}, "outputs": {}}
    notes: list[str] = []
    loaded: dict[Path, _Loaded] = {}
    for batch in expected.batch_sizes:
        path = artefact.path_for(batch)
        if path not in loaded:
            loaded[path] = _Loaded(path, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", artefact)
        model = loaded[path]
        for kind, details, wanted in (("inputs", model.inputs, expected.inputs[batch]),
                                      ("outputs", model.outputs, expected.outputs[batch])):
            if len(details) != len(wanted):
                raise ValueError(f"{path.name} has {len(details)} {kind[:-1]} tensor(s) "
                                 f"{[d['name'] for d in details]}, the case has {len(wanted)}: {list(wanted)}")
            for position, (detail, (name, shape)) in enumerate(zip(details, wanted.items())):
                got = tuple(int(d) for d in detail["shape"])
                if model.batch is not None and model.batch != batch and got and got[0] == model.batch:
                    got = (batch, *got[1:])  # a single static artefact, resized at run time
                layout = match_layout(got, shape, layouts[kind].get(name, declared.get(kind, {}).get(name, prefer)))
                if layout is None:
                    raise ValueError(f"{kind[:-1]} {name!r} (position {position}) of {path.name}: the artefact has "
                                     f"shape {got}, the case {tuple(shape)}; neither that nor its channels-last form "
                                     f"{channels_last_shape(tuple(shape))} fits")
                if layouts[kind].setdefault(name, layout) != layout:
                    raise ValueError(f"{kind[:-1]} {name!r} is {layouts[kind][name]} in one artefact and {layout} in "
                                     f"{path.name}")
        if model.batch is not None and model.batch != batch:
            notes.append(f"{path.name} declares a dynamic batch (allocated at {model.batch}); the runner resizes it "
                         f"to {batch}" if model.dynamic_batch else
                         f"{path.name} was exported at batch size {model.batch}; the runner resizes it to {batch}")
    for kind in ("inputs", "outputs"):
        moved = [n for n, layout in layouts[kind].items() if layout == CHANNELS_LAST]
        if moved:
            verb = "transposes the case's channels-first" if kind == "inputs" else "transposes back to channels-first"
            notes.append(f"layout: the artefact's {kind} {', '.join(moved)} are channels-last (NHWC); the harness "
                         f"{verb} tensors")
    largest = loaded[artefact.path_for(max(expected.batch_sizes))]
    ops = Counter(op["op_name"] for op in largest.interpreter._get_ops_details())
    dtypes = {name: np.dtype(d["dtype"]).name for name, d in zip(artefact.input_names, largest.inputs)}
    return {"layout": layouts, "ops": dict(sorted(ops.items())), "input_dtypes": dtypes, "notes": notes}


class LiteRTRunner(Runner):
    """A .tflite artefact (one per batch size, or one resized) on the LiteRT interpreter."""

    backends = ("cpu", "cpu-ref", "cuda")

    @classmethod
    def unavailable_reason(cls, backend: str) -> Optional[str]:
        reason = super().unavailable_reason(backend)
        if reason:
            return reason
        if backend == "cuda":
            return (f"CUDA backend skipped: the LiteRT Python interpreter (ai-edge-litert {_version()}) has no GPU "
                    "delegate on Linux; TFLite runs on cpu (XNNPACK) and cpu-ref (reference kernels) here")
        return None

    @property
    def name(self) -> str:
        kernels = "default resolver (XNNPACK)" if self.backend == "cpu" else "reference kernels (BUILTIN_REF)"
        return f"LiteRT {_version()} interpreter, {kernels}"

    def activate_impl(self) -> None:
        self.loaded: dict[int, _Loaded] = {}
        self.layouts = self.artefact.metadata.get("layout") or {"inputs": {}, "outputs": {}}

    def _model(self, batch: int) -> _Loaded:
        if batch not in self.loaded:
            model = _Loaded(self.artefact.path_for(batch), RESOLVERS[self.backend], self.artefact)
            if model.batch is not None and model.batch != batch:
                model.resize(batch)
                self.notes.append(f"{model.path.name} (batch {model.resized_from}) was resized to batch {batch}")
            else:
                model.interpreter.allocate_tensors()
            self.loaded[batch] = model
        return self.loaded[batch]

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = list(inputs.values())
        model = self._model(int(arrays[0].shape[0]))
        if len(arrays) != len(model.inputs):
            raise ValueError(f"{model.path.name} takes {len(model.inputs)} inputs "
                             f"{[d['name'] for d in model.inputs]}, the case gives {len(arrays)}: {list(inputs)}")
        interpreter = model.interpreter
        for (name, array), detail in zip(inputs.items(), model.inputs):
            shape = tuple(int(d) for d in interpreter.get_tensor(detail["index"]).shape)
            layout = self.layouts["inputs"].get(name) or match_layout(shape, array.shape) or AS_CASE
            fed = to_channels_last(array) if layout == CHANNELS_LAST else array
            if fed.shape != shape:
                raise ValueError(f"input {name!r}: {model.path.name} takes shape {shape}, the case gives "
                                 f"{tuple(array.shape)}" + (" (transposed to channels-last)" if fed is not array else ""))
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(_quantize(fed, detail)))
        interpreter.invoke()
        outputs = []
        for name, detail in zip(self.artefact.output_names, model.outputs):
            out = _dequantize(np.array(interpreter.get_tensor(detail["index"])), detail)  # a copy: buffers are reused
            outputs.append(to_channels_first(out) if self.layouts["outputs"].get(name) == CHANNELS_LAST else out)
        return outputs

    def deactivate_impl(self) -> None:
        self.loaded.clear()


def _quantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """Float case data into a quantized input (int8/uint8 with a scale), as a fully-int8 model expects."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"])
    if scale and dtype.kind in "iu" and array.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(array / scale + zero_point), info.min, info.max).astype(dtype)
    return array.astype(dtype, copy=False)


def _dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """A quantized output back to float32 with its scale and zero point (what the case compares)."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if scale and array.dtype.kind in "iu":
        return ((array.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return array
