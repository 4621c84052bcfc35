"""Orchestration: case -> model -> exporter -> artefact -> runner -> outputs, each done once.

:class:`CaseRun` holds everything computed for one case and computes each piece at most once: the
model is built once, each artefact exported once, each runner activated once and reused by every
check of that target, each (target, batch) inferred once. Failures are cached too, so a failed
export fails every test of that format without being retried. :class:`Session` maps a
(case, format, backend, check) to a :class:`CheckResult` and never raises: bad input and broken
exporters become failed or errored results, and the rest of the suite runs on.

This module imports no framework at import time; the model and runner modules are imported when
first needed.
"""

from __future__ import annotations

import copy
import shutil
import time
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Optional

import numpy as np

from parity.artefact import Artefact, Expected
from parity.errors import BackendUnavailable, CaseError, ExportError, GoldenError
from parity.golden import GoldenStore
from parity.inputs import batch, make_pool
from parity.registry import FORMATS, load_object, missing_modules
from parity.spec import Case

STATUSES = ("passed", "failed", "skipped", "error")


@dataclass
class CheckResult:
    """The outcome of one check of one target: a status, a message for people, metrics for machines."""

    status: str
    message: str = ""
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def short_error(exc: BaseException, lines: int = 8) -> str:
    """An exception cut to the lines that matter: its type and the start of its message."""
    text = f"{type(exc).__name__}: {exc}".strip()
    kept = [line for line in text.splitlines() if line.strip()]
    cut = kept[:lines]
    if len(kept) > lines:
        cut.append(f"... ({len(kept) - lines} more lines)")
    return "\n".join(cut)


