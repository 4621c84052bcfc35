"""What the case loader needs to know about formats, backends and checks, without importing them.

The registries live above this package (``parity.formats``, ``parity.checks``); the layer that owns
them builds a :class:`Catalog` (``parity.catalog.default()``) and hands it to
:func:`parity.case.load.load_case`, so loading a case never imports a registry and the imports
keep flowing one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Catalog:
    """Names a case file may use, and the facts the loader checks them against.

    ``routes`` maps (format, framework) to the option names its built-in exporter accepts; a pair
    that is absent has no route. ``formats`` is in registry order (the default format list follows it).
    """

    formats: tuple[str, ...]
    backends: tuple[str, ...]
    checks: tuple[str, ...]
    opt_in_checks: tuple[str, ...] = ()
    frameworks: tuple[str, ...] = ("torch", "keras")
    routes: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    #: INT8 formats: in the default list only for a case with an ``accuracy`` section, which is what
    #: judges them (on random weights their error against fp32 is noise, not a verdict)
    quantized: tuple[str, ...] = ()
    #: backends only a case that lists them runs (slow reference evaluators): not in the default list
    opt_in_backends: tuple[str, ...] = ()
    #: formats only a case that lists them runs (other routes to a format): not in the default list
    opt_in_formats: tuple[str, ...] = ()

    @property
    def default_backends(self) -> list[str]:
        return [b for b in self.backends if b not in self.opt_in_backends]

    def formats_for(self, framework: str, quantized: bool = True) -> list[str]:
        """Every format a `framework` model can be exported to, in registry order (without the INT8
        ones unless `quantized`, and without the opt-in routes)."""
        return [f for f in self.formats if (f, framework) in self.routes and (quantized or f not in self.quantized)
                and f not in self.opt_in_formats]

    def exporter_options(self, fmt: str, framework: str) -> Optional[tuple[str, ...]]:
        """Options of the built-in exporter of (`fmt`, `framework`); None when there is no route."""
        return self.routes.get((fmt, framework))

    @property
    def default_checks(self) -> list[str]:
        return [c for c in self.checks if c not in self.opt_in_checks]
