"""Speed and scale figures for parity. Prints figures; asserts nothing (not a timed test).

    python benchmarks/bench.py [--only import,collect,suite,xdist,polygraphy] [--models 10]

- import:     `import parity` wall time and the heavy modules it loads (must be none)
- collect:    `pytest parity/ --collect-only` on 100 generated cases: wall time, heavy modules loaded
- suite:      the shipped suite cold (empty export cache) and warm (nothing changed): wall times,
              ratio, and the harness overhead share (time not spent in export, inference, model
              building or the eager reference, from the timings the engine records)
- xdist:      the shipped suite cold, serial vs `-n 2 --dist loadgroup`: speed-up on this machine
- polygraphy: the same ONNX models, inputs and reference outputs checked by
              `polygraphy run M.onnx --onnxrt --load-inputs --load-outputs` (once per model, as a
              user would) and by parity in one process: ratio
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tensorflow", "onnxruntime", "coremltools", "onnx", "ai_edge_litert", "litert_torch")


def sh(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - start, proc


def bench_import() -> dict:
    code = f"import time; t=time.perf_counter(); import parity, parity.plugin, parity.catalog, parity.session; " \
           f"d=time.perf_counter()-t; import sys; print(d, [m for m in {HEAVY!r} if m in sys.modules])"
    runs = [sh([sys.executable, "-c", code])[1].stdout.split(" ", 1) for _ in range(5)]
    return {"import_parity_s": statistics.median(float(r[0]) for r in runs), "heavy_loaded": runs[0][1].strip()}


def bench_collect(n: int = 100) -> dict:
    tmp = Path(tempfile.mkdtemp())
    cases = tmp / "cases"
    cases.mkdir()
    for i in range(n):
        (cases / f"gen_{i:03d}.yaml").write_text(
            "model: {factory: 'parity_examples.zoo:tiny_cnn', kwargs: {width: %d}, seed: %d}\n"
            "inputs: {image: {shape: [3, 32, 32]}}\nbatch_sizes: [1, 4]\n" % (8 + i % 8, i))
    probe = ("import sys, pytest; rc = pytest.main(['parity/', '--collect-only', '-q', '-p', 'no:cacheprovider', "
             f"'--cases', {str(cases)!r}]); print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules]); "
             "sys.exit(rc)")
    times = []
    for _ in range(3):
        elapsed, proc = sh([sys.executable, "-c", probe], cwd=ROOT)
        times.append(elapsed)
    items = next(line for line in proc.stdout.splitlines() if "collected" in line or "tests collected" in line)
    heavy = next(line for line in proc.stdout.splitlines() if line.startswith("HEAVY"))
    shutil.rmtree(tmp)
    return {"cases": n, "collect_only_s": round(statistics.median(times), 2), "items": items.strip(),
            "heavy_loaded": heavy[6:]}


def _suite(extra: list[str], build: Path, report: Path) -> float:
    elapsed, proc = sh([sys.executable, "-m", "pytest", "parity/", "-q", "-p", "no:cacheprovider",
                        "--parity-build", str(build), "--parity-report", str(report), *extra], cwd=ROOT)
    if proc.returncode not in (0,):
        print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"suite failed (rc {proc.returncode})")
    return elapsed


def bench_suite() -> dict:
    build = Path(tempfile.mkdtemp()) / "build"
    report = build.parent / "report.json"
    cold = _suite([], build, report)
    records = json.loads(report.read_text())
    warm = _suite([], build, report)
    warm_records = json.loads(report.read_text())
    work = _work_seconds(records)
    # Harness time = test time minus the framework work the engine timed (model build, reference,
    # export, runtime sessions, inference, lint graph loading). Latency tests are timing loops of
    # the runtime by design, so they are left out of both sides.
    tests = sum(r.get("duration_s", 0) for r in records if r.get("check") != "latency")
    shutil.rmtree(build.parent)
    return {"cold_s": round(cold, 1), "warm_s": round(warm, 1), "warm_over_cold": round(warm / cold, 3),
            "cold_test_s_excl_latency": round(tests, 1), "cold_framework_work_s": round(work, 1),
            "harness_overhead_share": round((tests - work) / tests, 3) if tests else None,
            "warm_exports": sum(1 for r in warm_records if _artefact(r).get("cached") is False),
            "cold_exports": sum(1 for r in records if _artefact(r).get("cached") is False)}


def _artefact(record: dict) -> dict:
    found = (record.get("metrics") or {}).get("artefact")
    return found if isinstance(found, dict) else {}


def _work_seconds(records: list[dict]) -> float:
    """Framework seconds the engine recorded, per case the last (most complete) figures."""
    per_case: dict[str, dict] = {}
    for r in records:
        t = r.get("timings")
        if t and sum(t.values()) >= sum(per_case.get(r["case"], {}).values()):
            per_case[r["case"]] = t
    return sum(v for timings in per_case.values() for v in timings.values())


def bench_xdist() -> dict:
    out = {}
    for label, extra in (("serial", []), ("xdist_2", ["-n", "2", "--dist", "loadgroup"])):
        build = Path(tempfile.mkdtemp()) / "build"
        out[f"{label}_cold_s"] = round(_suite(extra, build, build.parent / "r.json"), 1)
        shutil.rmtree(build.parent)
    out["speedup"] = round(out["serial_cold_s"] / out["xdist_2_cold_s"], 2)
    return out


MODELS = ["resnet18", "mobilenet_v2", "squeezenet1_0", "alexnet", "shufflenet_v2_x0_5", "mnasnet0_5",
          "resnet34", "densenet121", "efficientnet_b0", "regnet_x_400mf"]


def bench_polygraphy(count: int) -> dict:
    """Same ONNX models, inputs and expected outputs: Polygraphy CLI per model vs parity in one process."""
    import numpy as np
    import torch
    import torchvision
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json

    from parity.formats.onnx.export import export

    work = Path(tempfile.mkdtemp())
    models = MODELS[:count]
    for name in models:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.randn(2, 3, 224, 224)
        with torch.no_grad():
            y = model(x).numpy()
        export(model, (x,), work / f"{name}.onnx", input_names=["x"], output_names=["y"])
        save_json([{"x": x.numpy()}], str(work / f"{name}.in.json"))
        results = RunResults()
        results.append(("eager", [IterationResult(outputs={"y": y}, runner_name="eager")]))
        results.save(str(work / f"{name}.out.json"))
        np.savez(work / f"{name}.npz", x=x.numpy(), y=y)

    def polygraphy() -> float:
        total = 0.0
        for name in models:
            elapsed, proc = sh(["polygraphy", "run", str(work / f"{name}.onnx"), "--onnxrt",
                                "--load-inputs", str(work / f"{name}.in.json"),
                                "--load-outputs", str(work / f"{name}.out.json")])
            total += elapsed
        return total

    parity_code = f"""
