"""The dispatcher: (case, format, backend, check) -> CheckResult, for many cases, never raising.

Bad input and broken exporters become failed or errored results, and the rest of the suite runs
on. One :class:`~parity.pipeline.run.CaseRun` per case is shared by every check of that case.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from parity.case import Case, load_object
from parity.checks import CHECKS, CheckResult
from parity.errors import (BackendUnavailable, CaseError, ExportError, GoldenError, ReferenceFailed, RunnerError,
                           short_error)
from parity.formats import FORMATS
from parity.golden import GoldenStore
from parity.pipeline.run import CaseRun


class Session:
    """Runs checks for many cases, sharing one CaseRun per case."""

    def __init__(self, build_dir: str | Path, golden_dir: str | Path, update_golden: bool = False,
                 use_cache: bool = True, rerun_prefix: str = "pytest parity/") -> None:
        from parity.pipeline.cache import Cache

        self.build_dir = Path(build_dir)
        self.cache = Cache(self.build_dir / "cache", enabled=use_cache)
        self.cache.sweep()  # what a killed run left (only entries nobody is writing)
        self.golden = GoldenStore(golden_dir)
        self.update_golden = update_golden
        self.rerun_prefix = rerun_prefix  # how this run was invoked, for the commands messages suggest
        self._runs: dict[str, CaseRun] = {}

    def case_run(self, case: Case) -> CaseRun:
        if case.name not in self._runs:
            self._runs[case.name] = CaseRun(case, self.build_dir, self.cache)
        return self._runs[case.name]

    def run_check(self, case: Case, fmt: str, backend: str, check: str) -> CheckResult:
        """Run one check; never raises (except KeyboardInterrupt and friends)."""
        info = FORMATS[fmt]
        missing = info.missing_modules(case.framework)
        if missing:
            install = info.route(case.framework).install
            return CheckResult("skipped", f"{fmt} skipped: {', '.join(missing)} not installed; {install}")
        run = self.case_run(case)
        try:
            if CHECKS[check].per_backend:
                runner_cls = load_object(info.runner_for(backend))
                reason = runner_cls.unavailable_reason(backend)
                if reason:
                    return CheckResult("skipped", reason)
            return CHECKS[check].run(run, fmt, backend, self)
        except BackendUnavailable as e:
            return CheckResult("skipped", str(e))
        except ExportError as e:
            return CheckResult("error", f"export to {fmt} failed: {e}", cause=e.cause, why=_first_line(e))
        except RunnerError as e:
            return CheckResult("error", str(e), cause=e.cause, why=_first_line(e))
        except ReferenceFailed as e:
            return CheckResult("error", str(e), cause="reference-failed", why=_first_line(e))
        except CaseError as e:
            return CheckResult("error", str(e), cause="case-error", why=e.problem.splitlines()[0])
        except GoldenError as e:
            return CheckResult("error", str(e), cause="no-golden", why=_first_line(e))
        except NotImplementedError as e:  # an evaluator's documented missing kernel, met while running
            return CheckResult("error", short_error(e), cause="unsupported", why=_first_line(e))
        except Exception as e:
            frames = traceback.extract_tb(e.__traceback__)[-3:]
            where = "; ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames)
            return CheckResult("error", f"{short_error(e)}\n(at {where})", cause="harness-error",
                               why=short_error(e, 1))

    def finish_case(self, name: str) -> None:
        """Free what the case holds (its model, runtime sessions, outputs); a later check of it starts
        a fresh CaseRun, served by the cache."""
        run = self._runs.pop(name, None)
        if run is not None:
            run.close()

    def close(self) -> None:
        for run in self._runs.values():
            run.close()
        self._runs.clear()


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return text[0][:limit] if text else type(e).__name__
