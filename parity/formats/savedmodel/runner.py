"""A TensorFlow SavedModel (``keras.Model.export``) run in TensorFlow, on CPU or a CUDA GPU.

The runner calls the ``serve`` endpoint that ``model.export`` writes (else the
``serving_default`` signature), feeding the case's tensors by position. Where TensorFlow sees no
GPU (tensorflow-cpu, or no device), ``cuda`` is skipped with the reason.
"""

from __future__ import annotations

from typing import Optional

import parity._triton_first  # noqa: F401  (before tensorflow)
import numpy as np

import tensorflow as tf  # noqa: E402
from parity.outputs import flatten  # noqa: E402
from parity.formats.base import Runner  # noqa: E402

DEVICES = {"cpu": "/CPU:0", "cuda": "/GPU:0"}


class SavedModelRunner(Runner):
    backends = ("cpu", "cuda")

    @classmethod
    def unavailable_reason(cls, backend: str) -> Optional[str]:
        reason = super().unavailable_reason(backend)
        if reason:
            return reason
        if backend == "cuda" and not tf.config.list_physical_devices("GPU"):
            built = "with" if tf.test.is_built_with_cuda() else "without"
            return (f"CUDA backend skipped: TensorFlow {tf.__version__} (built {built} CUDA) sees no GPU; "
                    "install tensorflow[and-cuda] on a machine with one")
        return None

    @property
    def name(self) -> str:
        return f"TensorFlow {tf.__version__} SavedModel on {DEVICES[self.backend]}"

    def activate_impl(self) -> None:
        self.loaded = tf.saved_model.load(str(self.artefact.path))
        if hasattr(self.loaded, "serve"):
            self.function, self.by_name = self.loaded.serve, None
            concrete = self.function.concrete_functions
            args = concrete[0].structured_input_signature[0] if concrete else ()
            # model.export takes several inputs as one list argument (args_0), or one argument each
            self.as_list = len(args) == 1 and isinstance(args[0], (list, tuple))
        else:
            signature = self.loaded.signatures["serving_default"]
            self.function = signature
            self.by_name = list(signature.structured_input_signature[1])

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [tf.constant(a) for a in inputs.values()]
        with tf.device(DEVICES[self.backend]):
            if self.by_name is not None:
                out = self.function(**dict(zip(self.by_name, arrays)))
            elif self.as_list:
                out = self.function(arrays)
            else:
                out = self.function(*arrays)
        # signature outputs come as a dict output_0, output_1, ...: numeric order
        return flatten(out, lambda t: np.array(t.numpy()), sort_keys=True)

    def deactivate_impl(self) -> None:
        del self.function, self.loaded
