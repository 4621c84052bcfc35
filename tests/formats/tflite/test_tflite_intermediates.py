"""Triage inside a TFLite artefact: every op's output from one LiteRT run with preserve-all-tensors,
mapped to modules through the locations litert-torch writes as tensor names, channels-last tensors
transposed back to channels-first, fused activations split so the tensor before each is kept."""

from __future__ import annotations

import pytest

import parity._triton_first  # noqa: F401  (litert_torch imports tensorflow: tensorflow-then-triton segfaults)

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
import numpy as np  # noqa: E402

from conftest import MODELS as SHARED_MODELS, case_runs  # noqa: E402
from parity.formats.tflite.intermediates import intermediates, locations, plain_run_agreement  # noqa: E402
from parity.triage import triage  # noqa: E402

MODELS = '''
import torch
from torch import nn


def block(i, o, stride=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, padding=1), nn.BatchNorm2d(o), nn.ReLU())


class Net(nn.Module):
    """Conv-BatchNorm-ReLU blocks: litert-torch folds each BatchNorm into its conv and fuses the ReLU; the
    strided conv gets a PAD of its own (torch pads both sides, TFLite's SAME would not)."""

    def __init__(self):
        super().__init__()
        self.stem = block(3, 8)
        self.body = nn.Sequential(block(8, 8), block(8, 8), block(8, 8, stride=2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def net():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def perturbed_export(model, example_inputs, path, layer="body.1.0"):
    """A user's own TFLite export with a bug: one conv's weights scaled by 1%, then converted as parity does."""
    from parity.formats.tflite.export import export

    with torch.no_grad():
        model.get_submodule(layer).weight.mul_(1.01)
    return export(model, example_inputs, path, input_names=["x"], output_names=["logits"])
'''

