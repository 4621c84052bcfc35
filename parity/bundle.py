"""A repro bundle: the smallest artefact that shows a divergence, with what it takes to show it
without parity, ready to attach to a converter's or a runtime's bug tracker.

:func:`write_bundle` writes into one empty (or new) directory, and nowhere else:

- the artefact: for an ONNX file whose triage read its own tensors, the subgraph from the graph's
  inputs up to the first diverging tensor (``onnx.utils.extract_model``; the whole file, with the
  reason, when extraction fails); for every other format the whole artefact with its sidecar files
  (ONNX external data, a package directory);
- ``inputs.npz`` (the inputs, in the order the artefact takes them) and ``expected.npz`` (what eager
  PyTorch computes there: for a subgraph, the diverging module's output that triage recorded with
  its forward hooks);
- ``versions.json`` (Python, platform, CPU features and the packages that change numerics);
- ``README.txt``: what diverges, the error measured on the bundled artefact and the tolerance;
- ``repro.py``: a short script that loads the artefact with the plain runtime (onnxruntime, the
  LiteRT interpreter, ``torch.jit``, ``torch.export``, Core ML through coremltools on macOS),
  prints the mismatch (max abs error and where) and exits 1 when it is over the tolerance. It
  imports numpy and the runtime only, never parity.

:func:`write_node_data` writes triage's per-node error of an ONNX artefact as Google Model Explorer
node data, to colour the graph by error.
"""

from __future__ import annotations

import json
import math
import platform
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from parity.errors import ParityError

#: runner class -> the runtime repro.py loads the artefact with
RUNTIMES = {"OnnxRuntimeRunner": "onnxruntime", "OnnxReferenceRunner": "onnx-reference", "LiteRTRunner": "litert",
            "TorchScriptRunner": "torchscript", "ExportedProgramRunner": "torch-export", "CoreMLRunner": "coreml",
            "MilReferenceRunner": "coreml"}
#: what repro.py needs installed, per runtime
NEEDS = {"onnxruntime": "numpy onnxruntime", "onnx-reference": "numpy onnx", "litert": "numpy ai-edge-litert",
         "torchscript": "numpy torch", "torch-export": "numpy torch", "coreml": "numpy coremltools (on macOS)"}
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu-noopt": "CPUExecutionProvider"}
COMPUTE_UNITS = {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "ALL", "mil-ref": "CPU_ONLY"}


class BundleError(ParityError):
    """A repro bundle cannot be written (the directory is not empty, nothing diverges, an unknown runtime)."""


def check_directory(directory: Path) -> Path:
    """`directory` if a bundle may be written there (it does not exist, or is an empty directory);
    otherwise a BundleError naming it. Nothing is created."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise BundleError(f"bundle directory {directory} exists and is a file: pass an empty or new directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise BundleError(f"bundle directory {directory} exists and is not empty: a bundle is only written into an "
                          "empty or new directory (nothing there is overwritten); pass an empty or new directory")
    return directory


def runtime_of(fmt: str, backend: str) -> str:
    """The plain runtime repro.py uses for `fmt` on `backend` (a key of NEEDS), or a BundleError."""
    from parity.formats import FORMATS

    info = FORMATS.get(fmt)
    if info is None:
        raise BundleError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    runner = info.runner_for(backend).rsplit(":", 1)[-1]
    if runner not in RUNTIMES:
        raise BundleError(f"no standalone repro script for {fmt} on {backend} (its runner {runner} is not one of "
                          f"{', '.join(sorted(RUNTIMES))}); no bundle written")
    return RUNTIMES[runner]


def write_bundle(report, run, fmt: str, backend: str, directory: Path) -> Path:
    """Write the repro bundle of `report` (triage of `run` on `fmt`/`backend`) into `directory`,
    which must not exist or be empty; returns the directory. A failure part way leaves the directory
    as it was (a half-written bundle would mislead whoever files it)."""
    directory = check_directory(directory)
    runtime = runtime_of(fmt, backend)
    if report.first_divergence is None:
        raise BundleError(f"nothing to reproduce: triage of {report.case} / {fmt} / {backend} found no divergence "
                          f"({report.summary}); no bundle written")
    artefact = run.artefact(fmt)
    row = next((r for r in report.rows if r.path == report.first_divergence and r.tensor), None)
    subgraph = runtime in ("onnxruntime", "onnx-reference") and row is not None and \
        bool(getattr(report, "eager_at_divergence", None))
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        if subgraph:
            plan = _onnx_subgraph(report, run, fmt, backend, row, artefact, directory, runtime)
        else:
            plan = _whole(run, fmt, backend, artefact, directory, runtime)
        _write_rest(report, run, fmt, backend, runtime, plan, directory)
    except BaseException:
        _empty(directory)
        if created:
            directory.rmdir()
        raise
    return directory


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@dataclass
class _Plan:
    """What the bundle holds: the artefact's file name, inputs and expected outputs (in the artefact's
    order and layout), the runtime settings repro.py needs, what was measured (output name,
    OutputComparison) and each expected output's tolerance."""

    artefact: str
    inputs: dict
    expected: dict
    what: str
    settings: dict
    measured: list
    tolerances: list


