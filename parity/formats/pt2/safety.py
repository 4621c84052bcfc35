"""A .pt2 is data, but ``torch.export.load`` unpickles parts of it: weights and constants saved
with ``use_pickle`` (tensor subclasses), custom and opaque objects, legacy weight files, and sample
inputs that fail the safe loader all go through ``torch.load(weights_only=False)`` or
``pickle.loads``, which run whatever code the file names.

:func:`pickled_payloads` reads the archive's own configuration (zipfile and JSON, nothing
unpickled) and lists what would be unpickled; :func:`safe_torch_load` makes every ``torch.load``
during a load refuse anything but tensors and plain containers, for what the configuration does not
describe (sample inputs). Together a prebuilt or cached .pt2 never runs code.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path
from typing import Iterator

#: Prefixes of constant payloads that torch.export.load unpickles whatever their config says.
_PICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")

SAFE_SAVE = ("re-save it with torch.export.save from a program whose weights and constants are plain "
             "torch.Tensor (not tensor subclasses, script objects or opaque objects), so nothing in it is pickled")


class PickledArtefact(Exception):
    """The .pt2 holds payloads that loading it would unpickle."""


def pickled_payloads(path: str | Path) -> list[str]:
    """What loading the .pt2 at `path` would unpickle: 'weight x', 'constant y', 'legacy weights ...'."""
    found: list[str] = []
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise PickledArtefact(f"{path} is not a .pt2 archive ({e})") from None
    with archive:
        for name in archive.namelist():
            parts = name.split("/")
            if len(parts) < 4 or parts[-3:-1] not in (["data", "weights"], ["data", "constants"]):
                continue
            kind = "weight" if parts[-2] == "weights" else "constant"
            if name.endswith(".pt"):  # the legacy format: one torch.save file of every weight or constant
                found.append(f"legacy {kind}s file {parts[-1]}")
                continue
            if not name.endswith("_config.json"):
                continue
            try:
                config = json.loads(archive.read(name)).get("config", {})
            except (ValueError, AttributeError):
                found.append(f"unreadable {kind} configuration {parts[-1]}")
                continue
            for fqn, meta in config.items():
                meta = meta if isinstance(meta, dict) else {}
                if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(_PICKLED_PREFIXES):
                    found.append(f"{kind} {fqn!r}")
    return found


def check_pt2(path: str | Path) -> None:
    """Raise PickledArtefact naming the file, what is pickled and the safe way to save it."""
    pickled = pickled_payloads(path)
    if pickled:
        shown = ", ".join(pickled[:3]) + (f" and {len(pickled) - 3} more" if len(pickled) > 3 else "")
        raise PickledArtefact(f"{path} holds pickled payloads ({shown}); loading it would unpickle them, which can "
                              f"run any code, so parity refuses it. {SAFE_SAVE}")


@contextlib.contextmanager
def safe_torch_load() -> Iterator[None]:
    """Within the block, ``torch.load`` accepts only tensors and plain containers (weights_only=True),
    whatever its caller asks: torch.export.load's fallback to an unsafe load fails instead."""
    import torch

    original = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original
