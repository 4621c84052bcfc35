"""The format registry: every format parity can export to and run, discovered, never hard-coded.

Formats come from two places, both read without importing any framework:

- each folder of this package (``parity/formats/<name>/``) whose ``__init__`` declares
  ``FORMATS = [FormatInfo(...), ...]``: everything about a format (export routes per framework,
  quantize route, runners, inspector, artefact lint) lives in its folder;
- the ``parity.formats`` entry-point group: a package outside parity registers a module (or any
  object) with the same ``FORMATS`` list, and its formats are collected and run like the built-in ones.

:data:`FORMATS` is a read-only mapping, filled on first use.
"""

from __future__ import annotations

import importlib
import pkgutil

from parity.errors import ParityError
from parity.registry import Registry
from parity.formats.spec import FormatInfo, Route, keras_route

#: Every backend name a case may list. A (format, backend) pair is tested when the format lists the
#: backend in its ``backends``; a listed backend that cannot run here is skipped with the reason.
#: ``cpu-ref``: LiteRT's reference kernels; ``mil-ref``: parity's MIL reference evaluator (CoreML numerics
#: without macOS); ``gpu`` and ``ane``: the Core ML runtime's CPU_AND_GPU and ALL compute units.
BUILTIN_BACKENDS: tuple[str, ...] = ("cpu", "cuda", "cpu-ref", "mil-ref", "gpu", "ane", "cpu-noopt", "ref")

#: The entry-point group through which other packages add formats.
ENTRY_POINT_GROUP = "parity.formats"


def _declared(obj, where: str) -> list[FormatInfo]:
    found = getattr(obj, "FORMATS", obj)
    if isinstance(found, FormatInfo):
        found = [found]
    if not isinstance(found, (list, tuple)) or not all(isinstance(f, FormatInfo) for f in found):
        raise ParityError(f"{where}: expected FORMATS, a list of parity.formats.spec.FormatInfo; got {found!r:.200}")
    return list(found)


def _builtin() -> list[tuple[FormatInfo, str]]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            name = f"{__name__}.{module.name}"
            found += [(f, name) for f in _declared(importlib.import_module(name), name)]
    return found


FORMATS: Registry[FormatInfo] = Registry("format", ENTRY_POINT_GROUP, _builtin, _declared)


def backends() -> tuple[str, ...]:
    """The built-in backends, then any other a registered format declares."""
    extra = [b for info in FORMATS.values() for b in info.backends if b not in BUILTIN_BACKENDS]
    return BUILTIN_BACKENDS + tuple(dict.fromkeys(extra))


def formats_for(framework: str) -> list[str]:
    """The formats a `framework` model can be exported to, in registry order."""
    return [name for name, info in FORMATS.items() if framework in info.frameworks]


def missing_modules(fmt: FormatInfo, framework: str = "torch") -> list[str]:
    """The modules exporting a `framework` model to `fmt` needs that are not installed."""
    return fmt.missing_modules(framework)


__all__ = ["BUILTIN_BACKENDS", "ENTRY_POINT_GROUP", "FORMATS", "FormatInfo", "Route", "backends", "formats_for",
           "keras_route", "missing_modules"]