def _onnx_subgraph(report, run, fmt, backend, row, artefact, directory: Path, runtime: str) -> _Plan:
    """The graph from its inputs up to the first diverging tensor; the whole file when extraction fails."""
    import onnx
    import onnx.utils

    from parity.errors import short_error

    feeds = run.example_inputs()  # what triage ran the artefact and eager on
    size = int(next(iter(feeds.values())).shape[0])
    source = Path(artefact.path_for(size))
    model = onnx.load(str(source), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    input_names = [i.name for i in model.graph.input if i.name not in initializers]
    target = directory / "subgraph.onnx"
    try:
        onnx.utils.extract_model(str(source), str(target), input_names, [row.tensor])
        extracted = onnx.load(str(target), load_external_data=False)
    except Exception as e:
        _empty(directory)  # the partial subgraph (and its data file), if any
        why = f"extracting the subgraph up to {row.tensor} failed ({short_error(e, 1)}), so the whole file is bundled"
        return _whole(run, fmt, backend, artefact, directory, runtime, note=why)
    tolerance = run.tolerance_for(fmt, backend, run.output_names[0])
    obtained = _run_onnx(target, backend, feeds, row.tensor)
    # the module's output (of those it returns) that the artefact's tensor holds: the one of its shape
    eager = next((e for e in report.eager_at_divergence if tuple(e.shape) == tuple(obtained.shape)),
                 report.eager_at_divergence[0])
    expected = {_key(row.tensor): np.asarray(eager)}
    from parity.compare import compare_output

    measured = [(row.tensor, compare_output(row.tensor, eager, obtained, tolerance))]
    producer = next((n.name or n.op_type for n in model.graph.node if row.tensor in n.output), "?")
    what = (f"subgraph.onnx: the graph of {source.name} from its inputs up to tensor {row.tensor!r} (the output of "
            f"module {row.path}, node {producer}); {len(extracted.graph.node)} of {len(model.graph.node)} nodes, "
            "extracted with onnx.utils.extract_model")
    return _Plan("subgraph.onnx", dict(feeds), expected, what, {"outputs": [row.tensor], **_ort_settings(backend)},
                 measured, [tolerance])


def _run_onnx(path: Path, backend: str, inputs: dict, output: str) -> np.ndarray:
    """The bundled ONNX file's one output, on parity's runner for `backend`."""
    from parity.artefact import Artefact
    from parity.case import load_object
    from parity.formats import FORMATS

    runner_cls = load_object(FORMATS["onnx"].runner_for(backend))
    with runner_cls(Artefact("onnx", path, "triage", list(inputs), [output]), backend) as runner:
        return runner.infer(inputs)[0]


def _whole(run, fmt, backend, artefact, directory: Path, runtime: str, note: str = "") -> _Plan:
    """The whole artefact (with its sidecar files), the case's inputs at its largest batch size and
    eager's outputs there."""
    size = max(run.case.batch_sizes)
    feeds = run.inputs(size)
    expected = run.reference(size)
    source = Path(artefact.path_for(size))
    name = _copy_artefact(source, directory, runtime, size)
    tolerance = {n: run.tolerance_for(fmt, backend, n) for n in expected}
    obtained = run.run_target(fmt, backend, feeds)
    from parity.compare import compare_outputs

    measured = [(n, c) for n, c in zip(expected, compare_outputs(expected, obtained, lambda n: tolerance[n]))]
    settings: dict = {}
    inputs, wanted = dict(feeds), dict(expected)
    if runtime in ("onnxruntime", "onnx-reference"):
        settings = {"outputs": _onnx_outputs(source, artefact), **_ort_settings(backend)}
    elif runtime == "coreml":
        settings = _coreml_settings(source, artefact, backend)
    elif runtime == "litert":
        settings, inputs, wanted = _litert_settings(source, artefact, backend, feeds, expected)
    why = note or ("the whole artefact: only an ONNX file whose triage read its own tensors is cut to a subgraph"
                   if runtime not in ("onnxruntime", "onnx-reference") else
                   "the whole artefact: triage did not read this file's own tensors, so no tensor marks where to cut")
    return _Plan(name, inputs, wanted, f"{name}: {why}", settings, measured, list(tolerance.values()))


def _copy_artefact(source: Path, directory: Path, runtime: str, size: int) -> str:
    """Copy the artefact and its sidecar files into `directory`; returns the name repro.py loads."""
    if source.is_dir() and runtime == "torch-export":  # one program per batch size: the one that ran
        source = source / f"b{size}.pt2"
    if source.is_dir():
        shutil.copytree(source, directory / source.name)
        return source.name
    shutil.copy2(source, directory / source.name)
    if runtime in ("onnxruntime", "onnx-reference"):
        for location in _external_data(source):
            origin = (source.parent / location).resolve()
            if not origin.is_relative_to(source.parent.resolve()):
                raise BundleError(f"{source.name} reads external data from {location}, outside its directory: "
                                  "refusing to copy it into the bundle")
            (directory / location).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, directory / location)
    return source.name


