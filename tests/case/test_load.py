"""The case loader: valid files load, every kind of bad input gets one line naming file, field and fix."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import SMALL_CASE, write_case
from parity.errors import CaseError
from parity.catalog import load_case, load_cases
from parity.tolerance import DEFAULT_SCALE, resolve


def test_valid_case_loads_with_defaults(case_dir):
    case = load_case(write_case(case_dir, "ok", SMALL_CASE))
    assert case.name == "ok"
    assert case.batch_sizes == [1, 3]
    assert case.checks == ["parity", "golden", "batch_invariance", "shape_invariance", "determinism", "lint", "accuracy"]
    assert list(case.inputs) == ["x"]
    assert case.inputs["x"].shape == [3, 8, 8]


def _error(case_dir, body: str, name: str = "bad") -> CaseError:
    with pytest.raises(CaseError) as info:
        load_case(write_case(case_dir, name, body))
    message = str(info.value)
    assert f"{name}.yaml" in message, message  # names the file
    assert "\n" not in message, message  # one line
    return info.value


def test_unknown_key_is_named_with_suggestion(case_dir):
    e = _error(case_dir, SMALL_CASE + "tolerance:\n  default: {atoll: 1e-3}\n")
    assert e.field == "tolerance.default.atoll"
    assert "unknown field 'atoll'" in e.problem
    assert "did you mean 'atol'" in e.problem


def test_unknown_top_level_key(case_dir):
    e = _error(case_dir, SMALL_CASE + "batchsizes: [2]\n")
    assert e.field == "batchsizes"
    assert "did you mean 'batch_sizes'" in e.problem


def test_wrong_type(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("batch_sizes: [1, 3]", "batch_sizes: four"))
    assert e.field == "batch_sizes"
    assert "valid list" in e.problem and "'four'" in e.problem


def test_impossible_shape(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("shape: [3, 8, 8]", "shape: [3, -8, 8]"))
    assert e.field == "inputs.x.shape[1]"
    assert "greater than 0" in e.problem and "-8" in e.problem


def test_zero_batch_size(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("batch_sizes: [1, 3]", "batch_sizes: [0, 3]"))
    assert e.field == "batch_sizes[0]"


def test_missing_factory_module(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("models:small", "no_such_module:small"))
    assert e.field == "model.factory"
    assert "cannot find module 'no_such_module'" in e.problem


def test_missing_factory_function_suggests(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("models:small", "models:smal"))
    assert e.field == "model.factory"
    assert "defines no 'smal'" in e.problem and "did you mean 'small'" in e.problem


def test_factory_not_an_import_path(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("models:small", "models.small"))
    assert e.field == "model.factory"
    assert "package.module:function" in e.problem


def test_missing_required_field(case_dir):
    e = _error(case_dir, "inputs:\n  x: {shape: [2]}\n")
    assert e.field == "model"
    assert "required" in e.problem


def test_unknown_format(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("formats: [torchscript, onnx]", "formats: [onxx]"))
    assert e.field == "formats[0]"
    assert "'torchscript'" in e.problem and "'onxx'" in e.problem


def test_invalid_yaml_names_line(case_dir):
    e = _error(case_dir, "model: {factory: models:small\ninputs: [\n")
    assert "not valid YAML" in e.problem and "line" in e.problem


def test_weights_file_missing(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("  seed: 3", "  seed: 3\n  weights: w.safetensors"))
    assert e.field == "model.weights" and "file not found" in e.problem


def test_weights_suffix(case_dir):
    e = _error(case_dir, SMALL_CASE.replace("  seed: 3", "  seed: 3\n  weights: w.pkl"))
    assert e.field == "model.weights" and ".safetensors" in e.problem


def test_data_file_shape_mismatch(case_dir):
    np.savez(case_dir / "data.npz", x=np.zeros((4, 3, 9, 9), np.float32))
    e = _error(case_dir, SMALL_CASE.replace("x: {shape: [3, 8, 8]}", "x: {shape: [3, 8, 8], file: data.npz}"))
    assert e.field == "inputs.x.shape"
    assert "[3, 9, 9]" in e.problem


def test_data_file_too_few_samples(case_dir):
    np.savez(case_dir / "data.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    e = _error(case_dir, SMALL_CASE.replace("x: {shape: [3, 8, 8]}", "x: {file: data.npz}"))
    assert e.field == "inputs.x.file" and "fewer than the largest batch size 3" in e.problem


def test_data_file_with_pickle_rejected(case_dir):
    np.savez(case_dir / "data.npz", x=np.array([{"a": 1}] * 4, dtype=object))
    e = _error(case_dir, SMALL_CASE.replace("x: {shape: [3, 8, 8]}", "x: {file: data.npz}"))
    assert e.field == "inputs.x.file" and "without pickle" in e.problem


def test_unknown_export_option(case_dir):
    e = _error(case_dir, SMALL_CASE + "export:\n  onnx: {options: {opsett: 18}}\n")
    assert e.field == "export.onnx.options" and "'opsett'" in e.problem and "opset" in e.problem


def test_function_and_artefact_exclusive(case_dir):
    e = _error(case_dir, SMALL_CASE + "export:\n  onnx: {function: 'models:broken_export', artefact: m.onnx}\n")
    assert e.field == "export.onnx" and "not both" in e.problem


def test_prebuilt_artefact_missing(case_dir):
    e = _error(case_dir, SMALL_CASE + "export:\n  onnx: {artefact: nowhere.onnx}\n")
    assert e.field == "export.onnx.artefact" and "nowhere.onnx" in e.problem


def test_load_cases_keeps_good_ones_and_reports_bad(case_dir):
    write_case(case_dir, "good", SMALL_CASE)
    write_case(case_dir, "broken", SMALL_CASE.replace("models:small", "models:nope"))
    write_case(case_dir, "other", SMALL_CASE)
    cases, errors = load_cases(case_dir)
    assert [c.name for c in cases] == ["good", "other"]
    assert [e.path.split("/")[-1] for e in errors] == ["broken.yaml"]


@pytest.mark.parametrize("stem, body", [
    ("..", ""),  # the file ...yaml: its default name '..' is the golden root's parent
    ("...", ""),
    ("dot", "name: '.'\n"),
    ("dotdot", "name: '..'\n"),
    ("dash", "name: '-x'\n"),
    ("hidden", "name: .hidden\n"),
    ("space", "name: 'a b'\n"),
])
def test_a_case_name_that_is_not_an_identifier_is_refused(case_dir, stem, body):
    """A case's name is the directory its goldens go to: '.', '..' would write beside or above the root."""
    e = _error(case_dir, body + SMALL_CASE, name=stem)
    assert e.field == "name", e
    cases, errors = load_cases(case_dir)  # the directory's loader too: one error for the file, no case
    assert cases == [] and [err.path.split("/")[-1] for err in errors] == [f"{stem}.yaml"]


