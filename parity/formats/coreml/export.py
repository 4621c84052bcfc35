"""CoreML export: ``coremltools.convert`` of a ``torch.jit.trace``, to an ML Program (.mlpackage).

The compute precision is always explicit (the default of an mlprogram is FLOAT16): the
registry has one format per precision, ``coreml`` (FLOAT32) and ``coreml_fp16`` (FLOAT16), so each
has its own tolerance, goldens and test ids. The batch dimension is flexible
(``ct.RangeDim(1, largest batch size)``), so one package serves every batch size of the case.
Each op's source module goes into the package too (:mod:`parity.formats.coreml.scopes`), for triage.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path
from typing import Optional

import parity._triton_first  # noqa: F401  (coremltools imports tensorflow)
import numpy as np
import torch

PRECISIONS = {"fp32": "FLOAT32", "fp16": "FLOAT16"}
# Core ML inputs are fp16/fp32/int32 multi-arrays: other integer inputs are fed as int32.
_INPUT_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float32,
                 torch.int64: np.int32, torch.int32: np.int32, torch.int16: np.int32, torch.uint8: np.int32,
                 torch.bool: np.bool_}


def export(model: torch.nn.Module, example_inputs: tuple, path: Path, *, input_names: list[str],
           output_names: list[str], precision: str = "fp32",
           minimum_deployment_target: Optional[str] = None,
           dynamic_axes: Optional[list[dict[int, str]]] = None,
           dynamic_sizes: Optional[dict[str, list[int]]] = None, route: str = "trace",
           fp32_ops: Optional[list[str]] = None) -> dict:
    """Trace `model` as it is (training flag included), convert it to an mlprogram and save it at `path`.

    `route` is how the model reaches coremltools: ``trace`` (``torch.jit.trace``, coremltools' long-
    standing frontend) or ``export`` (``torch.export.export(...).run_decompositions({})``, its newer
    one since coremltools 8), with the batch and the named axes dynamic in the program too.

    The batch and the case's named dynamic axes (`dynamic_axes`, per input) are flexible
    (``ct.RangeDim``; one symbol per name, shared by every input that has the axis), from 1 to the
    largest of the axis's `dynamic_sizes` (an ML Program needs a bounded range).

    ``minimum_deployment_target`` is a name of ``coremltools.target`` (``iOS16``, ``macOS13``...);
    by default coremltools picks the oldest target the program needs (iOS15 for these models).

    `fp32_ops` (fp16 only) names ops of the program to keep in fp32, through coremltools' own
    ``FP16ComputePrecision(op_selector=...)``; the names are the fp32 program's (an op converted to
    fp16 is renamed ``<name>_cast_fp16``; an op kept in fp32 keeps its name). A name the program
    does not have is an error, not silently ignored.
    """
    import coremltools as ct

    from parity.formats.coreml import scopes
    from parity.frameworks.pytorch import FlatOutputs

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if fp32_ops and precision != "fp16":
        raise ValueError(f"fp32_ops keeps ops of an fp16 program in fp32; this program is {precision} already")
    keep, offered = {str(n) for n in fp32_ops or ()}, set()
    if keep:
        def fp16(op) -> bool:
            name = saved_name(op.name)
            if op.op_type != "const":
                offered.add(name)
            return op.name not in keep and name not in keep

        compute_precision = ct.transform.FP16ComputePrecision(op_selector=fp16)
    else:
        compute_precision = getattr(ct.precision, PRECISIONS[precision])
    target = deployment_target(minimum_deployment_target)
    batch = int(example_inputs[0].shape[0])
    batch_dim = ct.RangeDim(lower_bound=1, upper_bound=batch, default=batch)  # one symbol shared by every input
    axes = list(dynamic_axes or [{} for _ in example_inputs])
    named = {n: ct.RangeDim(lower_bound=1, default=int(x.shape[a]),
                            upper_bound=max([int(x.shape[a]), *(dynamic_sizes or {}).get(n, [])]))
             for found, x in zip(axes, example_inputs) for a, n in found.items()}

    def shape(i: int, x) -> tuple:
        found = axes[i] if i < len(axes) else {}
        return (batch_dim, *(named[found[a]] if a in found else int(d) for a, d in enumerate(x.shape) if a > 0))

    inputs = [ct.TensorType(name=name, shape=shape(i, x), dtype=_INPUT_DTYPES.get(x.dtype, np.float32))
              for i, (name, x) in enumerate(zip(input_names, example_inputs))]
    traced_inputs = tuple(x.to(torch.int32) if _INPUT_DTYPES.get(x.dtype) is np.int32 and x.dtype != torch.int32
                          else x for x in example_inputs)
    log = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log), converter_errors() as errors:  # progress bars and version warnings
        warnings.simplefilter("always")
        if route == "export":
            from parity.formats.dims import torch_dynamic_shapes

            traced = torch.export.export(model, traced_inputs,
                                         dynamic_shapes=torch_dynamic_shapes(traced_inputs, dynamic_axes))
            traced = traced.run_decompositions({})
            handles = scopes.number_nodes(traced)
        elif route == "trace":
            traced = torch.jit.trace(model, traced_inputs, check_trace=False)
            handles = None
        else:
            raise ValueError(f"route must be trace or export, got {route!r}")
        try:
            mlmodel = ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name=n) for n in output_names],
                                 convert_to="mlprogram",
                                 compute_precision=compute_precision,
                                 minimum_deployment_target=target, skip_model_load=True)
        except Exception as e:
            if errors:  # the op and its location, which coremltools logs but leaves out of the exception
                raise RuntimeError(f"coremltools: {'; '.join(errors)}: {type(e).__name__}: {e}") from e
            raise
        if keep:
            _check_fp32_ops(keep, offered, mlmodel)
        mlmodel.save(str(path))
        scopes.record(mlmodel, path, "torch.jit.trace" if route == "trace" else "torch.export", handles,
                      root="model" if isinstance(model, FlatOutputs) else "")
    messages = sorted({str(w.message).splitlines()[0] for w in caught
                       if not issubclass(w.category, (DeprecationWarning, ResourceWarning))
                       and "deprecat" not in str(w.message).lower() and "has not been tested" not in str(w.message)})
    frontend = "torch.jit.trace(model)" if route == "trace" else "torch.export.export(model).run_decompositions({})"
    return {"exporter": f"coremltools.convert({frontend}, convert_to='mlprogram')",
            "coremltools": ct.__version__, "torch": torch.__version__,
            "compute_precision": PRECISIONS[precision],
            **({"fp32_ops": sorted(keep)} if keep else {}),
            "minimum_deployment_target": str(minimum_deployment_target) if target is not None else "coremltools default",
            "batch": f"flexible: ct.RangeDim(1, {batch})", "warnings": messages,
            **({"dynamic_axes": "flexible: " + ", ".join(f"{n} ct.RangeDim(1, {d.upper_bound})"
                                                         for n, d in named.items())} if named else {})}


def _check_fp32_ops(keep: set[str], offered: set[str], mlmodel) -> None:
    """ValueError when `keep` names an op that coremltools never offered for fp16 and the converted
    program does not have either (coremltools keeps an op whose constant exceeds fp16's range in fp32
    without asking the selector: such an op is still found by name)."""
    from parity.formats.coreml import scopes

    program = getattr(mlmodel, "_mil_program", None)
    present = {saved_name(n) for n in scopes.op_scopes(program)} if program is not None else set()
    unknown = sorted(keep - offered - present)
    if unknown:
        known = sorted(n for n in offered | present if not n.endswith("_cast_fp16"))
        raise ValueError(f"fp32_ops names {', '.join(unknown)}, which the program has no op of that name; its ops: "
                         f"{', '.join(known[:40])}{' ...' if len(known) > 40 else ''}")


def saved_name(name: str) -> str:
    """An op's name as the saved package has it: coremltools' backend sanitises names when it writes
    the program (``14`` -> ``op_14``), after the passes (and fp32_ops' op_selector) saw the raw one."""
    from coremltools.converters.mil.mil.passes.defs.preprocess import NameSanitizer

    return NameSanitizer(prefix="op_").sanitize_name(name)


@contextlib.contextmanager
def converter_errors():
    """Collect the ERROR records coremltools logs while converting (``converting 'int' op (located
    at: 'model/embeddings/38')``): the exception it raises afterwards names neither op nor place."""
    import logging

    found: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(re.sub(r"^ERROR\s*-\s*", "", record.getMessage().strip()).rstrip(":"))

    handler = _Collect(level=logging.ERROR)
    logger = logging.getLogger("coremltools")
    logger.addHandler(handler)
    try:
        yield found
    finally:
        logger.removeHandler(handler)


def deployment_target(name: Optional[str]):
    """``coremltools.target.<name>``, or None for coremltools' default; ValueError naming the known ones."""
    import coremltools as ct

    if name is None:
        return None
    target = getattr(ct.target, str(name), None)
    if target is None:
        known = ", ".join(t.name for t in ct.target)
        raise ValueError(f"export.coreml.options.minimum_deployment_target {name!r} is not a coremltools.target; "
                         f"known: {known}")
    return target


def export_fp32(model, example_inputs, path, *, input_names, output_names, dynamic_axes=None, dynamic_sizes=None,
                **options) -> dict:
    """The ``coreml`` format: compute precision FLOAT32."""
    return export(model, example_inputs, path, input_names=input_names, output_names=output_names,
                  precision="fp32", dynamic_axes=dynamic_axes, dynamic_sizes=dynamic_sizes, **options)


def export_fp16(model, example_inputs, path, *, input_names, output_names, dynamic_axes=None, dynamic_sizes=None,
                **options) -> dict:
    """The ``coreml_fp16`` format: compute precision FLOAT16."""
    return export(model, example_inputs, path, input_names=input_names, output_names=output_names,
                  precision="fp16", dynamic_axes=dynamic_axes, dynamic_sizes=dynamic_sizes, **options)


def export_via_torch_export(model, example_inputs, path, *, input_names, output_names, dynamic_axes=None,
                            dynamic_sizes=None, **options) -> dict:
    """The ``coreml_pt2`` route: FLOAT32, reaching coremltools through ``torch.export`` instead of a trace."""
    return export(model, example_inputs, path, input_names=input_names, output_names=output_names,
                  precision="fp32", dynamic_axes=dynamic_axes, dynamic_sizes=dynamic_sizes, route="export", **options)