def _external_data(path: Path) -> list[str]:
    """The files an ONNX model reads its tensors from (relative to the model's directory)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    def tensors(graph):
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    yield from tensors(sub)

    model = onnx.load(str(path), load_external_data=False)
    return sorted({ExternalDataInfo(t).location for t in tensors(model.graph) if uses_external_data(t)})


def _ort_settings(backend: str) -> dict:
    return {"provider": ORT_PROVIDERS.get(backend, "CPUExecutionProvider"), "optimise": backend != "cpu-noopt"}


def _onnx_outputs(source: Path, artefact) -> list[str]:
    """The artefact's own output names, in the case's order."""
    import onnx

    from parity.formats.base import output_order

    own = [o.name for o in onnx.load(str(source), load_external_data=False).graph.output]
    return [own[i] for i in output_order(own, artefact)]


def _coreml_settings(source: Path, artefact, backend: str) -> dict:
    from parity.formats.base import output_order
    from parity.formats.coreml.mil_ref import load_program

    _, spec = load_program(source)
    inputs = [i.name for i in spec.description.input]
    own = [o.name for o in spec.description.output]
    return {"inputs": inputs, "outputs": [own[i] for i in output_order(own, artefact)],
            "compute_units": COMPUTE_UNITS.get(backend, "CPU_ONLY")}


def _litert_settings(source: Path, artefact, backend: str, feeds: dict, expected: dict) -> tuple[dict, dict, dict]:
    """Tensor indices in the case's order, and the inputs and expected outputs in the file's layout
    (channels-last where the file is), so that repro.py only feeds and reads tensors."""
    from parity.formats.tflite.runner import CHANNELS_LAST, RESOLVERS, _Loaded, to_channels_last

    loaded = _Loaded(source, RESOLVERS.get(backend, "AUTO"), artefact)
    layouts = artefact.metadata.get("layout") or {"inputs": {}, "outputs": {}}

    def laid(kind: str, arrays: dict) -> dict:
        return {n: to_channels_last(a) if layouts[kind].get(n) == CHANNELS_LAST else a for n, a in arrays.items()}

    settings = {"inputs": [int(d["index"]) for d in loaded.inputs],
                "outputs": [int(d["index"]) for d in loaded.outputs], "resolver": RESOLVERS.get(backend, "AUTO")}
    return settings, laid("inputs", feeds), laid("outputs", expected)


def _key(name: str) -> str:
    """A tensor name as an npz key (a '/' would become a folder inside the archive)."""
    return re.sub(r"[^\w.-]", "_", name) or "output"


def _write_rest(report, run, fmt, backend, runtime, plan: _Plan, directory: Path) -> None:
    from parity.versions import cpu_features, packages

    np.savez(directory / "inputs.npz", **plan.inputs)
    np.savez(directory / "expected.npz", **plan.expected)
    versions = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
                "cpu_features": cpu_features(), "packages": packages()}
    (directory / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    config = {"runtime": runtime, "artefact": plan.artefact, "backend": backend, **plan.settings,
              "tolerances": [{"atol": t.atol, "rtol": t.rtol, "scale": t.scale} for t in plan.tolerances]}
    (directory / "repro.py").write_text(script(config))
    (directory / "README.txt").write_text(readme(report, run, fmt, backend, runtime, plan, versions))


def _figures(c) -> str:
    if c.problem and not c.size:
        return c.problem
    where = f" at index {tuple(c.worst_index)}" if c.worst_index is not None else ""
    return (f"max abs error {c.max_abs:.6g}{where}, err/max|ref| {c.scaled_error:.3g}, "
            f"{c.n_outside} of {c.size} elements outside tolerance")


def readme(report, run, fmt: str, backend: str, runtime: str, plan: _Plan, versions: dict) -> str:
    """README.txt: what diverges, what was measured on the bundled artefact, the tolerance, how to run it."""
    row = next((r for r in report.rows if r.path == report.first_divergence), None)
    triaged = (f"triage measured at {row.path}: max abs error {row.max_abs:.6g}, err/max|ref| {row.rel_error:.3g}"
               + (f", {row.nonfinite} non-finite values" if row.nonfinite else "")) if row is not None else ""
    lines = [
        f"Repro: {run.case.name} exported to {fmt} and run on {backend} does not match the eager PyTorch model.",
        "",
        f"What diverges: {report.summary}",
        *([triaged] if triaged else []),
        "",
        f"Artefact: {plan.what}",
        "",
        "Measured on the bundled artefact with the inputs in inputs.npz, against expected.npz (eager PyTorch):",
        *(f"  {name}: {_figures(c)}" for name, c in plan.measured),
        "",
        "Tolerance: an element mismatches when |obtained - expected| > atol + rtol*|expected| + scale*max|expected|, "
        "with " + "; ".join(f"{name}: atol={t.atol:g} rtol={t.rtol:g} scale={t.scale:g}"
                            for (name, _), t in zip(plan.measured, plan.tolerances)) + ".",
        "",
        f"Run it: python repro.py   (needs {NEEDS[runtime]}; prints the max abs error and where, exits 1 on a "
        "mismatch over the tolerance, 0 when none)",
    ]
    if runtime == "coreml":
        lines.append("Core ML's runtime exists on macOS only: run repro.py on a Mac (coremltools MLModel.predict). "
                     + (f"Here the divergence was measured on {backend}, parity's MIL reference evaluator (what the "
                        "program's ops compute), not the Core ML runtime." if backend == "mil-ref" else ""))
    from parity.formats import FORMATS

    packages = versions["packages"]
    shown = ", ".join(f"{n} {packages[n]}" for n in dict.fromkeys(["numpy", *FORMATS[fmt].distributions])
                      if n in packages)
    lines += ["", f"Versions: Python {versions['python']} on {versions['platform']}" + (f"; {shown}" if shown else "")
              + " (all in versions.json)",
              "Files: README.txt, repro.py, " + plan.artefact + ", inputs.npz, expected.npz, versions.json"]
    return "\n".join(lines) + "\n"


# ---- repro.py: numpy and the runtime only; the runtime part is chosen by CONFIG["runtime"]
_HEAD = '''"""Repro: load {artefact} with the plain runtime, run it on inputs.npz and compare with expected.npz
(eager PyTorch). Prints the max abs error and where; exits 1 on a mismatch over the tolerance.
Written by parity's triage --bundle; needs only {needs}."""