def test_a_case_name_with_dots_and_dashes_inside_loads(case_dir):
    assert load_case(write_case(case_dir, "ok", "name: ok.v-2\n" + SMALL_CASE)).name == "ok.v-2"


def test_duplicate_case_names_name_both_files(case_dir):
    write_case(case_dir, "good", SMALL_CASE)
    write_case(case_dir, "zdupe", "name: good\n" + SMALL_CASE)
    write_case(case_dir, "other", SMALL_CASE)
    cases, errors = load_cases(case_dir)
    assert [c.name for c in cases] == ["other"]
    by_file = {e.path.split("/")[-1]: e for e in errors}
    assert sorted(by_file) == ["good.yaml", "zdupe.yaml"]
    assert "zdupe.yaml" in by_file["good.yaml"].problem and "good.yaml" in by_file["zdupe.yaml"].problem


def test_tolerance_merge_most_specific_wins(case_dir):
    case = load_case(write_case(case_dir, "tol", SMALL_CASE + """
tolerance:
  default: {scale: 2e-4}
  formats: {onnx: {atol: 1e-3}}
  backends: {cuda: {rtol: 1e-2}}
  outputs: {logits: {scale: 5e-4}}
"""))
    assert resolve(case.tolerance_levels("torchscript", "cpu", "other")).scale == 2e-4
    onnx = resolve(case.tolerance_levels("onnx", "cpu", "other"))
    assert (onnx.atol, onnx.rtol, onnx.scale) == (1e-3, 0.0, 2e-4)
    cuda = resolve(case.tolerance_levels("onnx", "cuda", "logits"))
    assert (cuda.atol, cuda.rtol, cuda.scale, cuda.allow_vacuous) == (1e-3, 1e-2, 5e-4, False)


def test_exponent_floats_are_floats_not_strings(case_dir):
    """PyYAML's YAML 1.1 rules read 1e-5 as a string; a factory kwarg must get a float."""
    case = load_case(write_case(case_dir, "f", SMALL_CASE.replace("  seed: 3", "  seed: 3\n  kwargs: {eps: 1e-5}")))
    assert case.model.kwargs == {"eps": 1e-5}


