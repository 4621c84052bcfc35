"""A format and a check defined outside parity, added through the entry-point groups
``parity.formats`` and ``parity.checks``: collected and run like the built-in ones, with no edit to parity."""

from __future__ import annotations

import textwrap
from pathlib import Path

from conftest import by_id, run_suite, write_case

PACKAGE = '''
"""An outside package adding the format `npz_linear` (a Linear layer's weights in an .npz, run in NumPy)."""
from parity.formats.spec import FormatInfo

FORMATS = [FormatInfo(name="npz_linear", exporter="extparity.export:export", runner="extparity.runner:NumpyRunner",
                      suffix=".npz", backends=("cpu",), requires=("numpy",), install="pip install extparity",
                      exporter_options=("skew",), distributions=("numpy",), order=500)]
'''

EXPORT = '''
import numpy as np


def export(model, example_inputs, path, *, input_names, output_names, skew=0.0):
    w = model.weight.detach().numpy().astype(np.float64)
    np.savez(path, weight=w * (1.0 + skew), bias=model.bias.detach().numpy())
    return {"exporter": "extparity", "skew": skew}
'''

RUNNER = '''
import numpy as np

from parity.formats.base import Runner


class NumpyRunner(Runner):
    backends = ("cpu",)

    def activate_impl(self):
        with np.load(self.artefact.path) as data:
            self.weight, self.bias = data["weight"], data["bias"]

    def infer_impl(self, inputs):
        (x,) = inputs.values()
        return [(x.astype(np.float64) @ self.weight.T + self.bias).astype(np.float32)]
'''

CHECK = '''
"""An outside check: every output value finite."""
import numpy as np

from parity.checks.base import Check, CheckResult


class Finite(Check):
    name = "finite"
    order = 900
    opt_in = True

    def run(self, run, fmt, backend, session):
        bad = {n: int((~np.isfinite(a)).sum()) for n, a in run.outputs(fmt, backend, max(run.case.batch_sizes)).items()}
        if any(bad.values()):
            return CheckResult("failed", f"non-finite outputs: {bad}")
        return CheckResult("passed", "all outputs finite")


CHECK = Finite()
'''

MODEL = '''
import torch


def linear():
    torch.manual_seed(0)
    return torch.nn.Linear(6, 4).eval()
'''


def _install(site: Path) -> None:
    pkg = site / "extparity"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PACKAGE)
    (pkg / "export.py").write_text(EXPORT)
    (pkg / "runner.py").write_text(RUNNER)
    (pkg / "checks.py").write_text(CHECK)
    info = site / "extparity-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extparity\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[parity.formats]\nnpz_linear = extparity\n\n"
                                           "[parity.checks]\nfinite = extparity.checks\n")


CASE = """
model: {factory: models_ext:linear}
inputs: {x: {shape: [6]}}
batch_sizes: [1, 3]
formats: [npz_linear]
checks: [parity, batch_invariance, determinism, finite]
export: {npz_linear: {options: {skew: SKEW}}}
"""


def test_outside_format_and_check_are_collected_and_run(pytester, tmp_path, monkeypatch):
    site = tmp_path / "site"
    _install(site)
    monkeypatch.setenv("PYTHONPATH", str(site))
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "models_ext.py").write_text(textwrap.dedent(MODEL))
    write_case(cases, "lin", CASE.replace("SKEW", "0.0"))
    write_case(cases, "skewed", CASE.replace("SKEW", "0.01"))  # a planted export bug: weights off by 1%
    result, records = run_suite(pytester, cases)
    got = {k: r["status"] for k, r in by_id(records).items()}
    assert got["lin-npz_linear-cpu-parity"] == "passed", result.stdout.str()[-3000:]
    assert got["lin-npz_linear-cpu-batch_invariance"] == "passed"
    assert got["lin-npz_linear-cpu-determinism"] == "passed"
    assert got["lin-npz_linear-cpu-finite"] == "passed"
    assert got["skewed-npz_linear-cpu-parity"] == "failed"  # the outside format's drift is caught
    assert "parity of npz_linear/cpu" in by_id(records)["skewed-npz_linear-cpu-parity"]["message"]


def test_unknown_format_error_lists_outside_formats(pytester, tmp_path, monkeypatch):
    site = tmp_path / "site"
    _install(site)
    monkeypatch.setenv("PYTHONPATH", str(site))
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "models_ext.py").write_text(textwrap.dedent(MODEL))
    write_case(cases, "typo", CASE.replace("SKEW", "0.0").replace("formats: [npz_linear]", "formats: [npz_lineer]")
               .replace("export: {npz_linear: {options: {skew: 0.0}}}", ""))
    result, records = run_suite(pytester, cases)
    (record,) = records
    assert record["check"] == "load" and "did you mean 'npz_linear'" in record["message"]
