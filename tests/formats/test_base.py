"""The runner interface: activate / infer / deactivate, and the context manager."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_runner_is_deactivated_when_infer_raises():
    """A runner used as a context manager releases its session even when inference fails."""
    from parity.artefact import Artefact
    from parity.formats.base import Runner

    released = []

    class Failing(Runner):
        backends = ("cpu",)

        def activate_impl(self):
            pass

        def infer_impl(self, inputs):
            raise RuntimeError("kernel exploded")

        def deactivate_impl(self):
            released.append(True)

    runner = Failing(Artefact("x", Path("m"), "prebuilt", ["a"], ["b"]), "cpu")
    with pytest.raises(RuntimeError, match="kernel exploded"):
        with runner:
            runner.infer({})
    assert released == [True] and not runner.active
