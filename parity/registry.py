"""Which formats, backends and checks exist, by name only.

Nothing here imports a framework: each format names the modules that implement its exporter and
its runner as strings, and they are imported only when a case actually uses the format (the
xarray backend-registry pattern). Adding a format is one entry here plus one exporter module and
one runner module; a variant of a format (another precision, an INT8 route) is one ``_variant`` line.

Source frameworks (``FRAMEWORKS``) are one module each: how to build the case's model, run the eager
reference and lint the model. A format's artefact is runner- and lint-compatible whatever framework
made it, so only the export differs per framework: a format's own fields describe its PyTorch route
and ``routes`` adds the others (a Keras model reaches TFLite through ``tf.lite.TFLiteConverter``, not
litert-torch).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, replace
from typing import Optional


#: Source frameworks: name -> the module that builds, runs and lints models of that framework.
FRAMEWORKS: dict[str, str] = {"torch": "parity.model", "keras": "parity.keras_model"}


@dataclass(frozen=True)
class Route:
    """How models of one framework are exported to a format (the fields that differ per framework)."""

    exporter: str  # "module:function", called as function(model, example_inputs, path, **options)
    requires: tuple[str, ...]  # importable modules the export and the runner need
    install: str
    exporter_options: tuple[str, ...] = ()
    isolate: bool = False  # export in a child process by default
    static_batch: bool = False  # one artefact per case batch size


@dataclass(frozen=True)
class FormatInfo:
    """A target format: how to export to it and how to run it."""

    name: str
    exporter: str  # "module:function", called as function(model, example_inputs, path, options)
    runner: str  # "module:Class", a parity.runners.base.Runner subclass
    suffix: str  # file name suffix of the artefact
    backends: tuple[str, ...]  # backends this format has runners for
    requires: tuple[str, ...]  # importable modules both export and run need
    install: str  # how to install what is missing
    exporter_options: tuple[str, ...] = ()  # option names the built-in exporter accepts
    precision: str = "fp32"  # numeric precision of the artefact: picks the default tolerance (fp32, fp16, int8)
    linter: str | None = None  # "module:function", lint(path) -> list[parity.lint.Finding] (training-mode lint)
    isolate: bool = False  # export in a child process by default (converters that can crash or hang)
    fp32: str | None = None  # for a quantized variant: the fp32 format it is compared with (size ratio)
    runners: tuple[tuple[str, str], ...] = ()  # (backend, "module:Class") where a backend has its own runner
    static_batch: bool = False  # the artefact has a fixed batch size: exported once per case batch size
    inspector: str = ""  # "module:function" reading an artefact once after export: structural checks, metadata
    routes: tuple[tuple[str, Route], ...] = ()  # (framework, Route) for frameworks other than torch
    torch: bool = True  # PyTorch models export to this format (through the fields above)

    def route(self, framework: str) -> Optional[Route]:
        """How a `framework` model is exported to this format, or None when it cannot be."""
        if framework == "torch":
            return Route(self.exporter, self.requires, self.install, self.exporter_options, self.isolate,
                         self.static_batch) if self.torch else None
        return dict(self.routes).get(framework)

    @property
    def frameworks(self) -> tuple[str, ...]:
        return (("torch",) if self.torch else ()) + tuple(f for f, _ in self.routes)

    def runner_for(self, backend: str) -> str:
        """The runner class of `backend`: its own entry in ``runners``, else the format's ``runner``."""
        return dict(self.runners).get(backend, self.runner)


def _keras(exporter: str, requires: tuple[str, ...] = ("ai_edge_litert",), options: tuple[str, ...] = (),
           isolate: bool = False) -> Route:
    """The Keras route to a format: ``parity.exporters.keras:<exporter>``, from TensorFlow's own converters."""
    return Route(f"parity.exporters.keras:{exporter}", ("tensorflow", "keras", *requires),
                 "pip install 'parity[keras]'" + (" && pip install --no-deps tf2onnx" if "tf2onnx" in requires else ""),
                 options, isolate)


