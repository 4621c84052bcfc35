"""The latency measurement: warm-up is not timed; percentiles are in milliseconds."""

from __future__ import annotations

import time

from parity.checks.latency import measure


def test_warmup_is_untimed_and_percentiles_ordered():
    calls = []

    def slow_first():
        calls.append(1)
        time.sleep(0.05 if len(calls) <= 2 else 0.001)

    stats = measure(slow_first, warmup=2, runs=5)
    assert len(calls) == 7
    assert stats["runs"] == 5 and stats["warmup"] == 2
    assert 0.9 <= stats["min"] <= stats["p50"] <= stats["p90"] <= stats["max"]
    assert stats["max"] < 50  # the two slow warm-up calls are not in the figures


def test_budget_stops_early_but_keeps_a_few_runs():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)

    stats = measure(slow, warmup=50, runs=100, budget_s=0.05)
    assert 3 <= stats["warmup"] <= 5 and 3 <= stats["runs"] <= 5
    assert len(calls) == stats["warmup"] + stats["runs"]


class _FakeRun:
    """What check_latency reads from a CaseRun, with an infer() that sleeps 2 ms."""

    def __init__(self, case):
        self.case = case

    def runner(self, fmt, backend):
        class Runner:
            name = "fake"

            def infer(self, inputs):
                time.sleep(0.002)

        return Runner()

    def inputs(self, size):
        return {"x": [0] * size}

    def artefact_info(self, fmt):
        return {"size_bytes": 10}


def test_latency_check_reports_and_gates_only_declared_maxima(case_dir):
    from conftest import SMALL_CASE, write_case
    from parity.checks.latency import check_latency
    from parity.catalog import load_case

    body = SMALL_CASE + "checks: [latency]\nlatency: {warmup: 1, runs: 3, max_p50_ms: LIMIT}\n"
    reported = check_latency(_FakeRun(load_case(write_case(case_dir, "a", body.replace(", max_p50_ms: LIMIT", "")))),
                             "onnx", "cpu", None)
    assert reported.status == "passed" and set(reported.metrics["latency_ms"]) == {"b1", "b3"}
    assert "b1: p50 " in reported.message and "(3 runs)" in reported.message
    gated = check_latency(_FakeRun(load_case(write_case(case_dir, "b", body.replace("LIMIT", "{3: 0.5}")))),
                          "onnx", "cpu", None)
    assert gated.status == "failed"
    assert "batch 3: p50" in gated.message and "> 0.5 ms" in gated.message and "batch 1" not in gated.message
    assert gated.metrics["latency_ms"]["b3"]["max_p50"] == 0.5 and "max_p50" not in gated.metrics["latency_ms"]["b1"]
