"""Error wording helpers: converter exceptions cut to what matters, without terminal colour codes."""

from __future__ import annotations

from parity.checks.base import CheckResult
from parity.errors import short_error, strip_ansi

RED = "\x1b[31m"
RESET = "\x1b[0m"


def test_short_error_drops_ansi_codes_and_keeps_the_text():
    e = RuntimeError(f"{RED}converting 'int' op{RESET} (located at: 'model/bert/embeddings/38')")
    assert short_error(e) == "RuntimeError: converting 'int' op (located at: 'model/bert/embeddings/38')"


def test_check_messages_reach_reports_without_ansi_codes():
    result = CheckResult("failed", f"{RED}\x1b[1;4mexport failed{RESET}\nsecond line\x1b]0;title\x07")
    assert result.message == "export failed\nsecond line"
    # the cause's sentences travel to the terminal findings, the JSON, the HTML and JUnit too
    result = CheckResult("failed", "x", cause="export-failed", why=f"{RED}converter raised{RESET}",
                         fix=f"\x1b[1mread the converter's line{RESET}")
    assert (result.why, result.fix) == ("converter raised", "read the converter's line")
    assert "\x1b" not in strip_ansi(f"\x1b[2K\x1b[?25l{RED}x")


def test_short_error_cuts_long_messages():
    e = ValueError("\n".join(f"line {i}" for i in range(20)))
    text = short_error(e, lines=3)
    assert text.splitlines() == ["ValueError: line 0", "line 1", "line 2", "... (17 more lines)"]


def test_data_dependent_export_failures_are_named_with_the_way_out():
    from parity.errors import export_hint

    raw = ("GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(4*u1, 0) "
           "(unhinted: Eq(4*u1, 0)).  (Size-like symbols: u1) ... torchvision::nms")
    hint = export_hint(raw)
    assert hint.startswith("data-dependent control flow (NMS, ")
    assert "export the part before it" in hint
    assert export_hint("RuntimeError: converter exploded: unsupported operator aten::frobnicate") is None