FORMATS: dict[str, FormatInfo] = {
    "torchscript": FormatInfo(
        name="torchscript",
        exporter="parity.exporters.torchscript:export",
        runner="parity.runners.torchscript:TorchScriptRunner",
        suffix=".pt",
        backends=("cpu", "cuda"),
        requires=("torch",),
        install="pip install 'parity[torch]'",
        exporter_options=("method",),
        linter="parity.lint.torchscript:lint",
    ),
    "onnx": FormatInfo(
        name="onnx",
        exporter="parity.exporters.onnx:export",
        runner="parity.runners.onnxruntime:OnnxRuntimeRunner",
        suffix=".onnx",
        backends=("cpu", "cuda"),
        requires=("torch", "onnx", "onnxruntime", "onnxscript"),
        install="pip install 'parity[onnx]'",
        exporter_options=("opset", "dynamo"),
        linter="parity.lint.onnx:lint",
        routes=(("keras", _keras("onnx", ("tf2onnx", "onnx", "onnxruntime"), ("opset",))),),  # tf2onnx
    ),
    "pt2": FormatInfo(
        name="pt2",
        exporter="parity.exporters.pt2:export",
        runner="parity.runners.pt2:ExportedProgramRunner",
        suffix=".pt2",
        backends=("cpu", "cuda"),
        requires=("torch",),
        install="pip install 'parity[torch]'",
        exporter_options=("strict",),
        linter="parity.lint.pt2:lint",
    ),
    "tflite": FormatInfo(
        name="tflite",
        exporter="parity.exporters.tflite:export",
        runner="parity.runners.tflite:LiteRTRunner",
        suffix=".tflite",
        backends=("cpu", "cpu-ref", "cuda"),
        requires=("torch", "litert_torch", "ai_edge_litert"),
        install="pip install 'parity[tflite]'",
        exporter_options=("layout",),
        static_batch=True,  # litert-torch exports a static batch only (dynamic batch fails, see STACK.md)
        inspector="parity.runners.tflite:inspect",
        linter="parity.lint.tflite:lint",
        isolate=True,  # the converter imports TensorFlow: a crash or hang must not take the suite down
        routes=(("keras", _keras("tflite", isolate=True)),),  # tf.lite.TFLiteConverter, dynamic batch
    ),
    # One format per compute precision, so each has its own tolerance, golden and test ids.
    "coreml": FormatInfo(
        name="coreml",
        exporter="parity.exporters.coreml:export_fp32",
        runner="parity.runners.coreml:CoreMLRunner",
        runners=(("mil-ref", "parity.runners.mil_ref:MilReferenceRunner"),),
        suffix=".mlpackage",
        backends=("mil-ref", "cpu", "gpu", "ane"),
        requires=("torch", "coremltools"),
        install="pip install 'parity[coreml]'",
        exporter_options=("minimum_deployment_target",),
        precision="fp32",
        inspector="parity.runners.coreml:inspect",
        linter="parity.lint.coreml:lint",
        isolate=True,  # coremltools imports TensorFlow, jax and torchao; conversions can abort
        routes=(("keras", _keras("coreml_fp32", ("coremltools",), ("minimum_deployment_target",), isolate=True)),),
    ),
    # What many Keras teams ship: the SavedModel written by ``model.export``, run in TensorFlow. It
    # behaves differently from the converters (it keeps ``training=True`` baked into a layer call).
    "savedmodel": FormatInfo(
        name="savedmodel",
        exporter="",
        runner="parity.runners.savedmodel:SavedModelRunner",
        suffix=".savedmodel",
        backends=("cpu", "cuda"),
        requires=("tensorflow",),
        install="pip install 'parity[keras]'",
        linter="parity.lint.savedmodel:lint",
        torch=False,
        routes=(("keras", _keras("savedmodel", ())),),
    ),
}


def _variant(base: str, name: str, exporter: str, precision: str, keras: Optional[Route] = None,
             **changes) -> FormatInfo:
    """A format that differs from `base` only in how it is exported and its precision: it runs on
    the same runners, is inspected and linted the same way. Quantized variants name `base` as the
    fp32 format their size is compared with. `keras` is the variant's Keras route, if it has one."""
    fp32 = base if precision == "int8" else None
    return replace(FORMATS[base], name=name, exporter=f"parity.exporters.{exporter}", precision=precision,
                   fp32=fp32, routes=(("keras", keras),) if keras else (), **changes)