import time, numpy as np
from pathlib import Path
from parity.artefact import Artefact
from parity.formats.onnx.runner import OnnxRuntimeRunner
from parity.compare import compare_outputs
from parity.tolerance import ResolvedTolerance
work = Path({str(work)!r})
tol = ResolvedTolerance(atol=0, rtol=0, scale=1e-4)
for name in {models!r}:
    data = np.load(work / f"{{name}}.npz")
    runner = OnnxRuntimeRunner(Artefact("onnx", work / f"{{name}}.onnx", "prebuilt", ["x"], ["y"]), "cpu").activate()
    out = runner.infer({{"x": data["x"]}})
    rows = compare_outputs({{"y": data["y"]}}, {{"y": out[0]}}, lambda n: tol)
    runner.deactivate()
"""

    def parity_run() -> float:
        return sh([sys.executable, "-c", parity_code])[0]

    poly = [polygraphy() for _ in range(3)]
    ours = [parity_run() for _ in range(3)]
    shutil.rmtree(work)
    p, q = statistics.median(poly), statistics.median(ours)
    return {"models": models, "polygraphy_s": round(p, 2), "parity_s": round(q, 2), "ratio": round(p / q, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="import,collect,suite,xdist,polygraphy")
    parser.add_argument("--models", type=int, default=10)
    args = parser.parse_args()
    wanted = args.only.split(",")
    figures = {"machine": f"{os.cpu_count()} cores, {sys.platform}", "date": time.strftime("%Y-%m-%d")}
    for name, fn in (("import", bench_import), ("collect", bench_collect), ("suite", bench_suite),
                     ("xdist", bench_xdist), ("polygraphy", lambda: bench_polygraphy(args.models))):
        if name in wanted:
            figures[name] = fn()
            print(name, json.dumps(figures[name]), flush=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
