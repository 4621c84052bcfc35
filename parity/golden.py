"""The golden store: committed inputs and outputs under ``golden/<case>/``. NumPy and JSON only.

Layout, one directory per case (named by case, not by test, so renaming a test orphans nothing)::

    golden/<case>/meta.json             input fingerprint, versions, batch sizes, output names
    golden/<case>/inputs.npz            one array per input: the largest batch; batch b = first b samples
    golden/<case>/reference.npz         eager outputs, keys "<output>@b<batch>"
    golden/<case>/<format>-<backend>.npz   that target's outputs, same keys
    golden/<case>/<format>-<backend>.json  versions, tolerance and error vs the reference when recorded,
                                           and the SHA-256 of the npz beside it (npz_sha256)

Every file is written to a temporary file in the same directory and renamed over the old one,
so an interrupted update never leaves a half-written file. A target's npz is written before its
JSON, which records the npz's digest: an update interrupted between the two, or a JSON and an npz
from different recordings, is found by the golden check instead of passing with the wrong metadata. Arrays are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from parity.errors import GoldenError


#: dtype kinds a golden array may have: booleans, integers, floats and complex numbers.
NUMERIC_KINDS = "biufc"


def key(output: str, batch: int) -> str:
    return f"{output}@b{batch}"


class GoldenStore:
    """Reads and writes golden files under `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def case_dir(self, case: str) -> Path:
        """`root/case`; a name that would lead outside the root (``..``, a separator) is refused."""
        d = self.root / case
        if not case or "/" in case or "\\" in case or set(case) == {"."} or \
                not d.resolve().is_relative_to(self.root.resolve()):
            raise GoldenError(f"case name {case!r} does not name a directory inside {self.root}; give the case "
                              "a 'name' of letters, digits, '_', '-' or '.'")
        return d

    def path(self, case: str, name: str) -> Path:
        return self.case_dir(case) / name

    # ---- reading
    def read_json(self, case: str, name: str) -> Optional[dict]:
        p = self.path(case, name)
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GoldenError(f"{p}: unreadable golden metadata ({e}); re-record it with --update-golden") from None
        if not isinstance(data, dict):
            raise GoldenError(f"{p}: golden metadata must be a JSON object, it holds a {type(data).__name__}; "
                              "re-record it with --update-golden")
        return data

    def read_arrays(self, case: str, name: str) -> Optional[dict[str, np.ndarray]]:
        p = self.path(case, name)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as e:  # corrupt zip, pickled arrays, a file that is not an .npz
            raise GoldenError(f"{p}: unreadable golden arrays ({e}); re-record it with --update-golden") from None
        odd = [f"{k} ({a.dtype})" for k, a in arrays.items() if a.dtype.kind not in NUMERIC_KINDS]
        if odd:
            raise GoldenError(f"{p}: golden arrays must be numbers or booleans, {', '.join(odd[:3])} is not; "
                              "re-record it with --update-golden")
        return arrays

    def sha256(self, case: str, name: str) -> Optional[str]:
        """SHA-256 of the file's bytes (a target's JSON records its npz's, binding the two), or None if absent."""
        p = self.path(case, name)
        if not p.is_file():
            return None
        import hashlib

        digest = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    # ---- one writer at a time
    def lock_for_update(self) -> None:
        """Take the golden root for this run's writes, or raise GoldenError if another run holds it.

        Two --update-golden runs at once would interleave their files into one mixed directory; the
        second is refused before it writes anything. The lock is the root directory's own (flock),
        so no lock file lands among the goldens, and a killed run's lock is gone with its process.
        Temporary files a killed run left are removed once the lock is held."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no flock (Windows): a lock file beside the goldens
            from filelock import FileLock, Timeout

            lock = FileLock(str(self.root / ".parity-update.lock"), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                raise GoldenError(self._busy()) from None
            self._lock = lock
        else:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise GoldenError(self._busy()) from None
            self._lock = fd
        self.sweep_temps()

    def unlock(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if isinstance(lock, int):
            os.close(lock)  # releases the flock
        elif lock is not None:
            lock.release()

    def _busy(self) -> str:
        return (f"another --update-golden run is writing to {self.root}; nothing was written. Wait for it to "
                "finish, then run again")

    def sweep_temps(self) -> list[Path]:
        """Remove the temporary files (``.<name>.*.tmp``) an interrupted write left in case directories."""
        removed = []
        for tmp in self.root.glob("*/.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
        return removed

    # ---- writing (atomic)
    def write_json(self, case: str, name: str, payload: dict) -> Path:
        """Write `payload` unless the file holds the same apart from its "recorded" timestamp."""
        try:
            old = self.read_json(case, name)
        except GoldenError:
            old = None
        if old is not None and _without_time(old) == _without_time(json.loads(json.dumps(payload))):
            return self.path(case, name)
        data = (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
        return self._atomic(self.path(case, name), lambda f: f.write(data))

    def write_arrays(self, case: str, name: str, arrays: dict[str, np.ndarray]) -> Path:
        """Write `arrays` unless the file already holds exactly them (keeps unchanged goldens out of diffs)."""
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        try:
            old = self.read_arrays(case, name)
        except GoldenError:
            old = None
        if old is not None and old.keys() == arrays.keys() and all(
                old[k].dtype == v.dtype and np.array_equal(old[k], v, equal_nan=v.dtype.kind in "fc")
                for k, v in arrays.items()):
            return self.path(case, name)
        return self._atomic(self.path(case, name), lambda f: np.savez_compressed(f, **arrays))

    def _atomic(self, target: Path, write) -> Path:
        """Write `target` through a temporary file renamed over it; an OSError (a full disk, a read-only
        directory) is a GoldenError naming the file, with the old file (if any) left as it was."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as e:
            raise _write_error(target, e) from None
        umask = os.umask(0)
        os.umask(umask)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o666 & ~umask)  # mkstemp makes 0600; goldens are ordinary committed files
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(e, OSError):
                raise _write_error(target, e) from None
            raise
        return target


def _write_error(target: Path, e: OSError) -> GoldenError:
    import errno

    hint = {errno.ENOSPC: "free space on its device, then ", errno.EDQUOT: "free space on its device, then ",
            errno.EACCES: "make its directory writable, then ", errno.EPERM: "make its directory writable, then ",
            errno.EROFS: "record on a writable file system, then "}.get(e.errno, "")
    kept = "the previous file is unchanged" if target.exists() else "nothing was written there"
    return GoldenError(f"{target}: cannot write this golden file ({type(e).__name__}: {e.strerror or e}); {kept}; "
                       f"{hint}run --update-golden again")


#: Files of a case's golden directory that belong to the case, not to one target.
CASE_FILES = ("meta.json", "inputs.npz", "reference.npz")
#: Suffixes of a target's files: ``<format>-<backend><suffix>``.
TARGET_SUFFIXES = (".accuracy.json", ".npz", ".json")


def orphans(root: str | Path, targets: dict[str, set[str]], unknown: set[str] = frozenset()) -> list[tuple[Path, str]]:
    """Golden files no case or target owns: (path, why). `targets` maps each loaded case's name to its
    targets (``<format>-<backend>``); directories named in `unknown` (case files that did not load)
    are left alone."""
    root = Path(root)
    found: list[tuple[Path, str]] = []
    if not root.is_dir():
        return found
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name in unknown:
            continue
        if d.name not in targets:
            found.append((d, f"no case is named {d.name!r}"))
            continue
        for f in sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")):
            if f.name in CASE_FILES:
                continue
            target = next((f.name[:-len(s)] for s in TARGET_SUFFIXES if f.name.endswith(s)), None)
            if target not in targets[d.name]:
                found.append((f, f"case {d.name!r} has no target {target or f.name!r}"))
    return found


def _without_time(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k != "recorded"}
