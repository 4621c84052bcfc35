"""The check registry: one module per check, each defining ``CHECK`` (a :class:`~parity.checks.base.Check`).

Checks are discovered from the modules of this package and from the ``parity.checks``
entry-point group (a package outside parity registers an object or module with ``CHECK``). Adding a
check is adding one module. :data:`CHECKS` is a read-only mapping name -> check, in registry order.
Checks read outputs through a :class:`~parity.pipeline.run.CaseRun` and compare them with
:mod:`parity.compare`; they never import a framework.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Mapping
from typing import Iterator, Optional

from parity.checks.base import Check, CheckResult
from parity.errors import ParityError

ENTRY_POINT_GROUP = "parity.checks"
_NOT_CHECKS = {"base"}


def _declared(obj, where: str) -> Check:
    check = getattr(obj, "CHECK", obj)
    if not isinstance(check, Check) or not check.name:
        raise ParityError(f"{where}: expected CHECK, a named parity.checks.base.Check instance; got {check!r:.200}")
    return check


def _discover() -> dict[str, Check]:
    found: list[tuple[Check, str]] = []
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_CHECKS and not module.name.startswith("_"):
            name = f"{__name__}.{module.name}"
            found.append((_declared(importlib.import_module(name), name), name))
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {entry.name!r} ({entry.value}) of group {ENTRY_POINT_GROUP!r}"
        try:
            obj = entry.load()
        except Exception as e:
            raise ParityError(f"{where} failed to load: {type(e).__name__}: {e}") from None
        found.append((_declared(obj, where), where))
    registry: dict[str, Check] = {}
    origin: dict[str, str] = {}
    for check, where in sorted(found, key=lambda item: (item[0].order, item[0].name)):
        if check.name in registry:
            raise ParityError(f"check {check.name!r} is declared twice: by {origin[check.name]} and by {where}")
        registry[check.name] = check
        origin[check.name] = where
    return registry


class _Registry(Mapping):
    def __init__(self) -> None:
        self._checks: Optional[dict[str, Check]] = None

    @property
    def _all(self) -> dict[str, Check]:
        if self._checks is None:
            self._checks = _discover()
        return self._checks

    def __getitem__(self, name: str) -> Check:
        return self._all[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def reload(self) -> None:
        self._checks = None


CHECKS = _Registry()

__all__ = ["CHECKS", "Check", "CheckResult", "ENTRY_POINT_GROUP"]
