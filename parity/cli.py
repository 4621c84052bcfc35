"""The `parity` command, for people who are not in pytest.

    parity run [--cases DIR] [--golden DIR] [-k EXPR] [--report F] [--markdown F] [--html F] [-- PYTEST ARGS]
    parity update-golden [same options]          run with --update-golden
    parity report RUN.json [--markdown F] [--html F]   re-render a saved run
    parity diff OLD.json NEW.json [--json]       what drifted between two runs

``run`` calls ``pytest.main`` on the suite in this package (``parity/test_parity.py``) with the
parity plugin's options, shows a progress bar instead of pytest's output, and prints the matrix
at the end. Exit codes, for every command: 0 all passed (``diff``: nothing drifted), 1 a check
failed (``diff``: a target drifted), 2 usage or case errors (a bad option, a case file that does
not load, no test selected, or pytest itself failing to run).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path
from typing import Optional, Sequence

OK, FAILED, USAGE = 0, 1, 2
#: Lines of each failure message printed after a run (the reports have them whole).
MESSAGE_LINES = 12


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description="Regression tests for model export parity.",
                                     epilog="Exit codes: 0 all passed, 1 a check failed (or, for diff, a target "
                                            "drifted), 2 usage or case errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def suite_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cases", metavar="DIR", default="cases", help="directory of case files (default: cases)")
        p.add_argument("--golden", metavar="DIR", default="golden", help="golden outputs (default: golden)")
        p.add_argument("--build", metavar="DIR", default="build/parity",
                       help="where artefacts are exported (default: build/parity)")
        p.add_argument("-k", metavar="EXPR", dest="keyword", help="select tests by id, as pytest -k")
        p.add_argument("--report", metavar="FILE", default="parity-report.json",
                       help="JSON report (default: parity-report.json; its run file beside it); '' for none")
        p.add_argument("--markdown", metavar="FILE", help="also write the Markdown summary")
        p.add_argument("--html", metavar="FILE", help="also write the HTML report")
        p.add_argument("--junitxml", metavar="FILE", help="also write JUnit XML")
        p.add_argument("--allow-external-paths", action="store_true",
                       help="let cases read files (artefacts, weights, inputs, data) outside --cases")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="show pytest's own output instead of the progress bar")

    run = sub.add_parser("run", help="run the suite with a progress bar; print the matrix",
                         description="Run the parity suite. Arguments after -- go to pytest unchanged "
                                     "(e.g. -- -n 2 -x).")
    suite_options(run)
    update = sub.add_parser("update-golden", help="run with --update-golden (write the goldens of the selection)")
    suite_options(update)

    report = sub.add_parser("report", help="re-render a saved run (its JSON report) as Markdown and/or HTML")
    report.add_argument("report", metavar="RUN.json")
    report.add_argument("--markdown", metavar="FILE")
    report.add_argument("--html", metavar="FILE")

    diff = sub.add_parser("diff", help="what drifted between two saved runs",
                          description="Name each target whose status changed or whose figures got worse "
                                      "beyond the thresholds. Exit 1 when any did.")
    diff.add_argument("old", metavar="OLD.json")
    diff.add_argument("new", metavar="NEW.json")
    diff.add_argument("--factor", type=float, default=2.0,
                      help="an error (err/max|ref|, 1-cosine) drifts when it grows by more than this (default 2)")
    diff.add_argument("--floor", type=float, default=1e-6,
                      help="... and ends above this (default 1e-6: noise below it never counts)")
    diff.add_argument("--accuracy-drop", type=float, default=0.005,
                      help="top-1 agreement or accuracy falling by more than this drifts (default 0.005)")
    diff.add_argument("--latency-factor", type=float, default=2.0,
                      help="p50 latency growing by more than this drifts (default 2; 0 ignores latency)")
    diff.add_argument("--latency-min-ms", type=float, default=1.0,
                      help="... and by more than this many ms (default 1)")
    diff.add_argument("--json", action="store_true", help="print the difference as JSON")

    sub.add_parser("triage", help="find the first module whose export diverges (see parity triage --help)",
                   add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    if argv[:1] == ["triage"]:  # its own parser (parity.triage), shared with python -m parity.triage
        from parity.triage import main as triage_main

        try:
            return triage_main(argv[1:])
        except SystemExit as e:
            return int(e.code or 0)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors and 0 on --help
        return int(e.code or 0)
    if passthrough and args.command not in ("run", "update-golden"):
        print(f"parity {args.command}: arguments after -- are for pytest and only `run`/`update-golden` take them",
              file=sys.stderr)
        return USAGE
    if args.command in ("run", "update-golden"):
        return run_suite(args, passthrough, update_golden=args.command == "update-golden")
    if args.command == "report":
        return report(args)
    return diff(args)


# --------------------------------------------------------------------------- run


def _progress_plugin(stream):
    """A pytest plugin: a tqdm bar on a terminal, one line per finished test otherwise (CI logs)."""
    import pytest

    from parity.report.run import outcome, target_id

    class Progress:
        def __init__(self) -> None:
            self.total: Optional[int] = None
            self.done = 0
            self.failed = 0
            self.bar = None
            self.run = None  # the parity.report.Run the plugin's reporter built
            self.written: list[str] = []
            self.problems: list[str] = []

        def pytest_collection_finish(self, session) -> None:
            if session.items:
                self.total = len(session.items)
            self._open()

        @pytest.hookimpl(optionalhook=True)
        def pytest_xdist_node_collection_finished(self, node, ids) -> None:
            self.total = len(ids)
            self._open()

        def _open(self) -> None:
            if self.bar is not None or not stream.isatty():
                return
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional (the `report` extra): one line per test instead
                return
            self.bar = tqdm(total=self.total, file=stream, unit="test", dynamic_ncols=True, leave=False)

        def pytest_runtest_logreport(self, report) -> None:
            if not (report.when == "call" or (report.when == "setup" and not report.passed)):
                return
            self.done += 1
            record = next((v for k, v in report.user_properties if k == "parity" and isinstance(v, dict)), None)
            name = target_id(record) if record else report.nodeid
            result = outcome(record) if record else report.outcome
            if result in ("failed", "error", "xpassed"):
                self.failed += 1
            if self.bar is not None:
                self.bar.set_postfix_str(f"{self.failed} failed" if self.failed else "", refresh=False)
                self.bar.set_description_str(name[:40], refresh=False)
                self.bar.update(1)
            else:
                print(f"[{self.done}/{self.total or '?'}] {name} {result}", file=stream, flush=True)

        @pytest.hookimpl(trylast=True)
        def pytest_sessionfinish(self, session) -> None:
            if self.bar is not None:
                self.bar.close()
            reporter = session.config.pluginmanager.get_plugin("parity-reporter")
            self.run = getattr(reporter, "run", None)
            self.written = list(getattr(reporter, "written", []))  # what the reporter actually wrote
            self.problems = list(getattr(reporter, "problems", []))

    return Progress()


def run_suite(args: argparse.Namespace, passthrough: list[str], update_golden: bool = False) -> int:
    import pytest

    cases = Path(args.cases)
    if not cases.is_dir():
        print(f"parity: --cases {cases} is not a directory of case files", file=sys.stderr)
        return USAGE
    from parity.case.load import discover

    if not discover(cases):
        print(f"parity: --cases {cases} holds no case files (*.yaml, *.yml); point --cases at the directory of "
              "your case files", file=sys.stderr)
        return USAGE
    pytest_args = [str(Path(__file__).with_name("test_parity.py")), "-p", "no:cacheprovider",
                   "--cases", str(cases.resolve()), "--golden", str(Path(args.golden).resolve()),
                   "--parity-build", str(Path(args.build).resolve())]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    if update_golden:
        pytest_args.append("--update-golden")
    if args.allow_external_paths:
        pytest_args.append("--parity-allow-external-paths")
    for option, value in (("--parity-report", args.report), ("--parity-summary", args.markdown),
                          ("--parity-html", args.html), ("--junitxml", args.junitxml)):
        if value:
            pytest_args += [option, str(Path(value).resolve())]
    pytest_args += passthrough
    progress = _progress_plugin(sys.stderr)
    if args.verbose:
        code = pytest.main(pytest_args, plugins=[progress])
        captured = ""
    else:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = pytest.main([*pytest_args, "-q"], plugins=[progress])
        captured = buffer.getvalue()
    code = int(code)
    run = progress.run
    unwritten = code == 3 and run is not None and progress.problems  # the suite ran; a report could not be written
    if (code not in (0, 1) and not unwritten) or run is None:
        if captured:
            print(captured.rstrip())
        why = {2: "interrupted (collection errors?)", 3: "internal error", 4: "usage error",
               5: "no test selected (check -k and --cases)"}.get(code, f"pytest exit code {code}")
        print(f"parity: pytest did not run the suite: {why}", file=sys.stderr)
        return USAGE
    _print_run(run, args, progress.written, progress.problems)
    if run.case_errors or unwritten:
        return USAGE
    return FAILED if code == 1 or run.failed else OK


def _print_run(run, args: argparse.Namespace, written: list[str] = (), problems: list[str] = ()) -> None:
    from parity.causes import severity
    from parity.report.findings import cause_of, group
    from parity.report.markdown import render_text
    from parity.report.run import outcome, target_id

    for record in sorted(run.problems(), key=lambda r: severity(cause_of(r))):
        lines = (record.get("message") or "").splitlines()
        shown = lines[:MESSAGE_LINES] + ([f"... ({len(lines) - MESSAGE_LINES} more lines in the report)"]
                                         if len(lines) > MESSAGE_LINES else [])
        print(f"{outcome(record).upper()} {target_id(record)}")
        print("\n".join(f"    {line}" for line in shown))
    print()
    print(render_text(run), end="")
    findings = group(run.records)
    if findings:
        print(f"findings: {len(findings)} cause(s), most severe first")
        for f in findings:
            print(f"  {f.line()}")
    if args.junitxml:
        written = [*written, f"junit: {args.junitxml}"]  # pytest's own plugin writes it
    if written:
        print("wrote " + ", ".join(written))
    for problem in problems:
        print(f"parity: could not write {problem}", file=sys.stderr)


# --------------------------------------------------------------------------- report, diff


def _load(path: str):
    from parity.report import load

    try:
        return load(path)
    except FileNotFoundError:
        print(f"parity: {path}: no such file", file=sys.stderr)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        print(f"parity: {path}: not a parity JSON report ({e})", file=sys.stderr)
    return None


def report(args: argparse.Namespace) -> int:
    from parity.report import html, markdown
    from parity.report.run import write_text

    run = _load(args.report)
    if run is None:
        return USAGE
    if args.markdown:
        write_text(args.markdown, markdown.render(run))
    if args.html:
        write_text(args.html, html.render(run))
    print(markdown.render_text(run), end="")
    if run.case_errors:
        return USAGE
    return FAILED if run.failed else OK


def diff(args: argparse.Namespace) -> int:
    import json

    from parity.report import diff as d

    old, new = _load(args.old), _load(args.new)
    if old is None or new is None:
        return USAGE
    thresholds = d.Thresholds(factor=args.factor, floor=args.floor, accuracy_drop=args.accuracy_drop,
                              latency_factor=args.latency_factor, latency_min_ms=args.latency_min_ms)
    result = d.diff(old, new, thresholds)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(d.render(result, args.old, args.new, old, new), end="")
    return FAILED if result.drifted else OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
