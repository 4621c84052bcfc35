"""TFLite: litert-torch export per batch size, the LiteRT runner's two CPU backends, and layouts.

End to end through pytest (pytester, like test_plugin.py): a clean model passes on ``cpu`` and
``cpu-ref``; an NHWC artefact is transposed and the report says so; an artefact whose layout is
wrong (height and width swapped inside) fails parity; a static artefact that cannot be resized to
another batch size fails with the reason; ``cuda`` and a missing package are skipped with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import parity._triton_first  # noqa: F401  (before anything imports tensorflow)

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from conftest import SMALL_CASE, by_id, run_suite, write_case  # noqa: E402


#: Models and export functions for these tests, written beside the case files.
TFLITE_MODELS = '''
import torch
from torch import nn


class Features(nn.Module):
    """A 4-D output (N, C, H, W), so output layout matters too."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def features():
    torch.manual_seed(1)
    return Features().eval()


class Mixing(Features):
    """Convolutions only (resizable), but each sample's output depends on its batch-mates."""

    def forward(self, x):
        return torch.relu(self.conv(x - x.mean(0, keepdim=True)))


def mixing():
    torch.manual_seed(1)
    return Mixing().eval()


class Upsampling(Features):
    """A transposed convolution: TFLite bakes its output shape, batch included, into the graph."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)

    def forward(self, x):
        return self.up(torch.relu(self.conv(x)))


def upsampling():
    torch.manual_seed(1)
    return Upsampling().eval()


def swapped_hw_export(model, example_inputs, path):
    """A buggy mobile export: takes NHWC, but reads it as N, W, H, C (height and width swapped)."""
    import litert_torch

    class Wrong(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 2, 1))

    nhwc = tuple(x.permute(0, 2, 3, 1).contiguous() for x in example_inputs)
    litert_torch.convert(Wrong(model.eval()), nhwc).export(str(path))
    return {"exporter": "swapped_hw"}
'''

SMALL_TFLITE = SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [tflite]").replace(
    "backends: [cpu]", "backends: [cpu, cpu-ref, cuda]") + "checks: [parity]\n"
FEATURES_CASE = """
model: {factory: 'tflite_models:features'}
inputs:
  x: {shape: [3, 8, 8]}
