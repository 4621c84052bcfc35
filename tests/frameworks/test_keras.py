"""Keras source models: framework inference, the Keras and SavedModel lints, and planted bugs end to end.

Each check fails on a planted bug and passes on the clean model, through the SavedModel, TFLite
(TFLiteConverter) and ONNX (tf2onnx) routes: BatchNormalization called with ``training=True``
(only the SavedModel keeps batch statistics; the converters silently drop the flag, so the model
lint is what fails there), a layer that subtracts the batch mean in inference (only batch-size
invariance catches it everywhere; the SavedModel and TFLite lints see the mean over the batch axis
in the graph), a random layer (determinism), and a user's SavedModel exporter that scales one
layer's weights by 1% (parity).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import parity._triton_first  # noqa: F401  (before anything imports tensorflow)

pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from conftest import by_id, run_suite, write_case  # noqa: E402

from parity.errors import CaseError  # noqa: E402
from parity.catalog import load_case  # noqa: E402

KERAS_MODELS = '''
import numpy as np
import keras
from keras import layers, ops


class BatchCentre(layers.Layer):
    """Subtracts half the batch mean in inference: couples samples without any training flag
    (half, so that a sample alone still has an output to compare)."""

    def call(self, x):
        return x - 0.5 * ops.mean(x, axis=0, keepdims=True)


class Jitter(layers.Layer):
    """Adds noise at every call: a random op left in an inference graph."""

    def call(self, x):
        return x + 0.1 * keras.random.normal(ops.shape(x))


def small(bug=None):
    image = keras.Input((8, 8, 3), name="x")
    x = layers.Conv2D(4, 3, padding="same", name="conv")(image)
    bn = layers.BatchNormalization(name="bn")
    x = bn(x, training=True) if bug == "bn" else bn(x)
    x = layers.ReLU()(x)
    if bug == "coupled":
        x = BatchCentre(name="centre")(x)
    if bug == "random":
        x = Jitter(name="jitter")(x)
    x = layers.Flatten()(x)
    logits = layers.Dense(5, name="fc")(x)
    model = keras.Model(image, logits)
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 4).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 4).astype("float32"))
    return model


def perturbed_savedmodel(model, example_inputs, path):
    """A user's own SavedModel export with a bug: the classifier's weights scaled by 1%."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    kernel = clone.get_layer("fc").kernel
    kernel.assign(kernel * 1.01)
    clone.export(str(path), verbose=False)
    return {"exporter": "perturbed"}
