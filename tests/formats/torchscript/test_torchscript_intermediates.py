"""The TorchScript reader of intermediate tensors: one run of the saved program, each tensor mapped to
the module that made it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from parity.formats.torchscript.export import export
from parity.formats.torchscript.intermediates import intermediates, module_paths
from parity.frameworks.pytorch import model_for_export


class ConvAct(nn.Module):
    """timm's BatchNormAct shape: a BatchNorm computed in the parent's own forward, then an in-place child."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.act = nn.Hardswish(inplace=True)

    def forward(self, x):
        return self.act(nn.functional.batch_norm(self.conv(x), self.norm.running_mean, self.norm.running_var,
                                                 self.norm.weight, self.norm.bias))


class Width(nn.Module):
    """Computes only a size: no tensor of its own."""

    def forward(self, x):
        return x.shape[1]


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(ConvAct(), nn.ReLU(inplace=True))
        self.width = Width()
        self.skip = nn.Identity()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.skip(self.stem(x))
        return self.head(h.mean((2, 3)).reshape(-1, self.width(h)))


def _eager(model, x) -> tuple[dict[str, np.ndarray], set[str]]:
    """Each module's output as eager computes it, copied right away (in-place children overwrite it),
    and the modules called (what triage passes as the known modules)."""
    out: dict[str, np.ndarray] = {}
    called: set[str] = set()

    def hook(mod, args, o, path):
        called.add(path)
        if isinstance(o, torch.Tensor):
            out.setdefault(path, o.detach().clone().numpy())
    handles = [m.register_forward_hook(lambda mod, args, o, p=p: hook(mod, args, o, p))
               for p, m in model.named_modules() if p]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out, called


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """The nested model traced as parity exports it (inside the output-flattening wrapper)."""
    torch.manual_seed(0)
    model = Nested().eval()
    x = torch.randn(2, 3, 6, 6)
    path = tmp_path_factory.mktemp("ts") / "nested.pt"
    export(model_for_export(model, outputs=[()]), (x,), path, input_names=["x"], output_names=["y"])
    eager, known = _eager(model, x)
    return path, x, eager, known, model


def test_modules_map_to_their_tensors_in_execution_order(traced):
    path, x, eager, known, _ = traced
    got = intermediates(path, {"x": x.numpy()}, "cpu", known)
    assert [i.module for i in got.mapped] == ["stem.0.conv", "stem.0.act", "stem.0", "stem.1", "stem", "head"]
    assert [i.op for i in got.mapped] == ["aten::_convolution", "aten::hardswish_", "aten::hardswish_",
                                          "aten::relu_", "aten::relu_", "aten::linear"]
    assert [i.position for i in got.mapped] == sorted(i.position for i in got.mapped)
    for item in got.mapped:  # each value is the one eager computed, not one overwritten later in place
        np.testing.assert_allclose(item.value, eager[item.module], rtol=1e-5, atol=1e-6, err_msg=item.module)
    assert got.first_nonfinite is None and got.tensors >= 6 and "one run of the saved program" in got.note


def test_a_child_reads_the_tensor_its_parents_own_op_made(traced):
    """What triage needs to name the parent (the BatchNorm in ConvAct's forward), not its `act` child."""
    path, x, eager, known, model = traced
    act = next(i for i in intermediates(path, {"x": x.numpy()}, "cpu", known).mapped if i.module == "stem.0.act")
    [(name, value, scopes)] = act.inputs
    assert scopes == ["stem", "stem.0"]  # made by stem.0's own op, inside no child
    norm = model.stem[0].norm
    with torch.no_grad():  # the BatchNorm's output as made, before the in-place Hardswish overwrote it
        expected = nn.functional.batch_norm(torch.from_numpy(eager["stem.0.conv"]), norm.running_mean,
                                            norm.running_var, norm.weight, norm.bias).numpy()
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    assert name != act.tensor