import sys

import numpy as np

CONFIG = {config!r}


def load(name):
    with np.load(name) as data:
        return [data[k] for k in data.files]

'''

#: a torch module's outputs (tensors, tuples, dicts) as a flat list of arrays, in the scripts for torch files
_TORCH_FLATTEN = '''
def flatten(out):
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten(o)]
    if isinstance(out, dict):
        return flatten(list(out.values()))
    return [out.detach().float().cpu().numpy()]
'''

_RUNTIME = {
    "onnxruntime": '''
def run(inputs):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not CONFIG["optimise"]:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(CONFIG["artefact"], options, providers=[CONFIG["provider"]])
    names = [i.name for i in session.get_inputs()]
    print(f"onnxruntime {ort.__version__}, {session.get_providers()[0]}")
    return session.run(CONFIG["outputs"], dict(zip(names, inputs)))
''',
    "onnx-reference": '''
def run(inputs):
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(CONFIG["artefact"])
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    print(f"onnx.reference (onnx {onnx.__version__})")
    return ReferenceEvaluator(model).run(CONFIG["outputs"], dict(zip(names, inputs)))
''',
    "litert": '''
def run(inputs):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from tensorflow.lite.python.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_path=CONFIG["artefact"],
                              experimental_op_resolver_type=getattr(OpResolverType, CONFIG["resolver"]))
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_input_details() + interpreter.get_output_details()}
    for index, array in zip(CONFIG["inputs"], inputs):
        scale, zero = details[index].get("quantization", (0.0, 0))
        dtype = np.dtype(details[index]["dtype"])
        if scale and dtype.kind in "iu":
            array = np.clip(np.round(array / scale + zero), np.iinfo(dtype).min, np.iinfo(dtype).max)
        interpreter.set_tensor(index, np.ascontiguousarray(array.astype(dtype)))
    interpreter.invoke()
    outputs = []
    for index in CONFIG["outputs"]:
        out = np.array(interpreter.get_tensor(index))
        scale, zero = details[index].get("quantization", (0.0, 0))
        outputs.append((out.astype(np.float32) - zero) * scale if scale and out.dtype.kind in "iu" else out)
    print(f"LiteRT interpreter, {CONFIG['resolver']} op resolver")
    return outputs
