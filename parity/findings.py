"""Training-mode lint: modules and graph nodes whose behaviour at inference depends on the batch or
on chance. One module per source (the model, each artefact format), imported only when used.

Each linter returns a list of :class:`Finding`. Kinds:

- ``batchnorm-training``: batch statistics at inference (BatchNorm in training mode)
- ``dropout-training``: dropout active at inference
- ``training-mode``: another module in training mode whose forward reads ``self.training``
- ``random-op``: a random number generator in the graph
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

TRAINING_KINDS = ("batchnorm-training", "dropout-training", "training-mode")


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str  # module path (model) or node name (artefact)
    op: str  # module class or op type
    module: Optional[str] = None  # source module path, where the mapping is known
    detail: str = ""

    def describe(self) -> str:
        src = f" (module {self.module})" if self.module and self.module != self.where else ""
        return f"{self.kind}: {self.where} [{self.op}]{src}{': ' + self.detail if self.detail else ''}"

    def as_dict(self) -> dict:
        return asdict(self)
