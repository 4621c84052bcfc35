"""Repro bundles: the smallest artefact that shows a triaged divergence, and a script that shows it
without parity; and Model Explorer node data of an ONNX triage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import case_runs, write_case
from parity.bundle import BundleError, write_bundle, write_node_data
from parity.triage import main, triage

MODELS = '''
import importlib

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))

    def forward(self, x):
        return self.head(self.mid(self.stem(x)))


def net():
    torch.manual_seed(0)
    model = Net().eval()
    model.mid[2]._planted = True
    return model


def perturb(model):
    """The planted bug: the marked convolution's weights scaled by 2% (also when a submodule is exported alone)."""
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "_planted", False):
                module.weight.mul_(1.02)


def onnx_external_export(model, example_inputs, path):
    """A user's ONNX exporter with the bug, weights in model.onnx.data beside the file."""
    perturb(model)
    torch.onnx.export(model.eval(), example_inputs, str(path), dynamo=True, external_data=True,
                      input_names=["x"], output_names=["out"],
                      dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},))
    return {"exporter": "perturbing"}


def builtin_export(model, example_inputs, path):
    """The bug, then parity's own exporter for the file's suffix."""
    perturb(model)
    fmt = {"pt": "torchscript", "pt2": "pt2", "tflite": "tflite", "mlpackage": "coreml"}[str(path).rsplit(".", 1)[-1]]
    exporter = importlib.import_module(f"parity.formats.{fmt}.export").export
    extra = {"batch_sizes": [example_inputs[0].shape[0]]} if fmt == "pt2" else {}
    return exporter(model, example_inputs, path, input_names=["input0"], output_names=["output0"], **extra)