''',
    "torchscript": _TORCH_FLATTEN + '''

def run(inputs):
    import torch

    module = torch.jit.load(CONFIG["artefact"], map_location=CONFIG["backend"])
    print(f"torch {torch.__version__} TorchScript on {CONFIG['backend']}")
    with torch.inference_mode():
        return flatten(module(*(torch.from_numpy(a).to(CONFIG["backend"]) for a in inputs)))
''',
    "torch-export": _TORCH_FLATTEN + '''

def run(inputs):
    import torch

    module = torch.export.load(CONFIG["artefact"]).module().to(CONFIG["backend"])
    print(f"torch {torch.__version__} torch.export program on {CONFIG['backend']}")
    with torch.no_grad():
        return flatten(module(*(torch.from_numpy(a).to(CONFIG["backend"]) for a in inputs)))
''',
    "coreml": '''
def run(inputs):
    if sys.platform != "darwin":
        print(f"Core ML's runtime runs on macOS only (this is {sys.platform}): run this script on a Mac with "
              "coremltools installed; it calls coremltools' MLModel.predict on " + CONFIG["artefact"])
        sys.exit(2)
    import coremltools as ct

    model = ct.models.MLModel(CONFIG["artefact"], compute_units=getattr(ct.ComputeUnit, CONFIG["compute_units"]))
    print(f"Core ML (coremltools {ct.__version__}), {CONFIG['compute_units']}")
    out = model.predict(dict(zip(CONFIG["inputs"], inputs)))
    return [np.asarray(out[name]) for name in CONFIG["outputs"]]
''',
}

_TAIL = '''

def compare(index, expected, obtained):
    """Print the mismatch of one output; True when some element is outside the tolerance."""
    exp, obt = expected.astype(np.float64), np.asarray(obtained).astype(np.float64)
    if exp.shape != obt.shape:
        print(f"output {index}: shape {obt.shape}, expected {exp.shape}")
        return True
    finite = np.isfinite(exp) & np.isfinite(obt)
    nonfinite = (np.isfinite(exp) != np.isfinite(obt)) | (~np.isfinite(exp) & ~np.isfinite(obt) & (exp != obt)
                                                          & ~(np.isnan(exp) & np.isnan(obt)))
    diff = np.where(finite, np.abs(obt - exp), 0.0)
    ref = np.where(np.isfinite(exp), np.abs(exp), 0.0)
    ref_max = float(ref.max()) if ref.size else 0.0
    tol = CONFIG["tolerances"][index]
    outside = (diff > tol["atol"] + tol["rtol"] * ref + tol["scale"] * ref_max) | nonfinite
    worst = np.unravel_index(int(np.argmax(np.where(nonfinite, np.inf, diff))), exp.shape) if exp.size else ()
    where = tuple(int(i) for i in worst)
    scaled = float(diff.max()) / ref_max if ref_max else float("inf")
    print(f"output {index}: max abs error {float(diff.max()) if diff.size else 0.0:.6g} at index {where} "
          f"(obtained {obt[worst]:.8g}, expected {exp[worst]:.8g}); err/max|ref| {scaled:.3g}; "
          f"{int(outside.sum())} of {exp.size} elements outside tolerance"
          + (f"; {int(nonfinite.sum())} non-finite where expected finite or different" if nonfinite.any() else ""))
    return bool(outside.any())