def test_modules_without_a_tensor_of_their_own_are_listed(traced):
    path, x, _, known, _ = traced
    got = intermediates(path, {"x": x.numpy()}, "cpu", known)
    assert got.unmapped == ["skip", "width"]  # an Identity (no op at all), a module computing a size only
    assert "model" not in {i.module for i in got.mapped} | set(got.unmapped)  # parity's wrapper is no module


def test_the_output_is_the_programs_own():
    """The recorded tensors come from the artefact, not from the model: a weight changed after export
    does not show, one changed before it does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh()).eval()
    x = torch.randn(2, 3)
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "m.pt"
    export(model, (x,), path, input_names=["x"], output_names=["y"])
    with torch.no_grad():
        expected = model[0](x).numpy()
        model[0].weight.mul_(2)
    got = intermediates(path, {"x": x.numpy()}, "cpu", {"0", "1"})
    np.testing.assert_allclose(got.mapped[0].value, expected, rtol=1e-6)


def test_a_nan_is_traced_to_the_op_and_module_that_made_it(tmp_path):
    class Log(nn.Module):
        def forward(self, x):
            return torch.log(x)

    model = nn.Sequential(nn.Linear(4, 4), Log(), nn.Linear(4, 2)).eval()
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.5, 0.5, 0.5, 0.5]])
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.zero_()
    path = tmp_path / "nan.pt"
    export(model, (x,), path, input_names=["x"], output_names=["y"])
    got = intermediates(path, {"x": x.numpy()}, "cpu", {"0", "1", "2"})
    assert got.first_nonfinite is not None
    assert got.first_nonfinite.startswith("node %") and got.first_nonfinite.endswith("(aten::log) in 1")
    assert [i.module for i in got.mapped] == ["0", "1", "2"] and np.isnan(got.mapped[1].value).any()


def test_a_scripted_container_left_out_of_the_call_stack_is_resolved(tmp_path):
    """torch.jit.script inlines a ModuleDict lookup and a ModuleList loop without the container's frame:
    the names are found again in the loaded module tree."""

    class Scripted(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleDict({"first": nn.Linear(4, 4)})
            self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

        def forward(self, x):
            x = self.blocks["first"](x)
            for layer in self.layers:
                x = torch.relu(layer(x))
            return x

    x = torch.randn(2, 4)
    path = tmp_path / "s.pt"
    export(Scripted().eval(), (x,), path, input_names=["x"], output_names=["y"], method="script")
    known = {"blocks.first", "layers.0", "layers.1"}
    got = intermediates(path, {"x": x.numpy()}, "cpu", known)
    assert [i.module for i in got.mapped] == ["blocks.first", "layers.0", "layers.1"], got.unmapped


def test_module_paths_skip_function_frames():
    tree = {"a": object(), "a.b": object()}
    assert module_paths("a(A).UNKNOWN_INSTANCE(UNKNOWN_TYPE).b(B)", tree) == ["a", "a.b"]
    assert module_paths("", tree) == []


def test_triage_names_the_op_and_module_where_a_nan_starts(tmp_path):
    """Eager keeps log's input positive; the exporter dropped the guard: triage, reading the artefact's
    own tensors, names aten::log in module `log`, not the Linear after it that carries the NaN on."""
    from conftest import MODELS, case_runs
    from parity.triage import triage

    with case_runs(tmp_path, {"models": MODELS}, {"nan": """
        model: {factory: 'models:guarded'}
        inputs: {x: {shape: [6]}}
        batch_sizes: [2, 4]
        formats: [torchscript]
        backends: [cpu]
        export:
          torchscript: {function: 'models:unguarded_export'}
        """}) as runs:
        report = triage(runs["nan"], "torchscript", "cpu")
    assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
    assert report.first_nonfinite.startswith("node %") and report.first_nonfinite.endswith("(aten::log) in log")
    assert report.first_divergence == "log", report.table()
    assert next(r for r in report.rows if r.path == "log").nonfinite > 0
    assert [r.status for r in report.rows] == ["pass", "fail", "fail"]  # stem matched: the NaN starts in log
