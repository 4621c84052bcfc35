"""An exported artefact on disk: the only thing exporters and runners share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Artefact:
    """A file (or package directory) in some format, and what is known about how it was made.

    ``input_names`` and ``output_names`` are the case's names, in the order the model takes and
    returns them; runners feed and read tensors by position, so a prebuilt artefact whose own
    names differ still lines up. ``metadata`` holds exporter facts worth reporting (opset written,
    trace or script, warnings, export seconds, size).
    """

    format: str
    path: Path
    source: str  # "parity" (built-in exporter), "function:<import path>" or "prebuilt"
    input_names: list[str]
    output_names: list[str]
    metadata: dict = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size
