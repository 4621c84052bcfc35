"""torch.export programs (.pt2), run on torch's CPU and CUDA devices; ``pt2_int8``: torchao PT2E
static quantization."""

from parity.formats.spec import FormatInfo

_P = "parity.formats.pt2"

PT2 = FormatInfo(
    name="pt2",
    exporter=f"{_P}.export:export",
    runner=f"{_P}.runner:ExportedProgramRunner",
    suffix=".pt2",
    backends=("cpu", "cuda"),
    requires=("torch",),
    install="pip install 'parity[torch]'",
    exporter_options=("strict",),
    linter=f"{_P}.lint:lint",
    intermediates=f"{_P}.intermediates:intermediates",
    distributions=("torch",),
    order=30,
)

FORMATS = [
    PT2,
    PT2.variant("pt2_int8", f"{_P}.quantize:pt2_int8", "int8", order=100, exporter_options=(), backends=("cpu",),
                requires=("torch", "torchao"), install="pip install 'parity[torch]' torchao",
                distributions=("torch", "torchao")),
]
