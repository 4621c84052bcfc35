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


#: Modules that import nothing heavy, listed by hand so a new heavy import at module level shows up.
LIGHT = ("parity", "parity.case", "parity.tolerance", "parity.compare", "parity.golden", "parity.catalog",
         "parity.checks", "parity.session", "parity.plugin", "parity.formats", "parity.frameworks",
         "parity.versions", "parity.pipeline.run", "parity.pipeline.cache", "parity.pipeline.worker",
         "parity.profile", "parity.cli", "parity.report", "parity.report.html", "parity.report.markdown",
         "parity.report.diff", "parity.report.junit", "parity.report.environment", "parity.triage")


def test_import_parity_is_clean():
    assert _heavy_after("import " + ", ".join(LIGHT)) == []


def test_registries_load_without_frameworks():
    """Discovering every format and check (as collection does) imports no framework."""
    code = ("from parity.catalog import default\n"
            "c = default()\n"
            "assert 'onnx' in c.formats and 'parity' in c.checks, c")
    assert _heavy_after(code) == []


def _imports(package: Path) -> dict[str, set[str]]:
    """module -> the parity modules it imports anywhere in its source (top level or inside functions,
    TYPE_CHECKING blocks included: a cycle there is still a cycle in the design)."""
    modules = {}
    for f in package.rglob("*.py"):
        rel = f.relative_to(package.parent).with_suffix("")
        modules[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, f in modules.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                found = [base] + [f"{base}.{a.name}" for a in node.names]
            edges[name] |= {m for m in found if m in modules and m != name}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    edges = _imports(ROOT / "parity")
    assert len(edges) > 50  # the walk found the package
    assert _cycles(edges) == []


def test_cycle_detector_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")  # a function-level import counts
    (pkg / "c.py").write_text("import pkg.a\n")
    assert _cycles(_imports(pkg)) == [["pkg.a", "pkg.b"]]


#: The layers, lowest first: a module may import its own layer and the layers below, never above.
LAYERS = [
    ("parity.errors", "parity._triton_first", "parity.registry", "parity.causes"),
    ("parity.tolerance", "parity.profile", "parity.outputs", "parity.artefact", "parity.findings", "parity.golden"),
    ("parity.compare", "parity.case"),
    ("parity.frameworks", "parity.formats"),
    ("parity.versions",),
    ("parity.pipeline",),
    ("parity.checks",),
    ("parity.session", "parity.catalog", "parity.triage", "parity.bundle", "parity.sensitivity", "parity.report"),
    ("parity.plugin", "parity.cli", "parity.test_parity", "parity.__main__"),
]


def _layer(module: str) -> int:
    if module == "parity":
        return 0
    best = (-1, -1)
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), level))
    assert best[1] >= 0, f"{module} is in no layer of LAYERS: add it"
    return best[1]


def test_imports_flow_one_way():
    """plugin/cli -> session/checks -> pipeline -> formats/frameworks -> case, tolerance, compare -> errors."""
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, targets in _imports(ROOT / "parity").items() for t in targets
              if t != "parity" and _layer(t) > _layer(m)]
    assert upward == []


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
    """With CUDA torch beside TensorFlow, `import tensorflow; import triton` segfaults; parity loads triton first."""
    crash = subprocess.run([sys.executable, "-c", "import tensorflow; import triton"], capture_output=True)
    safe = subprocess.run([sys.executable, "-c", "import parity.frameworks.pytorch; import tensorflow; import triton; "
                           "import torch._dynamo; print('ok')"], capture_output=True, text=True)
    assert safe.returncode == 0 and safe.stdout.strip().endswith("ok"), safe.stderr[-2000:]
    # Pin the crash this guards against: if a future stack fixes it, this says the guard can go.
    assert crash.returncode == -11, f"tensorflow-then-triton no longer segfaults (rc {crash.returncode})"

