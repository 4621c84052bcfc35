"""The check registry: one module per check, each defining ``CHECK`` (a :class:`~parity.checks.base.Check`).

Checks are discovered from the modules of this package and from the ``parity.checks``
entry-point group (a package outside parity registers an object or module with ``CHECK``). Adding a
check is adding one module. :data:`CHECKS` is a read-only mapping name -> check, in registry order.
Checks read outputs through a :class:`~parity.pipeline.run.CaseRun` and compare them with
:mod:`parity.compare`; they never import a framework.
"""

from __future__ import annotations

import importlib
import pkgutil

from parity.checks.base import Check, CheckResult
from parity.errors import ParityError
from parity.registry import Registry

ENTRY_POINT_GROUP = "parity.checks"
_NOT_CHECKS = {"base", "blame"}  # helpers of the checks, not checks


def _declared(obj, where: str) -> Check:
    check = getattr(obj, "CHECK", obj)
    if not isinstance(check, Check) or not check.name:
        raise ParityError(f"{where}: expected CHECK, a named parity.checks.base.Check instance; got {check!r:.200}")
    return check


def _builtin() -> list[tuple[Check, str]]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_CHECKS and not module.name.startswith("_"):
            name = f"{__name__}.{module.name}"
            found.append((_declared(importlib.import_module(name), name), name))
    return found


CHECKS: Registry[Check] = Registry("check", ENTRY_POINT_GROUP, _builtin, lambda obj, where: [_declared(obj, where)])

__all__ = ["CHECKS", "Check", "CheckResult", "ENTRY_POINT_GROUP"]