class CaseRun:
    """Everything computed for one case, each piece at most once."""

    def __init__(self, case: Case, build_dir: Path) -> None:
        self.case = case
        self.build_dir = Path(build_dir) / case.name
        self._model = None
        self._model_error: Optional[BaseException] = None
        self._reference: dict[int, dict[str, np.ndarray]] = {}
        self._artefacts: dict[str, Artefact | BaseException] = {}
        self._runners: dict[tuple[str, str], object] = {}
        self._outputs: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
        self.timings: dict[str, float] = {}
        self.golden_case_written = False

    # ---- inputs and reference
    @cached_property
    def pool(self) -> dict[str, np.ndarray]:
        return make_pool(self.case)

    def inputs(self, size: int) -> dict[str, np.ndarray]:
        return batch(self.pool, size)

    @property
    def model(self):
        """The model exactly as the factory returned it (weights loaded). Built once."""
        if self._model_error is not None:
            raise self._model_error
        if self._model is None:
            from parity.model import build_model

            try:
                start = time.perf_counter()
                self._model = build_model(self.case)
                self.timings["build_model_s"] = time.perf_counter() - start
            except CaseError as e:
                self._model_error = e
                raise
            except Exception as e:
                self._model_error = CaseError(self.case.path, "model.factory",
                                              f"{self.case.model.factory} failed: {short_error(e, 4)}")
                raise self._model_error from None
        return self._model

    @cached_property
    def eager(self):
        from parity.model import reference_model

        return reference_model(self.model)

    def reference(self, size: int) -> dict[str, np.ndarray]:
        if size not in self._reference:
            self._reference[size] = self.run_eager(self.inputs(size))
        return self._reference[size]

    def run_eager(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from parity.model import run_eager

        return self._name(run_eager(self.eager, inputs))

    @cached_property
    def output_names(self) -> list[str]:
        from parity.model import run_eager

        count = len(run_eager(self.eager, self.inputs(min(self.case.batch_sizes))))
        if self.case.outputs is not None:
            if len(self.case.outputs) != count:
                raise CaseError(self.case.path, "outputs", f"lists {len(self.case.outputs)} name(s) but the model "
                                f"returns {count} tensor(s); list one name per returned tensor")
            return list(self.case.outputs)
        return ["output"] if count == 1 else [f"output{i}" for i in range(count)]

    def _name(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        names = self.output_names
        if len(arrays) != len(names):
            raise ValueError(f"got {len(arrays)} output tensor(s), expected {len(names)} ({', '.join(names)})")
        return dict(zip(names, arrays))

    # ---- export
    def example_inputs(self) -> dict[str, np.ndarray]:
        """The batch exporters trace with: the largest batch size, at least 2 (batch 1 specializes)."""
        inputs = self.inputs(max(self.case.batch_sizes))
        return {k: (np.concatenate([v, v]) if v.shape[0] == 1 else v) for k, v in inputs.items()}

    def artefact(self, fmt: str) -> Artefact:
        if fmt not in self._artefacts:
            try:
                self._artefacts[fmt] = self._export(fmt)
            except (ExportError, CaseError) as e:
                self._artefacts[fmt] = e
        found = self._artefacts[fmt]
        if isinstance(found, BaseException):
            raise found
        return found

    def _export(self, fmt: str) -> Artefact:
        info = FORMATS[fmt]
        spec = self.case.export.get(fmt)
        input_names = list(self.case.inputs)
        if spec is not None and spec.artefact is not None:
            return self._inspect(Artefact(fmt, self.case.resolve(spec.artefact), "prebuilt", input_names,
                                          self.output_names, {"prebuilt": True}))
        from parity.model import to_torch

        out_dir = self.build_dir / fmt
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        options = dict(spec.options) if spec is not None else {}
        if spec is not None and spec.function is not None:
            from parity.model import import_from_case

            function = import_from_case(self.case, spec.function)
            source = f"function:{spec.function}"
            who = f"the case's export function {spec.function}"
            kwargs = options
        else:
            function = load_object(info.exporter)
            source = "parity"
            who = f"the built-in {fmt} exporter"
            kwargs = {"input_names": input_names, "output_names": self.output_names, **options}
        if info.static_batch:  # one artefact per batch size, each traced at that batch size
            jobs = [(size, out_dir / f"model.b{size}{info.suffix}", self.inputs(size))
                    for size in sorted(self.case.batch_sizes)]
        else:
            jobs = [(None, out_dir / f"model{info.suffix}", self.example_inputs())]
        start = time.perf_counter()
        metadata: dict = {}
        for size, path, inputs in jobs:
            model = copy.deepcopy(self.model)  # each export gets a pristine model: tracing may mutate it
            at = f" (batch size {size})" if size is not None else ""
            try:
                metadata = function(model, to_torch(inputs), path, **kwargs) or {}
            except Exception as e:
                raise ExportError(f"{who}{at} raised {short_error(e)}") from e
            if not path.exists():
                raise ExportError(f"{who}{at} wrote nothing at {path}")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}  # the largest batch's export
        metadata["export_s"] = round(time.perf_counter() - start, 3)
        self.timings[f"export_{fmt}_s"] = metadata["export_s"]
        batch_paths = {size: path for size, path, _ in jobs if size is not None}
        if batch_paths:
            metadata["batch"] = "static: one artefact per batch size"
            metadata["artefacts"] = {f"b{size}": path.name for size, path in batch_paths.items()}
        artefact = Artefact(fmt, jobs[-1][1], source, input_names, self.output_names, metadata, batch_paths)
        metadata["size_bytes"] = artefact.size_bytes
        return self._inspect(artefact)

    def expected(self) -> Expected:
        """Shapes and dtypes the case gives and expects, per batch size (for structural checks)."""
        sizes = tuple(sorted(self.case.batch_sizes))
        return Expected(
            batch_sizes=sizes,
            inputs={b: {n: tuple(a.shape) for n, a in self.inputs(b).items()} for b in sizes},
            input_dtypes={n: str(a.dtype) for n, a in self.pool.items()},
            outputs={b: {n: tuple(a.shape) for n, a in self.reference(b).items()} for b in sizes},
        )

    def _inspect(self, artefact: Artefact) -> Artefact:
        """Run the format's inspector (structural checks) once; its findings join the artefact's metadata."""
        info = FORMATS[artefact.format]
        if not info.inspector:
            return artefact
        start = time.perf_counter()
        try:
            found = load_object(info.inspector)(artefact, self.expected())
        except CaseError:
            raise
        except Exception as e:
            raise ExportError(f"the {artefact.format} artefact {artefact.path.name} failed its structural checks: "
                              f"{short_error(e)}") from e
        self.timings[f"inspect_{artefact.format}_s"] = time.perf_counter() - start
        artefact.metadata.update(found or {})
        return artefact

    # ---- run
    def runner(self, fmt: str, backend: str):
        """The activated runner of (fmt, backend), created once and reused by every check."""
        k = (fmt, backend)
        if k not in self._runners:
            artefact = self.artefact(fmt)
            runner_cls = load_object(FORMATS[fmt].runner_for(backend))
            try:
                self._runners[k] = runner_cls(artefact, backend).activate()
            except BackendUnavailable:
                raise
            except Exception as e:
                self._runners[k] = ExportError(f"{fmt} artefact {artefact.path.name} could not be loaded by "
                                               f"{runner_cls.__name__} on {backend}: {short_error(e)}")
        found = self._runners[k]
        if isinstance(found, BaseException):
            raise found
        return found

    def run_target(self, fmt: str, backend: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = self.runner(fmt, backend)
        start = time.perf_counter()
        outputs = runner.infer(inputs)
        self.timings[f"infer_{fmt}_{backend}_s"] = self.timings.get(f"infer_{fmt}_{backend}_s", 0.0) + \
            time.perf_counter() - start
        return self._name(outputs)

    def outputs(self, fmt: str, backend: str, size: int) -> dict[str, np.ndarray]:
        k = (fmt, backend, size)
        if k not in self._outputs:
            self._outputs[k] = self.run_target(fmt, backend, self.inputs(size))
        return self._outputs[k]

    def artefact_info(self, fmt: str) -> dict:
        a = self.artefact(fmt)
        return {"path": str(a.path), "source": a.source, **a.metadata}

    def close(self) -> None:
        for r in self._runners.values():
            if not isinstance(r, BaseException):
                r.deactivate()
        self._runners.clear()


class Session:
    """Runs checks for many cases, sharing one CaseRun per case."""

    def __init__(self, build_dir: str | Path, golden_dir: str | Path, update_golden: bool = False) -> None:
        self.build_dir = Path(build_dir)
        self.golden = GoldenStore(golden_dir)
        self.update_golden = update_golden
        self._runs: dict[str, CaseRun] = {}

    def case_run(self, case: Case) -> CaseRun:
        if case.name not in self._runs:
            self._runs[case.name] = CaseRun(case, self.build_dir)
        return self._runs[case.name]

    def run_check(self, case: Case, fmt: str, backend: str, check: str) -> CheckResult:
        """Run one check; never raises (except KeyboardInterrupt and friends)."""
        from parity.checks import CHECKS

        info = FORMATS[fmt]
        missing = missing_modules(info)
        if missing:
            return CheckResult("skipped", f"{fmt} skipped: {', '.join(missing)} not installed; {info.install}")
        run = self.case_run(case)
        try:
            runner_cls = load_object(info.runner_for(backend))
            reason = runner_cls.unavailable_reason(backend)
            if reason:
                return CheckResult("skipped", reason)
            return CHECKS[check](run, fmt, backend, self)
        except BackendUnavailable as e:
            return CheckResult("skipped", str(e))
        except ExportError as e:
            return CheckResult("error", f"export to {fmt} failed: {e}")
        except (CaseError, GoldenError) as e:
            return CheckResult("error", str(e))
        except Exception as e:
            frames = traceback.extract_tb(e.__traceback__)[-3:]
            where = "; ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames)
            return CheckResult("error", f"{short_error(e)}\n(at {where})")

    def close(self) -> None:
        for run in self._runs.values():
            run.close()
        self._runs.clear()
