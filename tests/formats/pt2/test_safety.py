"""A .pt2 never runs code when parity loads it: pickled payloads are refused before torch reads them."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import pytest
import torch

from conftest import SMALL_CASE, write_case
from parity.catalog import load_case
from parity.formats.pt2.runner import load_program
from parity.formats.pt2.safety import PickledArtefact, pickled_payloads, safe_torch_load
from parity.session import Session


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _program(path):
    model = torch.nn.Linear(2, 2).eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 2),)), str(path))
    return path


def _plant(clean, planted, marker):
    """`clean` with its bias swapped for a pickle that creates `marker` when unpickled (use_pickle)."""
    buffer = io.BytesIO()
    torch.save(_Payload(str(marker)), buffer)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(planted, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                config["config"]["bias"]["use_pickle"] = True
                config["config"]["bias"]["path_name"] = "evil"
                data = json.dumps(config).encode()
                dst.writestr(item.filename.replace("model_weights_config.json", "evil"), buffer.getvalue())
            dst.writestr(item, data)
    return planted


def test_a_clean_program_has_no_pickled_payloads_and_loads(tmp_path):
    path = _program(tmp_path / "clean.pt2")
    assert pickled_payloads(path) == []
    assert load_program(path).module()(torch.ones(1, 2)).shape == (1, 2)


def test_a_pickled_weight_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    planted = _plant(_program(tmp_path / "clean.pt2"), tmp_path / "planted.pt2", marker)
    with pytest.raises(PickledArtefact) as info:
        load_program(planted)
    assert str(planted) in str(info.value) and "weight 'bias'" in str(info.value)
    assert "torch.export.save" in str(info.value)  # the safe way to save it
    assert not marker.exists()
    # torch's own loader runs the payload: the refusal above is what protects
    with pytest.raises(Exception):  # after the payload ran: it returns no tensor
        torch.export.load(str(planted))
    assert marker.exists()


def test_an_unsafe_fallback_inside_torch_fails_instead_of_unpickling(tmp_path):
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save(_Payload(str(marker)), buffer)
    with safe_torch_load(), pytest.raises(Exception):
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert not marker.exists()


def test_a_prebuilt_pickled_pt2_fails_its_case_as_load_failed(case_dir, tmp_path):
    marker = tmp_path / "ran"
    _plant(_program(tmp_path / "clean.pt2"), case_dir / "prebuilt.pt2", marker)
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [pt2]") + \
        "checks: [parity]\nexport:\n  pt2: {artefact: prebuilt.pt2}\n"
    session = Session(tmp_path / "b", tmp_path / "g")
    result = session.run_check(load_case(write_case(case_dir, "evil", body)), "pt2", "cpu", "parity")
    session.close()
    assert result.status == "error" and result.cause == "load-failed", (result.cause, result.message)
    assert "pickled payloads" in result.message and not marker.exists()
