"""CoreML ML Programs (.mlpackage) from coremltools, one format per compute precision (``coreml``
FLOAT32, ``coreml_fp16``), so each has its own tolerance, golden and test ids; ``coreml_int8``:
weight-only int8. Run on the Core ML runtime (``cpu``, ``gpu``, ``ane``: macOS only) and on parity's
MIL reference evaluator (``mil-ref``: what the converted program computes, on any OS)."""

from parity.formats.spec import FormatInfo, keras_route

_P = "parity.formats.coreml"
_CT = ("coremltools",)


def _keras(exporter: str, options: tuple[str, ...]):
    return keras_route(f"{_P}.keras:{exporter}", _CT, options, distributions=_CT)


COREML = FormatInfo(
    name="coreml",
    exporter=f"{_P}.export:export_fp32",
    runner=f"{_P}.runner:CoreMLRunner",
    runners=(("mil-ref", f"{_P}.mil_ref.runner:MilReferenceRunner"),),
    suffix=".mlpackage",
    backends=("mil-ref", "cpu", "gpu", "ane"),
    oracles=(("mil-ref", "reference"),),  # parity's MIL evaluator: the program's ops as documented
    intermediates=f"{_P}.intermediates:intermediates",  # every op's output from the MIL evaluator, one run
    requires=("torch", "coremltools"),
    install="pip install 'parity[coreml]'",
    exporter_options=("minimum_deployment_target",),
    precision="fp32",
    inspector=f"{_P}.runner:inspect",
    linter=f"{_P}.lint:lint",
    routes=(("keras", _keras("coreml_fp32", ("minimum_deployment_target",))),),
    distributions=("torch", "coremltools"),
    order=50,
)

FORMATS = [
    COREML,
    # another route to the same format: coremltools' torch.export frontend (opt-in: a case lists it)
    COREML.variant("coreml_pt2", f"{_P}.export:export_via_torch_export", "fp32", order=55, opt_in=True),
    COREML.variant("coreml_fp16", f"{_P}.export:export_fp16", "fp16", order=70,
                   exporter_options=("minimum_deployment_target", "fp32_ops"),  # fp32_ops: ops kept in fp32
                   keras=_keras("coreml_fp16", ("minimum_deployment_target",))),
    COREML.variant("coreml_int8", f"{_P}.quantize:coreml_int8", "int8", order=130, exporter_options=("granularity",),
                   keras=_keras("coreml_int8", ("granularity",))),
]
