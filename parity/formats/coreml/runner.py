"""CoreML: structural checks of an .mlpackage (everywhere) and the Core ML runtime (macOS only).

:func:`inspect` runs once per exported package, on any OS: the package is read back from disk, the
ML Program is rebuilt op by op (coremltools' milproto loader, with type inference), and the model
description must agree with the program and with the case: input and output count, names, shapes
and batch range, and the compute precision the format promises. The op inventory is recorded.

:class:`CoreMLRunner` runs the package on the Core ML runtime with compute units ``CPU_ONLY``
(backend ``cpu``), ``CPU_AND_GPU`` (``gpu``) and ``ALL`` (``ane``). The runtime only exists on
macOS; elsewhere these backends are skipped ("Core ML runtime requires macOS") and the ``mil-ref``
backend (:mod:`parity.formats.coreml.mil_ref.runner`) evaluates the program instead.
"""

from __future__ import annotations

import platform
from collections import Counter
from typing import Optional

import numpy as np

from parity.artefact import Artefact, Expected
from parity.formats.base import Runner, output_order

COMPUTE_UNITS = {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "ALL"}
MACOS_ONLY = "Core ML runtime requires macOS"


def _dims(array_type) -> tuple[list[int], Optional[list[tuple[int, int]]]]:
    """(default shape, per-dimension (lower, upper) range or None) of a multiArrayType."""
    shape = [int(d) for d in array_type.shape]
    which = array_type.WhichOneof("ShapeFlexibility")
    if which == "shapeRange":
        return shape, [(int(r.lowerBound), int(r.upperBound)) for r in array_type.shapeRange.sizeRanges]
    if which == "enumeratedShapes":
        shapes = [[int(d) for d in s.shape] for s in array_type.enumeratedShapes.shapes]
        return shape, [(min(s[i] for s in shapes), max(s[i] for s in shapes)) for i in range(len(shape))]
    return shape, None


def _accepts(shape: tuple, default: list[int], ranges) -> bool:
    if len(shape) != len(default):
        return False
    if ranges is None:
        return list(shape) == default
    return all(lo <= d and (hi < 0 or d <= hi) for d, (lo, hi) in zip(shape, ranges))


