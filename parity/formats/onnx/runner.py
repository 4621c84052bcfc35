"""ONNX on onnxruntime's CPU and CUDA execution providers."""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnxruntime as ort

from parity.formats.base import Runner, output_order

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OnnxRuntimeRunner(Runner):
    backends = ("cpu", "cuda")

    @classmethod
    def unavailable_reason(cls, backend: str) -> Optional[str]:
        reason = super().unavailable_reason(backend)
        if reason:
            return reason
        available = ort.get_available_providers()
        if PROVIDERS[backend] not in available:
            hint = " (install onnxruntime-gpu for CUDA)" if backend == "cuda" else ""
            return (f"{backend.upper()} backend skipped: onnxruntime {ort.__version__} has providers {available}, "
                    f"no {PROVIDERS[backend]}{hint}")
        return None

    @property
    def name(self) -> str:
        return f"onnxruntime {ort.__version__} {PROVIDERS[self.backend]}"

    def activate_impl(self) -> None:
        self.session = ort.InferenceSession(str(self.artefact.path), providers=[PROVIDERS[self.backend]])
        got = self.session.get_providers()
        if got[0] != PROVIDERS[self.backend]:
            raise RuntimeError(f"onnxruntime fell back to {got} instead of {PROVIDERS[self.backend]}")
        self.input_names = [i.name for i in self.session.get_inputs()]
        own = [o.name for o in self.session.get_outputs()]
        self.fetch = [own[i] for i in output_order(own, self.artefact)]

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the ONNX model takes {len(self.input_names)} inputs {self.input_names}, "
                             f"the case gives {len(inputs)}: {list(inputs)}")
        feeds = dict(zip(self.input_names, inputs.values()))
        return [np.asarray(o) for o in self.session.run(self.fetch, feeds)]

    def deactivate_impl(self) -> None:
        del self.session