'''

CASE = """
model:
  factory: kmodels:small
  kwargs: {{bug: {bug}}}
inputs:
  x: {{shape: [8, 8, 3]}}
outputs: [logits]
batch_sizes: [1, 3]
formats: [savedmodel, tflite, onnx]
backends: [cpu]
checks: [parity, batch_invariance, determinism, lint]
{extra}
"""


@pytest.fixture
def keras_dir(case_dir: Path) -> Path:
    """conftest's cases/ directory, with the Keras models module beside the case files."""
    (case_dir / "kmodels.py").write_text(KERAS_MODELS, encoding="utf-8")
    return case_dir


def test_framework_is_inferred_from_the_factory_module_and_picks_the_default_formats(keras_dir: Path) -> None:
    case = load_case(write_case(keras_dir, "k", CASE.format(bug="null", extra="").replace(
        "formats: [savedmodel, tflite, onnx]\n", "")))
    assert case.framework == "keras"
    assert "savedmodel" in case.formats and "torchscript" not in case.formats and "pt2" not in case.formats


def test_a_torch_only_format_on_a_keras_case_names_the_field(keras_dir: Path) -> None:
    path = write_case(keras_dir, "k", CASE.format(bug="null", extra="").replace("[savedmodel, tflite, onnx]",
                                                                                "[savedmodel, torchscript]"))
    with pytest.raises(CaseError) as err:
        load_case(path)
    assert err.value.field == "formats" and "'torchscript' has no exporter for keras models" in str(err.value)


def test_keras_weights_must_be_a_weights_h5_file(keras_dir: Path) -> None:
    path = write_case(keras_dir, "k", CASE.format(bug="null", extra="").replace(
        "  kwargs: {bug: null}\n", "  kwargs: {bug: null}\n  weights: w.safetensors\n  framework: keras\n"))
    with pytest.raises(CaseError) as err:
        load_case(path)
    assert err.value.field == "model.weights" and ".weights.h5" in str(err.value)


def test_model_lint_names_layers_called_with_training_true() -> None:
    from parity_examples.keras_zoo import tiny_cnn
    from parity.frameworks.keras_lint import lint_model

    assert lint_model(tiny_cnn(size=8)) == []
    findings = {(f.kind, f.op) for f in lint_model(tiny_cnn(size=8, training=True))}
    assert ("batchnorm-training", "BatchNormalization") in findings
    assert ("dropout-training", "Dropout") in findings


def test_savedmodel_lint_finds_batch_statistics_dropout_and_state_updates(tmp_path: Path) -> None:
    from parity_examples.keras_zoo import tiny_cnn
    from parity.formats.savedmodel.lint import lint

    clean, buggy = tmp_path / "clean", tmp_path / "buggy"
    tiny_cnn(size=8).export(str(clean), verbose=False)
    tiny_cnn(size=8, training=True).export(str(buggy), verbose=False)
    assert lint(clean) == []
    found = lint(buggy)
    kinds = {f.kind for f in found}
    assert {"batchnorm-training", "dropout-training", "training-mode"} <= kinds
    assert any(f.kind == "batchnorm-training" and f.module and f.module.startswith("batch_normalization")
               for f in found)


def test_planted_bugs_fire_the_right_checks_in_every_keras_format(pytester, keras_dir: Path) -> None:
    for bug in ("null", "bn", "coupled"):
        write_case(keras_dir, f"k_{bug}", CASE.format(bug=bug, extra=""))
    # only the SavedModel: TFLite and onnxruntime have no kernel for a stateless random normal
    write_case(keras_dir, "k_random", CASE.format(bug="random", extra="").replace(
        "[savedmodel, tflite, onnx]", "[savedmodel]"))
    write_case(keras_dir, "k_perturbed", CASE.format(bug="null", extra="export:\n  savedmodel: "
                                                     "{function: 'kmodels:perturbed_savedmodel'}").replace(
        "[savedmodel, tflite, onnx]", "[savedmodel]"))
    result, records = run_suite(pytester, keras_dir, "-p", "no:randomly")
    status = {k: r["status"] for k, r in by_id(records).items()}

    # the clean model passes every check in every format
    clean = {k: s for k, s in status.items() if k.startswith("k_null-")}
    assert clean and set(clean.values()) == {"passed"}, clean

    # BatchNormalization(training=True): the SavedModel keeps batch statistics; the converters drop
    # the flag silently, so only the model lint fails there
    assert status["k_bn-savedmodel-cpu-batch_invariance"] == "failed"
    assert status["k_bn-savedmodel-lint"] == "failed"
    for fmt in ("tflite", "onnx"):
        assert status[f"k_bn-{fmt}-cpu-batch_invariance"] == "passed"
        assert status[f"k_bn-{fmt}-lint"] == "failed"
    lint_message = by_id(records)["k_bn-tflite-lint"]["message"]
    assert "bn" in lint_message and "training=True" in lint_message

    # a batch-mean coupling in inference: batch-size invariance catches it in every format; the
    # graph lints of SavedModel and TFLite see the mean over the batch axis (the model lint cannot)
    for fmt in ("savedmodel", "tflite", "onnx"):
        assert status[f"k_coupled-{fmt}-cpu-parity"] == "passed", fmt
        assert status[f"k_coupled-{fmt}-cpu-batch_invariance"] == "failed", fmt
    assert "batch-mates" in by_id(records)["k_coupled-tflite-cpu-batch_invariance"]["message"]
    assert status["k_coupled-onnx-lint"] == "passed"
    for fmt in ("savedmodel", "tflite"):
        assert status[f"k_coupled-{fmt}-lint"] == "failed", fmt
    assert "centre" in by_id(records)["k_coupled-savedmodel-lint"]["message"]

    # a random layer: the SavedModel keeps it (determinism, and the lint names the layer)
    assert status["k_random-savedmodel-cpu-determinism"] == "failed"
    assert status["k_random-savedmodel-lint"] == "failed"
    assert "jitter" in by_id(records)["k_random-savedmodel-lint"]["message"]

    # a 1% weight change in the user's own exporter fails parity
    assert status["k_perturbed-savedmodel-cpu-parity"] == "failed"
    assert "logits" in by_id(records)["k_perturbed-savedmodel-cpu-parity"]["message"]


def test_a_keras_model_in_a_case_declared_torch_is_one_error_naming_the_field(keras_dir: Path, tmp_path: Path) -> None:
    from parity.session import Session

    body = CASE.format(bug="null", extra="").replace("  kwargs: {bug: null}\n", "  kwargs: {bug: null}\n"
                                                     "  framework: torch\n")
    body = body.replace("[savedmodel, tflite, onnx]", "[onnx]")
    case = load_case(write_case(keras_dir, "k", body))
    result = Session(tmp_path / "build", tmp_path / "golden").run_check(case, "onnx", "cpu", "parity")
    assert result.status == "error"
    assert "model.framework" in result.message and "set model.framework: keras" in result.message


def test_int8_calibration_of_a_two_input_model_reaches_each_input(tmp_path: Path) -> None:
    """The converter orders a multi-input model's inputs its own way: calibration samples go by name
    (positionally, the image reached the vector input: ``conv.cc input->dims->size != 4``)."""
    import numpy as np

    from parity.artefact import Artefact
    from parity.formats.tflite.keras import tflite_int8
    from parity.formats.tflite.runner import LiteRTRunner
    from parity_examples.keras_zoo import two_inputs

    model = two_inputs()
    rng = np.random.default_rng(0)
    data = {"image": rng.normal(size=(16, 16, 16, 3)).astype("float32"),
            "features": rng.normal(size=(16, 6)).astype("float32")}
    path = tmp_path / "m.tflite"
    meta = tflite_int8(model, (), path, input_names=list(data), output_names=["logits"], calibration=data)
    assert "16 calibration samples" in meta["route"]
    with LiteRTRunner(Artefact("tflite_int8", path, "parity", list(data), ["logits"]), "cpu") as runner:
        got = runner.infer({k: v[:4] for k, v in data.items()})[0]
    want = np.asarray(model([data["image"][:4], data["features"][:4]], training=False))
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max() + 1e-3


KERAS_DICT = '''
import parity._triton_first
import keras
from keras import layers


