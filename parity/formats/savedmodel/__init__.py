"""SavedModel: what many Keras teams ship, ``model.export``, run in TensorFlow on CPU and CUDA. It
behaves differently from the converters (it keeps ``training=True`` baked into a layer call)."""

from parity.formats.spec import FormatInfo, keras_route

_P = "parity.formats.savedmodel"

FORMATS = [
    FormatInfo(
        name="savedmodel",
        exporter="",
        runner=f"{_P}.runner:SavedModelRunner",
        suffix=".savedmodel",
        backends=("cpu", "cuda"),
        requires=("tensorflow",),
        install="pip install 'parity[keras]'",
        linter=f"{_P}.lint:lint",
        torch=False,
        routes=(("keras", keras_route(f"{_P}.export:export", ())),),
        distributions=("tensorflow", "keras"),
        order=60,
    ),
]
