"""Modules beside case files: they never replace an installed package, and two directories'
same-named modules never mix."""

from __future__ import annotations

import sys

import pytest

from conftest import SMALL_CASE, write_case
from parity.case import import_from_case
from parity.catalog import load_case, load_cases
from parity.errors import CaseError


def test_a_module_named_like_an_installed_package_is_refused_and_others_run(case_dir):
    (case_dir / "parity.py").write_text("def make():\n    return None\n")
    write_case(case_dir, "shadow", SMALL_CASE.replace("models:small", "parity:make"))
    write_case(case_dir, "good", SMALL_CASE)
    cases, errors = load_cases(case_dir)
    assert [c.name for c in cases] == ["good"]
    (e,) = errors
    assert e.field == "model.factory" and "installed module 'parity'" in e.problem and "rename" in e.problem
    assert sys.modules["parity"].__file__ != str(case_dir / "parity.py")  # the real package is still loaded
    assert import_from_case(cases[0], "models:small") is not None


def test_an_export_function_module_named_like_a_stdlib_module_is_refused(case_dir):
    (case_dir / "json.py").write_text("def export(m, x, p):\n    pass\n")
    write_case(case_dir, "shadow", SMALL_CASE + "export:\n  onnx: {function: 'json:export'}\n")
    with pytest.raises(CaseError) as info:
        load_case(case_dir / "shadow.yaml")
    assert info.value.field == "export.onnx.function" and "'json'" in info.value.problem


def test_two_case_directories_with_a_models_py_each_get_their_own(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for d, value in ((first, 1), (second, 2)):
        d.mkdir()
        (d / "helpers.py").write_text(f"def value():\n    return {value}\n\n\ndef only_in_{d.name}():\n    pass\n")
        write_case(d, "c", SMALL_CASE.replace("models:small", f"helpers:only_in_{d.name}"))
    case_a = load_case(first / "c.yaml")
    assert import_from_case(case_a, "helpers:value")() == 1
    case_b = load_case(second / "c.yaml")  # checked against b/helpers.py, not the module a/ loaded
    assert import_from_case(case_b, "helpers:value")() == 2
    assert import_from_case(case_a, "helpers:value")() == 1


def test_an_edit_that_keeps_the_size_and_the_mtime_still_loads_the_new_code(case_dir):
    """A persistent export worker re-imports a case's module when its content changes, even when the
    edit keeps the file's size and lands in the same clock tick (where mtime and the .pyc agree)."""
    import os

    module = case_dir / "sameclock.py"
    module.write_text("def value():\n    return 'v1'\n")
    case = load_case(write_case(case_dir, "s", SMALL_CASE))
    stat = module.stat()
    assert import_from_case(case, "sameclock:value")() == "v1"
    module.write_text("def value():\n    return 'v2'\n")
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert import_from_case(case, "sameclock:value")() == "v2"


def test_a_factory_in_a_subpackage_is_found_without_importing_its_package(case_dir):
    """Loading a case reads where `pkg.sub:f` lives without running pkg/__init__.py (for torchvision
    that is importing torch: 3 s and a GiB for a case whose artefact is prebuilt)."""
    package = case_dir / "heavypkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('heavypkg was imported')\n")
    (package / "models.py").write_text("import keras\n\n\ndef build():\n    pass\n")
    case = load_case(write_case(case_dir, "h", SMALL_CASE.replace("models:small", "heavypkg.models:build")
                                                    .replace("[torchscript, onnx]", "[onnx]")))
    assert "heavypkg" not in sys.modules
    assert case.framework == "keras"  # read from heavypkg/models.py's source, not guessed


def test_a_missing_submodule_is_named_at_load(case_dir):
    (case_dir / "pkg2").mkdir()
    (case_dir / "pkg2" / "__init__.py").write_text("")
    with pytest.raises(CaseError, match="cannot find module 'pkg2.nothere'"):
        load_case(write_case(case_dir, "m", SMALL_CASE.replace("models:small", "pkg2.nothere:build")))
