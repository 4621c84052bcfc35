"""The frozen-graph checks (batch-size invariance, determinism, training-mode lint) and parity,
each shown to pass on a clean model and to fail on planted bugs, in every format.

The expected table below is the detection table: planted bug x format -> which checks fire.
"""

from __future__ import annotations

import pytest

from conftest import SMALL_CASE, write_case
from parity.session import Session
from parity.catalog import load_case

CHECKS = ("parity", "batch_invariance", "determinism", "lint")
FORMATS = ("torchscript", "onnx", "pt2")

# bug -> format -> the checks that must fail (every other check must pass)
EXPECTED = {
    "small": {"torchscript": set(), "onnx": set(), "pt2": set()},
    # trace and torch.export bake batch statistics; the ONNX dynamo exporter silently uses running
    # statistics, so only the lint of the model catches it there.
    "bn_train": {"torchscript": {"parity", "batch_invariance", "lint"}, "onnx": {"lint"},
                 "pt2": {"parity", "batch_invariance", "lint"}},
    # trace keeps dropout random; dynamo keeps a Dropout node with training_mode=true, which
    # onnxruntime runs at random when it feeds the graph output (as here).
    "dropout_train": {"torchscript": {"parity", "batch_invariance", "determinism", "lint"},
                      "onnx": {"parity", "batch_invariance", "determinism", "lint"},
                      "pt2": {"parity", "batch_invariance", "determinism", "lint"}},
    # an eval-mode model that couples samples: only batch-size invariance can see it
    "batch_coupled": {"torchscript": {"batch_invariance"}, "onnx": {"batch_invariance"}, "pt2": {"batch_invariance"}},
    # a random op in the graph
    "random_op": {"torchscript": {"parity", "batch_invariance", "determinism", "lint"},
                  "onnx": {"parity", "batch_invariance", "determinism", "lint"},
                  "pt2": {"parity", "batch_invariance", "determinism", "lint"}},
}


@pytest.fixture(scope="module")
def detection(tmp_path_factory):
    """Run every check of every planted bug in every format once; returns {(bug, fmt, check): result}."""
    from conftest import MODELS

    root = tmp_path_factory.mktemp("frozen")
    cases = root / "cases"
    cases.mkdir()
    (cases / "models.py").write_text(MODELS)
    session = Session(root / "build", root / "golden")
    results = {}
    for bug in EXPECTED:
        body = SMALL_CASE.replace("models:small", f"models:{bug}").replace(
            "formats: [torchscript, onnx]", "formats: [torchscript, onnx, pt2]")
        case = load_case(write_case(cases, bug, body))
        for fmt in FORMATS:
            for check in CHECKS:
                results[(bug, fmt, check)] = session.run_check(case, fmt, "" if check == "lint" else "cpu", check)
    session.close()
    table = ["bug            format       " + "  ".join(f"{c:16}" for c in CHECKS)]
    for bug in EXPECTED:
        for fmt in FORMATS:
            table.append(f"{bug:14} {fmt:12} " + "  ".join(f"{results[(bug, fmt, c)].status:16}" for c in CHECKS))
    print("\n" + "\n".join(table))
    return results


@pytest.mark.parametrize("bug", list(EXPECTED))
@pytest.mark.parametrize("fmt", FORMATS)
def test_detection_table(detection, bug, fmt):
    fired = {c for c in CHECKS if detection[(bug, fmt, c)].status == "failed"}
    errors = {c: detection[(bug, fmt, c)].message for c in CHECKS if detection[(bug, fmt, c)].status == "error"}
    assert not errors, errors
    assert fired == EXPECTED[bug][fmt], {c: detection[(bug, fmt, c)].message[:400] for c in fired ^ EXPECTED[bug][fmt]}


def test_batch_invariance_names_batch_mates_for_coupled_model(detection):
    result = detection[("batch_coupled", "onnx", "batch_invariance")]
    assert "likely cause: outputs depend on batch-mates" in result.message
    assert result.metrics["error_by_batch"]["mixed"] > 1e-2
    assert set(result.metrics["error_by_batch"]) == {"b3", "mixed"}


