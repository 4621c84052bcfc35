"""The MIL reference evaluator: CoreML numerics without macOS.

The Core ML runtime only exists on macOS. What Linux can do is read an ML Program (``.mlpackage``)
back into coremltools' MIL program (the milproto loader rebuilds every op, with its types and
weights) and evaluate that program op by op with PyTorch CPU kernels. This shows what the
converted graph computes, in the program's own dtypes (an fp16 program computes and stores every
intermediate in fp16), not what the Core ML runtime does on a given device: reports call it the
"MIL reference evaluator", never "Core ML".

Guards against silent wrong answers:

- an op without a kernel fails before anything runs, naming the op type and the op;
- each op's result must have the dtype and shape the program declares for it (symbolic dimensions
  such as the batch must bind consistently), or evaluation stops naming the op;
- op variants whose semantics are not documented clearly enough to reproduce are refused
  (:class:`UnsupportedOpError`), not approximated.

Imports coremltools (which imports TensorFlow: triton is loaded first) and torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import parity._triton_first  # noqa: F401  (coremltools imports tensorflow)
import numpy as np
import torch

from parity.formats.coreml.mil_ref.ops import KERNELS, UnsupportedOpError, torch_dtype

__all__ = ["Evaluator", "MilEvaluationError", "UnsupportedOpError", "load_program", "supported_ops"]


class MilEvaluationError(RuntimeError):
    """An op failed, or its result contradicts the type the program declares for it."""


def supported_ops() -> list[str]:
    """Every MIL op type the evaluator has a kernel for, sorted."""
    return sorted(KERNELS)


def load_program(path: str | Path):
    """Read a saved ML Program (.mlpackage) back into a MIL program: returns (program, spec).

    Raises ValueError for a model that is not an ML Program (a neuralnetwork model has no MIL).
    """
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise ValueError(f"{Path(path).name} is a Core ML {kind!r} model, not an ML Program (convert_to='mlprogram')")
    program = load(spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)
    return program, spec


def operations(block) -> list:
    """Every op of `block`, nested blocks included (so that an unsupported control-flow op is named)."""
    found = []
    for op in block.operations:
        found.append(op)
        for inner in op.blocks:
            found += operations(inner)
    return found


class Evaluator:
    """Evaluates one function of a MIL program on NumPy inputs.

    ``Evaluator(program).run({input_name: array})`` returns ``{output_name: array}`` in the
    function's output order. Constants (and only ``const`` ops) are taken from the program;
    every other op, ``constexpr_*`` decompression included, is computed by a kernel here.
    """

    def __init__(self, program, function: str = "main") -> None:
        from coremltools.converters.mil.mil import types

        self._types = types
        if function not in program.functions:
            raise ValueError(f"the program has no function {function!r}; it has: {', '.join(program.functions)}")
        self.function = program.functions[function]
        ops = operations(self.function)
        unknown = [op for op in ops if op.op_type not in KERNELS]
        if unknown:
            kinds = sorted({op.op_type for op in unknown})
            raise UnsupportedOpError(
                f"the MIL reference evaluator has no kernel for op type(s) {', '.join(kinds)} (first: op "
                f"{unknown[0].name!r} of type {unknown[0].op_type!r}); it supports: {', '.join(supported_ops())}")
        self.ops = list(self.function.operations)
        self.op_types = sorted({op.op_type for op in ops})

    @property
    def input_names(self) -> list[str]:
        return list(self.function.inputs)

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.function.outputs]

    def input_dtype(self, name: str) -> np.dtype:
        return np.dtype(self._types.nptype_from_builtin(self.function.inputs[name].dtype))

    def run(self, inputs: dict[str, np.ndarray],
            record: Optional[Callable[[Any, dict[str, torch.Tensor]], None]] = None) -> dict[str, np.ndarray]:
        """Evaluate the function. `inputs` go by name; each is cast to the dtype the program declares.

        `record`, when given, is called after each op of the function's block (``const`` ops excepted)
        as ``record(op, {output name: value})`` with the values as the program stores them: every
        intermediate tensor in one run."""
        missing = [n for n in self.function.inputs if n not in inputs]
        if missing:
            raise ValueError(f"missing input(s) {missing}; the program takes {self.input_names}")
        env: dict[str, Any] = {}
        symbols: dict[Any, int] = {}
        for name, var in self.function.inputs.items():
            value = torch.from_numpy(np.ascontiguousarray(np.asarray(inputs[name]).astype(self.input_dtype(name))))
            env[name] = self._conform(var, value, symbols, f"input {name!r}")
        for op in self.ops:
            if op.op_type == "const":
                env[op.outputs[0].name] = _const(op.outputs[0].val)
                continue
            args = _Args(op, env)
            try:
                result = KERNELS[op.op_type](args)
            except UnsupportedOpError as e:
                raise UnsupportedOpError(f"op {op.name!r} ({op.op_type}): {e}") from None
            except MilEvaluationError:
                raise
            except Exception as e:
                raise MilEvaluationError(f"op {op.name!r} ({op.op_type}) failed: {type(e).__name__}: {e}") from e
            results = result if isinstance(result, (tuple, list)) else (result,)
            if len(results) != len(op.outputs):
                raise MilEvaluationError(f"op {op.name!r} ({op.op_type}) gave {len(results)} result(s), the program "
                                         f"declares {len(op.outputs)}")
            for var, value in zip(op.outputs, results):
                env[var.name] = self._conform(var, value, symbols, f"op {op.name!r} ({op.op_type})")
            if record is not None:
                record(op, {var.name: env[var.name] for var in op.outputs})
        return {v.name: _to_numpy(env[v.name]) for v in self.function.outputs}

    def _conform(self, var, value, symbols: dict, where: str):
        """`value` rounded to the float dtype the program declares for `var`, after checking its shape.

        A floating-point result is rounded to the declared float dtype (this is where an fp16 program
        stores every intermediate in fp16); any other dtype mismatch, and any shape other than the
        declared one, is an error naming the op. A symbolic dimension binds on first use in a run.
        """
        types = self._types
        if not isinstance(value, torch.Tensor):
            raise MilEvaluationError(f"{where}: result {var.name!r} is a {type(value).__name__}, not a tensor")
        want = torch_dtype(types.builtin_to_string(var.dtype))
        if value.dtype != want:
            if not (value.is_floating_point() and want.is_floating_point):
                raise MilEvaluationError(f"{where}: result {var.name!r} is {value.dtype}, the program declares "
                                         f"{types.builtin_to_string(var.dtype)}")
            value = value.to(want)
        declared = tuple(var.shape) if types.is_tensor(var.sym_type) else ()
        shape = tuple(value.shape)
        ok = len(shape) == len(declared)
        for got, dim in zip(shape, declared):
            if isinstance(dim, (int, np.integer)):
                ok = ok and got == int(dim)
            else:  # a symbol (the flexible batch, a runtime size): binds once per run
                ok = ok and symbols.setdefault(dim, got) == got
        if not ok:
            raise MilEvaluationError(f"{where}: result {var.name!r} has shape {shape}, the program declares "
                                     f"{_show(declared)}")
        return value


class _Args:
    """An op's inputs for a kernel: tensors, python values, or None when absent."""

    def __init__(self, op, env: dict) -> None:
        self.op = op
        self._env = env

    def _value(self, var):
        if var is None:
            return None
        if isinstance(var, (tuple, list)):
            return [self._value(v) for v in var]
        return self._env[var.name]

    def has(self, name: str) -> bool:
        return getattr(self.op, name, None) is not None

    def tensor(self, name: str) -> Optional[torch.Tensor]:
        return self._value(getattr(self.op, name, None))

    def tensors(self, name: str) -> list[torch.Tensor]:
        return self._value(getattr(self.op, name))

    def ints(self, name: str) -> Optional[list[int]]:
        v = self.tensor(name)
        return None if v is None else [int(x) for x in torch.as_tensor(v).reshape(-1).tolist()]

    def int(self, name: str) -> Optional[int]:
        v = self.tensor(name)
        return None if v is None else int(torch.as_tensor(v).reshape(-1)[0])

    def float(self, name: str) -> Optional[float]:
        v = self.tensor(name)
        return None if v is None else float(torch.as_tensor(v).reshape(-1)[0])

    def bool(self, name: str) -> Optional[bool]:
        v = self.tensor(name)
        return None if v is None else bool(torch.as_tensor(v).reshape(-1)[0])

    def bools(self, name: str) -> Optional[list[bool]]:
        v = self.tensor(name)
        return None if v is None else [bool(x) for x in torch.as_tensor(v).reshape(-1).tolist()]

    def str(self, name: str) -> Optional[str]:
        v = self.tensor(name)
        return None if v is None else str(v)

    def out_dtype(self, index: int = 0) -> torch.dtype:
        from coremltools.converters.mil.mil import types

        return torch_dtype(types.builtin_to_string(self.op.outputs[index].dtype))

    def opset(self) -> str:
        """The op's opset, from the module that defines it (iOS15, iOS16, ...)."""
        module = type(self.op).__module__
        return next((part for part in module.split(".") if part.startswith("iOS")), "iOS15")


def _const(value):
    """A const op's value as the evaluator holds it: tensors for numbers, str for strings."""
    if value is None or isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "US":
        return str(array)
    if array.dtype == np.float64:  # MIL has no fp64: a python float const is fp32
        array = array.astype(np.float32)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    return torch.from_numpy(np.array(array, copy=True))


def _to_numpy(value) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _show(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
