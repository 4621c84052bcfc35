"""Triage inside a Core ML package: every op's output from one run of the MIL reference evaluator,
mapped to modules through the scopes parity's export writes into the package."""

from __future__ import annotations

import pytest

import parity._triton_first  # noqa: F401  (before coremltools, which imports tensorflow: tensorflow-then-triton segfaults)

pytest.importorskip("coremltools")
import numpy as np  # noqa: E402
import torch  # noqa: E402

from conftest import MODELS as SHARED_MODELS, case_runs  # noqa: E402
from parity.formats.coreml import scopes  # noqa: E402
from parity.formats.coreml.intermediates import intermediates  # noqa: E402
from parity.triage import triage  # noqa: E402

MODELS = '''
import torch
from torch import nn


class Net(nn.Module):
    """A conv with a tensor of its own (mid.0) and one that coremltools fuses into the BatchNorm after it (mid.2)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                 nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.mid(self.stem(x)))


def net():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        for bn in (model.stem[1], model.mid[3]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def perturbed_export(model, example_inputs, path, layer="mid.0", route="trace"):
    """A user's own Core ML export with a bug: one layer's weights scaled by 1%, then converted as parity does."""
    from parity.formats.coreml.export import export

    with torch.no_grad():
        model.get_submodule(layer).weight.mul_(1.01)
    return export(model, example_inputs, path, input_names=["x"], output_names=["logits"], route=route)
'''

CASE = """
model: {factory: 'coreml_models:net'}
inputs: {x: {shape: [3, 8, 8]}}
batch_sizes: [1, 3]
formats: [FMT]
backends: [mil-ref]
"""


def perturbed(layer: str, fmt: str = "coreml", route: str = "trace") -> str:
    return (CASE.replace("FMT", fmt) + "export:\n"
            f"  {fmt}: {{function: 'coreml_models:perturbed_export', options: {{layer: {layer}, route: {route}}}}}\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    bodies = {
        "clean": CASE.replace("FMT", "coreml"),
        "own_tensor": perturbed("mid.0"),
        "fused": perturbed("mid.2"),
        "own_tensor_pt2": perturbed("mid.0", "coreml_pt2", "export"),
        "nan": """
            model: {factory: 'models:guarded'}
            inputs: {x: {shape: [6]}}
            batch_sizes: [2, 4]
            formats: [coreml]
            backends: [mil-ref]
            export:
              coreml: {function: 'models:unguarded_export'}
            """,
    }
    models = {"coreml_models": MODELS, "models": SHARED_MODELS}
    with case_runs(tmp_path_factory.mktemp("coreml_triage"), models, bodies) as runs:
        yield runs


def test_clean_model_matches_eager_in_every_tensor(runs):
    report = triage(runs["clean"], "coreml", "mil-ref")
    assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
    assert "per-op outputs from parity's MIL reference evaluator, not the Core ML runtime" in report.method
    assert report.first_divergence is None and report.first_nonfinite is None
    assert report.summary == "no divergence: every module compared matches eager within tolerance"
    assert all(r.status == "pass" for r in report.rows), report.table()
    assert {"stem.1", "mid.0", "mid.3", "head.0", "head.2"} <= {r.path for r in report.rows}
    # the convs folded into the BatchNorms after them have no tensor, and are listed, not dropped
    assert any(u.startswith("stem.0: no tensor of its own") for u in report.unmapped), report.unmapped
    assert any(u.startswith("mid.2: no tensor of its own") for u in report.unmapped), report.unmapped


@pytest.mark.parametrize("case, fmt", [("own_tensor", "coreml"), ("own_tensor_pt2", "coreml_pt2")])
def test_perturbed_weight_is_localised_to_its_conv(runs, case, fmt):
    """Both routes into coremltools (a trace; torch.export) map the ops back to the module."""
    report = triage(runs[case], fmt, "mil-ref")
    assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
    assert report.first_divergence == "mid.0" and report.op == "Conv2d", report.table()
    assert "computes something else than eager" in report.cause
    assert report.batch_dependent is False  # the flexible batch runs a lone sample too
    row = next(r for r in report.rows if r.path == "mid.0")
    assert row.rel_error > 1e-3 and row.cosine < 1
    before = report.rows[:report.rows.index(row)]
    assert [r.path for r in before] == ["stem.1", "stem.2"] and all(r.status == "pass" for r in before)
    scope_file = runs[case].artefact(fmt).path / scopes.FILE
    assert ('"torch.export"' if fmt == "coreml_pt2" else '"torch.jit.trace"') in scope_file.read_text()


