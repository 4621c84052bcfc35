"""Shared helpers for the harness's own tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import textwrap
from pathlib import Path
from typing import Iterator, Optional

import pytest

# Before any test can import tensorflow (coremltools does): tensorflow-then-triton segfaults.
import parity._triton_first  # noqa: F401

#: A tiny model module written beside test case files, so factories resolve "beside the case file".
MODELS = '''
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def small(classes=5):
    model = Small(classes)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def two_outputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 3)
            self.b = nn.Linear(6, 2)

        def forward(self, x, y):
            return self.a(x), self.b(x) * y.sum(1, keepdim=True)

    return Two().eval()


def perturbing_export(model, example_inputs, path, layer="fc", factor=1.01):
    """A user's own ONNX exporter with a bug: one layer's weights scaled by 1%."""
    with torch.no_grad():
        getattr(model, layer).weight.mul_(factor)
    torch.onnx.export(model.eval(), example_inputs, str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["out"], dynamic_axes={"x": {0: "b"}, "out": {0: "b"}})
    return {"exporter": "perturbing"}


def tiny_outputs():
    """Logits around 1e-13 (like efficientnet_b0 with random weights: 4e-14)."""
    model = small()
    with torch.no_grad():
        model.fc.weight.mul_(1e-13)
        model.fc.bias.mul_(1e-13)
    return model


def zeros():
    model = small()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    return model


class _Noisy(nn.Module):
    def __init__(self, model, level):
        super().__init__()
        self.model = model
        self.level = level

    def forward(self, x):
        out = self.model(x)
        ones = torch.ones_like(out)
        pattern = torch.sin(torch.cumsum(ones, -1) * 1.7 + torch.cumsum(ones, 0) * 0.3)
        return out + self.level * out.abs().max() * pattern


def noisy_export(model, example_inputs, path, level=1e-7):
    """An exporter whose artefact carries a deterministic error of `level` x max|output|."""
    torch.jit.save(torch.jit.trace(_Noisy(model.eval(), level), example_inputs, check_trace=False), str(path))


def bn_train():
    """BatchNorm left in training mode (running statistics settled)."""
    return small().train()


class _WithDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = small()
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.drop(self.body(x))


def dropout_train():
    model = _WithDropout().eval()
    model.drop.train()
    return model


class _BatchCoupled(nn.Module):
    """Eval mode, but each sample's output depends on its batch-mates (subtracts the batch mean)."""

    def __init__(self):
        super().__init__()
        self.body = small()

    def forward(self, x):
        return self.body(x - x.mean(0, keepdim=True))


def batch_coupled():
    return _BatchCoupled().eval()


class _Noise(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = small()

    def forward(self, x):
        out = self.body(x)
        return out + 0.05 * torch.rand_like(out)


def random_op():
    return _Noise().eval()


class _Specialised(nn.Module):
    """Branches on the batch size, so torch.export cannot keep the batch dimension dynamic."""

    def __init__(self):
        super().__init__()
        self.body = small()

    def forward(self, x):
        out = self.body(x)
        if x.shape[0] == 3:
            return out * 1.0
        return out


def specialised():
    return _Specialised().eval()


def planted_resnet():
    """resnet18 (32x32, 10 classes) with one middle conv marked for a planted exporter bug."""
    from parity_examples.zoo import torchvision_model

    model = torchvision_model("resnet18", size=32, num_classes=10)
    model.layer3[0].conv2._planted = True
    return model


class _GeluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU())
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.GELU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.mid(self.stem(x)))


def gelu_net():
    model = _GeluNet().eval()
    with torch.no_grad():
        model.mid[2].weight.mul_(6.0)  # pre-activations of a few units, where the tanh form differs most
    model.mid[3]._planted = True
    return model


def planted_export(model, example_inputs, path, bug="weight"):
    """A user's exporter with a bug in marked modules: weights scaled by 1%, or GELU swapped for its
    tanh approximation; then the built-in exporter for the file's suffix."""
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "_planted", False):
                if bug == "weight":
                    module.weight.mul_(1.01)
                else:
                    module.approximate = "tanh"
    return _builtin_export(model, example_inputs, path)


class LogOfNegatives(nn.Module):
    def forward(self, x):
        return torch.log(x)  # NaN where x < 0: eager too, unless the input is kept positive


class Guarded(nn.Module):
    """Eager keeps log's input positive (abs); the planted exporter drops the abs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 6)
        self.guard = True
        self.log = LogOfNegatives()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.stem(x)
        return self.head(self.log(h.abs() + 1e-3 if self.guard else h))


def guarded():
    torch.manual_seed(0)
    return Guarded().eval()


def unguarded_export(model, example_inputs, path):
    """A user's exporter with a bug: the abs keeping log's input positive dropped (NaN where it is
    negative); then the built-in exporter for the file's suffix."""
    model.guard = False
    return _builtin_export(model, example_inputs, path)


def _builtin_export(model, example_inputs, path):
    """parity's own exporter for the file's suffix, as a case without an export function gets."""
    import importlib

    suffix = str(path).rsplit(".", 1)[-1]
    # tflite: a static batch, the one of example_inputs (the engine calls it once per batch size it needs);
    # mlpackage: the fp32 program, its batch a RangeDim up to example_inputs' (no shape variants here)
    fmt, name = {"pt": ("torchscript", "export"), "onnx": ("onnx", "export"), "pt2": ("pt2", "export"),
                 "tflite": ("tflite", "export"), "mlpackage": ("coreml", "export_fp32")}[suffix]
    exporter = getattr(importlib.import_module(f"parity.formats.{fmt}.export"), name)
    names_in = [f"input{i}" for i in range(len(example_inputs))]
    extra = {"batch_sizes": [example_inputs[0].shape[0]]} if fmt == "pt2" else {}
    return exporter(model, example_inputs, path, input_names=names_in, output_names=["output0"], **extra)


