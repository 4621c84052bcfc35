"""Load triton, when it is installed, before anything can import TensorFlow.

With the CUDA build of torch (which brings triton) and TensorFlow in one environment, importing
tensorflow and *then* loading triton kills the process with a segmentation fault; triton is loaded
by ``torch._dynamo``, hence by ``torch.export`` and the ONNX dynamo exporter, and coremltools
imports tensorflow by itself. The other order is safe. Every parity
module that imports a framework imports this module first; importing it costs about 0.2 s once.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings


def preload_triton() -> bool:
    """Import triton if it is installed and not yet loaded. Returns whether triton is loaded."""
    if "triton" in sys.modules:
        return True
    if importlib.util.find_spec("triton") is None:
        return False
    if "tensorflow" in sys.modules:
        warnings.warn(
            "tensorflow was imported before triton; loading triton now would crash the process "
            "(segmentation fault), so torch.export / ONNX dynamo exports may crash. Import parity "
            "(or triton) before tensorflow.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    import triton  # noqa: F401

    return True


preload_triton()