CASE = """
model: {factory: 'FACTORY'}
inputs: {x: {shape: SHAPE}}
batch_sizes: [4]
formats: [tflite]
backends: [cpu, cpu-ref]
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    image = CASE.replace("FACTORY", "tflite_triage_models:net").replace("SHAPE", "[3, 8, 8]")
    bodies = {
        "clean": image,
        "weight": image + "export:\n  tflite: {function: 'tflite_triage_models:perturbed_export'}\n",
        "nan": CASE.replace("FACTORY", "models:guarded").replace("SHAPE", "[6]")
        + "export:\n  tflite: {function: 'models:unguarded_export'}\n",
    }
    models = {"tflite_triage_models": MODELS, "models": SHARED_MODELS}
    with case_runs(tmp_path_factory.mktemp("tflite_triage"), models, bodies) as runs:
        yield runs


@pytest.mark.parametrize("backend", ["cpu", "cpu-ref"])
def test_clean_model_every_module_matches(runs, backend):
    report = triage(runs["clean"], "tflite", backend)
    assert report.first_divergence is None, report.table()
    assert report.summary == "no divergence: every module compared matches eager within tolerance"
    assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
    # every BatchNorm has its tensor (the one before the ReLU split off its conv), compared after
    # transposing litert-torch's channels-last tensors back
    assert [r.path for r in report.rows] == ["stem.1", "stem.2", "body.0.1", "body.0.2", "body.1.1", "body.1.2",
                                             "body.2.1", "body.2.2", "head.2"], report.table()
    assert all(r.status == "pass" for r in report.rows)
    assert "channels-last (NHWC) tensor(s) transposed to channels-first" in report.method
    assert "fused activation(s) split into ops of their own" in report.method
    # the preserve-all-tensors run gives the plain run's outputs on this model
    assert "equal the plain run's bit for bit" in report.method
    # convs folded into the BatchNorm after them have no tensor of their own: listed, not dropped
    assert any(u.startswith("body.1.0: no tensor of its own") for u in report.unmapped), report.unmapped
    # the strided conv's PAD holds its padded input, not its output: no tensor of its own either
    assert any(u.startswith("body.2.0: no tensor of its own") for u in report.unmapped), report.unmapped


def test_perturbed_weight_in_a_middle_conv(runs):
    report = triage(runs["weight"], "tflite", "cpu")
    # the conv is folded into the BatchNorm after it: the BatchNorm's tensor diverges, and the report says so
    assert report.first_divergence == "body.1.1", report.table()
    assert report.fused_with == ["body.1.0"], report.table()
    assert report.summary.startswith("first divergence: body.1.1 (BatchNorm2d) (its tensor also holds body.1.0, "
                                     "fused into it by the exporter), computes something else than eager")
    assert report.batch_dependent is False
    row = next(r for r in report.rows if r.path == "body.1.1")
    assert row.rel_error > 1e-3 and row.cosine < 1
    before = report.rows[:report.rows.index(row)]
    assert len(before) >= 4 and all(r.status == "pass" for r in before), report.table()


def test_a_nan_is_traced_to_the_op_and_module_that_made_it(runs):
    report = triage(runs["nan"], "tflite", "cpu")
    assert report.method.startswith("the artefact's own intermediate tensors"), report.table()
    assert report.first_nonfinite is not None and "(LOG)" in report.first_nonfinite, report.table()
    assert report.first_nonfinite.endswith("in log"), report.first_nonfinite
    assert report.first_divergence == "log", report.table()
    assert next(r for r in report.rows if r.path == "log").nonfinite > 0
    assert next(r for r in report.rows if r.path == "stem").status == "pass"
    assert "fused activation" not in report.method  # none to split in this model


def test_a_file_without_locations_maps_nothing_and_says_why(runs, tmp_path):
    """Tensor names are where litert-torch keeps the module path; a file whose names carry none (another
    converter) maps nothing, so triage falls back to exporting module by module."""
    from ai_edge_litert.tools import flatbuffer_utils

    run = runs["clean"]
    feeds = run.example_inputs()
    path = run.artefact("tflite").path_for(4)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    for i, tensor in enumerate(model.subgraphs[0].tensors):
        tensor.name = f"tensor{i}"
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    known = {name for name, _ in run.eager.named_modules() if name}
    got = intermediates(bare, feeds, "cpu", known)
    assert got.mapped == [] and "carry no module locations" in got.note
    assert intermediates(path, feeds, "cpu", known).mapped  # the same file with its names maps


def test_locations_are_read_from_litert_torch_names():
    known = {"conv_1", "block_a", "block_a.act", "block_a.0"}
    name = ("m.Net/m._Block_block_a/torch.nn.modules.activation.ReLU_act;;"
            "m.Net/torch.nn.modules.conv.Conv2d_conv_1;2")
    # the last applied first; underscores in class and attribute names; the uniquing digit dropped
    assert locations(name, known) == ["block_a.act", "conv_1"]
    assert locations("m.Net;1", known) == [""]  # the root module's own code
    assert locations("serving_default_output_0_output", known) is None  # renamed by the signature
    # a wrapper around the model (parity's output flattening) adds a level eager does not have
    assert locations("w.Wrapper/m.Net_model/m._Block_block_a/torch.nn.Conv2d_0;", known) == ["model.block_a.0"]


def test_the_note_reports_what_preserve_all_tensors_changed():
    out = np.array([[1.0, -2.0]], dtype=np.float32)
    assert "equal the plain run's bit for bit" in plain_run_agreement({1: out}, {1: out.copy()})
    changed = plain_run_agreement({1: out}, {1: out + np.float32(1e-3)})
    assert "differ from the plain run's by up to 0.001 (0.0005 of max|output|)" in changed
    nan = plain_run_agreement({1: out}, {1: np.array([[np.nan, -2.0]], dtype=np.float32)})
    assert "NaN/Inf where the plain run has none" in nan


SEQUENCE_MODELS = '''
import torch
from torch import nn


class Tagger(nn.Module):
    """Per-token layers over a [batch, seq, features] input: litert-torch computes each Linear as a
    FULLY_CONNECTED op on [batch * seq, features], and the recurrent layer between them keeps its shape."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.rnn = nn.GRU(8, 6, batch_first=True)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        out, _ = self.rnn(torch.tanh(self.proj(x)))
        return self.head(out)


def tagger():
    torch.manual_seed(0)
    return Tagger().eval()


def perturbed_export(model, example_inputs, path):
    """A user's own TFLite export with a bug: the first Linear's weights scaled by 2%."""
    from parity.formats.tflite.export import export

    with torch.no_grad():
        model.proj.weight.mul_(1.02)
    return export(model, example_inputs, path, input_names=["x"], output_names=["tags"])
