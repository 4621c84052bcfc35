"""The runner interface (after Polygraphy's): claim resources in activate(), infer(), deactivate().

A runner is also a context manager: ``with runner_cls(artefact, backend) as runner: runner.infer(...)``
deactivates it on the way out, whether or not the block raised.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from parity.artefact import Artefact
from parity.errors import BackendUnavailable


class Runner:
    """Runs one artefact on one backend.

    Subclasses implement ``unavailable_reason`` (a classmethod: why `backend` cannot run here, or
    None), ``activate_impl``, ``infer_impl`` and optionally ``deactivate_impl``. Inputs are fed and
    outputs returned by position, in the order of the artefact's ``input_names``/``output_names``.
    """

    #: backends this runner implements
    backends: tuple[str, ...] = ()

    def __init__(self, artefact: Artefact, backend: str) -> None:
        self.artefact = artefact
        self.backend = backend
        self.active = False
        #: facts worth a line in the report (e.g. a layout the runner transposed)
        self.notes: list[str] = []

    @classmethod
    def unavailable_reason(cls, backend: str) -> Optional[str]:
        """Why `backend` cannot run on this machine, or None when it can."""
        if backend not in cls.backends:
            return f"{cls.__name__} has no {backend!r} backend; it has: {', '.join(cls.backends)}"
        return None

    @property
    def name(self) -> str:
        """What actually runs, for reports (runtime, version, provider or device)."""
        return f"{type(self).__name__}[{self.backend}]"

    def activate(self) -> "Runner":
        if self.active:
            return self
        reason = self.unavailable_reason(self.backend)
        if reason:
            raise BackendUnavailable(reason)
        self.activate_impl()
        self.active = True
        return self

    def infer(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not self.active:
            raise RuntimeError(f"{self.name}: infer() called before activate()")
        # copies: a runtime may compute in place on the buffers it is fed (a traced in-place
        # activation writes into its input), and the caller's arrays are the case's inputs
        return self.infer_impl({name: np.array(a, copy=True) for name, a in inputs.items()})

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
            self.active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        """Deactivate whether or not the block raised (an ``infer`` that raises releases its session)."""
        self.deactivate()

    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        pass


def output_order(own: list[str], artefact: Artefact) -> list[int]:
    """Positions of the case's outputs among the artefact's own (`own`, its output names in its order).

    By name where the artefact has the names the case expects (after ``export.<format>.outputs``);
    by position only for a single output, or for an artefact parity or the case's own function
    wrote (in the case's order). A prebuilt artefact with other names is an error asking for the
    mapping: outputs are never matched silently by position.
    """
    wanted = list(artefact.output_names)
    if set(wanted) <= set(own):
        return [own.index(n) for n in wanted]
    if artefact.source != "prebuilt" or (len(own) == 1 and len(wanted) == 1):
        return list(range(len(own)))
    raise ValueError(f"the artefact's outputs are named {', '.join(own)}; the case compares "
                     f"{', '.join(wanted)}. Map them by name with export.{artefact.format}.outputs "
                     f"{{case name: artefact name}} (outputs are never matched by position)")
