"""Canaries: cases that pin real upstream bugs as strict expected failures (cases/canaries/).

The `canary` field is validated by the schema; every shipped canary names its upstream thread and
is a strict xfail; case discovery reaches cases in subdirectories.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SMALL_CASE, write_case
from parity.case.load import discover, find_case_file
from parity.catalog import load_case, load_cases
from parity.errors import CaseError

CASES = Path(__file__).parents[2] / "cases"
CANARY = "xfail: the runtime is wrong\ncanary: {upstream: 'https://github.com/microsoft/onnxruntime/issues/12098'}\n"


def test_cases_in_subdirectories_are_discovered_and_hidden_ones_are_not(case_dir):
    write_case(case_dir, "top", SMALL_CASE)
    write_case(case_dir / "canaries", "deep", SMALL_CASE.replace("models:small", "parity_examples.canaries:"
                                                                 "nearest_resize"))
    write_case(case_dir / ".hidden", "secret", SMALL_CASE)
    assert [p.relative_to(case_dir).as_posix() for p in discover(case_dir)] == ["canaries/deep.yaml", "top.yaml"]
    cases, errors = load_cases(case_dir)
    assert not errors, errors
    assert sorted(c.name for c in cases) == ["deep", "top"]


def test_a_name_shared_across_subdirectories_names_both_files_by_relative_path(case_dir):
    write_case(case_dir, "same", SMALL_CASE)
    write_case(case_dir / "canaries", "same", SMALL_CASE.replace("models:small", "parity_examples.canaries:"
                                                                 "nearest_resize"))
    cases, errors = load_cases(case_dir)
    assert cases == []
    problems = {Path(e.path).relative_to(case_dir).as_posix(): e.problem for e in errors}
    assert "canaries/same.yaml" in problems["same.yaml"] and "same.yaml" in problems["canaries/same.yaml"]


def test_a_case_name_is_found_in_a_subdirectory(case_dir):
    deep = write_case(case_dir / "canaries", "deep", SMALL_CASE)
    assert find_case_file(case_dir, "deep") == deep
    assert find_case_file(case_dir, "nowhere") == case_dir / "nowhere.yaml"  # the loader says it is missing


def test_the_canary_field_is_validated(case_dir):
    case = load_case(write_case(case_dir, "ok", SMALL_CASE + CANARY.replace("}", ", fixed_in: 'onnxruntime 1.33'}")))
    assert case.canary.upstream == "https://github.com/microsoft/onnxruntime/issues/12098"
    assert case.canary.fixed_in == "onnxruntime 1.33"
    short = load_case(write_case(case_dir, "short", SMALL_CASE + "xfail: x\ncanary: {upstream: 'apple/coremltools#2669'}\n"))
    assert short.canary.upstream == "apple/coremltools#2669"

    with pytest.raises(CaseError) as e:
        load_case(write_case(case_dir, "noxfail", SMALL_CASE + "canary: {upstream: 'apple/coremltools#2669'}\n"))
    assert e.value.field == "canary" and "strict expected failure" in e.value.problem and "'xfail'" in e.value.problem
    with pytest.raises(CaseError) as e:
        load_case(write_case(case_dir, "vague", SMALL_CASE + "xfail: x\ncanary: {upstream: 'some bug'}\n"))
    assert e.value.field == "canary.upstream" and "owner/repository#number" in e.value.problem
    with pytest.raises(CaseError) as e:
        load_case(write_case(case_dir, "typo", SMALL_CASE + "xfail: x\ncanary: {upstream: 'a/b#1', fixed: '2'}\n"))
    assert e.value.field == "canary.fixed" and "fixed_in" in e.value.problem


def test_a_canary_reason_says_what_a_pass_would_mean(case_dir):
    case = load_case(write_case(case_dir, "c", SMALL_CASE + CANARY))
    assert case.xfail_reason.startswith("the runtime is wrong [canary; if this passes, the upstream fix arrived")
    assert "onnxruntime/issues/12098" in case.xfail_reason and "remove the xfail of c.yaml" in case.xfail_reason
    plain = load_case(write_case(case_dir, "p", SMALL_CASE + "xfail: known\n"))
    assert plain.xfail_reason == "known"
    fixed = load_case(write_case(case_dir, "f", SMALL_CASE + CANARY.replace("}", ", fixed_in: 'onnxruntime 9'}")))
    assert "fixed in onnxruntime 9" in fixed.canary.arrived(fixed.path)


def _shipped_canaries():
    return [p for p in discover(CASES) if p.parent.name == "canaries"]


def test_the_shipped_canaries_live_in_their_folder_and_load():
    canaries = _shipped_canaries()
    assert len(canaries) >= 4, canaries
    cases, errors = load_cases(CASES)
    assert not errors, errors
    by_path = {Path(c.path): c for c in cases}
    assert all(p.resolve() in by_path for p in canaries)
    assert not [c.name for c in cases if c.canary is not None and Path(c.path).parent.name != "canaries"]


@pytest.mark.parametrize("path", _shipped_canaries(), ids=lambda p: p.stem)
def test_each_shipped_canary_names_its_thread_and_is_a_strict_parity_xfail(path):
    case = load_case(path, root=CASES)
    assert case.canary is not None, f"{path.name}: a case in cases/canaries/ declares canary: {{upstream: ...}}"
    assert re.match(r"https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+$", case.canary.upstream)
    assert case.xfail and case.checks == ["parity"], "canaries check parity only (no goldens)"
    assert any(case.expects_failure("parity", fmt) for fmt in case.formats)
    # the header comment is the record of what was measured on which versions
    header = path.read_text(encoding="utf-8").split("\n\n")[0]
    assert re.search(r"\d+\.\d+", header) and ("measured" in header.lower() or "gives" in header.lower()), header
