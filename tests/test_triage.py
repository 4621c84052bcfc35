"""Triage localises planted bugs to the right module, in every format the approach supports."""

from __future__ import annotations

import json

import pytest

from conftest import MODELS, case_runs, write_case
from parity.session import Session
from parity.catalog import load_case
from parity.formats import FORMATS as REGISTRY
from parity.triage import main, triage

#: every format whose triage reads the artefact's own tensors, and the backend the planted bugs run on there
BACKENDS = {"torchscript": "cpu", "onnx": "cpu", "pt2": "cpu", "tflite": "cpu", "coreml": "mil-ref"}
FORMATS = tuple(BACKENDS)
#: converters that fold a convolution into the inference BatchNorm after it (the dynamo ONNX exporter,
#: litert-torch, coremltools): the conv has no tensor of its own, the BatchNorm's tensor holds both
FOLD_CONV_INTO_BATCHNORM = ("onnx", "tflite", "coreml")
#: formats whose triage reads the artefact's own intermediate tensors (the others export module by module);
#: test_the_formats_that_read_their_own_tensors pins the list
IN_ARTEFACT = tuple(f for f in ("torchscript", "onnx", "pt2", "tflite", "coreml") if REGISTRY[f].intermediates)

CASE = """
model: {factory: 'FACTORY'}
inputs: {x: {shape: [3, 32, 32]}}
batch_sizes: [1, 4]
formats: [torchscript, onnx, pt2, tflite, coreml]
backends: [cpu, mil-ref]
"""


def planted(bug: str, factory: str) -> str:
    return CASE.replace("FACTORY", factory) + "export:\n" + "".join(
        f"  {fmt}: {{function: 'models:planted_export', options: {{bug: {bug}}}}}\n" for fmt in FORMATS)


INT8 = """
model: {factory: 'models:planted_resnet'}
inputs: {x: {shape: [3, 32, 32]}}
batch_sizes: [1, 4]
formats: [onnx_int8]
backends: [cpu]
export:
  onnx_int8: {function: 'models:badly_calibrated_int8_export'}
"""


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    bodies = {
        "bn_block": CASE.replace("FACTORY", "parity_examples.zoo:resnet_with_training_block"),
        "weight": planted("weight", "models:planted_resnet"),
        "gelu": planted("gelu", "models:gelu_net"),
        "clean": CASE.replace("FACTORY", "models:planted_resnet"),
        "int8": INT8,
    }
    with case_runs(tmp_path_factory.mktemp("triage"), {"models": MODELS}, bodies) as runs:
        yield runs


@pytest.mark.parametrize("fmt,backend", [("torchscript", "cpu"), ("pt2", "cpu"), ("tflite", "cpu"),
                                         ("coreml", "mil-ref")])
def test_batchnorm_in_training_mode_in_one_block(cases, fmt, backend):
    report = triage(cases["bn_block"], fmt, backend)
    assert report.first_divergence == "layer2.0.bn1"
    assert report.summary == ("first divergence: layer2.0.bn1 (BatchNorm2d), batch statistics at inference; "
                              "module is in training mode")
    assert report.batch_dependent is True
    failing = [r.path for r in report.rows if r.status == "fail"]
    if fmt in IN_ARTEFACT:  # every tensor in execution order: the first over tolerance is the BatchNorm's
        assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
        assert failing[0] == "layer2.0.bn1"
        assert all(r.status == "pass" for r in report.rows[:[r.path for r in report.rows].index("layer2.0.bn1")])
    else:  # the descent: each level's first failing child
        assert failing == ["layer2", "layer2.0", "layer2.0.bn1"]
        assert all(r.status == "pass" for r in report.rows if r.status != "fail")


def test_batchnorm_in_training_mode_onnx_exports_running_statistics(cases):
    """The dynamo exporter silently uses running statistics: nothing diverges, the lint says why."""
    report = triage(cases["bn_block"], "onnx", "cpu")
    assert report.first_divergence is None
    assert "layer2.0.bn1" in report.summary and "training mode" in report.summary


#: resnet18's convolutions: each is followed by an inference BatchNorm
CONVS = {"conv1", *(f"layer{i}.{j}.conv{k}" for i in range(1, 5) for j in (0, 1) for k in (1, 2)),
         *(f"layer{i}.0.downsample.0" for i in range(2, 5))}