def test_batch_invariance_of_bn_train_names_the_modules(detection):
    result = detection[("bn_train", "torchscript", "batch_invariance")]
    assert "BatchNorm in training mode" in result.message
    assert "bn:aten::batch_norm" in result.message and "(module bn)" in result.message


def test_determinism_names_output_difference_and_random_node(detection):
    result = detection[("random_op", "onnx", "determinism")]
    assert "logits: run 2 of 3 differs from run 1 by up to" in result.message
    assert "fresh session differs" in result.message
    assert "RandomUniformLike" in result.message


def test_lint_names_module_paths(detection):
    ts = detection[("dropout_train", "torchscript", "lint")].message
    assert "drop (Dropout)" in ts and "drop:aten::dropout" in ts
    onnx = detection[("bn_train", "onnx", "lint")].message
    assert "bn (BatchNorm2d)" in onnx
    assert "silently switched to inference behaviour" in onnx


def test_clean_model_metrics_are_recorded(detection):
    inv = detection[("small", "onnx", "batch_invariance")]
    assert inv.metrics["batch_sizes_run"] == [1, 3] and inv.metrics["hint"] == ""
    det = detection[("small", "torchscript", "determinism")]
    assert det.metrics["bitwise"] and det.metrics["runs"] == 3
    assert set(det.metrics["max_abs_difference"]["logits"]) == {"run 2 of 3", "run 3 of 3", "fresh session"}


def test_scripted_training_module_is_linted(case_dir, tmp_path):
    body = SMALL_CASE.replace("models:small", "models:bn_train") + "export:\n  torchscript: {options: {method: script}}\n"
    result = Session(tmp_path / "b", tmp_path / "g").run_check(load_case(write_case(case_dir, "s", body)),
                                                               "torchscript", "", "lint")
    assert result.status == "failed"
    assert "bn:self.training" in result.message


def test_determinism_tolerance_per_backend_is_honoured(case_dir, tmp_path):
    body = SMALL_CASE.replace("models:small", "models:random_op") + \
        "determinism: {runs: 2, tolerance: {cpu: {atol: 0.1}}}\n"
    result = Session(tmp_path / "b", tmp_path / "g").run_check(load_case(write_case(case_dir, "r", body)),
                                                               "onnx", "cpu", "determinism")
    assert result.status == "passed" and not result.metrics["bitwise"]


#: The cause every failure of a planted bug must carry (parity.causes), whichever check saw it.
CAUSE = {"bn_train": "batch-dependence", "dropout_train": "randomness", "batch_coupled": "batch-dependence",
         "random_op": "randomness"}


@pytest.mark.parametrize("bug", list(CAUSE))
def test_every_failure_of_a_planted_bug_names_its_cause(detection, bug):
    for fmt in FORMATS:
        for check in EXPECTED[bug][fmt]:
            result = detection[(bug, fmt, check)]
            assert result.cause == CAUSE[bug], (fmt, check, result.cause, result.why)
            assert result.why and result.fix, (fmt, check)
    for fmt in FORMATS:  # and the clean model's results carry none
        assert all(detection[("small", fmt, c)].cause is None for c in CHECKS)


def test_the_parity_failure_of_a_training_mode_model_says_so_itself(detection):
    result = detection[("bn_train", "torchscript", "parity")]
    assert "likely cause: the model reaches the exporter in training mode" in result.message
    assert "call model.eval()" in result.fix


def test_an_eval_mode_model_that_mixes_samples_is_not_told_to_call_eval(detection):
    result = detection[("batch_coupled", "onnx", "batch_invariance")]
    assert "BatchNorm" not in result.message and "model.eval()" not in result.message + result.fix
    assert "no module is in training mode" in result.message
    assert "computation across the batch axis" in result.fix