'''

CASE = """
model: {factory: 'bundle_models:net'}
inputs: {x: {shape: [3, 8, 8]}}
batch_sizes: [1, 3]
formats: [onnx, torchscript, pt2, tflite, coreml]
backends: [cpu, mil-ref]
export:
  onnx: {function: 'bundle_models:onnx_external_export'}
  torchscript: {function: 'bundle_models:builtin_export'}
  pt2: {function: 'bundle_models:builtin_export'}
  tflite: {function: 'bundle_models:builtin_export'}
  coreml: {function: 'bundle_models:builtin_export'}
"""


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(the case directory, the build directory, the case's run) of the planted-weight case."""
    root = tmp_path_factory.mktemp("bundle")
    with case_runs(root, {"bundle_models": MODELS}, {"planted": CASE}) as runs:
        yield root / "cases", root / "build", runs["planted"]


@pytest.fixture(scope="module")
def onnx_report(planted):
    return triage(planted[2], "onnx", "cpu")


def files(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` outside `skip`, with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.is_relative_to(skip)}


def run_script(directory: Path, home: Path) -> subprocess.CompletedProcess:
    """repro.py in a child process with a clean environment, where importing parity fails."""
    blocked = ("import runpy, sys; sys.modules['parity'] = None; sys.argv = ['repro.py']; "
               "runpy.run_path('repro.py', run_name='__main__')")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-c", blocked], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=300)


def npz(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[k] for k in data.files]


def test_onnx_bundle_is_the_subgraph_up_to_the_diverging_tensor(planted, onnx_report, tmp_path, tmp_path_factory,
                                                                 monkeypatch):
    import onnx

    cases, build, run = planted
    report = onnx_report
    assert report.first_divergence == "mid.2", report.table()
    row = next(r for r in report.rows if r.path == "mid.2")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = {**files(build.parent, skip=tmp_path), **files(tmp_path, skip=tmp_path / "bundle")}
    out = write_bundle(report, run, "onnx", "cpu", tmp_path / "bundle")
    home = tmp_path_factory.mktemp("home")
    written = set(files(out, skip=tmp_path / "none"))
    result = run_script(out, home)
    # nothing written outside the bundle (the build, the case directory, the working directory), and
    # nothing by the script at all
    assert {**files(build.parent, skip=tmp_path), **files(tmp_path, skip=tmp_path / "bundle")} == before
    assert set(files(out, skip=tmp_path / "none")) == written
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "expected.npz", "inputs.npz", "repro.py",
                                                     "subgraph.onnx", "versions.json"]

    whole = onnx.load(str(run.artefact("onnx").path))
    sub = onnx.load(str(out / "subgraph.onnx"))
    assert 0 < len(sub.graph.node) < len(whole.graph.node)
    assert [o.name for o in sub.graph.output] == [row.tensor]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in sub.graph.initializer)  # self-contained

    inputs, expected = npz(out / "inputs.npz"), npz(out / "expected.npz")
    assert [a.shape for a in inputs] == [a.shape for a in run.example_inputs().values()]
    assert len(expected) == 1 and expected[0].shape == report.eager_at_divergence[0].shape
    assert np.array_equal(expected[0], report.eager_at_divergence[0])

    assert "import parity" not in (out / "repro.py").read_text() and "from parity" not in (out / "repro.py").read_text()
    assert result.returncode == 1, result.stdout + result.stderr
    printed = result.stdout
    assert "MISMATCH" in printed and "max abs error" in printed and "at index (" in printed
    figure = float(printed.split("max abs error ")[1].split()[0])
    assert figure == pytest.approx(row.max_abs, rel=1e-3)  # the mismatch triage measured, without parity

    readme = (out / "README.txt").read_text()
    assert "first divergence: mid.2" in readme and row.tensor in readme
    assert "extracted with onnx.utils.extract_model" in readme
    assert f"scale={report.tolerance_scale:g}" in readme and "max abs error" in readme
    versions = json.loads((out / "versions.json").read_text())
    assert {"onnx", "onnxruntime", "torch", "numpy"} <= set(versions["packages"]) and versions["python"]


def test_onnx_bundle_falls_back_to_the_whole_file_with_its_external_data(planted, onnx_report, tmp_path,
                                                                         monkeypatch, tmp_path_factory):
    """When extraction fails, the whole file is bundled with the weights it reads from beside it, and
    the README says why."""
    import onnx.utils

    def refuse(*args, **kwargs):
        raise ValueError("graph cannot be cut there")

    monkeypatch.setattr(onnx.utils, "extract_model", refuse)
    out = write_bundle(onnx_report, planted[2], "onnx", "cpu", tmp_path / "bundle")
    name = planted[2].artefact("onnx").path.name
    assert {name, f"{name}.data"} <= {p.name for p in out.iterdir()}
    assert "subgraph.onnx" not in {p.name for p in out.iterdir()}
    readme = (out / "README.txt").read_text()
    assert "extracting the subgraph up to" in readme and "graph cannot be cut there" in readme
    assert "the whole file is bundled" in readme
    result = run_script(out, tmp_path_factory.mktemp("home"))
    assert result.returncode == 1 and "MISMATCH" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_other_formats_bundle_the_whole_artefact(planted, fmt, tmp_path, tmp_path_factory):
    cases, build, run = planted
    report = triage(run, fmt, "cpu")
    assert report.first_divergence == "mid.2", report.table()
    before = files(build.parent, skip=tmp_path)
    out = write_bundle(report, run, fmt, "cpu", tmp_path / "bundle")
    assert files(build.parent, skip=tmp_path) == before
    artefact = run.artefact(fmt).path_for(3)
    assert (out / artefact.name).read_bytes() == artefact.read_bytes()
    inputs, expected = npz(out / "inputs.npz"), npz(out / "expected.npz")
    assert inputs[0].shape == (3, 3, 8, 8) and expected[0].shape == (3, 4)
    assert np.array_equal(expected[0], next(iter(run.reference(3).values())))
    readme = (out / "README.txt").read_text()
    assert "the whole artefact" in readme and "first divergence: mid.2" in readme
    result = run_script(out, tmp_path_factory.mktemp("home"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "MISMATCH" in result.stdout and "max abs error" in result.stdout
    assert ("TorchScript" if fmt == "torchscript" else "torch.export program") in result.stdout


def test_a_directory_that_is_not_empty_is_refused(planted, onnx_report, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(BundleError) as caught:
        write_bundle(onnx_report, planted[2], "onnx", "cpu", full)
    message = str(caught.value)
    assert str(full) in message and "not empty" in message and "pass an empty or new directory" in message
    assert [p.name for p in full.iterdir()] == ["notes.txt"]


def test_cli_refuses_a_non_empty_bundle_directory_before_triaging(planted, tmp_path, capsys):
    cases, build, run = planted
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    rc = main(["planted", "-f", "onnx", "--cases", str(cases), "--build", str(tmp_path / "b"), "--bundle", str(full)])
    printed = capsys.readouterr().out
    assert rc == 2
    assert printed.startswith(f"error: bundle directory {full} exists and is not empty")
    assert "pass an empty or new directory" in printed
    assert not (tmp_path / "b").exists()  # refused before anything was exported


def test_cli_writes_the_bundle_and_model_explorer_node_data(planted, tmp_path, capsys):
    cases, build, run = planted
    node_data = tmp_path / "explorer" / "errors.json"
    rc = main(["planted", "-f", "onnx", "--cases", str(cases), "--build", str(build), "--bundle",
               str(tmp_path / "bundle"), "--model-explorer", str(node_data), "--json", str(tmp_path / "t.json")])
    printed = capsys.readouterr().out
    assert rc == 1, printed
    assert f"repro bundle written to {tmp_path / 'bundle'}" in printed and "subgraph.onnx" in printed
    assert f"Model Explorer node data written to {node_data}" in printed
    assert (tmp_path / "bundle" / "repro.py").is_file() and node_data.is_file()
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["first_divergence"] == "mid.2" and "eager_at_divergence" not in report  # arrays stay out of JSON


def test_cli_says_when_there_is_nothing_to_bundle(planted, tmp_path, capsys):
    """A clean target: the triage exit code stands, and no bundle directory appears."""
    cases = planted[0]
    write_case(cases, "clean", CASE.split("export:")[0])  # the built-in exporters: no planted bug
    rc = main(["clean", "-f", "onnx", "--cases", str(cases), "--build", str(planted[1]), "--bundle",
               str(tmp_path / "bundle")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert f"no bundle written: triage found no divergence, so {tmp_path / 'bundle'} has nothing to reproduce" \
        in printed
    assert not (tmp_path / "bundle").exists()


def test_model_explorer_node_data_colours_each_node_by_its_error(planted, onnx_report, tmp_path):
    import onnx

    run = planted[2]
    data = json.loads(write_node_data(onnx_report, run, "onnx", tmp_path / "nodes.json").read_text())
    nodes = {n.name: n for n in onnx.load(str(run.artefact("onnx").path), load_external_data=False).graph.node}
    results = data["results"]
    assert results and set(results) <= set(nodes)  # keyed by ONNX node name
    assert all(isinstance(v["value"], float) for v in results.values())
    by_tensor = {out: name for name, n in nodes.items() for out in n.output}
    rows = {r.path: r for r in onnx_report.rows}
    first = results[by_tensor[rows["mid.2"].tensor]]
    assert first["value"] == pytest.approx(rows["mid.2"].rel_error) and first["bgColor"]
    assert results[by_tensor[rows["stem.0"].tensor]]["value"] <= onnx_report.tolerance_scale
    low, high = data["thresholds"]
    assert low["value"] == onnx_report.tolerance_scale and high["value"] >= first["value"]
    assert low["bgColor"] and high["bgColor"]


def test_model_explorer_node_data_needs_an_artefact_read_tensor_by_tensor(planted, tmp_path):
    from parity.triage import ModuleRow, TriageReport

    report = TriageReport("planted", "tflite", "cpu", rows=[ModuleRow("mid", "Sequential", "fail")],
                          method="each module exported on its own")
    with pytest.raises(BundleError, match="needs triage rows read from an ONNX artefact's own tensors"):
        write_node_data(report, planted[2], "tflite", tmp_path / "n.json")
    assert not (tmp_path / "n.json").exists()


@pytest.mark.parametrize("fmt, backend", [("tflite", "cpu"), ("coreml", "mil-ref")])
def test_tflite_and_coreml_bundles_carry_a_script_for_their_own_runtime(planted, fmt, backend, tmp_path,
                                                                        tmp_path_factory):
    """The whole artefact (one per batch size for TFLite: the one that ran; the .mlpackage directory for
    Core ML), with a script for the LiteRT interpreter, or for coremltools' predict, which needs macOS."""
    from parity.triage import ModuleRow, TriageReport

    run = planted[2]
    report = TriageReport("planted", fmt, backend, first_divergence="mid.2", op="Conv2d",
                          summary="first divergence: mid.2 (Conv2d), computes something else than eager",
                          rows=[ModuleRow("mid.2", "Conv2d", "fail", max_abs=0.01, rel_error=0.02)])
    out = write_bundle(report, run, fmt, backend, tmp_path / "bundle")
    artefact = run.artefact(fmt).path_for(3)
    assert (out / artefact.name).exists() and (out / artefact.name).is_dir() == (fmt == "coreml")
    readme = (out / "README.txt").read_text()
    assert "first divergence: mid.2" in readme and "outside tolerance" in readme
    result = run_script(out, tmp_path_factory.mktemp("home"))
    if fmt == "tflite":
        assert result.returncode == 1 and "MISMATCH" in result.stdout, result.stdout + result.stderr
        assert "LiteRT interpreter" in result.stdout
        measured = readme.split("Measured on the bundled artefact")[1]  # by parity's runner, on the same file
        measured = float(measured.split("max abs error ")[1].split()[0])
        assert float(result.stdout.split("max abs error ")[1].split()[0]) == pytest.approx(measured, rel=1e-5)
    elif sys.platform != "darwin":
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Core ML's runtime runs on macOS only" in result.stdout and "MLModel.predict" in result.stdout
        assert "macOS" in readme and "MIL reference evaluator" in readme
