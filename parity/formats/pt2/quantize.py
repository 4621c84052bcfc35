"""pt2 INT8: PyTorch 2 export quantization through torchao (``X86InductorQuantizer``, static,
calibrated), saved as a torch.export program."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

import parity._triton_first  # noqa: F401
import torch

from parity.formats.quantize import calibration_batches


def pt2_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
             calibration: dict[str, np.ndarray], dynamic_axes: Optional[list[dict[int, str]]] = None) -> dict:
    """Static INT8 with torchao's X86InductorQuantizer default config (per-channel weights)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    from parity.formats.dims import torch_dynamic_shapes

    dims = torch_dynamic_shapes(example_inputs, dynamic_axes)
    graph = torch.export.export(model, example_inputs, dynamic_shapes=dims).module()
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for feed in calibration_batches(calibration):
            prepared(*(torch.from_numpy(v) for v in feed.values()))
    converted = convert_pt2e(prepared)
    torch.export.save(torch.export.export(converted, example_inputs, dynamic_shapes=dims), str(path))
    import torchao

    return {"route": "torchao PT2E X86InductorQuantizer (static)", "per_channel": True,
            "torchao": torchao.__version__, "torch": str(torch.__version__), "dynamic_batch": True}
