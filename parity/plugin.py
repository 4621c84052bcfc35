"""The pytest plugin (registered through the ``pytest11`` entry point).

Only options, parametrization, thin fixtures and the report hooks live here; the work is done by
:mod:`parity.session`, imported when the session fixture is first used. Collecting the suite loads
the case files (pydantic, YAML) and imports no framework.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from parity.errors import CaseError

_ADAPTER = pytest.StashKey["Optional[_SessionAdapter]"]()
_CASES = pytest.StashKey[tuple]()
_NO_CASES = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "export parity harness")
    group.addoption("--cases", metavar="DIR", default=None,
                    help="directory of case files (*.yaml) to run (default: cases/ in the rootdir)")
    group.addoption("--golden", metavar="DIR", default=None,
                    help="directory of golden outputs (default: golden/ in the rootdir)")
    group.addoption("--update-golden", action="store_true", default=False,
                    help="(re)write the golden files of every selected golden check instead of comparing")
    group.addoption("--parity-report", metavar="FILE", default=None,
                    help="write a JSON list with one object per parity test (case, format, backend, check, "
                         "status, message, metrics), and the run's environment and counts to FILE's .run.json")
    group.addoption("--parity-summary", metavar="FILE", default=None,
                    help="write a Markdown summary (matrix, latency, failures); also appended to "
                         "$GITHUB_STEP_SUMMARY when that is set")
    group.addoption("--parity-html", metavar="FILE", default=None,
                    help="write a self-contained HTML report with plots of failing and drifting targets")
    group.addoption("--parity-build", metavar="DIR", default=None,
                    help="where artefacts are exported and cached (default: build/parity in the rootdir; "
                         "not committed)")
    group.addoption("--parity-triage", action="store_true", default=False,
                    help="when a parity, golden or batch_invariance check fails, localise the first diverging "
                         "module (parity.triage) and add its table to the failure; JSON beside the report")
    group.addoption("--parity-shard", metavar="I/N", default=None,
                    help="run only shard I of N (1-based); cases are dealt round-robin in name order, so each "
                         "case's exports happen on one CI machine")
    group.addoption("--parity-allow-external-paths", action="store_true", default=False,
                    help="let cases read files (artefacts, weights, inputs, data) outside the --cases directory")
    group.addoption("--parity-prune-golden", action="store_true", default=False,
                    help="delete orphan goldens (a directory no case names, a target file no case has) instead "
                         "of only listing them")
    group.addoption("--parity-no-cache", action="store_true", default=False,
                    help="ignore the export cache: rebuild every model and re-export every artefact")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): keep a case's tests on one pytest-xdist worker")
    config.pluginmanager.register(_Reporter(config), "parity-reporter")


def _dir_option(config: pytest.Config, name: str, default: str) -> Path:
    value = config.getoption(name)
    return Path(value).resolve() if value else config.rootpath / default


def rerun_prefix(config: pytest.Config) -> str:
    """`pytest` with the arguments that chose these cases and goldens, as this run was invoked."""
    import shlex

    words = ["pytest", *(["--pyargs"] if config.getoption("pyargs", False) else []), *config.args]
    for option in ("cases", "golden", "parity_build"):
        value = config.getoption(option)
        if value:
            words += [f"--{option.replace('_', '-')}", value]
    return " ".join(shlex.quote(str(w)) for w in words)


@dataclass(frozen=True)
class Target:
    """What one test item checks. A case file that failed to load is a target with only `load_error`."""

    case: object = None
    format: str = ""
    backend: str = ""
    check: str = ""
    load_error: Optional[CaseError] = None

    @property
    def id(self) -> str:
        if self.load_error is not None:
            return f"{Path(self.load_error.path).stem}-case-error"
        return "-".join(p for p in (self.case.name, self.format, self.backend, self.check) if p)


@dataclass
class Outcome:
    status: str
    message: str
    record: dict = field(default_factory=dict)


def _load(config: pytest.Config) -> tuple:
    if _CASES not in config.stash:
        from parity.catalog import load_cases

        cases_dir = _dir_option(config, "cases", "cases")
        if not cases_dir.is_dir():
            raise pytest.UsageError(f"--cases: {cases_dir} is not a directory of case files")
        loaded = load_cases(cases_dir, allow_external=config.getoption("parity_allow_external_paths"))
        if not loaded[0] and not loaded[1]:  # bad input, never a green run: one error, and exit code 4
            config.stash[_NO_CASES] = True
            loaded = ([], [CaseError(str(cases_dir), "--cases", "holds no case files (*.yaml, *.yml); point --cases "
                                     "at the directory of your case files")])
        config.stash[_CASES] = loaded
    return config.stash[_CASES]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.stash.get(_NO_CASES, False):
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "parity_target" not in metafunc.fixturenames:
        return
    from parity.checks import CHECKS
    from parity.formats import FORMATS

    cases, errors = _load(metafunc.config)
    params = []
    for case in cases:
        group = pytest.mark.xdist_group(case.name)
        for fmt in case.formats:
            backends = [b for b in case.backends if b in FORMATS[fmt].backends]  # cpu-ref is TFLite's only
            for check in case.checks:
                if not CHECKS[check].applies(case, fmt):
                    continue  # e.g. accuracy without labelled data: nothing to measure
                marks = [group]
                updating = check == "golden" and metafunc.config.getoption("update_golden")
                if case.expects_failure(check, fmt) and not updating:
                    marks.append(pytest.mark.xfail(reason=case.xfail_reason, strict=True))
                for backend in (backends if CHECKS[check].per_backend else [""]):
                    target = Target(case, fmt, backend, check)
                    params.append(pytest.param(target, id=target.id, marks=marks))
    for error in errors:
        target = Target(load_error=error)
        params.append(pytest.param(target, id=target.id))
    metafunc.parametrize("parity_target", params)


def _shard(value: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--parity-shard: expected I/N such as 2/4, got {value!r}") from None
    if not 1 <= i <= n:
        raise pytest.UsageError(f"--parity-shard: I must be between 1 and N, got {value!r}")
    return i, n


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    value = config.getoption("parity_shard")
    if not value:
        return
    i, n = _shard(value)
    cases, errors = _load(config)
    names = sorted([c.name for c in cases] + [Path(e.path).stem for e in errors])
    mine = {name for index, name in enumerate(names) if index % n == i - 1}
    keep, drop = [], []
    for item in items:
        target = getattr(item, "callspec", None) and item.callspec.params.get("parity_target")
        if target is None:
            keep.append(item)
            continue
        name = target.case.name if target.load_error is None else Path(target.load_error.path).stem
        (keep if name in mine else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class _SessionAdapter:
    """What the test function sees: run(target) -> Outcome with the report record."""

    def __init__(self, config: pytest.Config) -> None:
        from parity.session import Session

        self.engine = Session(_dir_option(config, "parity_build", "build/parity"),
                              _dir_option(config, "golden", "golden"),
                              update_golden=config.getoption("update_golden"),
                              use_cache=not config.getoption("parity_no_cache"),
                              rerun_prefix=rerun_prefix(config))
        self.triage_dir: Optional[Path] = None
        if config.getoption("parity_triage"):
            report = config.getoption("parity_report")
            self.triage_dir = (Path(report).resolve().parent if report else
                               _dir_option(config, "parity_build", "build/parity")) / "triage"
        self._triaged: dict = {}

    def run(self, target: Target) -> Outcome:
        if target.load_error is not None:
            e = target.load_error
            record = {"case": Path(e.path).stem, "format": None, "backend": None, "check": "load",
                      "status": "error", "message": str(e), "metrics": {"file": e.path, "field": e.field},
                      "cause": "case-error", "why": f"{e.field}: {e.problem}" if e.field else e.problem,
                      "fix": "fix the field the message names; the other cases run"}
            return Outcome("error", str(e), record)
        start = time.perf_counter()
        result = self.engine.run_check(target.case, target.format, target.backend, target.check)
        if result.status == "failed" and self.triage_dir is not None and self._triage_explains(target.check):
            self._triage(target, result)
        timings = dict(self.engine.case_run(target.case).timings)  # framework work so far (export, load, infer)
        record = {"case": target.case.name, "format": target.format, "backend": target.backend or None,
                  "check": target.check, "status": result.status, "message": result.message,
                  "metrics": result.metrics, "duration_s": round(time.perf_counter() - start, 4),
                  "timings": {k: round(v, 4) for k, v in timings.items()}}
        if result.cause is not None:
            record.update(cause=result.cause, why=result.why, fix=result.fix)
        if target.case.expects_failure(target.check, target.format):
            record["xfail"] = target.case.xfail
            canary = target.case.canary
            if canary is not None:
                record["canary"] = canary.model_dump()
                if result.status == "passed":  # an XPASS: the reports lead with what it means
                    record["message"] = f"{canary.arrived(target.case.path)}\n{record['message']}"
        # Plain JSON types only: the record travels from pytest-xdist workers (execnet cannot send numpy
        # scalars or torch's TorchVersion strings) and ends up in the JSON report anyway.
        record = json.loads(json.dumps(record, default=_json_default))
        return Outcome(result.status, result.message, record)

    @staticmethod
    def _triage_explains(check: str) -> bool:
        from parity.checks import CHECKS

        return check in CHECKS and CHECKS[check].triage

    def _triage(self, target: Target, result) -> None:
        """Run triage once per (case, format, backend) and attach it to the failure."""
        from parity.triage import triage, write

        key = (target.case.name, target.format, target.backend)
        if key not in self._triaged:
            try:
                report = triage(self.engine.case_run(target.case), target.format, target.backend)
                path = write(report, self.triage_dir / f"{'-'.join(key)}.json")
                self._triaged[key] = (report, path)
            except Exception as e:  # triage is a diagnosis; it must not hide the failure it explains
                self._triaged[key] = (None, f"triage failed: {type(e).__name__}: {e}")
        report, path = self._triaged[key]
        if report is None:
            result.message += f"\n{path}"
            return
        result.message += f"\n\n{report.table()}\n(triage JSON: {path})"
        result.metrics["triage"] = report.as_dict()

    def close(self) -> None:
        self.engine.close()


@pytest.fixture(scope="session")
def parity_session(request: pytest.FixtureRequest):
    adapter = _SessionAdapter(request.config)
    request.config.stash[_ADAPTER] = adapter
    yield adapter
    request.config.stash[_ADAPTER] = None
    adapter.close()


def _case_of(item) -> Optional[str]:
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("parity_target") if callspec is not None else None
    return target.case.name if target is not None and target.load_error is None else None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Optional[pytest.Item]) -> None:
    """A case's last test frees its models, runtime sessions and outputs: memory stays that of one case,
    not of every case run so far (a case whose tests come back later is rebuilt from the cache)."""
    name = _case_of(item)
    adapter = item.config.stash.get(_ADAPTER, None)
    if name is not None and adapter is not None and (nextitem is None or _case_of(nextitem) != name):
        adapter.engine.finish_case(name)


class _Reporter:
    """Collects each test's parity record (on the xdist controller too) and writes the reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[dict] = []
        self.run = None  # the parity.report.Run, once the session finished
        self.written: list[str] = []
        self.problems: list[str] = []
        self.started = time.time()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = time.time()
        if self.config.getoption("update_golden") and not hasattr(self.config, "workerinput"):
            from parity.errors import GoldenError
            from parity.golden import GoldenStore

            self.golden_lock = GoldenStore(_dir_option(self.config, "golden", "golden"))
            try:  # the controller holds it for the session; xdist workers write under it
                self.golden_lock.lock_for_update()
            except GoldenError as e:
                self.golden_lock = None
                raise pytest.UsageError(f"--update-golden: {e}") from None

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        lock = getattr(self, "golden_lock", None)
        if lock is not None:
            lock.unlock()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == "parity":
                self.records.append(value)
                self._write_partial()

    def _write_partial(self) -> None:
        """Keep the JSON report current while the run goes on (at most every PARTIAL_EVERY_S seconds),
        so a session killed later still leaves the records of what ran; its run file says
        ``"complete": false`` until the end of the session rewrites both."""
        path = self.config.getoption("parity_report")
        now = time.time()
        if not path or hasattr(self.config, "workerinput") or now - getattr(self, "_partial_at", 0.0) < PARTIAL_EVERY_S:
            return
        self._partial_at = now
        from parity.report import Run, save
        from parity.report.run import RUN_FORMAT

        partial = Run(list(self.records))
        partial.info = {"format": RUN_FORMAT, "complete": False, "counts": partial.counts}
        try:
            save(path, partial, default=_json_default)
        except Exception:  # noqa: BLE001 - the end of the session reports a path that cannot be written
            pass

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        """JUnit XML reads the teardown report's properties: give it the record as flat name=value pairs."""
        report = yield
        if report.when == "teardown" and any(name == "parity" for name, _ in report.user_properties):
            from parity.report.junit import flatten

            flat = []
            for name, value in report.user_properties:
                flat += flatten(value) if name == "parity" and isinstance(value, dict) else [(name, value)]
            report.user_properties = flat
        return report

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes its file, so the suite properties get in
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):  # an xdist worker: the controller writes the reports
            return
        from datetime import datetime, timezone

        from parity.report import Run
        from parity.report.environment import collect
        from parity.report.junit import environment_properties
        from parity.report.run import RUN_FORMAT

        config = self.config
        finished = time.time()
        if self.records:
            self._orphans()
        self.run = Run(self.records)
        self.run.info = {
            "format": RUN_FORMAT,
            "complete": True,
            "started": datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="seconds"),
            "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(finished - self.started, 3),
            "exitstatus": int(exitstatus),
            "counts": self.run.counts,
            "invocation": {"args": [str(a) for a in config.invocation_params.args],
                           "dir": str(config.invocation_params.dir)},
            "options": {"cases": str(_dir_option(config, "cases", "cases")),
                        "golden": str(_dir_option(config, "golden", "golden")),
                        "update_golden": bool(config.getoption("update_golden"))},
            "environment": collect(config.rootpath),
            "orphan_goldens": [{"path": p, "why": why} for p, why in getattr(self, "orphans", [])],
            "orphan_goldens_deleted": bool(getattr(self, "pruned", False)),
        }
        for plugin in config.pluginmanager.get_plugins():  # pytest's LogXML, when --junitxml is given
            if type(plugin).__name__ == "LogXML" and hasattr(plugin, "add_global_property"):
                from parity.report.findings import group

                # the findings first (one per cause, most severe first), as the other reports lead with them
                for i, finding in enumerate(group(self.records), 1):
                    plugin.add_global_property(f"finding.{i}", finding.line())
                for name, value in environment_properties(self.run.info["environment"]):
                    plugin.add_global_property(name, value)
        self._write_outputs()
        if self.problems and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def _write_outputs(self) -> None:
        from parity.report import html, markdown, save
        from parity.report.run import write_text

        config, run = self.config, self.run
        outputs = [("parity-report", lambda p: save(p, run, default=_json_default)),
                   ("parity-summary", lambda p: write_text(p, markdown.render(run))),
                   ("parity-html", lambda p: write_text(p, html.render(run)))]
        for option, write in outputs:
            path = config.getoption(option.replace("-", "_"))
            if not path:
                continue
            try:
                write(path)
                self.written.append(f"{option.split('-')[1]}: {path}")
            except Exception as e:  # a broken report must not hide the test results, but must not pass silently
                self.problems.append(f"--{option} {path}: {type(e).__name__}: {e}")
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary and self.records:
            try:
                with open(step_summary, "a", encoding="utf-8") as f:
                    f.write(markdown.render(run) + "\n")
            except OSError as e:
                self.problems.append(f"$GITHUB_STEP_SUMMARY {step_summary}: {e}")

    def _orphans(self) -> None:
        """Goldens that no loaded case or target owns: listed, or deleted with --parity-prune-golden."""
        import shutil

        from parity.errors import GoldenError
        from parity.formats import FORMATS
        from parity.golden import GoldenStore, orphans

        cases, errors = _load(self.config)
        targets = {c.name: {f"{fmt}-{b}" for fmt in c.formats for b in c.backends if b in FORMATS[fmt].backends}
                   for c in cases}
        root = _dir_option(self.config, "golden", "golden")
        self.orphans = [(str(p), why) for p, why in orphans(root, targets, {Path(e.path).stem for e in errors})]
        if not self.orphans or not self.config.getoption("parity_prune_golden"):
            return
        store = getattr(self, "golden_lock", None)
        own = store is None
        try:
            if own:
                store = GoldenStore(root)
                store.lock_for_update()
        except GoldenError as e:
            self.problems.append(f"--parity-prune-golden: {e}")
            return
        inside = Path(root).resolve()
        try:
            kept = []
            for path, _ in self.orphans:
                p = Path(path)
                if not p.parent.resolve().is_relative_to(inside):  # in a case directory linked from elsewhere
                    kept.append(f"{p}: outside the golden root {root} (through a symbolic link); not deleted")
                    continue
                try:  # a link is removed as a link, never what it points to
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                except OSError as e:
                    kept.append(f"{p}: {e.strerror or e}; not deleted")
            self.problems += [f"--parity-prune-golden {why}" for why in kept]
            self.pruned = not kept
        finally:
            if own:
                store.unlock()

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        for problem in self.problems:
            terminalreporter.write_line(f"parity: could not write {problem}", red=True)
        orphaned = getattr(self, "orphans", [])
        if orphaned:
            done = getattr(self, "pruned", False)
            terminalreporter.write_sep("-", f"parity: {len(orphaned)} orphan golden(s) "
                                       + ("deleted" if done else "(no case or target owns them)"), yellow=True)
            for path, why in orphaned[:TERMINAL_FINDINGS]:
                terminalreporter.write_line(f"  {path}: {why}")
            if len(orphaned) > TERMINAL_FINDINGS:
                terminalreporter.write_line(f"  ... {len(orphaned) - TERMINAL_FINDINGS} more")
            if not done:
                terminalreporter.write_line("  delete them with --parity-prune-golden (or remove them from git)")
        if not self.records:
            return
        from parity.report.run import Run

        written = sum(1 for r in self.records if r.get("metrics", {}).get("golden_written"))
        line = Run(self.records).summary_line()  # pytest's own counts, parity's outcomes in brackets
        if written:
            line += f"; {written} golden target(s) written under {_dir_option(config, 'golden', 'golden')}"
        if self.written:
            line += "; " + ", ".join(self.written)
        from parity.report.findings import group

        findings = group(self.records)
        if findings:  # each cause once, most severe first: what to read before the failures above
            terminalreporter.write_sep("-", f"parity findings: {len(findings)} cause(s), most severe first")
            for f in findings[:TERMINAL_FINDINGS]:
                terminalreporter.write_line(f.line())
            if len(findings) > TERMINAL_FINDINGS:
                terminalreporter.write_line(f"... {len(findings) - TERMINAL_FINDINGS} more in the reports")
        terminalreporter.write_sep("-", line)


#: Seconds between two rewrites of the JSON report while a run goes on.
PARTIAL_EVERY_S = 5.0

#: Findings printed at the end of a pytest run (the reports have all of them).
TERMINAL_FINDINGS = 12


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)
