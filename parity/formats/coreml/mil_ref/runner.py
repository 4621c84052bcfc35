"""CoreML numerics on any OS: the saved ML Program evaluated by parity's MIL reference evaluator.

This is not the Core ML runtime: it evaluates the program's MIL ops with PyTorch CPU kernels in the
program's dtypes (see :mod:`parity.formats.coreml.mil_ref`), which shows what the converted graph computes. Reports
name it "MIL reference evaluator".
"""

from __future__ import annotations

import numpy as np

from parity.formats.base import Runner, output_order


class MilReferenceRunner(Runner):
    """An .mlpackage's ``main`` function on the MIL reference evaluator (backend ``mil-ref``)."""

    backends = ("mil-ref",)  # runs wherever coremltools and torch import: no device, no macOS

    @property
    def name(self) -> str:
        import coremltools as ct

        return f"MIL reference evaluator (parity.formats.coreml.mil_ref, program read by coremltools {ct.__version__})"

    def activate_impl(self) -> None:
        from parity.formats.coreml.mil_ref import Evaluator, load_program

        program, _ = load_program(self.artefact.path)
        self.evaluator = Evaluator(program)
        self.order: list[int] | None = None

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = self.evaluator.input_names
        if len(inputs) != len(names):
            raise ValueError(f"the program takes {len(names)} inputs {names}, the case gives {len(inputs)}: "
                             f"{list(inputs)}")
        outputs = list(self.evaluator.run(dict(zip(names, inputs.values()))).items())
        if self.order is None:
            self.order = output_order([name for name, _ in outputs], self.artefact)
        return [outputs[i][1] for i in self.order]

    def deactivate_impl(self) -> None:
        del self.evaluator
