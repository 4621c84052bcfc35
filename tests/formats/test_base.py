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


def test_a_runtime_computing_in_place_cannot_change_the_callers_inputs(tmp_path):
    """A traced in-place activation writes into the buffer it is fed; runners are fed copies, so the
    case's inputs (shared by every check) and earlier outputs stay as they were."""
    import numpy as np
    import torch

    from parity.artefact import Artefact
    from parity.formats.torchscript.runner import TorchScriptRunner

    path = tmp_path / "inplace.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Hardswish(inplace=True), (torch.randn(2, 3),)), str(path))
    x = np.linspace(-4, 4, 6, dtype=np.float32).reshape(2, 3)
    before = x.copy()
    with TorchScriptRunner(Artefact("torchscript", path, "prebuilt", ["x"], ["y"]), "cpu") as runner:
        first = runner.infer({"x": x})[0]
        runner.infer({"x": x[:1]})
    assert np.array_equal(x, before)
    assert np.allclose(first, torch.nn.functional.hardswish(torch.from_numpy(before)).numpy())
