"""The registries as the case loader sees them: :func:`default` builds the
:class:`~parity.case.catalog.Catalog` from the format and check registries, and :func:`load_case` /
:func:`load_cases` load case files against it. The plugin, the CLI and triage load cases through here.
"""

from __future__ import annotations

from pathlib import Path

from parity.case import Case, Catalog
from parity.case import load_case as _load_case
from parity.case import load_cases as _load_cases
from parity.checks import CHECKS
from parity.errors import CaseError
from parity.formats import FORMATS, backends
from parity.frameworks import FRAMEWORKS


def default() -> Catalog:
    """Every registered format (with its routes), backend and check."""
    routes = {}
    for name, info in FORMATS.items():
        for framework in info.frameworks:
            routes[(name, framework)] = info.route(framework).exporter_options
    return Catalog(formats=tuple(FORMATS), backends=backends(), checks=tuple(CHECKS),
                   quantized=tuple(n for n, info in FORMATS.items() if info.precision == "int8"),
                   opt_in_checks=tuple(n for n, c in CHECKS.items() if c.opt_in), frameworks=tuple(FRAMEWORKS),
                   routes=routes,
                   opt_in_backends=tuple(dict.fromkeys(b for info in FORMATS.values() for b in info.opt_in_backends)),
                   opt_in_formats=tuple(n for n, info in FORMATS.items() if info.opt_in))


def load_case(path: str | Path, root: str | Path | None = None, allow_external: bool = False) -> Case:
    """Load one case file against the default catalog (raises CaseError naming file, field and fix);
    the files it reads must lie under `root` (default: its directory) unless `allow_external`."""
    return _load_case(path, default(), root=root, allow_external=allow_external)


def load_cases(directory: str | Path, allow_external: bool = False) -> tuple[list[Case], list[CaseError]]:
    """Load every case file in `directory`; invalid files become errors and the valid ones still load."""
    return _load_cases(directory, default(), allow_external=allow_external)
