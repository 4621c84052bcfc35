"""What a format is, by name only: how to export to it, run it, inspect and lint it.

A format's folder (``parity/formats/<name>/``) declares ``FORMATS = [FormatInfo(...), ...]`` in its
``__init__.py``, naming its exporter, runners, inspector and linter as ``"module:attribute"``
strings, so nothing here (or in the folder's ``__init__``) imports a framework: modules are imported
only when a case uses the format (the xarray backend-registry pattern). A format outside parity
registers a module with the same ``FORMATS`` list under the ``parity.formats`` entry-point group.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class Route:
    """How models of one framework are exported to a format (the fields that differ per framework)."""

    exporter: str  # "module:function", called as function(model, example_inputs, path, **options)
    requires: tuple[str, ...]  # importable modules the export and the runner need
    install: str
    exporter_options: tuple[str, ...] = ()
    isolate: bool = True  # export in the framework's worker process (False: in the session's process)
    static_batch: bool = False  # one artefact per case batch size
    distributions: tuple[str, ...] = ()  # installed packages whose versions change what the route produces


@dataclass(frozen=True)
class FormatInfo:
    """A target format: how to export to it and how to run it.

    The top-level export fields describe the PyTorch route; ``routes`` adds other frameworks' routes
    (a Keras model reaches TFLite through ``tf.lite.TFLiteConverter``, not litert-torch). Runners,
    inspectors and linters read the artefact, so they are shared by every framework's route.
    """

    name: str
    exporter: str  # "module:function", called as function(model, example_inputs, path, options)
    runner: str  # "module:Class", a parity.formats.base.Runner subclass
    suffix: str  # file name suffix of the artefact
    backends: tuple[str, ...]  # backends this format has runners for
    requires: tuple[str, ...]  # importable modules both export and run need
    install: str  # how to install what is missing
    exporter_options: tuple[str, ...] = ()  # option names the built-in exporter accepts
    precision: str = "fp32"  # numeric precision of the artefact: picks the default tolerance (fp32, fp16, int8)
    linter: str | None = None  # "module:function", lint(path) -> list[parity.findings.Finding]
    isolate: bool = True  # export in the framework's worker process, where a crash or hang fails only the export
    fp32: str | None = None  # for a quantized variant: the fp32 format it is compared with (size ratio)
    runners: tuple[tuple[str, str], ...] = ()  # (backend, "module:Class") where a backend has its own runner
    static_batch: bool = False  # the artefact has a fixed batch size: exported once per case batch size
    inspector: str = ""  # "module:function" reading an artefact once after export: structural checks, metadata
    routes: tuple[tuple[str, Route], ...] = ()  # (framework, Route) for frameworks other than torch
    torch: bool = True  # PyTorch models export to this format (through the fields above)
    distributions: tuple[str, ...] = ()  # installed packages whose versions change what the artefact computes
    order: int = 1000  # position in the registry (and so in a case's default format list)
    #: (backend, kind) of the backends that evaluate the same artefact as a reference, in the order a
    #: failure consults them to say who is wrong: kind "reference" (the format's own semantics, a slow
    #: interpreter) or "unoptimised" (the same runtime with its graph optimisations off)
    oracles: tuple[tuple[str, str], ...] = ()
    #: backends run only where a case lists them (slow references): not in the default backend list
    opt_in_backends: tuple[str, ...] = ()
    #: an alternative route or variant that only cases listing it run (not in the default format list)
    opt_in: bool = False
    #: "module:function" reading the artefact's own intermediate tensors, mapped to source modules, in
    #: one run (triage's first path): function(path, feeds, backend, known_modules) -> Intermediates
    intermediates: str = ""

    def route(self, framework: str) -> Optional[Route]:
        """How a `framework` model is exported to this format, or None when it cannot be."""
        if framework == "torch":
            return Route(self.exporter, self.requires, self.install, self.exporter_options, self.isolate,
                         self.static_batch, self.distributions) if self.torch else None
        return dict(self.routes).get(framework)

    @property
    def frameworks(self) -> tuple[str, ...]:
        return (("torch",) if self.torch else ()) + tuple(f for f, _ in self.routes)

    def runner_for(self, backend: str) -> str:
        """The runner class of `backend`: its own entry in ``runners``, else the format's ``runner``."""
        return dict(self.runners).get(backend, self.runner)

    def variant(self, name: str, exporter: str, precision: str, order: int, keras: Optional[Route] = None,
                **changes) -> "FormatInfo":
        """A format that differs from this one only in how it is exported and its precision: it runs
        on the same runners, is inspected and linted the same way. Quantized variants name this
        format as the fp32 format their size is compared with. `keras` is the variant's Keras route."""
        fp32 = self.name if precision == "int8" else None
        return replace(self, name=name, exporter=exporter, precision=precision, fp32=fp32, order=order,
                       routes=(("keras", keras),) if keras else (), **changes)

    def missing_modules(self, framework: str = "torch") -> list[str]:
        """Modules exporting a `framework` model to this format needs that are not installed
        (checked without importing them)."""
        route = self.route(framework)
        return [m for m in (route.requires if route else self.requires) if importlib.util.find_spec(m) is None]


def keras_route(exporter: str, requires: tuple[str, ...] = ("ai_edge_litert",), options: tuple[str, ...] = (),
                isolate: bool = True, distributions: tuple[str, ...] = ()) -> Route:
    """A Keras route to a format, through TensorFlow's or the format owner's own converter."""
    install = "pip install 'parity[keras]'" + (" && pip install --no-deps tf2onnx" if "tf2onnx" in requires else "")
    return Route(exporter, ("tensorflow", "keras", *requires), install, options, isolate,
                 distributions=("tensorflow", "keras", *distributions))
