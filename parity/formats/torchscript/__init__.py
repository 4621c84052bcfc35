"""TorchScript (``torch.jit.trace`` / ``torch.jit.script``), run on torch's CPU and CUDA devices;
``torchscript_int8``: ``torch.ao`` dynamic quantization of the Linear layers."""

from parity.formats.spec import FormatInfo

_P = "parity.formats.torchscript"

TORCHSCRIPT = FormatInfo(
    name="torchscript",
    exporter=f"{_P}.export:export",
    runner=f"{_P}.runner:TorchScriptRunner",
    suffix=".pt",
    backends=("cpu", "cuda"),
    requires=("torch",),
    install="pip install 'parity[torch]'",
    exporter_options=("method",),
    linter=f"{_P}.lint:lint",
    intermediates=f"{_P}.intermediates:intermediates",
    distributions=("torch",),
    order=10,
)

FORMATS = [
    TORCHSCRIPT,
    TORCHSCRIPT.variant("torchscript_int8", f"{_P}.quantize:torchscript_int8", "int8", order=90,
                        exporter_options=("mode",),
                        backends=("cpu",)),  # quantized::linear_dynamic has no CUDA kernel
]
