"""The environment a run happened in, collected without importing any framework.

Package versions come from ``importlib.metadata`` (installed distributions, nothing imported);
the GPU from ``nvidia-smi`` when it is on PATH; the CPU and memory from ``/proc`` on Linux and
``platform`` elsewhere. Every probe is allowed to fail: a missing fact is ``None``, never an error.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

def collect(root: Optional[Path] = None) -> dict:
    """Python, packages, OS, CPU, memory, GPUs and (when `root` is in a git checkout) the commit."""
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "packages": packages(),
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "node": platform.node()},
        "cpu": cpu(),
        "memory_gb": memory_gb(),
        "gpus": gpus(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "git": git(root) if root is not None else None,
    }


def packages() -> dict[str, str]:
    """The versions of every package that matters (parity.versions)."""
    from parity.versions import packages as versions

    return versions()


def cpu() -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model": model or platform.processor() or None, "count": os.cpu_count(), "usable": usable}


def memory_gb() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi lists them; [] when there is none (or no nvidia-smi)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            found.append({"name": parts[0], "driver": parts[1],
                          "memory_mb": int(parts[2]) if parts[2].isdigit() else parts[2]})
    return found


def git(root: Path) -> Optional[dict]:
    """The commit checked out at `root` and whether tracked files differ from it."""
    if shutil.which("git") is None:
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def one_line(env: dict) -> str:
    """`python 3.11.7 · torch 2.14.1 · onnxruntime 1.32.0 · Linux x86_64 · Intel Xeon (2 CPUs) · no GPU`."""
    if not env:
        return "environment not recorded"
    parts = []
    if env.get("python"):
        parts.append(f"python {env['python'].get('version')}")
    pk = env.get("packages", {})
    for name in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorflow", "tensorflow-cpu", "coremltools"):
        if name in pk:
            parts.append(f"{name} {pk[name]}")
    plat = env.get("platform") or {}
    if plat:
        parts.append(f"{plat.get('system')} {plat.get('machine')}")
    c = env.get("cpu") or {}
    if c.get("model") or c.get("usable"):
        parts.append(f"{c.get('model') or 'CPU'} ({c.get('usable')} CPUs)")
    g = env.get("gpus")
    parts.append(", ".join(x["name"] for x in g) if g else "no GPU")
    return " · ".join(parts)