FORMATS.update({
    "coreml_fp16": _variant("coreml", "coreml_fp16", "coreml:export_fp16", "fp16",
                            keras=_keras("coreml_fp16", ("coremltools",), ("minimum_deployment_target",),
                                         isolate=True)),
    # INT8 variants: each quantizes with its library and runs on its fp32 sibling's runners.
    "onnx_int8": _variant("onnx", "onnx_int8", "quantized:onnx_int8", "int8",
                          exporter_options=("mode", "per_channel", "reduce_range"),
                          keras=_keras("onnx_int8", ("tf2onnx", "onnx", "onnxruntime"),
                                       ("mode", "per_channel", "reduce_range"))),
    "torchscript_int8": _variant("torchscript", "torchscript_int8", "quantized:torchscript_int8", "int8",
                                 exporter_options=("mode",),
                                 backends=("cpu",)),  # quantized::linear_dynamic has no CUDA kernel
    "pt2_int8": _variant("pt2", "pt2_int8", "quantized:pt2_int8", "int8", exporter_options=(), backends=("cpu",),
                         requires=("torch", "torchao"), install="pip install 'parity[torch]' torchao"),
    "tflite_int8": _variant("tflite", "tflite_int8", "quantized:tflite_int8", "int8", exporter_options=("recipe_name",),
                            requires=(*FORMATS["tflite"].requires, "ai_edge_quantizer"),
                            keras=_keras("tflite_int8", isolate=True)),  # TFLiteConverter, representative dataset
    # The seed's Keras route: TFLiteConverter with Optimize.DEFAULT and no data (dynamic range:
    # int8 weights, float activations quantized per call). Keras only.
    "tflite_dynamic": _variant("tflite", "tflite_dynamic", "keras:tflite_dynamic", "int8", torch=False,
                               keras=_keras("tflite_dynamic", isolate=True)),
    "coreml_int8": _variant("coreml", "coreml_int8", "quantized:coreml_int8", "int8",
                            exporter_options=("granularity",),
                            keras=_keras("coreml_int8", ("coremltools",), ("granularity",), isolate=True)),
})

#: Every backend name a case may list. A (format, backend) pair is tested when the format lists the
#: backend in its ``backends``; a listed backend that cannot run here is skipped with the reason.
#: ``cpu-ref``: LiteRT's reference kernels; ``mil-ref``: parity's MIL reference evaluator (CoreML numerics
#: without macOS); ``gpu`` and ``ane``: the Core ML runtime's CPU_AND_GPU and ALL compute units.
BACKENDS: tuple[str, ...] = ("cpu", "cuda", "cpu-ref", "mil-ref", "gpu", "ane")

#: Checks, in the order they run for a target.
CHECKS: tuple[str, ...] = ("parity", "golden", "batch_invariance", "determinism", "lint", "accuracy", "latency")

#: Checks that look at the model and the artefact, not at a backend: one test per (case, format).
BACKEND_FREE_CHECKS: tuple[str, ...] = ("lint",)

#: Checks a case runs only when its `checks` lists them; every other check is in the default list.
#: Latency costs timed runs and gates nothing unless the case declares a maximum.
OPT_IN_CHECKS: tuple[str, ...] = ("latency",)


def missing_modules(fmt: FormatInfo, framework: str = "torch") -> list[str]:
    """The modules exporting a `framework` model to `fmt` needs that are not installed (checked
    without importing them)."""
    route = fmt.route(framework)
    return [m for m in (route.requires if route else fmt.requires) if importlib.util.find_spec(m) is None]


def formats_for(framework: str) -> list[str]:
    """The formats a `framework` model can be exported to, in registry order."""
    return [name for name, info in FORMATS.items() if framework in info.frameworks]


def load_object(path: str):
    """Import `package.module:attribute` and return the attribute."""
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