def main():
    inputs, expected = load("inputs.npz"), load("expected.npz")
    obtained = list(run(inputs))
    if len(obtained) != len(expected):
        print(f"the artefact returned {len(obtained)} outputs, expected {len(expected)}")
        return 1
    bad = [compare(i, e, o) for i, (e, o) in enumerate(zip(expected, obtained))]
    tolerance = "; ".join(f"atol={t['atol']:g} rtol={t['rtol']:g} scale={t['scale']:g}" for t in CONFIG["tolerances"])
    if any(bad):
        print(f"MISMATCH: {CONFIG['artefact']} differs from eager PyTorch beyond the tolerance ({tolerance})")
        return 1
    print(f"no mismatch: every output within the tolerance ({tolerance})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def script(config: dict) -> str:
    """The text of repro.py for `config` (runtime, artefact, backend settings, tolerance)."""
    return _HEAD.format(artefact=config["artefact"], needs=NEEDS[config["runtime"]], config=config) + \
        _RUNTIME[config["runtime"]] + _TAIL


def write_node_data(report, run, fmt: str, path: Path) -> Path:
    """Triage's per-node error of an ONNX artefact as Google Model Explorer node data (one graph's
    ``{"results": {node name: {"value": err/max|ref|}}, "thresholds": [...]}``): nodes within the
    tolerance green, over it red, the first divergence red whatever its value. Keyed by the name of
    the node that produces each compared tensor."""
    import onnx

    rows = [r for r in report.rows if r.tensor and r.status in ("pass", "fail")]
    if not rows:
        raise BundleError(f"no Model Explorer node data for {report.case} / {fmt}: it needs triage rows read from "
                          "an ONNX artefact's own tensors, and this triage has none "
                          f"(method: {report.method or 'none'})")
    feeds = run.example_inputs()
    size = int(next(iter(feeds.values())).shape[0])
    model = onnx.load(str(run.artefact(fmt).path_for(size)), load_external_data=False)
    producer = {out: node.name for node in model.graph.node for out in node.output if node.name}
    largest = sys.float_info.max  # JSON has no Infinity or NaN: a non-finite error is the largest float
    results: dict[str, dict] = {}
    for r in rows:
        if r.tensor not in producer:
            continue
        value = r.rel_error if math.isfinite(r.rel_error) and not r.nonfinite else largest
        results[producer[r.tensor]] = {"value": value}
        if r.path == report.first_divergence:
            results[producer[r.tensor]]["bgColor"] = "#d32f2f"
    tol = report.tolerance_scale or 0.0
    top = max([tol, *(v["value"] for v in results.values())])
    data = {"results": results,
            "thresholds": [{"value": tol, "bgColor": "#a5d6a7"}, {"value": top, "bgColor": "#ef9a9a"}]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_requested(report, run, fmt: str, backend: str, bundle: Optional[str], node_data: Optional[str]) -> bool:
    """What ``parity triage --bundle DIR --model-explorer FILE`` writes after the table: each one
    written says where, each refused says why. Returns True when one that was asked for failed (a
    triage without divergence has nothing to bundle: said, not a failure)."""
    failed = False
    if bundle:
        if report.export_error:
            print(f"no bundle written: the whole model does not export to {fmt}, so there is no artefact to run; "
                  "file the export error itself")
        elif report.first_divergence is None:
            print(f"no bundle written: triage found no divergence, so {bundle} has nothing to reproduce")
        else:
            try:
                written = write_bundle(report, run, fmt, backend, Path(bundle))
                print(f"repro bundle written to {written}: {', '.join(sorted(p.name for p in written.iterdir()))} "
                      "(python repro.py there reproduces the mismatch without parity)")
            except BundleError as e:
                print(f"error: {e}")
                failed = True
    if node_data:
        try:
            print(f"Model Explorer node data written to {write_node_data(report, run, fmt, Path(node_data))}")
        except BundleError as e:
            print(f"error: {e}")
            failed = True
    return failed
