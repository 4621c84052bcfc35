"""ONNX (``torch.onnx.export``, dynamo; tf2onnx for Keras), run in onnxruntime on CPU and CUDA;
``onnx_int8``: onnxruntime.quantization of the fp32 export.

Two more backends evaluate the same file as references, opt-in (a case lists them) and consulted by
every failure to say who is wrong: ``ref`` (``onnx.reference.ReferenceEvaluator``, the operator
specification in NumPy) and ``cpu-noopt`` (onnxruntime's CPU provider with every graph optimisation
off)."""

from parity.formats.spec import FormatInfo, keras_route

_P = "parity.formats.onnx"
_ONNX = ("onnx", "onnxruntime")

ONNX = FormatInfo(
    name="onnx",
    exporter=f"{_P}.export:export",
    runner=f"{_P}.runner:OnnxRuntimeRunner",
    suffix=".onnx",
    backends=("cpu", "cuda", "cpu-noopt", "ref"),
    runners=(("ref", f"{_P}.runner:OnnxReferenceRunner"),),
    oracles=(("ref", "reference"), ("cpu-noopt", "unoptimised")),
    opt_in_backends=("cpu-noopt", "ref"),
    intermediates=f"{_P}.intermediates:intermediates",
    requires=("torch", "onnx", "onnxruntime", "onnxscript"),
    install="pip install 'parity[onnx]'",
    exporter_options=("opset", "dynamo"),
    linter=f"{_P}.lint:lint",
    routes=(("keras", keras_route(f"{_P}.keras:onnx", ("tf2onnx", *_ONNX), ("opset",),
                                  distributions=("tf2onnx", *_ONNX))),),
    distributions=("torch", "onnx", "onnxscript", "onnxruntime"),
    order=20,
)

FORMATS = [
    ONNX,
    # another route to the same format: the TorchScript-based exporter (opt-in: a case lists it)
    ONNX.variant("onnx_legacy", f"{_P}.export:export_legacy", "fp32", order=21, exporter_options=("opset",),
                 opt_in=True),
    ONNX.variant("onnx_int8", f"{_P}.quantize:onnx_int8", "int8", order=80,
                 exporter_options=("mode", "per_channel", "reduce_range", "nodes_to_exclude"),
                 keras=keras_route(f"{_P}.keras:onnx_int8", ("tf2onnx", *_ONNX),
                                   ("mode", "per_channel", "reduce_range", "nodes_to_exclude"),
                                   distributions=("tf2onnx", *_ONNX))),
]
