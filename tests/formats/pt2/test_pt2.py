"""The torch.export (.pt2) format: exporter, runner and lint."""

from __future__ import annotations

import pytest

from conftest import SMALL_CASE, write_case
from parity.session import Session
from parity.catalog import load_case

PT2 = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [pt2]")


def run(case_dir, tmp_path, body, check, backend="cpu"):
    session = Session(tmp_path / "build", tmp_path / "golden")
    case = load_case(write_case(case_dir, "c", body))
    return session.run_check(case, "pt2", backend, check), session


def test_dynamic_batch_program_matches_eager(case_dir, tmp_path):
    result, session = run(case_dir, tmp_path, PT2, "parity")
    assert result.status == "passed", result.message
    artefact = result.metrics["artefact"]
    assert artefact["dynamic_batch"] is True and artefact["source"] == "parity"
    assert result.metrics["scaled_error"] < 1e-6


def test_training_mode_export_is_caught_by_lint_with_module_names(case_dir, tmp_path):
    result, _ = run(case_dir, tmp_path, PT2.replace("models:small", "models:bn_train"), "lint", backend="")
    assert result.status == "failed"
    found = result.metrics["artefact"]
    assert [f["kind"] for f in found] == ["batchnorm-training"]
    assert found[0]["module"] == "bn" and "batch_norm" in found[0]["op"]
    assert "bn (BatchNorm2d)" in result.message  # the model lint too


def test_training_mode_export_breaks_batch_invariance(case_dir, tmp_path):
    result, _ = run(case_dir, tmp_path, PT2.replace("models:small", "models:bn_train"), "batch_invariance")
    assert result.status == "failed"
    assert "batch-mates" in result.metrics["hint"]


def test_specialised_batch_falls_back_to_one_program_per_batch_size(case_dir, tmp_path):
    result, session = run(case_dir, tmp_path, PT2.replace("models:small", "models:specialised"), "parity")
    assert result.status == "passed", result.message
    artefact = result.metrics["artefact"]
    assert artefact["dynamic_batch"] is False
    assert artefact["static_batch_sizes"] == [1, 3] and "dynamic batch export failed" in artefact["fallback_reason"]
    inv = session.run_check(load_case(case_dir / "c.yaml"), "pt2", "cpu", "batch_invariance")
    assert inv.status == "passed", inv.message
    assert inv.metrics["batch_sizes_run"] == [1, 3] and not inv.metrics["unsupported_batch_sizes"]


@pytest.mark.parametrize("check", ["parity", "golden"])
def test_cuda_skipped_with_reason_here(case_dir, tmp_path, check):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the skip path is not taken")
    result, _ = run(case_dir, tmp_path, PT2, check, backend="cuda")
    assert result.status == "skipped" and "sees no CUDA device" in result.message


def test_a_program_returning_library_types_loads_in_a_fresh_process(tmp_path):
    """A .pt2 whose output is a Hugging Face ModelOutput needs transformers imported before
    torch.export.load (its pytree type): the runner imports it, in a process that never did."""
    import subprocess
    import sys

    pytest.importorskip("transformers")
    path = tmp_path / "hf.pt2"
    save = f"""
import torch
from transformers.modeling_outputs import SequenceClassifierOutput
class M(torch.nn.Module):
    def forward(self, x):
        return SequenceClassifierOutput(logits=x * 2)
torch.export.save(torch.export.export(M(), (torch.ones(2, 3),)), {str(path)!r})
"""
    subprocess.run([sys.executable, "-c", save], check=True, capture_output=True)
    plain = "import torch, sys; torch.export.load(sys.argv[1])"
    bare = subprocess.run([sys.executable, "-c", plain, str(path)], capture_output=True, text=True)
    assert bare.returncode != 0 and "not registered" in bare.stderr  # the failure the runner works around
    load = ("import sys, torch; from parity.formats.pt2.runner import load_program; "
            "out = load_program(sys.argv[1]).module()(torch.ones(2, 3)); print(float(out['logits'].sum()))")
    done = subprocess.run([sys.executable, "-c", load, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "12.0"


def test_a_failed_load_quotes_the_deserialisers_warning(monkeypatch, tmp_path):
    import warnings

    import torch

    from parity.formats.pt2 import runner

    def failing(path):
        warnings.warn("Deserializing mylib.Thing in pytree is not registered")
        raise RuntimeError("Please check the warnings above")

    monkeypatch.setattr(torch.export, "load", failing)
    with pytest.raises(RuntimeError, match="torch.export.load warned: Deserializing mylib.Thing in pytree"):
        runner.load_program(tmp_path / "x.pt2")