'''


def tflite_case(factory: str, shape: str, exporter: str = "", options: str = "") -> str:
    """A tflite case on the cpu backend, batch 2; with `exporter`, exported through that function."""
    body = f"model: {{factory: '{factory}'}}\ninputs: {{x: {{shape: {shape}}}}}\nbatch_sizes: [2]\n" \
           "formats: [tflite]\nbackends: [cpu]\n"
    return body + (f"export:\n  tflite: {{function: '{exporter}'{options}}}\n" if exporter else "")


@pytest.fixture(scope="module")
def sequence_runs(tmp_path_factory):
    bodies = {"clean": tflite_case("sequence_models:tagger", "[5, 8]"),
              "weight": tflite_case("sequence_models:tagger", "[5, 8]", "sequence_models:perturbed_export")}
    with case_runs(tmp_path_factory.mktemp("tflite_sequence"), {"sequence_models": SEQUENCE_MODELS}, bodies) as runs:
        yield runs


def test_a_linear_over_a_sequence_is_compared_with_its_leading_axes_regrouped(sequence_runs):
    """TFLite's fully connected op flattens [2, 5, 8] to [10, 8]: compared as eager's shape, the Linear
    whose weights were scaled is named, not the GRU after it."""
    clean = triage(sequence_runs["clean"], "tflite", "cpu")
    assert clean.first_divergence is None, clean.table()
    assert {"proj", "rnn", "head"} <= {r.path for r in clean.rows}, clean.table()
    assert not any(u.startswith("proj ") for u in clean.unmapped), clean.unmapped
    report = triage(sequence_runs["weight"], "tflite", "cpu")
    assert report.first_divergence == "proj", report.table()
    assert report.summary.startswith("first divergence: proj (Linear), computes something else than eager")
    assert report.batch_dependent is False


ATTENTION_MODELS = '''
import torch
from torch import nn


class Block(nn.Module):
    """Self-attention through scaled_dot_product_attention: litert-torch folds the 1/d**0.25 scale into the
    query and key Linears' weights, so their FULLY_CONNECTED tensors are not their outputs."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        y = nn.functional.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return x + self.out(y.transpose(1, 2).reshape(b, t, d))


class Encoder(nn.Module):
    """Blocks in a ModuleList indexed in forward(): the list is never called, so no location names it."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def encoder():
    torch.manual_seed(0)
    return Encoder().eval()


def perturbed_export(model, example_inputs, path, layer="layers.1.out"):
    from parity.formats.tflite.export import export

    with torch.no_grad():
        model.get_submodule(layer).weight.mul_(1.02)
    return export(model, example_inputs, path, input_names=["x"], output_names=["y"])
'''


@pytest.fixture(scope="module")
def attention_runs(tmp_path_factory):
    factory, exporter = "attention_models:encoder", "attention_models:perturbed_export"
    bodies = {"clean": tflite_case(factory, "[6, 8]"),
              "out": tflite_case(factory, "[6, 8]", exporter),
              "key": tflite_case(factory, "[6, 8]", exporter, ", options: {layer: layers.0.k}")}
    with case_runs(tmp_path_factory.mktemp("tflite_attention"), {"attention_models": ATTENTION_MODELS},
                   bodies) as runs:
        yield runs


def test_modules_in_a_module_list_and_a_scale_folded_into_attention_weights(attention_runs):
    """Blocks of a ModuleList are named with the list (layers.1.out, not 1.out); the query and key Linears,
    whose tensors hold the attention's scale too, are listed as having no tensor of their own instead of
    failing a clean export."""
    clean = triage(attention_runs["clean"], "tflite", "cpu")
    assert clean.first_divergence is None, clean.table()
    assert {"layers.0.out", "layers.1.out", "head"} <= {r.path for r in clean.rows}, clean.table()
    assert any(u.startswith("layers.0.k: no tensor of its own") for u in clean.unmapped), clean.unmapped
    out = triage(attention_runs["out"], "tflite", "cpu")
    assert out.first_divergence == "layers.1.out", out.table()
    # the key's tensor holds the scale too: the first tensor that diverges is the Linear after the attention
    key = triage(attention_runs["key"], "tflite", "cpu")
    assert key.first_divergence == "layers.0.out", key.table()
    assert all(r.status == "pass" for r in key.rows[:1]) and key.rows[0].path == "layers.0.v", key.table()


def test_locations_find_a_child_of_a_container_that_is_never_called():
    known = {"enc", "enc.layers", "enc.layers.0", "enc.layers.1", "enc.layers.1.fc", "h", "h.0", "h.0.fc"}
    assert locations("m.Net/m.Enc_enc/m.Layer_1/torch.nn.Linear_fc;", known) == ["enc.layers.1.fc"]
    # inside parity's wrapper, at the root of the model
    assert locations("w.W/m.Net_model/m.Block_0/torch.nn.Linear_fc;", known) == ["model.h.0.fc"]


EXCITE_MODELS = '''
import torch
from torch import nn


