"""Case files: the declarative description of what to export, run and compare.

- :mod:`parity.case.schema`: the pydantic models (pydantic only)
- :mod:`parity.case.load`: YAML, discovery, error wording
- :mod:`parity.case.references`: files, factory resolution, framework inference, importing the case's code
- :mod:`parity.case.catalog`: the names a case may use, handed in by the layer that owns the registries
"""

from parity.case.catalog import Catalog
from parity.case.load import discover, load_case, load_cases
from parity.case.references import import_from_case, load_object
from parity.case.schema import (Accuracy, Canary, Case, DataSource, Determinism, ExportSpec, InputSpec, LatencySpec,
                                ModelSpec, Tolerances)

__all__ = ["Accuracy", "Canary", "Case", "Catalog", "DataSource", "Determinism", "ExportSpec", "InputSpec", "LatencySpec",
           "ModelSpec", "Tolerances", "discover", "import_from_case", "load_case", "load_cases", "load_object"]
