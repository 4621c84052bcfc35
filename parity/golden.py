"""The golden store: committed inputs and outputs under ``golden/<case>/``. NumPy and JSON only.

Layout, one directory per case (named by case, not by test, so renaming a test orphans nothing)::

    golden/<case>/meta.json             input fingerprint, versions, batch sizes, output names
    golden/<case>/inputs.npz            one array per input: the largest batch; batch b = first b samples
    golden/<case>/reference.npz         eager outputs, keys "<output>@b<batch>"
    golden/<case>/<format>-<backend>.npz   that target's outputs, same keys
    golden/<case>/<format>-<backend>.json  versions, tolerance and error vs the reference when recorded

Every file is written to a temporary file in the same directory and renamed over the old one,
so an interrupted update never leaves a half-written golden. Arrays are read with
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
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise GoldenError(f"{p}: unreadable golden metadata ({e}); re-record it with --update-golden") from None

    def read_arrays(self, case: str, name: str) -> Optional[dict[str, np.ndarray]]:
        p = self.path(case, name)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception as e:  # corrupt zip, pickled arrays
            raise GoldenError(f"{p}: unreadable golden arrays ({e}); re-record it with --update-golden") from None

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
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; goldens are ordinary committed files
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return target


def _without_time(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k != "recorded"}
