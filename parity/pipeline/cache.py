"""The export cache: artefacts and model-derived results keyed by everything that determines them.

A key hashes the case fields that reach the model and the exporter (factory, kwargs, seed, weights
content, inputs, export options or function), the source of the code that builds and exports the
model (the factory's module and its siblings, a user's export function, parity's own package when
it is not installed from a wheel), and the versions of every framework that could change the
result. A re-run with nothing changed reuses the artefact; a change to any of those re-exports.
Entries are written to a temporary directory and renamed into place under a file lock, so
concurrent pytest-xdist workers never see a half-written entry and never export the same thing
twice. NumPy, JSON and filelock only.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from parity.case import Case
from parity.versions import packages

_SITE_MARKERS = ("site-packages", "dist-packages")


def _versions() -> dict[str, str]:
    """Every version that can change what a model or an artefact computes (parity.versions), not the test tools."""
    return {"python": sys.version.split()[0],
            **{k: v for k, v in packages().items() if k not in ("pytest", "pytest-xdist")}}


def _hash_file(h, path: Path) -> None:
    h.update(str(path.name).encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def source_digest(module: str, search: list[str]) -> str:
    """Digest of the code behind `module` (without importing it).

    Installed (site-packages) code is covered by its distribution's version. Otherwise: every .py
    file of the module's top-level package, or, for a plain module, the module and its sibling
    .py files (a models.py beside the case file and the helpers it imports).
    """
    top = module.split(".")[0]
    try:
        # PathFinder, not find_spec: it ignores sys.modules, where a same-named module from another
        # case directory may already sit.
        spec = importlib.machinery.PathFinder.find_spec(top, [*search, *sys.path])
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return "unknown"
    origin = Path(spec.origin)
    if any(marker in origin.parts for marker in _SITE_MARKERS):
        return "installed"
    files = sorted(origin.parent.rglob("*.py")) if spec.submodule_search_locations else \
        sorted(origin.parent.glob("*.py"))
    h = hashlib.sha256()
    for f in files:
        if "__pycache__" not in f.parts:
            _hash_file(h, f)
    return h.hexdigest()[:16]


#: Bumped when what a model entry stores changes (output names and key paths since layout 2).
REFERENCE_LAYOUT = 2


def model_key(case: Case) -> str:
    """Key of what the model computes: factory, its code, kwargs, seed, weights, inputs, versions."""
    search = [str(case.directory)]
    payload = {
        "model": case.model.model_dump(),
        "factory_source": source_digest(case.model.factory.partition(":")[0], search),
        "inputs": case.input_fingerprint(),
        "outputs": case.outputs,
        "layout": REFERENCE_LAYOUT,
        "versions": _versions(),
    }
    if case.sizes:  # the shape variants' references are stored under this key too
        payload["shape_variants"] = case.shape_variants()
    if case.model.weights:
        payload["weights_sha256"] = _weights_sha256(case)
    return _digest(payload)


def _weights_sha256(case: Case) -> str:
    h = hashlib.sha256()
    _hash_file(h, case.resolve(case.model.weights))
    return h.hexdigest()


def model_identity(case: Case) -> str:
    """Key of the model alone: factory, its code, kwargs, seed and weights, without inputs or versions
    (goldens record it, so drift can say whether the model or the environment changed)."""
    payload = {"model": case.model.model_dump(exclude={"weights"}),
               "factory_source": source_digest(case.model.factory.partition(":")[0], [str(case.directory)])}
    if case.model.weights:
        payload["weights_sha256"] = _weights_sha256(case)
    return _digest(payload)


def export_key(case: Case, fmt: str, sizes: Optional[dict[str, int]] = None) -> str:
    """Key of an artefact: the model key, the format, how the case exports it, and for a static-shape
    format's shape variant, the sizes it was exported at."""
    spec = case.export.get(fmt)
    payload = {"model": model_key(case), "format": fmt, "batch_sizes": case.batch_sizes,
               "export": spec.model_dump() if spec is not None else None,
               "parity_source": source_digest("parity", [])}
    if case.sizes:
        payload["dynamic_axes"] = case.dynamic_axes()
    if sizes:
        payload["shape_variant"] = sizes
    if spec is not None and spec.function:
        payload["function_source"] = source_digest(spec.function.partition(":")[0], [str(case.directory)])
    return _digest(payload)


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


#: Each entry's list of its files with their SHA-256, checked before anything in it is loaded.
MANIFEST = "MANIFEST.json"


def _manifest(entry: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under `entry` but the manifest and the DONE marker."""
    found = {}
    for p in sorted(entry.rglob("*")):
        if not p.is_file() or (p.parent == entry and p.name in (MANIFEST, "DONE")):
            continue
        digest = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        found[str(p.relative_to(entry))] = digest.hexdigest()
    return found


class Cache:
    """Directories of cached results under `root`, one per key."""

    def __init__(self, root: str | Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self._verified: set[tuple[str, int]] = set()

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def complete(self, entry: Path) -> bool:
        """Whether `entry` is a finished entry whose files are the ones written: each file's SHA-256 is
        checked against the entry's manifest (once per process), so a file swapped into the cache is
        never loaded; a changed or unlisted entry is re-made."""
        if not self.enabled or not (entry / "DONE").is_file():
            return False
        stamp = (str(entry), (entry / "DONE").stat().st_mtime_ns)
        if stamp not in self._verified:
            try:
                manifest = json.loads((entry / MANIFEST).read_text())
            except (OSError, ValueError):
                return False
            if not isinstance(manifest, dict) or manifest != _manifest(entry):
                return False
            self._verified.add(stamp)
        return True

    @contextmanager
    def lock(self, entry: Path) -> Iterator[None]:
        from filelock import FileLock

        entry.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(entry) + ".lock"):
            yield

    @contextmanager
    def writing(self, entry: Path) -> Iterator[Path]:
        """A temporary directory that becomes `entry` (with its DONE marker) if the block succeeds."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
        try:
            yield tmp
            (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp), indent=1, sort_keys=True))
            (tmp / "DONE").write_text("")
            if entry.exists():
                shutil.rmtree(entry)
            os.replace(tmp, entry)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def sweep(self) -> list[Path]:
        """Remove temporary directories a killed run left (``.<key>.*``, ``.scratch-<key>.*``): each
        only when its entry's lock is free, so a concurrent run's work in progress is never touched."""
        from filelock import FileLock, Timeout

        removed = []
        if not self.root.is_dir():
            return removed
        for kind in (d for d in self.root.iterdir() if d.is_dir()):
            for tmp in (d for d in kind.iterdir() if d.name.startswith(".") and d.is_dir()):
                key = tmp.name[1:].removeprefix("scratch-").split(".")[0].split("-")[0]
                if not key:
                    continue
                try:
                    with FileLock(str(kind / key) + ".lock", timeout=0):
                        shutil.rmtree(tmp, ignore_errors=True)
                        removed.append(tmp)
                except Timeout:
                    continue  # being written right now
        return removed

    def read_json(self, entry: Path, name: str) -> Optional[dict]:
        p = entry / name
        return json.loads(p.read_text()) if p.is_file() else None
