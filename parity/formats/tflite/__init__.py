"""TFLite (litert-torch for PyTorch, TFLiteConverter for Keras), run in the LiteRT interpreter
(``cpu``: default kernels; ``cpu-ref``: reference kernels); INT8 through ai-edge-quantizer
(PyTorch) or the converter's full-integer mode (Keras); ``tflite_dynamic``: Keras dynamic range;
``tflite_onnx2tf``: another PyTorch route, parity's ONNX export converted by onnx2tf (opt-in)."""

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
    intermediates=f"{_P}.intermediates:intermediates",  # triage reads litert-torch's own tensors
    linter=f"{_P}.lint:lint",
    routes=(("keras", keras_route(f"{_P}.keras:tflite", distributions=("ai-edge-litert",))),),
    distributions=("torch", "litert-torch", "ai-edge-litert"),
    order=40,
)

#: onnx2tf and the few packages it imports, each installed with --no-deps: onnx2tf pins tensorflow, onnx,
#: onnxruntime, numpy and protobuf to other versions than the tested stack's (constraints.txt)
ONNX2TF_INSTALL = ("pip install 'parity[tflite,onnx]' && pip install --no-deps onnx2tf==1.29.24 "
                   "onnx-graphsurgeon==0.6.1 sng4onnx==2.0.1 sne4onnx==2.0.1 psutil==5.9.5 tf-keras==2.21.0")

FORMATS = [
    TFLITE,
    # another route to the same format: parity's ONNX export, then onnx2tf (opt-in: a case lists it)
    TFLITE.variant("tflite_onnx2tf", f"{_P}.onnx2tf_export:export", "fp32", order=45, opt_in=True,
                   exporter_options=("opset", "dynamic_batch"), intermediates="",  # onnx2tf's names carry no module locations
                   requires=("torch", "onnx", "onnxscript", "onnx2tf", "tf_keras", "onnx_graphsurgeon", "sng4onnx",
                             "psutil", "ai_edge_litert"),
                   install=ONNX2TF_INSTALL,
                   distributions=("torch", "onnx", "onnxscript", "onnx2tf", "tensorflow", "tf-keras",
                                  "onnx-graphsurgeon", "ai-edge-litert")),
    TFLITE.variant("tflite_int8", f"{_P}.quantize:tflite_int8", "int8", order=110,
                   exporter_options=("recipe_name", "recipe", "float_ops"),  # float_ops: op scopes kept in float
                   requires=(*TFLITE.requires, "ai_edge_quantizer"),
                   distributions=(*TFLITE.distributions, "ai-edge-quantizer"),
                   keras=keras_route(f"{_P}.keras:tflite_int8", distributions=("ai-edge-litert",))),
    # TFLiteConverter with Optimize.DEFAULT and no data (dynamic range: int8 weights, float
    # activations quantized per call). Keras only.
    TFLITE.variant("tflite_dynamic", f"{_P}.keras:tflite_dynamic", "int8", order=120, torch=False,
                   keras=keras_route(f"{_P}.keras:tflite_dynamic", distributions=("ai-edge-litert",))),
]
