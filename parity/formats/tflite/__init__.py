"""TFLite (litert-torch for PyTorch, TFLiteConverter for Keras), run in the LiteRT interpreter
(``cpu``: default kernels; ``cpu-ref``: reference kernels); INT8 through ai-edge-quantizer
(PyTorch) or the converter's full-integer mode (Keras); ``tflite_dynamic``: Keras dynamic range."""

from parity.formats.spec import FormatInfo, keras_route

_P = "parity.formats.tflite"

TFLITE = FormatInfo(
    name="tflite",
    exporter=f"{_P}.export:export",
    runner=f"{_P}.runner:LiteRTRunner",
    suffix=".tflite",
    backends=("cpu", "cpu-ref", "cuda"),
    oracles=(("cpu-ref", "reference"),),  # LiteRT's reference kernels (BUILTIN_REF) on the same file
    requires=("torch", "litert_torch", "ai_edge_litert"),
    install="pip install 'parity[tflite]'",
    exporter_options=("layout",),
    static_batch=True,  # litert-torch exports a static batch only (a dynamic batch export fails)
    inspector=f"{_P}.runner:inspect",
    linter=f"{_P}.lint:lint",
    routes=(("keras", keras_route(f"{_P}.keras:tflite", distributions=("ai-edge-litert",))),),
    distributions=("torch", "litert-torch", "ai-edge-litert"),
    order=40,
)

FORMATS = [
    TFLITE,
    TFLITE.variant("tflite_int8", f"{_P}.quantize:tflite_int8", "int8", order=110, exporter_options=("recipe_name",),
                   requires=(*TFLITE.requires, "ai_edge_quantizer"),
                   distributions=(*TFLITE.distributions, "ai-edge-quantizer"),
                   keras=keras_route(f"{_P}.keras:tflite_int8", distributions=("ai-edge-litert",))),
    # TFLiteConverter with Optimize.DEFAULT and no data (dynamic range: int8 weights, float
    # activations quantized per call). Keras only.
    TFLITE.variant("tflite_dynamic", f"{_P}.keras:tflite_dynamic", "int8", order=120, torch=False,
                   keras=keras_route(f"{_P}.keras:tflite_dynamic", distributions=("ai-edge-litert",))),
]
