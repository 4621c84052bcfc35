"""Importing a case's own code (factories, export functions) without importing any framework here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from parity.registry import load_object
from parity.spec import Case


def import_from_case(case: Case, target: str):
    """Import 'module:attr', looking beside the case file too.

    A module beside the case file is (re)loaded from that file when the module of that name in
    sys.modules came from elsewhere or the file changed since, so two case directories with a
    models.py each, or an edited models.py, never get a stale module.
    """
    import parity._triton_first  # noqa: F401  (the user's module may import tensorflow)

    directory = str(case.directory)
    if directory not in sys.path:
        sys.path.append(directory)
    top = target.partition(":")[0].split(".")[0]
    local = case.directory / f"{top}.py"
    if local.is_file():
        stamp = (str(local.resolve()), local.stat().st_mtime_ns)
        if getattr(sys.modules.get(top), "__parity_stamp__", None) != stamp:
            _load_file(top, local).__parity_stamp__ = stamp
    return load_object(target)


def _load_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
