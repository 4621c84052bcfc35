"""Speed and scale figures for parity. Prints figures; asserts nothing (not a timed test).

    python benchmarks/bench.py [--only import,collect,suite,xdist,userpath] [--models 10] [--px 224]
                               [--baseline REV]

- import:     `import parity` wall time and the heavy modules it loads (must be none)
- collect:    `pytest parity/ --collect-only` on 100 generated cases: wall time, heavy modules loaded
- suite:      the shipped suite cold (empty export cache) and warm (nothing changed): wall times,
              peak RSS, ratio (also without the opt-in latency tests' timing loops), and the harness
              overhead share (time not spent in export, inference, model building or the eager
              reference, from the timings the engine records); with --baseline REV, REV's suite cold
              too (a temporary git worktree), so the two are timed on one machine in one invocation
- xdist:      the shipped suite cold, serial vs `-n 2 --dist loadgroup`: speed-up on this machine
- userpath:   10 torchvision models (224 px, batch 2, random weights), their ONNX files, inputs and
              expected outputs, checked warm (a) by `polygraphy run M.onnx --onnxrt --load-inputs
              --load-outputs` once per model, as its users do, (b) by parity through case files
              (prebuilt artefacts, golden check) with `pytest --pyargs parity`, (c) by the floor: the
              same sessions, runs and comparisons in one bare Python process; wall time and peak RSS
              of each, and the ratios. Tools run from this interpreter's environment, not PATH.
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


def _suite(extra: list[str], build: Path, report: Path, root: Path = ROOT) -> tuple[float, int]:
    """(wall seconds, peak RSS MiB) of `pytest parity/` run in `root` (a checkout) with the build dir `build`."""
    elapsed, rss, proc = measured([sys.executable, "-m", "pytest", "parity/", "-q", "-p", "no:cacheprovider",
                                   "--parity-build", str(build), "--parity-report", str(report), *extra], cwd=root)
    if proc.returncode not in (0,):
        print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"suite failed in {root} (rc {proc.returncode})")
    return elapsed, rss


def bench_suite(baseline: str = "") -> dict:
    """The shipped suite cold (empty cache) and warm; with `baseline` (a git revision), that revision's
    suite cold too, from a temporary worktree, in the same invocation on the same machine."""
    build = Path(tempfile.mkdtemp()) / "build"
    report = build.parent / "report.json"
    figures: dict = {}
    if baseline:
        tree = build.parent / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), baseline], check=True)
        try:
            base, base_rss = _suite([], build.parent / "baseline-build", build.parent / "baseline.json", root=tree)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        figures.update(baseline=baseline, baseline_cold_s=round(base, 1), baseline_peak_rss_mib=base_rss)
    cold, cold_rss = _suite([], build, report)
    records = json.loads(report.read_text())
    warm, warm_rss = _suite([], build, report)
    warm_records = json.loads(report.read_text())
    warm_tests = sum(r.get("duration_s", 0) for r in warm_records if r.get("check") != "latency")
    work = _work_seconds(records)
    # Harness time = test time minus the framework work the engine timed (model build, reference,
    # export, runtime sessions, inference, lint graph loading). Latency tests are timing loops of
    # the runtime by design, so they are left out of both sides, and out of the warm figure.
    tests = sum(r.get("duration_s", 0) for r in records if r.get("check") != "latency")
    warm_latency = sum(r.get("duration_s", 0) for r in warm_records if r.get("check") == "latency")
    shutil.rmtree(build.parent)
    figures.update({
        "cold_s": round(cold, 1), "warm_s": round(warm, 1), "warm_latency_tests_s": round(warm_latency, 1),
        "warm_over_cold": round(warm / cold, 3),
        "warm_excl_latency_over_cold": round((warm - warm_latency) / cold, 3),
        "cold_peak_rss_mib": cold_rss, "warm_peak_rss_mib": warm_rss,
        "cold_test_s_excl_latency": round(tests, 1), "cold_framework_work_s": round(work, 1),
        "harness_overhead_share": round((tests - work) / tests, 3) if tests else None,
        # where a warm run's time goes: framework work by phase (runtime sessions loaded, inference,
        # lint, the eager reference) against the test time; the rest is pytest, parity and checks
        "warm_test_s_excl_latency": round(warm_tests, 1),
        "warm_framework_work_s_by_phase": _phases(warm_records),
        "warm_exports": sum(1 for r in warm_records if _artefact(r).get("cached") is False),
        "cold_exports": sum(1 for r in records if _artefact(r).get("cached") is False)})
    if baseline:
        figures["cold_over_baseline"] = round(cold / figures["baseline_cold_s"], 3)
    return figures


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


def _phases(records: list[dict]) -> dict[str, float]:
    """Framework seconds by phase (build, reference, export, inspect, load, infer, lint), per case the
    last (most complete) timings, summed over cases."""
    per_case: dict[str, dict] = {}
    for r in records:
        t = r.get("timings")
        if t and sum(t.values()) >= sum(per_case.get(r["case"], {}).values()):
            per_case[r["case"]] = t
    phases: dict[str, float] = {}
    for timings in per_case.values():
        for key, seconds in timings.items():
            phase = key.split("_")[0]
            phases[phase] = phases.get(phase, 0.0) + seconds
    return {k: round(v, 1) for k, v in sorted(phases.items(), key=lambda kv: -kv[1])}


def bench_xdist() -> dict:
    out = {}
    for label, extra in (("serial", []), ("xdist_2", ["-n", "2", "--dist", "loadgroup"])):
        build = Path(tempfile.mkdtemp()) / "build"
        out[f"{label}_cold_s"] = round(_suite(extra, build, build.parent / "r.json")[0], 1)
        shutil.rmtree(build.parent)
    out["speedup"] = round(out["serial_cold_s"] / out["xdist_2_cold_s"], 2)
    return out


MODELS = ["resnet18", "mobilenet_v2", "squeezenet1_0", "alexnet", "shufflenet_v2_x0_5", "mnasnet0_5",
          "resnet34", "densenet121", "efficientnet_b0", "regnet_x_400mf"]


def measured(cmd: list[str], **kw) -> tuple[float, int, subprocess.CompletedProcess]:
    """(wall seconds, peak RSS in MiB of the process tree's largest process, the result) of `cmd`."""
    probe = ("import resource, subprocess, sys, json; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(json.dumps([p.returncode, p.stdout[-4000:], p.stderr[-4000:], "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    start = time.perf_counter()
    outer = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, **kw)
    elapsed = time.perf_counter() - start
    code, out, err, rss_kib = json.loads(outer.stdout.strip().splitlines()[-1])
    return elapsed, rss_kib // 1024, subprocess.CompletedProcess(cmd, code, out, err)


def _tool(name: str) -> str:
    """A console script of the running interpreter's environment (never whatever PATH finds)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} is not installed in {Path(sys.executable).parent.parent}; "
                         "pip install 'parity[bench]' (tox -e parity has it)")
    return str(path)


USER_CASE = """model: {{factory: 'torchvision.models:get_model', kwargs: {{name: {name}, weights: null}}, seed: 0}}
inputs: {{x: {{shape: [3, {px}, {px}]}}}}
outputs: [y]
batch_sizes: [2]
formats: [onnx]
backends: [cpu]
checks: [golden]
export: {{onnx: {{artefact: artefacts/{name}.onnx}}}}
"""

FLOOR = """
import sys, numpy as np, onnxruntime as ort
from pathlib import Path
golden = Path(sys.argv[1])
for name in sys.argv[2:]:
    x = np.load(golden / name / "inputs.npz")["x"][:2]
    y = np.load(golden / name / "onnx-cpu.npz")["y@b2"]
    session = ort.InferenceSession(str(Path(sys.argv[1]).parent / "cases" / "artefacts" / f"{name}.onnx"),
                                   providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": x})[0]
    assert np.all(np.abs(out - y) <= 1e-4 * np.abs(y).max()), name
"""


def bench_userpath(count: int, px: int = 224) -> dict:
    """What a user runs, three ways on the same ONNX files, inputs and expected outputs, warm:
    (a) `polygraphy run M.onnx --onnxrt --load-inputs --load-outputs` once per model, (b) parity on
    case files (prebuilt artefacts, golden check) with `pytest --pyargs parity` in one process, (c)
    the floor: the same sessions, runs and comparisons in one bare Python process."""
    import numpy as np
    import torch
    import torchvision

    from parity.formats.onnx.export import export

    work = Path(tempfile.mkdtemp())
    cases, golden, build = work / "cases", work / "golden", work / "build"
    (cases / "artefacts").mkdir(parents=True)
    models = MODELS[:count]
    for name in models:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        export(model, (torch.randn(2, 3, px, px),), cases / "artefacts" / f"{name}.onnx", input_names=["x"],
               output_names=["y"])
        (cases / f"{name}.yaml").write_text(USER_CASE.format(name=name, px=px))
    suite = [sys.executable, "-m", "pytest", "--pyargs", "parity", "-q", "-p", "no:cacheprovider", "--cases",
             str(cases), "--golden", str(golden), "--parity-build", str(build)]
    recorded = subprocess.run([*suite, "--update-golden"], capture_output=True, text=True, cwd=work)
    if recorded.returncode != 0:
        raise SystemExit(f"recording the goldens failed:\n{recorded.stdout[-3000:]}")

    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json

    for name in models:  # Polygraphy gets parity's own golden inputs and outputs
        x = np.load(golden / name / "inputs.npz")["x"][:2]
        y = np.load(golden / name / "onnx-cpu.npz")["y@b2"]
        save_json([{"x": x}], str(work / f"{name}.in.json"))
        results = RunResults()
        results.append(("golden", [IterationResult(outputs={"y": y}, runner_name="golden")]))
        results.save(str(work / f"{name}.out.json"))

    polygraphy = _tool("polygraphy")

    def run_polygraphy() -> tuple[float, int]:
        total, peak = 0.0, 0
        for name in models:
            elapsed, rss, proc = measured([polygraphy, "run", str(cases / "artefacts" / f"{name}.onnx"), "--onnxrt",
                                           "--load-inputs", str(work / f"{name}.in.json"),
                                           "--load-outputs", str(work / f"{name}.out.json")])
            if proc.returncode != 0:
                raise SystemExit(f"polygraphy failed on {name}: {proc.stdout[-2000:]}")
            total, peak = total + elapsed, max(peak, rss)
        return total, peak

    def run_parity() -> tuple[float, int]:
        elapsed, rss, proc = measured(suite, cwd=work)
        if proc.returncode != 0:
            raise SystemExit(f"parity failed: {proc.stdout[-3000:]}")
        return elapsed, rss

    def run_floor() -> tuple[float, int]:
        elapsed, rss, proc = measured([sys.executable, "-c", FLOOR, str(golden), *models])
        if proc.returncode != 0:
            raise SystemExit(f"the floor failed: {proc.stderr[-2000:]}")
        return elapsed, rss

    rounds = [(run_polygraphy(), run_parity(), run_floor()) for _ in range(3)]  # side by side, interleaved
    shutil.rmtree(work)
    (a, a_rss), (b, b_rss), (c, c_rss) = [(statistics.median(r[i][0] for r in rounds),
                                           max(r[i][1] for r in rounds)) for i in range(3)]
    return {"models": models, "px": px, "batch": 2,
            "a_polygraphy_s": round(a, 2), "b_parity_s": round(b, 2), "c_floor_s": round(c, 2),
            "a_peak_rss_mib": a_rss, "b_peak_rss_mib": b_rss, "c_peak_rss_mib": c_rss,
            "parity_over_floor_wall": round(b / c, 2), "parity_over_floor_rss": round(b_rss / c_rss, 2),
            "polygraphy_over_parity_wall": round(a / b, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="import,collect,suite,userpath")
    parser.add_argument("--models", type=int, default=10, help="userpath: how many of the 10 torchvision models")
    parser.add_argument("--px", type=int, default=224, help="userpath: image size")
    parser.add_argument("--baseline", default="", help="suite: also time this git revision's suite cold "
                        "(from a temporary worktree), in the same invocation")
    args = parser.parse_args()
    wanted = args.only.split(",")
    figures = {"machine": f"{os.cpu_count()} cores, {sys.platform}", "date": time.strftime("%Y-%m-%d")}
    for name, fn in (("import", bench_import), ("collect", bench_collect), ("suite", lambda: bench_suite(args.baseline)),
                     ("xdist", bench_xdist), ("userpath", lambda: bench_userpath(args.models, args.px))):
        if name in wanted:
            figures[name] = fn()
            print(name, json.dumps(figures[name]), flush=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
