"""golden --update-golden refuses outputs that would make a golden that cannot fail."""

from __future__ import annotations

import pytest

from conftest import SMALL_CASE, write_case
from parity.catalog import load_case
from parity.session import Session

def _record(case_dir, tmp_path, export_function: str = "", factory: str = "small"):
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]").replace("models:small",
                                                                                         f"models:{factory}")
    if export_function:
        body += f"export:\n  onnx: {{function: 'models:{export_function}'}}\n"
    session = Session(tmp_path / "b", tmp_path / "g", update_golden=True)
    try:
        return session.run_check(load_case(write_case(case_dir, export_function or "clean", body)), "onnx", "cpu",
                                 "golden")
    finally:
        session.close()


@pytest.mark.parametrize("export_function, factory, why, cause", [
    # an fp32 export returning zeros where the eager model's logits are about 0.5: wrong values, not underflow
    ("zeroing_export", "small", "all zeros where the eager model's is not (largest |value| 0.5", "numerics"),
    # the eager model's logits of 5e-14 through fp16: underflow
    ("half_export", "tiny_outputs", "values below onnx's precision underflow", "precision-limit"),
    ("nan_export", "small", "NaN/Inf where the eager model has none", "nonfinite"),
    ("", "zeros", "the eager reference of 'logits' is all zeros", "vacuous"),
])
def test_update_golden_refuses_a_golden_that_could_not_fail(case_dir, tmp_path, export_function, factory, why, cause):
    result = _record(case_dir, tmp_path, export_function, factory)
    assert result.status == "failed" and why in result.message, result.message
    assert result.cause == cause, (result.cause, result.why)
    assert "underflow" not in result.why or cause == "precision-limit"
    assert not (tmp_path / "g" / (export_function or "clean")).exists()  # nothing half-written


def test_update_golden_records_a_clean_model(case_dir, tmp_path):
    result = _record(case_dir, tmp_path)
    assert result.status == "passed", result.message
    assert (tmp_path / "g" / "clean" / "onnx-cpu.npz").is_file()


def _check(case_dir, tmp_path, update=False):
    body = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onnx]")
    session = Session(tmp_path / "b", tmp_path / "g", update_golden=update)
    try:
        return session.run_check(load_case(write_case(case_dir, "clean", body)), "onnx", "cpu", "golden")
    finally:
        session.close()


def _resave(path, change):
    import numpy as np

    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez(path, **arrays)


def _edit_json(path, change):
    import json

    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, says", [
    (lambda g: (g / "meta.json").write_text("[1, 2]"), "must be a JSON object"),
    (lambda g: _resave(g / "inputs.npz", lambda a: a.update(x=a["x"][:, :, :4])), "samples of shape [3, 4, 8]"),
    (lambda g: _resave(g / "inputs.npz", lambda a: a.update(x=a["x"][:2])), "holds 2 samples"),
    (lambda g: _resave(g / "inputs.npz", lambda a: a.update(x=a["x"].astype("float64"))), "is float64"),
    (lambda g: _resave(g / "onnx-cpu.npz", lambda a: a.update({"logits@b1": a["logits@b1"].astype(str)})),
     "must be numbers"),
    (lambda g: _resave(g / "reference.npz", lambda a: a.update({"logits@b3": a["logits@b3"][:, :2]})),
     "with shape [3, 2]"),
    (lambda g: _edit_json(g / "onnx-cpu.json", lambda d: d.pop("error_vs_reference")), "records no error vs"),
    # a target's two files are one recording: an update killed between them, or files of two recordings
    (lambda g: (g / "onnx-cpu.json").unlink(), "half-written golden: "),
    (lambda g: (g / "onnx-cpu.npz").unlink(), "half-written golden: "),
    (lambda g: _resave(g / "onnx-cpu.npz", lambda a: a.update({k: v * 1.001 for k, v in a.items()})),
     "onnx-cpu.npz is not the file onnx-cpu.json was recorded with"),
])
def test_a_malformed_golden_is_named_never_a_traceback_or_a_silent_pass(case_dir, tmp_path, damage, says):
    assert _record(case_dir, tmp_path).status == "passed"
    assert _check(case_dir, tmp_path).status == "passed"  # the clean golden holds
    damage(tmp_path / "g" / "clean")
    result = _check(case_dir, tmp_path)
    assert result.status in ("failed", "error"), result.message
    assert result.cause == "no-golden" and says in result.message, result.message
    assert "--update-golden" in result.message and "Traceback" not in result.message
    assert _check(case_dir, tmp_path, update=True).status == "passed"  # --update-golden repairs it
    assert _check(case_dir, tmp_path).status == "passed"


def test_a_target_json_records_its_npz_digest_and_one_recorded_before_digests_still_holds(case_dir, tmp_path):
    import hashlib
    import json

    assert _record(case_dir, tmp_path).status == "passed"
    g = tmp_path / "g" / "clean"
    recorded = json.loads((g / "onnx-cpu.json").read_text())
    assert recorded["npz_sha256"] == hashlib.sha256((g / "onnx-cpu.npz").read_bytes()).hexdigest()
    _edit_json(g / "onnx-cpu.json", lambda d: d.pop("npz_sha256"))  # as goldens recorded before digests
    result = _check(case_dir, tmp_path)
    assert result.status == "passed", result.message


def test_the_cpu_features_a_golden_was_recorded_on_are_named_when_they_change(case_dir, tmp_path):
    from parity.versions import cpu_features

    assert _record(case_dir, tmp_path).status == "passed"
    target = tmp_path / "g" / "clean" / "onnx-cpu.json"
    _edit_json(target, lambda d: d["versions"].update(cpu_features="fma avx2"))
    result = _check(case_dir, tmp_path)
    assert result.status == "passed", result.message
    assert result.metrics["changed"] == [f"the environment changed: cpu_features fma avx2 -> {cpu_features() or '(none)'}"]
    assert "since the golden was recorded: the environment changed: cpu_features" in result.message
    # a golden recorded before cpu_features existed reads as unchanged, not as a change
    _edit_json(target, lambda d: d["versions"].pop("cpu_features"))
    assert _check(case_dir, tmp_path).metrics["changed"] == []
