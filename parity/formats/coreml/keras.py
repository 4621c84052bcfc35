"""CoreML from Keras: ``coremltools.convert`` of the Keras model (source ``tensorflow``), flexible
batch, explicit compute precision; INT8 through the same ``linear_quantize_weights`` step as the
PyTorch route."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import parity._triton_first  # noqa: F401  (before tensorflow)

from parity.frameworks.keras_export import LAYOUT, input_signature, quiet, versions  # noqa: E402


def _coreml(model, example_inputs: tuple, path: Path, input_names: list[str], output_names: list[str],
            precision: str, minimum_deployment_target: Optional[str] = None) -> dict:
    import coremltools as ct

    from parity.formats.coreml.export import PRECISIONS, deployment_target

    target = deployment_target(minimum_deployment_target)
    batch = int(example_inputs[0].shape[0])
    batch_dim = ct.RangeDim(lower_bound=1, upper_bound=batch, default=batch)
    signature = input_signature(model, example_inputs)
    inputs = [ct.TensorType(name=spec.name, shape=(batch_dim, *x.shape[1:]))
              for spec, x in zip(signature, example_inputs)]
    with quiet():
        mlmodel = ct.convert(model, source="tensorflow", inputs=inputs, convert_to="mlprogram",
                             compute_precision=getattr(ct.precision, PRECISIONS[precision]),
                             minimum_deployment_target=target, skip_model_load=True)
        spec = mlmodel.get_spec()
        # The case's names, so the structural checks and reports line up with the other formats.
        renames = [(f.name, new) for f, new in zip(spec.description.input, input_names) if f.name != new] + \
                  [(f.name, new) for f, new in zip(spec.description.output, output_names) if f.name != new]
        if renames:
            for old, new in renames:
                ct.utils.rename_feature(spec, old, new)
            mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
        mlmodel.save(str(path))
    return {"exporter": "coremltools.convert(keras model, source='tensorflow', convert_to='mlprogram')",
            "coremltools": ct.__version__, "compute_precision": PRECISIONS[precision],
            "minimum_deployment_target": "coremltools default" if target is None else str(minimum_deployment_target),
            "batch": f"flexible: ct.RangeDim(1, {batch})", "io_layout": LAYOUT, **versions()}


def coreml_fp32(model, example_inputs, path, *, input_names, output_names, **options) -> dict:
    return _coreml(model, example_inputs, path, input_names, output_names, "fp32", **options)


def coreml_fp16(model, example_inputs, path, *, input_names, output_names, **options) -> dict:
    return _coreml(model, example_inputs, path, input_names, output_names, "fp16", **options)


def coreml_int8(model, example_inputs: tuple, path: Path, *, input_names: list[str], output_names: list[str],
                granularity: str = "per_channel") -> dict:
    from parity.formats.coreml.quantize import quantize_coreml_weights
    from parity.formats.quantize import via_fp32

    meta = via_fp32(coreml_fp32, ".mlpackage", model, example_inputs, input_names, output_names,
                    lambda fp32: quantize_coreml_weights(fp32, path, granularity))
    return {**meta, "route": f"coremltools.optimize linear_quantize_weights int8 {granularity} (weight-only)",
            "granularity": granularity}