def inspect(artefact: Artefact, expected: Expected) -> dict:
    """Structural checks of an ML Program package against the case; raises ValueError on a mismatch."""
    from coremltools.converters.mil.mil import types

    from parity.formats.coreml.mil_ref import load_program

    program, spec = load_program(artefact.path)  # the package reloads, and the program rebuilds
    if "main" not in program.functions:
        raise ValueError(f"the program has no 'main' function; it has: {', '.join(program.functions)}")
    main = program.functions["main"]
    described_in = [i.name for i in spec.description.input]
    described_out = [o.name for o in spec.description.output]
    program_out = [v.name for v in main.outputs]
    if described_in != list(main.inputs) or described_out != program_out:
        raise ValueError(f"the model description (inputs {described_in}, outputs {described_out}) disagrees with its "
                         f"program (inputs {list(main.inputs)}, outputs {program_out})")
    notes: list[str] = []
    for kind, names in (("input", described_in), ("output", described_out)):
        case_names = artefact.input_names if kind == "input" else artefact.output_names
        if len(names) != len(case_names):
            raise ValueError(f"the package has {len(names)} {kind}(s) {names}, the case has {len(case_names)}: "
                             f"{case_names}")
        if names != case_names:
            if artefact.source == "parity":
                raise ValueError(f"{kind} names {names} differ from the case's {case_names}")
            if kind == "input":
                notes.append(f"input names {names} differ from the case's {case_names}; fed by position")
    order = output_order(described_out, artefact)  # by name, or an error asking for export.<format>.outputs

    inputs = {}
    for position, (desc, name) in enumerate(zip(spec.description.input, artefact.input_names)):
        if desc.type.WhichOneof("Type") != "multiArrayType":
            raise ValueError(f"input {desc.name!r} is a {desc.type.WhichOneof('Type')}, not a multi-array")
        default, ranges = _dims(desc.type.multiArrayType)
        for batch in expected.batch_sizes:
            shape = expected.inputs[batch][name]
            if not _accepts(shape, default, ranges):
                accepted = default if ranges is None else ranges
                raise ValueError(f"input {desc.name!r} (position {position}) does not accept the case's shape {shape} "
                                 f"at batch size {batch}; the package accepts {accepted}")
        inputs[desc.name] = {"shape": default, "range": ranges,
                             "dtype": types.builtin_to_string(main.inputs[desc.name].dtype)}

    outputs = {}
    for k, (position, name) in enumerate(zip(order, artefact.output_names)):  # name: the artefact's own
        var = main.outputs[position]
        declared = tuple(var.shape)
        for batch in expected.batch_sizes:
            shape = list(expected.outputs[batch].values())[k]  # the case's k-th output
            fits = len(declared) == len(shape) and all(not isinstance(d, (int, np.integer)) or int(d) == s
                                                       for d, s in zip(declared, shape))
            if not fits:
                raise ValueError(f"output {var.name!r} (position {position}) has shape "
                                 f"({', '.join(map(str, declared))}) in the program, the case's output {name!r} has "
                                 f"{shape} at batch size {batch}")
        outputs[var.name] = {"shape": [int(d) if isinstance(d, (int, np.integer)) else "*" for d in declared],
                             "dtype": types.builtin_to_string(var.dtype)}

    ops = Counter()
    compute = Counter()
    for op in main.operations:
        ops[op.op_type] += 1
        if op.op_type not in ("const", "cast") and not op.op_type.startswith("constexpr_"):
            for v in op.outputs:
                compute[types.builtin_to_string(v.dtype)] += 1
    precision = expected.precision
    floats = {k: n for k, n in compute.items() if k in ("fp16", "fp32")}
    if precision == "fp16" and "fp16" not in floats:
        raise ValueError(f"the {artefact.format} format promises fp16 compute, but the program computes in "
                         f"{', '.join(floats) or 'no float type'} (was compute_precision FLOAT16 applied?)")
    if precision == "fp32" and "fp16" in floats:
        raise ValueError(f"the {artefact.format} format promises fp32 compute, but {floats['fp16']} op result(s) are "
                         "fp16 (compute_precision FLOAT16, the mlprogram default, was applied)")
    return {
        "spec_version": int(spec.specificationVersion),
        "opset": _target_name(main.opset_version),
        "inputs": inputs,
        "outputs": outputs,
        "ops": dict(sorted(ops.items())),
        "compute_dtypes": dict(sorted(compute.items())),
        "structure": "package reloads; program rebuilds with type inference; description matches program and case",
        "notes": notes,
    }


def _target_name(version) -> str:
    import coremltools as ct

    try:
        return ct.target(version).name
    except ValueError:
        return str(version)


class CoreMLRunner(Runner):
    """The Core ML runtime (macOS): ``cpu`` = CPU_ONLY, ``gpu`` = CPU_AND_GPU, ``ane`` = ALL."""

    backends = ("cpu", "gpu", "ane")

    @classmethod
    def unavailable_reason(cls, backend: str) -> Optional[str]:
        reason = super().unavailable_reason(backend)
        if reason:
            return reason
        if platform.system() != "Darwin":
            return MACOS_ONLY
        return None

    @property
    def name(self) -> str:
        import coremltools as ct

        return f"Core ML runtime (coremltools {ct.__version__}), compute units {COMPUTE_UNITS[self.backend]}"

    def activate_impl(self) -> None:
        import parity._triton_first  # noqa: F401
        import coremltools as ct

        self.model = ct.models.MLModel(str(self.artefact.path),
                                       compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[self.backend]))
        description = self.model.get_spec().description
        self.input_names = [i.name for i in description.input]
        own = [o.name for o in description.output]
        self.output_names = [own[i] for i in output_order(own, self.artefact)]
        array_types = {65568: np.float32, 65552: np.float16, 65600: np.float64, 131104: np.int32}  # ArrayDataType
        self.input_dtypes = [array_types.get(i.type.multiArrayType.dataType, np.float32) for i in description.input]

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds = {name: np.ascontiguousarray(array.astype(dtype, copy=False))
                 for name, array, dtype in zip(self.input_names, inputs.values(), self.input_dtypes)}
        result = self.model.predict(feeds)
        return [np.asarray(result[name]) for name in self.output_names]

    def deactivate_impl(self) -> None:
        del self.model