def test_explicit_atol_rtol_work_as_written(case_dir):
    case = load_case(write_case(case_dir, "tol", SMALL_CASE + "tolerance:\n  default: {atol: 1e-5, rtol: 1e-5}\n"))
    tol = resolve(case.tolerance_levels("onnx", "cpu", "logits"))
    assert (tol.atol, tol.rtol, tol.scale) == (1e-5, 1e-5, 0.0)
    default = resolve(load_case(write_case(case_dir, "d", SMALL_CASE)).tolerance_levels("onnx", "cpu", "logits"))
    assert (default.atol, default.rtol, default.scale) == (0.0, 0.0, DEFAULT_SCALE)


def test_fingerprint_tracks_inputs(case_dir):
    a = load_case(write_case(case_dir, "a", SMALL_CASE))
    b = load_case(write_case(case_dir, "b", SMALL_CASE.replace("shape: [3, 8, 8]", "shape: [3, 8, 8], std: 2")))
    c = load_case(write_case(case_dir, "c", SMALL_CASE.replace("seed: 3", "seed: 4")))
    assert a.input_fingerprint() == load_case(case_dir / "a.yaml").input_fingerprint()
    assert len({a.input_fingerprint(), b.input_fingerprint(), c.input_fingerprint()}) == 3


def test_loading_cases_imports_no_framework(case_dir):
    write_case(case_dir, "ok", SMALL_CASE)
    code = ("import sys; from parity.catalog import load_cases; cases, errors = load_cases(sys.argv[1]); "
            "assert cases and not errors, errors; "
            "heavy = [m for m in ('torch', 'tensorflow', 'onnxruntime', 'coremltools', 'onnx') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code, str(case_dir)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shipped_cases_are_valid():
    from pathlib import Path

    cases, errors = load_cases(Path(__file__).parents[2] / "cases")
    assert not errors, errors
    assert {"tiny_cnn", "resnet18", "mobilenet_v2"} <= {c.name for c in cases}


def test_xfail_checks_need_a_reason(case_dir):
    e = _error(case_dir, SMALL_CASE + "xfail_checks: {lint: all}\n")
    assert "needs 'xfail'" in e.problem


def test_expects_failure(case_dir):
    case = load_case(write_case(case_dir, "x", SMALL_CASE + "xfail: why\nxfail_checks: {lint: all, parity: [onnx]}\n"))
    assert case.expects_failure("lint", "torchscript") and case.expects_failure("parity", "onnx")
    assert not case.expects_failure("parity", "torchscript") and not case.expects_failure("golden", "onnx")
    everything = load_case(write_case(case_dir, "y", SMALL_CASE + "xfail: why\n"))
    assert everything.expects_failure("golden", "onnx")


def test_latency_is_opt_in_with_defaults(case_dir):
    case = load_case(write_case(case_dir, "ok", SMALL_CASE))
    assert "latency" not in case.checks
    assert (case.latency.warmup, case.latency.runs, case.latency.budget_s, case.latency.max_p50_ms) == (10, 20, 1.0, None)


def test_latency_limits_per_batch_or_for_all(case_dir):
    case = load_case(write_case(case_dir, "lat", SMALL_CASE + "checks: [latency]\nlatency: {max_p50_ms: {3: 7.5}}\n"))
    assert (case.latency.limit_for(1), case.latency.limit_for(3)) == (None, 7.5)
    case = load_case(write_case(case_dir, "lat", SMALL_CASE + "checks: [latency]\nlatency: {max_p50_ms: 4}\n"))
    assert (case.latency.limit_for(1), case.latency.limit_for(3)) == (4.0, 4.0)


def test_latency_limit_for_unlisted_batch_size(case_dir):
    e = _error(case_dir, SMALL_CASE + "checks: [latency]\nlatency: {max_p50_ms: {8: 5}}\n")
    assert e.field == "latency.max_p50_ms" and "batch size 8 is not in batch_sizes [1, 3]" in e.problem


def test_latency_limit_without_the_check(case_dir):
    e = _error(case_dir, SMALL_CASE + "latency: {max_p50_ms: 5}\n")
    assert e.field == "latency.max_p50_ms" and "'latency' is not in checks" in e.problem


def test_latency_unknown_key_and_bad_value(case_dir):
    e = _error(case_dir, SMALL_CASE + "latency: {run: 5}\n")
    assert e.field == "latency.run" and "did you mean 'runs'" in e.problem
    e = _error(case_dir, SMALL_CASE + "checks: [latency]\nlatency: {runs: 0}\n")
    assert e.field == "latency.runs" and "greater than 0" in e.problem


def test_int8_formats_are_default_only_where_an_accuracy_section_judges_them(case_dir):
    """On random weights INT8's error against fp32 is noise: without labelled data nothing judges it."""
    plain = load_case(write_case(case_dir, "plain", SMALL_CASE.replace("formats: [torchscript, onnx]\n", "")))
    assert "onnx" in plain.formats and not any(f.endswith("_int8") for f in plain.formats)
    judged = load_case(write_case(case_dir, "judged", SMALL_CASE.replace("formats: [torchscript, onnx]\n", "")
                                  + "accuracy:\n  evaluation: {source: digits, split: test}\n"))
    assert {"onnx_int8", "tflite_int8"} <= set(judged.formats)
    listed = load_case(write_case(case_dir, "listed", SMALL_CASE.replace("[torchscript, onnx]", "[onnx, onnx_int8]")))
    assert listed.formats == ["onnx", "onnx_int8"]  # listed by the user: kept


@pytest.mark.parametrize("field,body,says", [
    ("inputs.ids", "  ids: {shape: [8], distribution: tokens, high: 50}\n", "set dtype to int64"),
    ("inputs.ids", "  ids: {shape: [8], dtype: int64, distribution: tokenz, high: 50}\n", "tokens"),
])
def test_bad_generator_is_one_line_naming_the_field(case_dir, field, body, says):
    text = SMALL_CASE.replace("inputs:\n  x: {shape: [3, 8, 8]}\n", "inputs:\n" + body)
    error = _error(case_dir, text)
    assert error.field.startswith(field) and says in str(error)


_TOKENS = ("  ids: {shape: [8], dtype: int64, distribution: tokens, high: 50, mask: m, dynamic: {0: seq}}\n"
           "  m: {shape: [8], dtype: int64, distribution: mask, dynamic: {0: seq}}\n")


@pytest.mark.parametrize("field,inputs,extra,says", [
    ("inputs.x", "  x: {shape: [3, 8, 8], dynamic: {3: size}}\n", "sizes: {size: [4]}\n",
     "'dynamic' names axis 3 (size), but shape [3, 8, 8] has per-sample axes 0..2"),
    ("sizes.width", "  x: {shape: [3, 8, 8], dynamic: {1: height}}\n", "sizes: {height: [4], width: [6]}\n",
     "no input has a dynamic axis named 'width' (declared: height)"),
    ("inputs.x", "  x: {shape: [3, size, size]}\n", "", "dynamic axis 'size' has no sizes; add sizes: {size: [...]}"),
    ("inputs.m.shape", "  ids: {shape: [8], dynamic: {0: seq}}\n  m: {shape: [6], dynamic: {0: seq}}\n",
     "sizes: {seq: [4]}\n", "axis 'seq' has size 6 here but 8 in inputs.ids"),
    ("inputs.ids.mask", _TOKENS.replace("m: {shape: [8], dtype: int64, distribution: mask, dynamic: {0: seq}}",
                                        "m: {shape: [8], dtype: int64, distribution: mask}"),
     "sizes: {seq: [4]}\n", "a mask has one entry per token"),
    ("sizes", _TOKENS, "sizes: {seq: [4, 4]}\n", "seq: listed more than once: 4"),
    ("checks", "  x: {shape: [3, 8, 8]}\n", "checks: [parity, shape_invariance]\n",
     "shape_invariance runs the dynamic axes at their sizes, and this case declares none"),
])
def test_bad_dynamic_axes_are_one_line_naming_the_field(case_dir, field, inputs, extra, says):
    text = SMALL_CASE.replace("inputs:\n  x: {shape: [3, 8, 8]}\n", "inputs:\n" + inputs) + extra
    error = _error(case_dir, text)
    assert error.field == field and says in str(error), (error.field, str(error))


def test_dynamic_axes_need_generated_inputs(case_dir):
    np.savez(case_dir / "x.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    text = SMALL_CASE.replace("inputs:\n  x: {shape: [3, 8, 8]}\n",
                              "inputs:\n  x: {file: x.npz, dynamic: {1: h}}\n") + "sizes: {h: [4]}\n"
    error = _error(case_dir, text)
    assert error.field == "inputs.x" and "dynamic axes need generated inputs" in str(error)


@pytest.mark.parametrize("field, body", [
    ("export.onnx.artefact", SMALL_CASE + "export:\n  onnx: {artefact: ../outside.onnx}\n"),
    ("model.weights", SMALL_CASE.replace("  seed: 3", "  seed: 3\n  weights: ../outside.safetensors")),
    ("inputs.x.file", SMALL_CASE.replace("x: {shape: [3, 8, 8]}", "x: {file: ../outside.npz}")),
    ("export.onnx.artefact", SMALL_CASE + "export:\n  onnx: {artefact: link.onnx}\n"),  # a link out of the root
])
def test_files_outside_the_cases_directory_are_refused(case_dir, field, body):
    """Every path a case reads resolves inside its directory of case files, links followed."""
    outside = case_dir.parent
    (outside / "outside.onnx").write_bytes(b"x")
    (outside / "outside.safetensors").write_bytes(b"x")
    np.savez(outside / "outside.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    (case_dir / "link.onnx").symlink_to(outside / "outside.onnx")
    write_case(case_dir, "out", body)
    cases, errors = load_cases(case_dir)
    assert not cases and len(errors) == 1
    e = errors[0]
    assert e.field == field and "outside the cases directory" in e.problem
    assert "--parity-allow-external-paths" in e.problem


def test_an_explicit_flag_allows_files_outside(case_dir):
    (case_dir.parent / "outside.onnx").write_bytes(b"x")
    write_case(case_dir, "out", SMALL_CASE + "export:\n  onnx: {artefact: ../outside.onnx}\n")
    cases, errors = load_cases(case_dir, allow_external=True)
    assert [c.name for c in cases] == ["out"] and not errors


def test_files_in_subdirectories_of_the_cases_directory_are_fine(case_dir):
    (case_dir / "artefacts").mkdir()
    (case_dir / "artefacts" / "m.onnx").write_bytes(b"x")
    write_case(case_dir, "sub", SMALL_CASE + "export:\n  onnx: {artefact: artefacts/m.onnx}\n")
    cases, errors = load_cases(case_dir)
    assert [c.name for c in cases] == ["sub"] and not errors


@pytest.mark.parametrize("body, field, says", [
    (SMALL_CASE.replace("batch_sizes: [1, 3]", "batch_sizes: [true]"), "batch_sizes", "integer"),
    (SMALL_CASE.replace("batch_sizes: [1, 3]", "batch_sizes: [2.0]"), "batch_sizes", "integer"),
    (SMALL_CASE.replace("batch_sizes: [1, 3]", "batch_sizes: [1000000000]"), "batch_sizes", "4096"),
    (SMALL_CASE.replace("batch_sizes: [1, 3]", "batch_sizes: [4096]").replace("[3, 8, 8]", "[3, 512, 512]"),
     "batch_sizes", "GiB"),
])
def test_batch_sizes_are_whole_numbers_within_bounds(case_dir, body, field, says):
    e = _error(case_dir, body)
    assert e.field.startswith(field) and says in e.problem, (e.field, e.problem)


def test_an_alias_bomb_is_refused_quickly(case_dir):
    """Nested YAML aliases (a billion laughs) would cost exponential time in validation and keys."""
    import time

    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}]\n" for i in range(1, 9))
    body = SMALL_CASE.replace("  seed: 3", "  seed: 3\n  kwargs:\n" + "".join(
        "    " + line + "\n" for line in bomb.splitlines()))
    start = time.perf_counter()
    e = _error(case_dir, body)
    assert "expands to more than" in e.problem
    assert time.perf_counter() - start < 5


