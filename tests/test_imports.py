"""Import hygiene: `import parity` and collection stay free of frameworks; triton loads before tensorflow."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "tensorflow", "keras", "tf2onnx", "onnxruntime", "coremltools", "onnx", "ai_edge_litert",
         "litert_torch")


def _heavy_after(code: str, *args: str) -> list[str]:
    probe = f"{code}\nimport sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])  # a list literal we printed ourselves


def test_import_parity_is_clean():
    assert _heavy_after("import parity, parity.spec, parity.compare, parity.golden, parity.engine, "
                        "parity.checks, parity.plugin, parity.registry, parity.latency, parity.profile, "
                        "parity.cli, parity.report, parity.report.html, parity.report.markdown, "
                        "parity.report.diff, parity.report.junit, parity.report.environment, parity.imports") == []


def test_report_commands_import_no_framework(tmp_path):
    (tmp_path / "r.json").write_text('[{"case": "a", "format": "onnx", "backend": "cpu", "check": "parity", '
                                     '"status": "passed", "message": "", "metrics": {"scaled_error": 1e-7}}]')
    code = (f"from parity.cli import main\n"
            f"assert main(['report', {str(tmp_path / 'r.json')!r}, '--html', {str(tmp_path / 'r.html')!r}]) == 0\n"
            f"assert main(['diff', {str(tmp_path / 'r.json')!r}, {str(tmp_path / 'r.json')!r}]) == 0")
    assert _heavy_after(code) == []


def test_collect_only_imports_no_framework():
    code = ("import pytest, sys\n"
            "rc = pytest.main(['parity/', '--collect-only', '-q', '-p', 'no:cacheprovider'])\n"
            "assert rc == 0, rc")
    assert _heavy_after(code) == []


@pytest.mark.skipif(importlib.util.find_spec("triton") is None or importlib.util.find_spec("tensorflow") is None,
                    reason="needs triton (CUDA torch) and tensorflow in one environment")
def test_triton_before_tensorflow():
    """STACK.md: `import tensorflow; import triton` segfaults; parity loads triton first."""
    crash = subprocess.run([sys.executable, "-c", "import tensorflow; import triton"], capture_output=True)
    safe = subprocess.run([sys.executable, "-c", "import parity.model; import tensorflow; import triton; "
                           "import torch._dynamo; print('ok')"], capture_output=True, text=True)
    assert safe.returncode == 0 and safe.stdout.strip().endswith("ok"), safe.stderr[-2000:]
    # Pin the crash this guards against: if a future stack fixes it, this says the guard can go.
    assert crash.returncode == -11, f"tensorflow-then-triton no longer segfaults (rc {crash.returncode})"