def badly_calibrated_int8_export(model, example_inputs, path):
    """INT8 through onnxruntime static quantization, calibrated on the example inputs, except that
    the marked layer's weights are quantized with a scale 30x too large (a badly calibrated layer)."""
    from parity.formats.onnx.quantize import onnx_int8

    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "_planted", False):
                scale = 30 * module.weight.abs().max() / 127
                module.weight.copy_(torch.round(module.weight / scale).clamp(-127, 127) * scale)
    names = [f"input{i}" for i in range(len(example_inputs))]
    calibration = {n: t.detach().numpy() for n, t in zip(names, example_inputs)}
    return onnx_int8(model, example_inputs, path, input_names=names, output_names=["output0"],
                     calibration=calibration)


def crashing_export(model, example_inputs, path):
    """A converter that kills its own process (as a segfaulting native converter would)."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def hanging_export(model, example_inputs, path):
    import time

    time.sleep(3600)


def broken_export(model, example_inputs, path):
    raise RuntimeError("converter exploded: unsupported operator aten::frobnicate")


def _onnx(model, example_inputs, path, exporter):
    torch.onnx.export(model.eval(), (example_inputs[0],), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "b"}, "logits": {0: "b"}})
    return {"exporter": exporter}


def plain_export(model, example_inputs, path):
    return _onnx(model, example_inputs, path, "plain")


def zeroing_export(model, example_inputs, path):
    """An fp32 export whose every output is zero where the eager model's are about 0.5."""
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    return _onnx(model, example_inputs, path, "zeroing")


def nan_export(model, example_inputs, path):
    """An export whose logits are NaN."""
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))
    return _onnx(model, example_inputs, path, "nan")


class _Half(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).half().float()  # what an fp16 program returns for outputs of 1e-13


def half_export(model, example_inputs, path):
    """Outputs through fp16 (ONNX): values of 1e-13 come back as zeros (underflow)."""
    return _onnx(_Half(model.eval()), example_inputs, path, "half")


def half_torchscript_export(model, example_inputs, path):
    """The same underflow, as a TorchScript artefact."""
    torch.jit.save(torch.jit.trace(_Half(model.eval()), example_inputs, check_trace=False), str(path))
'''

SMALL_CASE = """
model:
  factory: models:small
  seed: 3
inputs:
  x: {shape: [3, 8, 8]}
outputs: [logits]
batch_sizes: [1, 3]
formats: [torchscript, onnx]
backends: [cpu]
"""


TEST_FILE = str(Path(__file__).parents[1] / "parity" / "test_parity.py")


def run_suite(pytester, case_dir: Path, *args: str):
    """`pytest parity/` on `case_dir` in a child pytest process; returns (result, report records)."""
    import json

    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        TEST_FILE, "-p", "no:cacheprovider", "--cases", str(case_dir), "--golden", str(pytester.path / "golden"),
        "--parity-build", str(pytester.path / "build"), "--parity-report", str(report), "-rA", *args)
    records = json.loads(report.read_text()) if report.exists() else []
    return result, records


def by_id(records: list[dict]) -> dict[str, dict]:
    """Report records by test id (case-format-backend-check; the lint has no backend)."""
    return {"-".join(str(r[k]) for k in ("case", "format", "backend", "check") if r[k]): r for r in records}


def write_case(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    """A cases/ directory holding models.py, ready for case files."""
    d = tmp_path / "cases"
    d.mkdir()
    (d / "models.py").write_text(MODELS, encoding="utf-8")
    return d


@contextlib.contextmanager
def case_runs(root: Path, models: dict[str, str], bodies: dict[str, str]) -> Iterator[dict]:
    """Each of `bodies` (case name -> YAML) written into root/cases beside `models` (module name ->
    source), and run in one Session whose build and golden directories are under `root`: yields
    {case name: CaseRun}, and closes the session on leaving."""
    from parity.catalog import load_case
    from parity.session import Session

    d = root / "cases"
    d.mkdir(parents=True, exist_ok=True)
    for module, source in models.items():
        (d / f"{module}.py").write_text(source, encoding="utf-8")
    session = Session(root / "build", root / "golden")
    try:
        yield {name: session.case_run(load_case(write_case(d, name, body))) for name, body in bodies.items()}
    finally:
        session.close()


def find_chromium() -> Optional[str]:
    """Headless Chromium's path, or None."""
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def in_ci() -> bool:
    """Whether CI is set (CI systems set it; tox does not pass it on, but keeps its value under
    ``__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI``, and tox.ini's pass_env is not ours to change)."""
    value = os.environ.get("CI") or os.environ.get("__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI") or ""
    return value.strip().lower() not in ("", "0", "false", "no")


def require_chromium(found: Optional[str]) -> str:
    """`found`, or a skip where Chromium is missing: a failure where CI is set, so that a CI run
    that could not install it never passes without rendering the HTML report."""
    if found:
        return found
    why = "headless Chromium not installed (Debian: apt-get install chromium)"
    if in_ci():
        pytest.fail(f"{why}, and CI is set: the HTML render tests must run in CI", pytrace=False)
    pytest.skip(why)