batch_sizes: [1, 3]
formats: [tflite]
backends: [cpu]
checks: [parity]
"""


def artefact_file(records: dict, test: str, name: str) -> Path:
    """A file of the artefact a test used (artefacts live in the export cache, keyed by content)."""
    return Path(records[test]["metrics"]["artefact"]["path"]).parent / name


@pytest.fixture
def suite(pytester, case_dir):
    (case_dir / "tflite_models.py").write_text(TFLITE_MODELS, encoding="utf-8")

    def run(*args: str):
        result, records = run_suite(pytester, case_dir, *args)
        return result, by_id(records)

    return run


def test_clean_nhwc_and_wrong_layout(suite, case_dir):
    write_case(case_dir, "small", SMALL_TFLITE)
    write_case(case_dir, "nhwc", FEATURES_CASE + "export:\n  tflite: {options: {layout: nhwc}}\n")
    write_case(case_dir, "wrong", FEATURES_CASE + "export:\n  tflite: {function: 'tflite_models:swapped_hw_export'}\n")
    result, records = suite()
    result.assert_outcomes(passed=3, failed=1, skipped=1)

    # a clean model: both CPU backends pass, one artefact per batch size, runner named
    cpu, ref = records["small-tflite-cpu-parity"], records["small-tflite-cpu-ref-parity"]
    assert cpu["status"] == ref["status"] == "passed"
    artefact = cpu["metrics"]["artefact"]
    assert artefact["batch"] == "static: one artefact per batch size"
    assert artefact["artefacts"] == {"b1": "model.b1.tflite", "b3": "model.b3.tflite"}
    # flatten -> fc bakes the batch into a reshape: the batch-3 file refused batch 1, so each size has its own
    assert artefact["per_batch_export"].startswith("resizing to another batch size failed")
    assert artefact["layout"] == {"inputs": {"x": "as the case"}, "outputs": {"logits": "as the case"}}
    assert "FULLY_CONNECTED" in artefact["ops"]
    assert "XNNPACK" in cpu["metrics"]["runner"] and "BUILTIN_REF" in ref["metrics"]["runner"]
    assert cpu["metrics"]["scaled_error"] < 1e-5
    assert "no GPU delegate on Linux" in records["small-tflite-cuda-parity"]["message"]

    # NHWC in and out: transposed by the harness, said in the report, and correct
    nhwc = records["nhwc-tflite-cpu-parity"]
    assert nhwc["status"] == "passed", nhwc["message"]
    # convolutions only: one artefact, exported at batch 3, serves batch 1 resized (checked at export)
    one = nhwc["metrics"]["artefact"]
    assert one["batch"].startswith("static, one artefact: exported at batch size 3 and resized to 1")
    assert "artefacts" not in one and Path(one["path"]).name == "model.b3.tflite"
    assert not Path(one["path"]).with_name("model.b1.tflite").exists()
    assert nhwc["metrics"]["artefact"]["layout"] == {"inputs": {"x": "channels-last"},
                                                     "outputs": {"output": "channels-last"}}
    assert "inputs x are channels-last (NHWC)" in nhwc["message"]
    assert "outputs output are channels-last (NHWC)" in nhwc["message"]

    # the same shapes with height and width swapped inside: the layout looks right, the numbers are not
    wrong = records["wrong-tflite-cpu-parity"]
    assert wrong["status"] == "failed"
    assert wrong["metrics"]["artefact"]["layout"]["inputs"] == {"x": "channels-last"}
    assert wrong["metrics"]["scaled_error"] > 0.1
    result.stdout.fnmatch_lines(["*parity of tflite/cpu against the eager model: 2 of 2 comparisons failed*"])


def test_prebuilt_static_artefact_resized_or_refused(suite, case_dir, pytester):
    # conv-only model: the batch-3 artefact resizes to batch 1, and the report says so
    write_case(case_dir, "features", FEATURES_CASE)
    write_case(case_dir, "small", SMALL_TFLITE.replace("backends: [cpu, cpu-ref, cuda]", "backends: [cpu]"))
    _, built = suite()
    shutil.copy(artefact_file(built, "features-tflite-cpu-parity", "model.b3.tflite"), case_dir / "features.tflite")
    shutil.copy(artefact_file(built, "small-tflite-cpu-parity", "model.b3.tflite"), case_dir / "small.tflite")
    for name in ("features", "small"):
        path = case_dir / f"{name}.yaml"
        path.write_text(path.read_text() + f"export:\n  tflite: {{artefact: {name}.tflite}}\n")
    result, records = suite()
    result.assert_outcomes(passed=1, failed=1)
    resized = records["features-tflite-cpu-parity"]
    assert resized["status"] == "passed"
    assert "exported at batch size 3; the runner resizes it to 1" in resized["message"]
    # the classifier's flatten baked batch 3 into a reshape: resizing fails, and says why
    refused = records["small-tflite-cpu-parity"]
    assert refused["status"] == "error"
    assert "static batch size of 3 and cannot be resized to 1" in refused["message"]


def test_artefact_for_other_input_shape_fails_structural_check(suite, case_dir, pytester):
    write_case(case_dir, "features", FEATURES_CASE)
    _, built = suite()
    shutil.copy(artefact_file(built, "features-tflite-cpu-parity", "model.b3.tflite"), case_dir / "frozen.tflite")
    (case_dir / "features.yaml").write_text(FEATURES_CASE.replace("shape: [3, 8, 8]", "shape: [3, 8, 10]")
                                            + "export:\n  tflite: {artefact: frozen.tflite}\n")
    result, records = suite()
    result.assert_outcomes(failed=1)
    message = records["features-tflite-cpu-parity"]["message"]
    assert "failed its structural checks" in message
    assert "input 'x' (position 0)" in message and "(1, 3, 8, 8)" in message and "(1, 3, 8, 10)" in message


def test_missing_package_skips_with_install_command(monkeypatch, case_dir):
    from parity.formats.spec import FormatInfo
    from parity.session import Session
    from parity.catalog import load_case

    case = load_case(write_case(case_dir, "small", SMALL_TFLITE))
    monkeypatch.setattr(FormatInfo, "missing_modules", lambda self, framework="torch": ["ai_edge_litert"])
    result = Session(case_dir / "build", case_dir / "golden").run_check(case, "tflite", "cpu", "parity")
    assert result.status == "skipped"
    assert result.message == "tflite skipped: ai_edge_litert not installed; pip install 'parity[tflite]'"


def test_layout_matching():
    from parity.formats.tflite.runner import AS_CASE, CHANNELS_LAST, match_layout, to_channels_first, to_channels_last

    assert match_layout((2, 3, 8, 9), (2, 3, 8, 9)) == AS_CASE
    assert match_layout((2, 8, 9, 3), (2, 3, 8, 9)) == CHANNELS_LAST
    assert match_layout((2, 9, 8, 3), (2, 3, 8, 9)) is None
    assert match_layout((2, 3, 3, 3), (2, 3, 3, 3), prefer=CHANNELS_LAST) == CHANNELS_LAST  # ambiguous: declared wins
    assert match_layout((2, 10), (2, 10)) == AS_CASE
    import numpy as np

    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert to_channels_last(x).shape == (2, 4, 5, 3)
    assert np.array_equal(to_channels_first(to_channels_last(x)), x)


def test_lint_reads_module_paths_with_underscores_and_indices():
    """Attribute names keep their underscores and ModuleList indices (not just the last '_' part)."""
    from parity.formats.tflite.lint import _module

    name = ("transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel/"
            "transformers.models.gpt2.modeling_gpt2.GPT2Model_transformer/torch.nn.modules.container.ModuleList_h/"
            "transformers.models.gpt2.modeling_gpt2.GPT2Block_0/torch.nn.modules.normalization.LayerNorm_ln_1;2")
    assert _module(name) == "transformer.h.0.ln_1"
    assert _module("pkg.Net/torch.nn.modules.container.Sequential_features/"
                   "torch.nn.modules.batchnorm.BatchNorm2d_1;2") == "features.1"
    assert _module("serving_default_x:0") is None


LAYERNORM_MODELS = '''
import torch
from torch import nn


class Encoder(nn.Module):
    """A transformer block's norm: LayerNorm over [batch, seq, hidden], which litert-torch lowers
    to MEAN over axes [0, 2] of a [1, batch*seq, hidden] tensor."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)

    def forward(self, x):
        return self.norm(self.proj(x))