@pytest.mark.parametrize("fmt", FORMATS)
def test_perturbed_weight_in_a_middle_layer(cases, fmt):
    report = triage(cases["weight"], fmt, BACKENDS[fmt])
    if fmt in FOLD_CONV_INTO_BATCHNORM:  # the converter folded conv2 into bn2's tensor: bn2 is named, with conv2
        assert report.first_divergence == "layer3.0.bn2" and report.fused_with == ["layer3.0.conv2"], report.table()
        assert report.op == "BatchNorm2d"
        assert "its tensor also holds layer3.0.conv2, fused into it by the exporter" in report.summary
        assert any(u.startswith("layer3.0.conv2: no tensor of its own") for u in report.unmapped), report.unmapped
        path = "layer3.0.bn2"
    else:  # torchscript, pt2: nothing is folded, so the convolution has its own tensor
        assert report.first_divergence == "layer3.0.conv2" and report.fused_with == [], report.table()
        assert report.op == "Conv2d"
        path = "layer3.0.conv2"
    assert report.method.startswith("the artefact's own" if fmt in IN_ARTEFACT else "each module exported")
    assert "computes something else than eager" in report.cause
    assert report.batch_dependent is False
    row = next(r for r in report.rows if r.path == path)
    assert row.rel_error > 1e-3 and row.cosine < 1
    if fmt in IN_ARTEFACT:  # every tensor before it matched: the divergence starts there, not carried from earlier
        before = report.rows[:report.rows.index(row)]
        assert len(before) > 10 and all(r.status == "pass" for r in before)
        assert "layer3.0.bn1" in {r.path for r in before}  # conv2's input, through the block's relu, matched


@pytest.mark.parametrize("fmt", FORMATS)
def test_replaced_activation(cases, fmt):
    report = triage(cases["gelu"], fmt, BACKENDS[fmt])
    assert report.first_divergence == "mid.3", report.table()
    assert report.op == "GELU" and report.fused_with == []
    assert report.summary.startswith("first divergence: mid.3 (GELU), computes something else than eager")
    assert report.batch_dependent is False
    if fmt in IN_ARTEFACT:  # every module up to it has a tensor of its own, all matching: the conv before it too
        assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
        assert [(r.path, r.status) for r in report.rows[:6]] == [
            ("stem.0", "pass"), ("stem.1", "pass"), ("mid.0", "pass"), ("mid.1", "pass"), ("mid.2", "pass"),
            ("mid.3", "fail")], report.table()


