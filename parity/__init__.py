"""parity: a regression-test harness for model export parity.

``import parity`` is cheap: it imports no framework (torch, tensorflow, onnxruntime, coremltools).
Frameworks are imported where they are used, when a case needs them.
"""

from parity.errors import BackendUnavailable, CaseError, ExportError, GoldenError, ParityError, RunnerError

__version__ = "0.1.0"

__all__ = ["BackendUnavailable", "CaseError", "ExportError", "GoldenError", "ParityError", "RunnerError", "__version__"]