def encoder():
    torch.manual_seed(0)
    return Encoder().eval()
'''


def test_lint_finds_the_batch_axis_by_shapes_across_batch_sizes(case_dir, tmp_path):
    """A MEAN over a size-1 axis that does not carry the batch (LayerNorm, as litert-torch lowers it)
    is no finding; a training-mode BatchNorm's MEAN over the batch axis still is."""
    from parity.catalog import load_case
    from parity.session import Session

    (case_dir / "ln_models.py").write_text(LAYERNORM_MODELS)
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        norm = session.case_run(load_case(write_case(case_dir, "norm", """
            model: {factory: 'ln_models:encoder'}
            inputs: {x: {shape: [5, 8]}}
            batch_sizes: [1, 3]
            formats: [tflite]
            backends: [cpu]
            """)))
        assert norm.artefact_findings("tflite") == []
        bn = session.case_run(load_case(write_case(case_dir, "bn", SMALL_CASE.replace("models:small", "models:bn_train")
                                                   .replace("[torchscript, onnx]", "[tflite]"))))
        found = bn.artefact_findings("tflite")
        assert found and {f.kind for f in found} == {"batchnorm-training"}
        assert "over the batch axis" in found[0].detail
    finally:
        session.close()


def test_batch_axes_are_the_dimensions_that_change_with_batch_size():
    from parity.formats.tflite.lint import batch_axes

    assert batch_axes({1: (1, 5, 16), 3: (1, 15, 16)}) == {1}  # batch folded into axis 1, axis 0 is not it
    assert batch_axes({1: (1, 4, 8, 8), 3: (3, 4, 8, 8)}) == {0}
    assert batch_axes({3: (3, 4)}) is None  # one size: unknown


def test_a_resizable_model_that_mixes_samples_is_exported_per_batch_size(case_dir, tmp_path):
    """One artefact serves every batch size only when resizing it gives the same rows; a model whose
    rows depend on the batch gets one artefact per batch size (as it would be deployed), and says why."""
    from parity.catalog import load_case
    from parity.session import Session

    (case_dir / "tflite_models.py").write_text(TFLITE_MODELS)
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        mixing = session.case_run(load_case(write_case(case_dir, "mixing", FEATURES_CASE.replace("features", "mixing"))))
        artefact = mixing.artefact("tflite")
        assert set(artefact.batch_paths) == {1, 3}
        assert "resized to batch 1 on cpu, output output is not the first rows of batch 3: " in \
            artefact.metadata["per_batch_export"]
        # XNNPACK resizes a transposed convolution, the reference kernels refuse it: per batch size
        up = session.case_run(load_case(write_case(case_dir, "up", FEATURES_CASE.replace("features", "upsampling"))))
        assert set(up.artefact("tflite").batch_paths) == {1, 3}
        assert "failed on cpu-ref" in up.artefact("tflite").metadata["per_batch_export"]
        clean = session.case_run(load_case(write_case(case_dir, "clean", FEATURES_CASE)))
        assert clean.artefact("tflite").batch_paths == {} and "one_artefact" in clean.artefact("tflite").metadata
    finally:
        session.close()


def test_lint_of_an_eval_mode_model_that_mixes_samples_is_not_told_to_call_eval(case_dir, tmp_path):
    """x - x.mean(0) in an eval-mode model: the artefact's MEAN over the batch axis is the model's own
    computation, so the lint's fix is not model.eval() (that would change nothing)."""
    from parity.catalog import load_case
    from parity.checks.base import MIXES_FIX
    from parity.session import Session

    body = SMALL_CASE.replace("models:small", "models:batch_coupled").replace("[torchscript, onnx]", "[tflite]")
    session = Session(tmp_path / "build", tmp_path / "golden")
    try:
        result = session.run_check(load_case(write_case(case_dir, "coupled", body + "checks: [lint]\n")), "tflite",
                                   "", "lint")
    finally:
        session.close()
    assert result.status == "failed" and result.cause == "batch-dependence", (result.cause, result.message)
    assert result.fix == MIXES_FIX and "mixes samples across the batch" in result.why, (result.why, result.fix)
    assert "model.eval()" not in result.fix and "model.eval()" not in result.message
