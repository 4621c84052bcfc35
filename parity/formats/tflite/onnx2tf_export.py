"""The ``tflite_onnx2tf`` route: PyTorch -> ONNX (parity's own ONNX export) -> onnx2tf -> .tflite (fp32).

onnx2tf rebuilds the ONNX graph as a Keras (tf_keras) model, transposing it to channels-last as it
goes, and writes it through ``tf.lite.TFLiteConverter``: a second, independent way to TFLite beside
litert-torch, and the one many deployment pipelines use. It runs in-process through its Python API
(``onnx2tf.convert``), writing into a scratch folder inside the artefact's own folder that is removed
afterwards; only its float32 .tflite is kept (as the artefact), and onnx2tf's console output is
captured (its errors become the exception's message).

Layout: every input of rank 3 or more is kept channels-first (``keep_ncw_or_nchw_or_ncdhw_input_names``)
so the artefact takes the case's tensors as they are. onnx2tf has no such option for outputs: an
output it computed channels-last stays channels-last. The layout onnx2tf reports for each output is
recorded (``layout_declared``), and the runner transposes such outputs back and says so.

onnx2tf changes its process as it is imported and run (a recursion limit of 2**31 - 1, every
warning silenced, the random seeds, ``TF_USE_LEGACY_KERAS``, ``CUDA_VISIBLE_DEVICES=-1``, TensorFlow's
op determinism): :func:`convert` puts each of these back afterwards, since the export worker goes on
serving other formats' exports. Where onnx2tf would fetch sample images from the network (a
static-batch, three-channel, channels-last input), it gets seeded uniform data instead: no network,
and the same artefact on every run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
import os
import random
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import parity._triton_first  # noqa: F401  (onnx2tf imports tensorflow)
import numpy as np

#: onnx2tf's process-wide settings that :func:`convert` restores.
_ENVIRONMENT = ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")
_ERROR_LINE = re.compile(r"^\s*ERROR:\s*(.*\S)")
#: the lines onnx2tf prints after any failure, whatever it was (its documentation's links and options)
_ADVICE = ("The trace log is below", "input_onnx_file_path:", "Read this and deal with it", "Alternatively, if the",
           "If the input OP of ONNX", "Also, for models that include")


def export(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
           opset: int = 18, dynamic_batch: bool = False) -> dict:
    """Export `model` to ONNX with parity's ONNX exporter (dynamo, `opset`), then convert that file
    with :func:`convert` into the fp32 .tflite at `path`. The ONNX file lives only in the scratch
    folder of the conversion.

    The ONNX file's dynamic batch is pinned to the batch size of `example_inputs` first
    (:func:`pin_batch`), as onnx2tf's own advice for dynamic inputs goes (its ``-b``): onnx2tf takes
    the exporter's symbolic sizes in ``value_info`` literally, and a ConvTranspose then fails to
    convert ("Expected int32 ... got ['s77', 18, 18, 16]"; layer_zoo), even with its ``batch_size``
    option. The engine then checks whether the artefact resizes to the case's other batch sizes and
    converts once per batch size where it does not. ``dynamic_batch: true`` converts the batch as
    exported, dynamic (-1 in the .tflite).
    """
    from parity.formats.onnx.export import export as onnx_export

    scratch = Path(tempfile.mkdtemp(prefix=".onnx2tf-", dir=path.parent))
    try:
        onnx_path = scratch / "model.onnx"
        onnx_meta = onnx_export(model, example_inputs, onnx_path, input_names=input_names, output_names=output_names,
                                opset=opset)
        batch = None if dynamic_batch else int(example_inputs[0].shape[0])
        if batch is not None:
            pin_batch(onnx_path, batch)
        metadata = convert(onnx_path, path, input_names=input_names)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    onnx_step = {k: onnx_meta[k] for k in ("exporter", "opset_written", "torch", "onnx") if k in onnx_meta}
    return {**metadata, "onnx_step": {**onnx_step, "batch": "dynamic" if batch is None else f"pinned to {batch}"},
            "warnings": onnx_meta.get("warnings", []) + metadata["warnings"]}


def pin_batch(onnx_path: Path, batch: int) -> None:
    """Rewrite the ONNX file at `onnx_path` with dimension 0 of every graph input and output that is
    not a number set to `batch`, and its shapes inferred again from there (the symbolic ones dropped)."""
    import onnx

    proto = onnx.load(str(onnx_path))
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    del proto.graph.value_info[:]
    onnx.save(onnx.shape_inference.infer_shapes(proto, data_prop=True), str(onnx_path))


def convert(onnx_path: Path, path: Path, *, input_names: Optional[list[str]] = None) -> dict:
    """Convert the ONNX file at `onnx_path` with ``onnx2tf.convert`` and write its fp32 .tflite at `path`.

    The inputs named in `input_names` (default: every graph input) of rank 3 or more keep their
    channels-first layout. Raises RuntimeError with onnx2tf's own ERROR lines when it fails (it
    reports most failures by printing them and calling ``sys.exit``).
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    wanted = set(input_names) if input_names is not None else {i.name for i in inputs}
    keep = [i.name for i in inputs if i.name in wanted and len(i.type.tensor_type.shape.dim) >= 3]
    log = io.StringIO()
    scratch = Path(tempfile.mkdtemp(prefix=".onnx2tf-out-", dir=path.parent))
    try:
        with _contained(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            import onnx2tf
            import onnx2tf.onnx2tf as o2t_main
            from onnx2tf.utils import common_functions

            with _offline(o2t_main, common_functions):
                try:
                    keras_model = onnx2tf.convert(
                        input_onnx_file_path=str(onnx_path), output_folder_path=str(scratch),
                        keep_ncw_or_nchw_or_ncdhw_input_names=keep or None,
                        not_use_onnxsim=True,  # onnxsim is not installed: say so rather than have it tried
                        verbosity="warn")
                except (Exception, SystemExit) as e:
                    raise RuntimeError(failure(log.getvalue(), e)) from None
        written = scratch / f"{Path(onnx_path).stem}_float32.tflite"  # onnx2tf names it after the ONNX file
        if not written.exists():
            raise RuntimeError(f"onnx2tf {_version('onnx2tf')} wrote no {written.name} "
                               f"(it wrote: {', '.join(sorted(p.name for p in scratch.iterdir())) or 'nothing'})")
        shutil.move(str(written), str(path))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    del keras_model  # its onnx_output_layouts said 'not NHWC' of a Relu output it wrote channels-last
    warned = [_strip(line).split("WARNING:", 1)[1].strip() for line in log.getvalue().splitlines()
              if "WARNING:" in _strip(line)]
    return {"exporter": "onnx2tf.convert (ONNX -> tf_keras -> TFLiteConverter), the float32 .tflite",
            "onnx2tf": _version("onnx2tf"), "tensorflow": _version("tensorflow-cpu", "tensorflow"),
            "kept_channels_first": keep,
            "layout_declared": {"inputs": {n: "as the case" for n in keep}, "outputs": output_layouts(onnx_path, path, keep)},
            "warnings": sorted(set(warned))[:10]}


def output_layouts(onnx_path: Path, tflite_path: Path, kept: list[str]) -> dict[str, str]:
    """The layout of each output whose shape in the .tflite fits both the ONNX file's and its
    channels-last form (N, C, C, C...), found by running both once on the same seeded inputs: the
    layout whose values are closer (the inputs in `kept` are channels-first in both files, other
    inputs of rank 3 or more channels-last in the .tflite). Other outputs' layouts follow from their shapes (the runner's
    rule), so only these are returned, by ONNX output name.

    onnx2tf keeps no output channels-first, and ``onnx_output_layouts`` on the model it returns is
    no guide (it said 'not NHWC' of a Relu output written channels-last), so the values decide.
    """
    import onnxruntime as ort
    from ai_edge_litert import interpreter as litert

    from parity.formats.tflite.runner import AS_CASE, CHANNELS_LAST, channels_last_shape, to_channels_first

    interpreter = litert.Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    signatures = interpreter._get_full_signature_list() or {}
    signature = next(iter(signatures.values()), {}) if len(signatures) == 1 else {}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_inputs, onnx_outputs = session.get_inputs(), session.get_outputs()

    def in_onnx_order(details: list[dict], named: dict[str, int], wanted) -> list[dict]:
        mine = {d["index"]: d for d in details}
        if set(named) == {o.name for o in wanted} and set(named.values()) <= set(mine):
            return [mine[named[o.name]] for o in wanted]
        return details  # without a signature, onnx2tf keeps the ONNX order

    tflite_outputs = in_onnx_order(interpreter.get_output_details(), signature.get("outputs", {}), onnx_outputs)
    ambiguous = [i for i, (o, d) in enumerate(zip(onnx_outputs, tflite_outputs))
                 if len(d["shape"]) >= 3 and tuple(d["shape"]) == channels_last_shape(tuple(d["shape"]))]
    if not ambiguous:
        return {}
    rng = np.random.default_rng(0)
    feeds = {}
    for o, d in zip(onnx_inputs, in_onnx_order(interpreter.get_input_details(), signature.get("inputs", {}),
                                               onnx_inputs)):
        dtype = np.dtype(d["dtype"])
        x = rng.standard_normal(d["shape"]).astype(dtype) if dtype.kind == "f" else np.zeros(d["shape"], dtype)
        interpreter.set_tensor(d["index"], x)
        feeds[o.name] = x if o.name in kept or x.ndim < 3 else to_channels_first(x)
    interpreter.invoke()
    expected = session.run(None, feeds)
    found = {}
    for i in ambiguous:
        got = np.asarray(interpreter.get_tensor(tflite_outputs[i]["index"]), dtype=np.float64)
        errors = {layout: float(np.abs(candidate - expected[i]).max())
                  for layout, candidate in ((AS_CASE, got), (CHANNELS_LAST, to_channels_first(got)))}
        found[onnx_outputs[i].name] = min(errors, key=errors.get)
    return found


def failure(log: str, exc: BaseException) -> str:
    """One message for a failed conversion: onnx2tf's own ERROR lines (the op it stopped at, what it
    has no conversion for), less the advice it prints after every failure, then the exception's first
    line (none for its ``sys.exit``)."""
    said = [m.group(1) for m in (_ERROR_LINE.match(_strip(line)) for line in log.splitlines())
            if m and not m.group(1).startswith(_ADVICE)]
    if not isinstance(exc, SystemExit):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # a Keras layer's error says which layer first and what went wrong on the next line
        first = " ".join(lines[:2]) if lines and lines[0].startswith("Exception encountered") else \
            (lines[0] if lines else "")
        said.append(f"{type(exc).__name__}: {first}".rstrip(": "))
    return f"onnx2tf {_version('onnx2tf')}: " + ("; ".join(dict.fromkeys(said)) or f"exited ({exc})")


@contextlib.contextmanager
def _contained():
    """Put back what onnx2tf changes in its process: the recursion limit, the warning filters, the
    random states, three environment variables and TensorFlow's op determinism."""
    limit = sys.getrecursionlimit()
    environment = {k: os.environ.get(k) for k in _ENVIRONMENT}
    states = random.getstate(), np.random.get_state()
    determinism = _op_determinism()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        sys.setrecursionlimit(limit)
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        random.setstate(states[0])
        np.random.set_state(states[1])
        if determinism is False and _op_determinism():
            from tensorflow.python.framework import config

            config.disable_op_determinism()


def _op_determinism() -> Optional[bool]:
    """Whether TensorFlow's op determinism is on, or None before TensorFlow is imported."""
    if "tensorflow" not in sys.modules:
        return False
    from tensorflow.python.framework import config

    return bool(config.is_op_determinism_enabled())


@contextlib.contextmanager
def _offline(*modules):
    """onnx2tf's ``download_test_image_data`` (sample images fetched over the network for a static,
    three-channel NHWC input) replaced by seeded uniform images of its shape, in every module that
    imported it."""
    def sample_images() -> np.ndarray:
        return np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)

    saved = [(m, m.download_test_image_data) for m in modules if hasattr(m, "download_test_image_data")]
    for module, _ in saved:
        module.download_test_image_data = sample_images
    try:
        yield
    finally:
        for module, original in saved:
            module.download_test_image_data = original


def _strip(line: str) -> str:
    from parity.errors import strip_ansi

    return strip_ansi(line)


def _version(*names: str) -> str:
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return "?"