@pytest.mark.parametrize("fmt", FORMATS)
def test_clean_case_reports_no_divergence(cases, fmt):
    report = triage(cases["clean"], fmt, BACKENDS[fmt])
    assert report.first_divergence is None
    every = "every module compared" if fmt in IN_ARTEFACT else "every top-level module"
    assert report.summary == f"no divergence: {every} matches eager within tolerance"
    if fmt in IN_ARTEFACT:  # every module with a tensor of its own, inner ones included, all within tolerance
        assert len(report.rows) > 20 and all(r.status == "pass" for r in report.rows)
        assert {"layer3.0.bn2", "layer4.1", "fc"} <= {r.path for r in report.rows}
        compared = {r.path for r in report.rows}
        tensorless = {u.split(":")[0] for u in report.unmapped if ": no tensor of its own" in u}
        if fmt in FOLD_CONV_INTO_BATCHNORM:  # every conv folded into its BatchNorm: listed, never dropped
            assert CONVS <= tensorless and not CONVS & compared, report.table()
        else:
            assert CONVS <= compared, report.table()
    else:
        assert {r.path for r in report.rows} == {"conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                 "layer4", "avgpool", "fc"}


def test_cli_prints_table_and_writes_json(case_dir, tmp_path, capsys):
    write_case(case_dir, "bn", CASE.replace("FACTORY", "parity_examples.zoo:resnet_with_training_block"))
    out = tmp_path / "t.json"
    rc = main(["bn", "--format", "pt2", "--cases", str(case_dir), "--build", str(tmp_path / "b"), "--json", str(out)])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "first divergence: layer2.0.bn1 (BatchNorm2d)" in printed and "module  " in printed
    data = json.loads(out.read_text())
    assert data["first_divergence"] == "layer2.0.bn1"
    assert {"path", "op", "max_abs", "rel_error", "cosine", "status"} <= set(data["rows"][0])
    assert main(["bn", "--format", "tflite2", "--cases", str(case_dir)]) == 2


def test_parity_command_runs_triage(case_dir, tmp_path, capsys):
    from parity.cli import main as parity_main

    write_case(case_dir, "clean", CASE.replace("FACTORY", "models:gelu_net"))
    rc = parity_main(["triage", "clean", "-f", "onnx", "--cases", str(case_dir), "--build", str(tmp_path / "b")])
    assert rc == 0 and "no divergence" in capsys.readouterr().out
    assert parity_main(["triage", "nope", "-f", "onnx", "--cases", str(case_dir)]) == 2


def test_quantized_artefact_with_one_badly_calibrated_layer(cases):
    report = triage(cases["int8"], "onnx_int8", "cpu")
    assert report.first_divergence == "layer3.0.conv2", report.table()
    passed = [r for r in report.rows if r.status == "pass"]
    assert passed and max(r.rel_error for r in passed) > 0  # int8 noise elsewhere, inside the int8 tolerance


INPLACE_MODELS = '''
import torch
from torch import nn


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: the activation is a child of the BatchNorm, applied in place."""

    def __init__(self, channels):
        super().__init__(channels)
        self.act = nn.Hardswish(inplace=True)

    def forward(self, x):
        return self.act(super().forward(x))


def inplace_net():
    """Conv-BatchNormAct blocks, as timm builds them, with one BatchNorm left in training mode."""
    torch.manual_seed(0)
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), BatchNormAct(o))
    model = nn.Sequential(block(3, 8), block(8, 8), block(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    model.train()
    for _ in range(3):
        model(torch.randn(8, 3, 16, 16))
    model.eval()
    model[1][1].train()
    return model
'''


def test_in_place_activations_after_the_planted_batchnorm_do_not_move_the_blame(tmp_path):
    """An in-place activation overwrites its input, which is the BatchNorm's output: recorded inputs
    and outputs are copies, so the BatchNorm is named, not the activation after it."""
    body = """
        model: {factory: 'inplace_models:inplace_net'}
        inputs: {x: {shape: [3, 16, 16]}}
        batch_sizes: [1, 4]
        formats: [torchscript]
        backends: [cpu]
        """
    with case_runs(tmp_path, {"inplace_models": INPLACE_MODELS}, {"inplace": body}) as runs:
        report = triage(runs["inplace"], "torchscript", "cpu")
    assert report.first_divergence == "1.1", report.table()
    assert report.summary.startswith("first divergence: 1.1 (BatchNormAct)")
    assert {r.path: r.status for r in report.rows}["1.1.act"] == "pass"  # its in-place activation is clean


@pytest.mark.parametrize("fmt, op", [("onnx", "(Log)"), ("pt2", "(log.default)")])
def test_a_nan_is_traced_to_the_first_op_and_module_that_made_it(tmp_path, fmt, op):
    body = f"""
        model: {{factory: 'models:guarded'}}
        inputs: {{x: {{shape: [6]}}}}
        batch_sizes: [2, 4]
        formats: [{fmt}]
        backends: [cpu]
        export:
          {fmt}: {{function: 'models:unguarded_export'}}
        """
    with case_runs(tmp_path, {"models": MODELS}, {"nan": body}) as runs:
        report = triage(runs["nan"], fmt, "cpu")
    assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
    assert report.first_nonfinite is not None and op in report.first_nonfinite and "in log" in report.first_nonfinite
    assert report.first_divergence == "log", report.table()
    row = next(r for r in report.rows if r.path == "log")
    assert row.nonfinite > 0
    assert "first non-finite value: node" in report.table()


def test_rows_that_could_not_be_compared_show_no_figures():
    """An errored or skipped module never reads as a match (max_abs 0, cosine 1)."""
    from parity.triage import ModuleRow, TriageReport

    report = TriageReport("c", "onnx", "cpu", rows=[ModuleRow("features", "Sequential", "error",
                                                               detail="'Sequential' object has no attribute 'x'"),
                                                     ModuleRow("head", "Linear", "skip", detail="non-tensor arguments")])
    table = report.table()
    assert "1.000000" not in table and " 0 " not in table
    line = next(line for line in table.splitlines() if line.startswith("features"))
    assert line.split()[2:6] == ["-", "-", "-", "-"]


OWN_EXPORTER = '''
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def small():
    torch.manual_seed(0)
    return Small().eval()


def perturbing_export(model, example_inputs, path):
    """The user's own exporter, with a bug in one layer; weights in model.onnx.data beside the file."""
    with torch.no_grad():
        model.fc.weight.mul_(1.01)
    torch.onnx.export(model.eval(), example_inputs, str(path), dynamo=True, external_data=True,
                      input_names=["x"], output_names=["out"],
                      dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},))
    return {"exporter": "perturbing"}
'''


def test_a_case_exporter_writing_external_data_is_triaged_inside_its_artefact(tmp_path, monkeypatch):
    """A case's own exporter that only makes sense for the whole model: the artefact's own tensors name
    the layer (re-exporting submodules through it could not), and weights stored beside the file are
    read from there, whatever the working directory."""
    d = tmp_path / "cases"
    d.mkdir()
    (d / "own_models.py").write_text(OWN_EXPORTER)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    session = Session(tmp_path / "build", tmp_path / "golden")
    case = load_case(write_case(d, "own", """
        model: {factory: 'own_models:small'}
        inputs: {x: {shape: [3, 8, 8]}}
        batch_sizes: [1, 3]
        formats: [onnx]
        backends: [cpu]
        checks: [parity, lint]
        export:
          onnx: {function: 'own_models:perturbing_export'}
        """))
    try:
        parity = session.run_check(case, "onnx", "cpu", "parity")
        lint = session.run_check(case, "onnx", "", "lint")
        report = triage(session.case_run(case), "onnx", "cpu")
    finally:
        session.close()
    assert parity.status == "failed" and parity.cause == "numerics", parity.message
    assert lint.status == "passed", lint.message  # the lint read model.onnx.data beside the model
    assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
    assert report.first_divergence == "fc", report.table()
    assert [r.status for r in report.rows] == ["pass", "fail"]


def test_the_formats_that_read_their_own_tensors():
    """Triage reads these formats' own intermediate tensors; the rest export module by module."""
    assert IN_ARTEFACT == ("torchscript", "onnx", "pt2", "tflite", "coreml")


def test_module_by_module_fallback_names_the_batchnorm_and_its_batch_dependence(cases, monkeypatch):
    """Where a format exposes no intermediates, triage descends module by module; batch dependence comes from
    the first sample in a batch of copies of itself, which a fixed-batch file could run too."""
    import dataclasses

    monkeypatch.setitem(REGISTRY._all, "torchscript", dataclasses.replace(REGISTRY["torchscript"], intermediates=""))
    report = triage(cases["bn_block"], "torchscript", "cpu")
    assert report.method.startswith("each module exported on its own"), report.method
    assert [r.path for r in report.rows if r.status == "fail"] == ["layer2", "layer2.0", "layer2.0.bn1"]
    assert report.batch_dependent is True
    assert report.summary == ("first divergence: layer2.0.bn1 (BatchNorm2d), batch statistics at inference; "
                              "module is in training mode")
    assert next(r for r in report.rows if r.path == "layer2.0.conv1").batch_dependent is False


def test_the_documented_vit_session_reproduces(tmp_path):
    """docs/triage.md walks through this case (docs/examples/vit_bf16): the verdict it shows must hold."""
    from pathlib import Path

    cases = Path(__file__).resolve().parents[1] / "docs" / "examples" / "vit_bf16" / "cases"
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        report = triage(session.case_run(load_case(cases / "vit_bf16.yaml", root=cases)), "onnx", "cpu")
    finally:
        session.close()
    assert report.first_divergence == "blocks.1.attn.qkv", report.table()
    rows = {r.path: r for r in report.rows}
    assert rows["blocks.1"].status == "pass"  # the residual stream hides it, as the docs explain
    assert all(r.status == "pass" for r in report.rows[:report.rows.index(rows["blocks.1.attn.qkv"])])
    assert report.summary.startswith("first divergence: blocks.1.attn.qkv (Linear), computes something else")


def test_output_shapes_regrouped_along_leading_axes_only():
    from parity.triage import _regrouped

    assert _regrouped((2, 10, 16), (20, 16))  # a fully connected op over a sequence
    assert _regrouped((2, 10, 24), (1, 20, 24))
    assert _regrouped((20, 16), (2, 10, 16))
    assert not _regrouped((2, 10, 16), (2, 10, 16))  # nothing to regroup
    assert not _regrouped((4, 512, 1, 1), (4, 512))  # a squeezed shape is not guessed
    assert not _regrouped((2, 16, 8, 8), (2, 8, 8, 16))  # channels-last is the reader's to undo, not a reshape
    assert not _regrouped((2, 10, 16), (2, 16, 10))  # transposed
    assert not _regrouped((2, 10, 16), (40, 8))  # the last axis split


TUPLE_WITH_NONE = '''
import torch
from torch import nn


class Attention(nn.Module):
    """Returns (context, None) as Hugging Face attention does when its weights are not asked for."""

    def __init__(self):
        super().__init__()
        self.query = nn.Linear(6, 6)

    def forward(self, x):
        return torch.softmax(self.query(x), -1) * x, None


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attention()
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        context, _ = self.attn(x)
        return self.out(context)


def net():
    torch.manual_seed(0)
    return Net().eval()


def planted_export(model, example_inputs, path):
    from parity.formats.torchscript.export import export

    with torch.no_grad():
        model.attn.query.weight.mul_(1.02)
    return export(model, example_inputs, path, input_names=["x"], output_names=["y"])
'''


def test_a_module_returning_a_tensor_and_none_is_compared(tmp_path):
    """A module whose output holds a None beside its tensor is compared on the tensor, not listed as
    having no output of eager's shape."""
    body = "model: {factory: 'none_models:net'}\ninputs: {x: {shape: [4, 6]}}\nbatch_sizes: [2]\n" \
           "formats: [torchscript]\nbackends: [cpu]\n"
    planted = body + "export:\n  torchscript: {function: 'none_models:planted_export'}\n"
    with case_runs(tmp_path, {"none_models": TUPLE_WITH_NONE}, {"clean": body, "planted": planted}) as runs:
        clean = triage(runs["clean"], "torchscript", "cpu")
        report = triage(runs["planted"], "torchscript", "cpu")
    assert clean.first_divergence is None, clean.table()
    assert "attn" in [r.path for r in clean.rows], clean.table()
    assert not any("eager output shapes" in u for u in clean.unmapped), clean.unmapped
    assert report.first_divergence == "attn.query", report.table()
    assert [r.path for r in report.rows if r.status == "fail"][:2] == ["attn.query", "attn"], report.table()


KEYWORD_MODELS = '''
import torch
from torch import nn


class Decoder(nn.Module):
    """GPT-2's signature: forward(input_ids, past_key_values=None, attention_mask=None)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, input_ids, past_key_values=None, attention_mask=None):
        h = torch.tanh(self.fc(self.embed(input_ids)))
        return self.head(h * attention_mask.unsqueeze(-1).to(h.dtype))


def decoder():
    torch.manual_seed(0)
    return Decoder().eval()
'''


def test_a_model_taking_its_mask_by_keyword_is_recorded_as_eager_calls_it(tmp_path):
    """The mask is forward's third parameter: the eager reference passes it by keyword, and so must the
    hooks' run (passed positionally it lands in past_key_values)."""
    body = ("model: {factory: 'kw_models:decoder'}\n"
            "inputs:\n  input_ids: {shape: [6], dtype: int64, distribution: tokens, high: 20, mask: attention_mask}\n"
            "  attention_mask: {shape: [6], dtype: int64, distribution: mask}\n"
            "batch_sizes: [2]\nformats: [torchscript]\nbackends: [cpu]\n")
    with case_runs(tmp_path, {"kw_models": KEYWORD_MODELS}, {"kw": body}) as runs:
        report = triage(runs["kw"], "torchscript", "cpu")
    assert report.first_divergence is None, report.table()
    assert [r.path for r in report.rows] == ["embed", "fc", "head"], report.table()


UNEXPORTABLE = '''
import torch
from torch import nn


class Gather(nn.Module):
    def forward(self, x):
        return x * 2


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), Gather(), nn.Linear(4, 2)).eval()


def failing_export(model, example_inputs, path):
    """A converter without a rule for one module's op: everything else converts."""
    if any(type(m).__name__ == "Gather" for m in model.modules()):
        raise RuntimeError("Unsupported fx node new_ones: the converter has no rule for it")
    from parity.formats.onnx.export import export

    names = [f"input{i}" for i in range(len(example_inputs))]
    return export(model, example_inputs, path, input_names=names, output_names=["output0"])
'''


def test_a_model_that_does_not_export_at_all_is_said_first(tmp_path, capsys):
    """When the whole model does not export, triage says so first (not 'no divergence', not exit 0), then the
    module-by-module rows show which modules convert on their own; --bundle has nothing to bundle."""
    d = tmp_path / "cases"
    d.mkdir()
    (d / "unexportable.py").write_text(UNEXPORTABLE)
    write_case(d, "noexport", """
        model: {factory: 'unexportable:model'}
        inputs: {x: {shape: [4]}}
        batch_sizes: [1, 2]
        formats: [onnx]
        backends: [cpu]
        export:
          onnx: {function: 'unexportable:failing_export'}
        """)
    rc = main(["noexport", "-f", "onnx", "--cases", str(d), "--build", str(tmp_path / "b"),
               "--bundle", str(tmp_path / "bundle"), "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert rc == 1, out
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["summary"].startswith("the whole model does not export to onnx: "), data["summary"]
    assert "new_ones" in data["export_error"]
    assert "modules that do not export on their own: 1;" in data["summary"], data["summary"]
    assert {r["path"]: r["status"] for r in data["rows"]} == {"0": "pass", "1": "error", "2": "pass"}
    assert data["method"].startswith("each module exported on its own: the whole model does not export to onnx")
    assert "no bundle written: the whole model does not export to onnx" in out
    assert not (tmp_path / "bundle").exists() or not any((tmp_path / "bundle").iterdir())


def test_no_divergence_on_a_few_compared_modules_says_how_few():
    """'No divergence' from 2 compared rows while 10 modules could not be compared must not read as clean."""
    from parity.triage import ModuleRow, TriageReport, _conclude

    rows = [ModuleRow("stem", "Conv2d", "pass"), ModuleRow("head", "Linear", "pass")]
    few = TriageReport("c", "tflite", "cpu", rows=list(rows), method="the artefact's own intermediate tensors (...)",
                       unmapped=[f"block{i}: eager output shapes differ" for i in range(10)])
    assert _conclude(few, "", None, {}, "tflite").summary == (
        "no divergence: every module compared matches eager within tolerance; but only 2 of 12 modules could be "
        "compared (see 'not compared'): a divergence may hide in the others")
    most = TriageReport("c", "tflite", "cpu", rows=list(rows), method="the artefact's own intermediate tensors (...)",
                        unmapped=["relu: called 2 times"])
    assert _conclude(most, "", None, {}, "tflite").summary == \
        "no divergence: every module compared matches eager within tolerance"


FUSED_PARENT_MODELS = '''
import torch
from torch import nn


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: the BatchNorm in its own forward, then its activation child (and a Dropout
    child that does nothing in eval, as timm's drop)."""

    def __init__(self, channels):
        super().__init__(channels)
        self.drop = nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.drop(super().forward(x)))


def net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), BatchNormAct(8),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), BatchNormAct(8), nn.Dropout(0.2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    model.train()
    for _ in range(3):
        model(torch.randn(8, 3, 16, 16))
    return model.eval()


def perturbed_export(model, example_inputs, path):
    """The second conv's weights scaled by 2%, then parity's ONNX exporter (which folds it into the BatchNorm)."""
    from parity.formats.onnx.export import export

    with torch.no_grad():
        model.model[2].weight.mul_(1.02) if hasattr(model, "model") else model[2].weight.mul_(1.02)
    return export(model, example_inputs, path, input_names=["x"], output_names=["y"])
'''


def test_a_conv_folded_into_a_batchnormact_parent_is_named_and_no_op_modules_are_not_counted(tmp_path):
    """The parent's own BatchNorm holds the folded conv: the conv is named with it (the child activation's
    row, judged on the artefact's own input, does not hide it). Identity and Dropout return their input
    in eval: listed as computing nothing, not as modules that could not be compared."""
    bodies = {name: f"""
        model: {{factory: 'fp_models:net'}}
        inputs: {{x: {{shape: [3, 16, 16]}}}}
        batch_sizes: [1, 2]
        formats: [onnx]
        backends: [cpu]
        """ + ("export:\n          onnx: {function: 'fp_models:perturbed_export'}\n" if name == "weight" else "")
              for name in ("clean", "weight")}
    with case_runs(tmp_path, {"fp_models": FUSED_PARENT_MODELS}, bodies) as runs:
        clean = triage(runs["clean"], "onnx", "cpu")
        report = triage(runs["weight"], "onnx", "cpu")
    assert clean.summary == "no divergence: every module compared matches eager within tolerance", clean.table()
    assert clean.passthrough == ["1.drop", "3.drop", "4"]
    assert not any(u.split(":")[0] in ("1.drop", "3.drop", "4") for u in clean.unmapped)
    assert "computing nothing in eval (returned their input): 3 modules" in clean.table()
    assert report.first_divergence == "3", report.table()
    assert report.fused_with == ["2"], report.table()
    assert "its tensor also holds 2, fused into it by the exporter" in report.summary
