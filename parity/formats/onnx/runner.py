"""ONNX on onnxruntime's CPU and CUDA execution providers, on the CPU provider with graph
optimisations off (``cpu-noopt``), and on ``onnx.reference`` (``ref``)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnxruntime as ort

from parity.formats.base import Runner, output_order

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu-noopt": "CPUExecutionProvider"}


def _feeds(input_names: list[str], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The case's inputs, in order, under the model's own input names."""
    if len(inputs) != len(input_names):
        raise ValueError(f"the ONNX model takes {len(input_names)} inputs {input_names}, "
                         f"the case gives {len(inputs)}: {list(inputs)}")
    return dict(zip(input_names, inputs.values()))


class OnnxRuntimeRunner(Runner):
    """An onnxruntime session; on ``cpu-noopt`` with ``ORT_DISABLE_ALL``, so that a wrong result that
    only the optimised session gives points at a graph optimisation (fusion, constant folding)."""

    backends = ("cpu", "cuda", "cpu-noopt")

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
        off = ", graph optimisations off (ORT_DISABLE_ALL)" if self.backend == "cpu-noopt" else ""
        return f"onnxruntime {ort.__version__} {PROVIDERS[self.backend]}{off}"

    def activate_impl(self) -> None:
        options = ort.SessionOptions()
        if self.backend == "cpu-noopt":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(self.artefact.path), options, providers=[PROVIDERS[self.backend]])
        got = self.session.get_providers()
        if got[0] != PROVIDERS[self.backend]:
            raise RuntimeError(f"onnxruntime fell back to {got} instead of {PROVIDERS[self.backend]}")
        self.input_names = [i.name for i in self.session.get_inputs()]
        own = [o.name for o in self.session.get_outputs()]
        self.fetch = [own[i] for i in output_order(own, self.artefact)]

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.session.run(self.fetch, _feeds(self.input_names, inputs))]

    def deactivate_impl(self) -> None:
        del self.session


class OnnxReferenceRunner(Runner):
    """``onnx.reference.ReferenceEvaluator``: each operator as the ONNX specification defines it, in
    NumPy. Slow (no fusion, Python loops in convolutions), and so opt-in; its job is to say whether the
    file computes what eager computes when a runtime disagrees. Operators of other domains
    (``com.microsoft``: onnxruntime's fused kernels) have no reference: loading names them."""

    backends = ("ref",)

    @property
    def name(self) -> str:
        import onnx

        return f"onnx.reference (onnx {onnx.__version__})"

    def activate_impl(self) -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator

        model = onnx.load(str(self.artefact.path))
        try:
            self.evaluator = ReferenceEvaluator(model)
        except Exception as e:  # an op without a reference implementation
            raise NotImplementedError(f"onnx.reference cannot run {self.artefact.path.name}: "
                                      f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self.input_names = [i.name for i in model.graph.input
                            if i.name not in {t.name for t in model.graph.initializer}]
        own = [o.name for o in model.graph.output]
        self.fetch = [own[i] for i in output_order(own, self.artefact)]

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.evaluator.run(self.fetch, _feeds(self.input_names, inputs))]

    def deactivate_impl(self) -> None:
        del self.evaluator
