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
    #: For formats with a static batch size: one artefact per batch size (``path`` is the largest).
    batch_paths: dict[int, Path] = field(default_factory=dict)

    def path_for(self, batch: int) -> Path:
        """The artefact exported for `batch`, or ``path`` when there is one artefact for every batch size."""
        return self.batch_paths.get(batch, self.path)

    @property
    def paths(self) -> list[Path]:
        return sorted(set(self.batch_paths.values())) or [self.path]

    @property
    def size_bytes(self) -> int:
        return sum(_size(p) for p in self.paths)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@dataclass(frozen=True)
class Expected:
    """What the case says an artefact takes and returns, for an inspector's structural checks.

    Shapes are full shapes (batch included) per batch size, from the case's inputs and the eager
    reference's outputs; names are the case's, in order.
    """

    batch_sizes: tuple[int, ...]
    inputs: dict[int, dict[str, tuple[int, ...]]]
    input_dtypes: dict[str, str]
    outputs: dict[int, dict[str, tuple[int, ...]]]
    precision: str = "fp32"  # the compute precision the format promises (fp32, fp16, int8)