class Excite(nn.Module):
    """torchvision's squeeze-excite gate: a 1x1 conv, then Hardsigmoid (relu6(x + 3) / 6), whose + 3
    litert-torch folds into the conv's bias before a fused RELU6."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(8, 8, 1)
        self.gate = nn.Hardsigmoid()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = self.stem(x)
        return self.head(h * self.gate(self.fc(self.pool(h))))


def excite():
    torch.manual_seed(0)
    return Excite().eval()


def perturbed_export(model, example_inputs, path):
    from parity.formats.tflite.export import export

    with torch.no_grad():
        model.fc.weight.mul_(1.02)
    return export(model, example_inputs, path, input_names=["x"], output_names=["y"])
'''


def test_a_conv_holding_part_of_the_hardsigmoid_after_it_is_not_a_false_divergence(tmp_path):
    """The conv's tensor holds Hardsigmoid's + 3: it is listed as fused into the gate, whose tensor
    matches eager; with the conv's weights scaled, the gate is named, with the conv fused into it."""
    bodies = {"clean": tflite_case("excite_models:excite", "[3, 8, 8]"),
              "planted": tflite_case("excite_models:excite", "[3, 8, 8]", "excite_models:perturbed_export")}
    with case_runs(tmp_path, {"excite_models": EXCITE_MODELS}, bodies) as runs:
        clean = triage(runs["clean"], "tflite", "cpu")
        report = triage(runs["planted"], "tflite", "cpu")
    assert clean.first_divergence is None, clean.table()
    assert "gate" in [r.path for r in clean.rows], clean.table()
    assert any(u.startswith("fc: no tensor of its own") for u in clean.unmapped), clean.unmapped
    assert report.first_divergence == "gate", report.table()
    assert report.fused_with == ["fc"], report.table()


CHANNELS_LAST_MODELS = '''
import torch
from torch import nn


class Block(nn.Module):
    """timm's ConvNeXt block (conv_mlp=False): depthwise conv, then LayerNorm and the MLP channels-last."""

    def __init__(self, dim):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        h = self.conv_dw(x).permute(0, 2, 3, 1)
        h = self.fc2(self.act(self.fc1(self.norm(h))))
        return x + h.permute(0, 3, 1, 2)


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: a LayerNorm over channels of an NCHW tensor, through two permutes."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), LayerNorm2d(8)), Block(8), Block(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def perturbed_export(model, example_inputs, path):
    """A user's own TFLite export with a bug: the second block's fc1 weights scaled by 2%."""
    from parity.formats.tflite.export import export

    with torch.no_grad():
        model.model[2].fc1.weight.mul_(1.02) if hasattr(model, "model") else model[2].fc1.weight.mul_(1.02)
    return export(model, example_inputs, path, input_names=["x"], output_names=["y"])
'''


def test_tensors_kept_channels_last_without_transposes_are_compared_channels_first(tmp_path):
    """litert-torch keeps a ConvNeXt block's activations channels-last between blocks with no TRANSPOSE op a
    layout trace can follow: aligned by shape, they are compared (a clean file passes, the planted fc1 is named)
    instead of listed as 'shapes differ' while triage reported no divergence on two compared rows."""
    from parity.triage import triage

    bodies = {"clean": tflite_case("cl_models:net", "[3, 16, 16]"),
              "weight": tflite_case("cl_models:net", "[3, 16, 16]", "cl_models:perturbed_export")}
    with case_runs(tmp_path, {"cl_models": CHANNELS_LAST_MODELS}, bodies) as runs:
        clean = triage(runs["clean"], "tflite", "cpu")
        report = triage(runs["weight"], "tflite", "cpu")
    assert clean.first_divergence is None, clean.table()
    assert {"0.1", "1.conv_dw", "1", "2.conv_dw", "2", "5"} <= {r.path for r in clean.rows}, clean.table()
    assert report.first_divergence == "2.fc1", report.table()
    assert all(r.status == "pass" for r in report.rows[:[r.path for r in report.rows].index("2.fc1")])


SWIN_MODELS = '''
import timm
import torch


def swin():
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, window_size=4,
                             embed_dim=24, depths=(1, 1), num_heads=(1, 2), num_classes=10).eval()
'''


def test_a_linear_whose_location_moved_to_the_reshape_before_it_is_placed_by_its_weights(tmp_path):
    """litert-torch moves Swin's window-reverse reshape across attn.proj, and the tensor names move with the
    positions: the RESHAPE carries proj's location (it holds proj's input), the FULLY_CONNECTED only the
    block's. Placed by its weights' names, the clean model reads no divergence (it named attn.proj with an
    error of 11.9 of max|output| before)."""
    from parity.triage import triage

    with case_runs(tmp_path, {"swin_models": SWIN_MODELS}, {"swin": tflite_case("swin_models:swin", "[3, 32, 32]")}) \
            as runs:
        report = triage(runs["swin"], "tflite", "cpu")
    assert report.first_divergence is None, report.table()
    assert "layers.1.blocks.0.attn.proj" in {r.path for r in report.rows}, report.table()