def test_reference_backends_are_opt_in(case_dir):
    """ref and cpu-noopt evaluate every ONNX target again (onnx.reference is slow): only a case that
    lists them runs them; a failure consults them anyway."""
    default = load_case(write_case(case_dir, "d", SMALL_CASE.replace("backends: [cpu]\n", "")))
    assert "cpu" in default.backends and "ref" not in default.backends and "cpu-noopt" not in default.backends
    listed = load_case(write_case(case_dir, "l", SMALL_CASE.replace("backends: [cpu]", "backends: [cpu, ref, cpu-noopt]")))
    assert listed.backends == ["cpu", "ref", "cpu-noopt"]


def test_other_routes_to_a_format_are_opt_in(case_dir):
    """onnx_legacy (the TorchScript-based ONNX exporter) is another route to ONNX: a case lists it to
    run it, next to onnx, with its own test ids and goldens."""
    default = load_case(write_case(case_dir, "d", SMALL_CASE.replace("formats: [torchscript, onnx]\n", "")))
    assert "onnx" in default.formats and "onnx_legacy" not in default.formats
    listed = load_case(write_case(case_dir, "l", SMALL_CASE.replace("[torchscript, onnx]", "[onnx, onnx_legacy]")))
    assert listed.formats == ["onnx", "onnx_legacy"]
