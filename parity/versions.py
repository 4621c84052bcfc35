"""The one list of packages whose versions matter, and reading their versions without importing them.

Derived from the registries: every format's and route's ``distributions`` (the converters and
runtimes), every framework's (the model libraries), and the harness's own. The export cache key,
the metadata recorded with goldens and the run record all read :func:`packages`, so drift on any
target can be traced to the library that moved.
"""

from __future__ import annotations

import importlib.metadata as md
from functools import lru_cache
from typing import Iterable, Optional

#: The harness itself and what every run depends on.
CORE = ("parity", "numpy", "pydantic", "pytest", "pytest-xdist", "scikit-learn")
#: Other distributions of the same package: a CPU/GPU build recorded under its own name.
ALIASES = {"tensorflow": ("tensorflow-cpu",), "onnxruntime": ("onnxruntime-gpu",)}


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    """Every distribution whose version is recorded, in a stable order."""
    from parity.formats import FORMATS
    from parity.frameworks import DISTRIBUTIONS

    found: list[str] = list(CORE)
    for dists in DISTRIBUTIONS.values():
        found += dists
    for info in FORMATS.values():
        found += info.distributions
        for framework in info.frameworks:
            found += info.route(framework).distributions
    for name in list(found):
        found += ALIASES.get(name, ())
    return tuple(dict.fromkeys(found))


def packages(only: Optional[Iterable[str]] = None) -> dict[str, str]:
    """name -> installed version of each distribution in `only` (default: :func:`names`) that is installed."""
    found = {}
    for name in (names() if only is None else only):
        version = _version(name)
        if version is not None:
            found[name] = version
    return found


@lru_cache(maxsize=None)
def _version(name: str) -> Optional[str]:
    """Read once per process: each lookup scans every distribution on sys.path (about 25 ms for the 30
    names, which a golden check and a cache key each ask for), and nothing installs mid-run."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


#: CPU features that change numerics: which kernels (and so which rounding) a runtime picks. An INT8
#: ONNX result moved from 0.9% to 19% of its signal between an AVX2 and an AVX-512 VNNI machine.
NUMERIC_CPU_FEATURES = ("fma", "f16c", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                        "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",  # x86
                        "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")  # Arm


@lru_cache(maxsize=1)
def cpu_features() -> str:
    """The NUMERIC_CPU_FEATURES this machine has, space-separated ('' where the OS does not say)."""
    from pathlib import Path

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags |= set(line.split(":", 1)[1].split())
    return " ".join(f for f in NUMERIC_CPU_FEATURES if f in flags)
