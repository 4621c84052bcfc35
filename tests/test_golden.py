"""The golden store: atomic writes, no pickle, unchanged files left alone."""

from __future__ import annotations

import os

import numpy as np
import pytest

from parity.errors import GoldenError
from parity.golden import GoldenStore, key


def test_round_trip(tmp_path):
    store = GoldenStore(tmp_path)
    arrays = {key("logits", 2): np.arange(6, dtype=np.float32).reshape(2, 3)}
    store.write_arrays("case", "onnx-cpu.npz", arrays)
    store.write_json("case", "meta.json", {"input_fingerprint": "abc"})
    back = store.read_arrays("case", "onnx-cpu.npz")
    assert list(back) == ["logits@b2"] and np.array_equal(back["logits@b2"], arrays["logits@b2"])
    assert store.read_json("case", "meta.json") == {"input_fingerprint": "abc"}
    assert store.read_arrays("case", "missing.npz") is None
    assert oct(os.stat(store.path("case", "meta.json")).st_mode & 0o777) != "0o600"


def test_interrupted_write_keeps_old_golden_and_leaves_no_temp(tmp_path):
    store = GoldenStore(tmp_path)
    old = {"a": np.ones(3, np.float32)}
    store.write_arrays("case", "t.npz", old)

    class Boom(Exception):
        pass

    def explode(f):
        f.write(b"PK partial zip")
        raise Boom()

    with pytest.raises(Boom):
        store._atomic(store.path("case", "t.npz"), explode)
    assert np.array_equal(store.read_arrays("case", "t.npz")["a"], old["a"])
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == ["t.npz"]


def test_unchanged_arrays_are_not_rewritten(tmp_path):
    store = GoldenStore(tmp_path)
    store.write_arrays("case", "t.npz", {"a": np.ones(3, np.float32)})
    os.utime(store.path("case", "t.npz"), ns=(1, 1))
    store.write_arrays("case", "t.npz", {"a": np.ones(3, np.float32)})
    assert store.path("case", "t.npz").stat().st_mtime_ns == 1  # untouched
    store.write_arrays("case", "t.npz", {"a": np.ones(3, np.float64)})  # dtype change is a change
    assert store.path("case", "t.npz").stat().st_mtime_ns != 1


class _Payload:
    """Unpickling this runs code: it creates the file named in `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_golden_is_refused(tmp_path):
    """A real pickled .npz: refused, and its payload never runs (it would with allow_pickle=True)."""
    (tmp_path / "case").mkdir()
    marker = tmp_path / "unpickled"
    golden = tmp_path / "case" / "t.npz"
    np.savez(golden, a=np.array([_Payload(str(marker))], dtype=object))  # savez pickles object arrays
    with pytest.raises(GoldenError, match="unreadable golden arrays"):
        GoldenStore(tmp_path).read_arrays("case", "t.npz")
    assert not marker.exists()
    # The same file with pickles allowed runs the payload: the refusal above is what protects.
    with np.load(golden, allow_pickle=True) as data:
        data["a"]
    assert marker.exists()


def test_corrupt_meta_names_the_fix(tmp_path):
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "meta.json").write_text("{not json")
    with pytest.raises(GoldenError, match="--update-golden"):
        GoldenStore(tmp_path).read_json("case", "meta.json")


@pytest.mark.parametrize("name", [".", "..", "...", "../x", "a/b", ""])
def test_a_name_outside_the_golden_root_is_refused(tmp_path, name):
    """Nothing is written outside the golden directory, whatever the case name."""
    store = GoldenStore(tmp_path / "golden")
    with pytest.raises(GoldenError, match="inside"):
        store.write_json(name, "meta.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_second_update_run_is_refused_while_one_holds_the_goldens(tmp_path):
    first, second = GoldenStore(tmp_path / "golden"), GoldenStore(tmp_path / "golden")
    first.lock_for_update()
    try:
        with pytest.raises(GoldenError, match="another --update-golden run"):
            second.lock_for_update()
    finally:
        first.unlock()
    second.lock_for_update()  # free again once the first is done
    second.unlock()
    assert [p.name for p in (tmp_path / "golden").iterdir()] == []  # no lock file among the goldens


def test_taking_the_lock_removes_what_a_killed_write_left(tmp_path):
    store = GoldenStore(tmp_path / "golden")
    store.write_json("net", "meta.json", {"a": 1})
    stale = tmp_path / "golden" / "net" / ".onnx-cpu.npz.abc123.tmp"
    stale.write_bytes(b"half")
    store.lock_for_update()
    store.unlock()
    assert sorted(p.name for p in (tmp_path / "golden" / "net").iterdir()) == ["meta.json"]


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_write_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch, existing):
    """A full disk is a GoldenError naming the golden file, not a bare OSError (a 'harness error')."""
    import errno

    store = GoldenStore(tmp_path)
    if existing:
        store.write_json("case", "meta.json", {"a": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(GoldenError) as raised:
        store.write_json("case", "meta.json", {"a": 2})
    monkeypatch.undo()
    message = str(raised.value)
    assert message.startswith(f"{store.path('case', 'meta.json')}: cannot write this golden file "), message
    assert "No space left on device" in message and "free space on its device" in message, message
    assert ("the previous file is unchanged" if existing else "nothing was written there") in message
    assert len(message.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == (["meta.json"] if existing else [])
    if existing:
        assert store.read_json("case", "meta.json") == {"a": 1}