def dict_heads():
    x = keras.Input((6,), name="x")
    h = layers.Dense(8, activation="relu")(x)
    return keras.Model(x, {"boxes": layers.Dense(4, activation="sigmoid", name="boxes")(h),
                           "class_logits": layers.Dense(3, name="class_logits")(h)}, name="dict_heads")
'''


def test_a_keras_model_returning_a_dict_is_matched_by_name_in_every_format(case_dir: Path, tmp_path: Path) -> None:
    """The case lists the outputs in the other order than the model's dict: exporters get a model
    cut to the selected outputs, in that order, and every format matches eager by name."""
    import numpy as np

    from parity.session import Session

    (case_dir / "kdict_models.py").write_text(KERAS_DICT, encoding="utf-8")
    session = Session(tmp_path / "build", tmp_path / "golden")
    run = session.case_run(load_case(write_case(case_dir, "kdict", """
        model: {factory: 'kdict_models:dict_heads', framework: keras}
        inputs: {x: {shape: [6]}}
        outputs: [class_logits, boxes]
        batch_sizes: [1, 3]
        formats: [savedmodel, tflite, onnx]
        backends: [cpu]
        """)))
    try:
        want = run.reference(3)
        assert list(want) == ["class_logits", "boxes"] and want["class_logits"].shape == (3, 3)
        for fmt in ("savedmodel", "tflite", "onnx"):
            got = run.outputs(fmt, "cpu", 3)
            for name in want:
                assert got[name].shape == want[name].shape, (fmt, name)
                assert np.abs(got[name] - want[name]).max() < 1e-5, (fmt, name)
    finally:
        session.close()