def test_a_conv_fused_into_its_batchnorm_is_named_with_it(runs):
    report = triage(runs["fused"], "coreml", "mil-ref")
    assert report.first_divergence == "mid.3" and report.fused_with == ["mid.2"], report.table()
    assert "its tensor also holds mid.2, fused into it by the exporter" in report.summary
    assert all(r.status == "pass" for r in report.rows[:[r.path for r in report.rows].index("mid.3")])


def test_a_nan_is_traced_to_the_op_and_module_that_made_it(runs):
    report = triage(runs["nan"], "coreml", "mil-ref")
    assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
    assert report.first_nonfinite is not None, report.table()
    assert "(log)" in report.first_nonfinite and report.first_nonfinite.endswith(" in log"), report.first_nonfinite
    assert report.first_divergence == "log", report.table()
    assert next(r for r in report.rows if r.path == "log").nonfinite > 0
    assert next(r for r in report.rows if r.path == "stem").status == "pass"


def test_every_op_output_is_read_and_other_backends_are_named(runs):
    run = runs["clean"]
    feeds = run.example_inputs()
    known = {name for name, _ in run.eager.named_modules() if name}
    got = intermediates(run.artefact("coreml").path, feeds, "cpu", known)
    assert "not the Core ML runtime" in got.note and "the cpu backend's own values are out of reach" in got.note
    last = next(m for m in got.mapped if m.module == "head.2")
    assert last.op == "linear" and got.mapped[-1].module == "head"  # the Linear's tensor ends head too
    assert got.mapped[-1].tensor == last.tensor == run.output_names[0]  # the program's output
    with torch.no_grad():
        np.testing.assert_allclose(last.value, run.eager(torch.from_numpy(feeds["x"])).numpy(), rtol=1e-4, atol=1e-5)
    from parity.formats.coreml.mil_ref import load_program

    program, _ = load_program(run.artefact("coreml").path)
    computed = [op for op in program.functions["main"].operations if op.op_type != "const"]
    assert got.tensors == len(computed)  # every op's output
    assert [m.position for m in got.mapped] == sorted(m.position for m in got.mapped)


def test_a_package_converted_elsewhere_maps_nothing_and_says_why(runs, tmp_path):
    import shutil

    copy = tmp_path / "elsewhere.mlpackage"
    shutil.copytree(runs["clean"].artefact("coreml").path, copy)
    (copy / scopes.FILE).unlink()
    got = intermediates(copy, runs["clean"].example_inputs(), "mil-ref", {"stem", "mid", "head"})
    assert not got.mapped and got.tensors == 0
    assert got.note.startswith(f"the package carries no module scopes ({scopes.FILE}, written by parity's Core ML "
                               "export"), got.note
    scopes.write(copy, {name: [] for name in scopes.read(runs["clean"].artefact("coreml").path)["ops"]},
                 "torch.jit.trace")  # every op outside any module
    got = intermediates(copy, runs["clean"].example_inputs(), "mil-ref", {"stem", "mid", "head"})
    assert not got.mapped and got.unmapped == ["head", "mid", "stem"]
    assert got.note == (f"no op's scopes in the package's {scopes.FILE} name a module of the model (recorded "
                        "through torch.jit.trace), so no tensor maps to a module")


def test_the_evaluator_hands_every_op_output_to_the_recorder(runs):
    from parity.formats.coreml.mil_ref import Evaluator, load_program

    program, _ = load_program(runs["clean"].artefact("coreml").path)
    evaluator = Evaluator(program)
    seen: list[tuple[str, str, tuple]] = []
    x = runs["clean"].example_inputs()["x"]
    out = evaluator.run({"x": x}, record=lambda op, values: seen.append((op.op_type, *[(k, tuple(v.shape))
                                                                                      for k, v in values.items()])))
    assert [t for t, *_ in seen] == [op.op_type for op in evaluator.ops if op.op_type != "const"]
    assert seen[-1][1] == (evaluator.output_names[0], tuple(next(iter(out.values())).shape))
    assert seen[0][0] == "conv" and seen[0][1][1] == (3, 8, 8, 8)  # NCHW, as torch


def test_the_scopes_name_the_users_modules_inside_the_output_flattening_wrapper(tmp_path):
    from parity.formats.coreml.export import export
    from parity.frameworks.pytorch import flat_outputs_class

    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    export(flat_outputs_class(1)(inner, None, None), (torch.randn(2, 4),), tmp_path / "w.mlpackage",
           input_names=["x"], output_names=["y"])
    recorded = scopes.read(tmp_path / "w.mlpackage")["ops"]
    assert {p for paths in recorded.values() for p in paths} == {"0", "1", "2"}, recorded
