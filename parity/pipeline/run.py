"""The memoised per-case stages: case -> model -> reference -> artefact -> runner -> outputs.

:class:`CaseRun` holds everything computed for one case and computes each piece at most once: the
model is built once, each artefact exported once, each runner activated once and reused by every
check of that target, each (target, batch) inferred once. Failures are cached too, so a failed
export fails every test of that format without being retried.

This module imports no framework at import time; the framework and format modules are imported
when first needed.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from parity import tolerance
from parity.artefact import Artefact, Expected
from parity.case import Case, load_object
from parity.case.schema import DEFAULT_TIMEOUT_S
from parity.compare import compare_output
from parity.errors import (BackendUnavailable, CaseError, ExportError, ParityError, ReferenceFailed, RunnerError,
                           exhausted_export, export_hint, missing_kernel, short_error)
from parity.formats import FORMATS
from parity.outputs import dotted, has_names
from parity.pipeline.inputs import batch, make_pool

if TYPE_CHECKING:
    from parity.pipeline.cache import Cache


class CaseRun:
    """Everything computed for one case, each piece at most once."""

    def __init__(self, case: Case, build_dir: Path, cache: Optional["Cache"] = None) -> None:
        from parity.pipeline.cache import Cache

        self.case = case
        self.build_dir = Path(build_dir) / case.name
        self.cache = cache if cache is not None else Cache(Path(build_dir) / "cache")
        self._model = None
        self._model_error: Optional[BaseException] = None
        self._reference: dict[int, dict[str, np.ndarray]] = {}
        self._artefacts: dict[tuple[str, str], Artefact | BaseException] = {}  # (format, shape variant label)
        self._runners: dict[tuple[str, str, str], object] = {}
        self._outputs: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
        self._findings: dict[str, Optional[list]] = {}  # artefact lint per format
        self.eval_reference: Optional[np.ndarray] = None  # fp32 eager scores on the accuracy data (set by that check)
        self.timings: dict[str, float] = {}
        self.golden_case_written = False

    # ---- inputs and reference
    @cached_property
    def pool(self) -> dict[str, np.ndarray]:
        return make_pool(self.case)

    def inputs(self, size: int) -> dict[str, np.ndarray]:
        return batch(self.pool, size)

    # ---- dynamic axes (shape invariance)
    @property
    def variant_batch(self) -> int:
        """The batch size every shape variant runs at: the largest, so padded and unpadded rows both occur."""
        return max(self.case.batch_sizes)

    def is_export_shape(self, sizes: Optional[dict[str, int]]) -> bool:
        return not sizes or all(self.case.export_sizes.get(k) == v for k, v in sizes.items())

    def variant_inputs(self, sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """The case's inputs (at the largest batch size) with the dynamic axes at `sizes`."""
        if self.is_export_shape(sizes):
            return self.inputs(self.variant_batch)
        return batch(make_pool(self.case, sizes), self.variant_batch)

    @cached_property
    def _variant_results(self) -> dict[str, dict]:
        """Shape variant label -> {"reference": outputs} or {"error": why eager failed}; cached under the model key."""
        from parity.pipeline.cache import model_key

        entry = self.cache.entry("variants", model_key(self.case))
        with self.cache.lock(entry):
            if self.cache.complete(entry):
                meta = self.cache.read_json(entry, "meta.json")
                with np.load(entry / "reference.npz", allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
                return {label: ({"error": meta["errors"][label]} if label in meta["errors"] else
                                {"reference": {n: arrays[f"{n}@{label}"] for n in self.output_names}})
                        for label in meta["labels"]}
            found: dict[str, dict] = {}
            start = time.perf_counter()
            for sizes in self.case.shape_variants():
                if self.is_export_shape(sizes):
                    continue  # the case's own reference (variant_reference serves it from there)
                label = variant_label(sizes)
                try:
                    found[label] = {"reference": self.run_eager(self.variant_inputs(sizes))}
                except Exception as e:
                    found[label] = {"error": short_error(e, 3)}
            self._time("reference_s", start)
            with self.cache.writing(entry) as tmp:
                np.savez(tmp / "reference.npz", **{f"{n}@{label}": a for label, r in found.items()
                                                   for n, a in r.get("reference", {}).items()})
                (tmp / "meta.json").write_text(json.dumps({
                    "labels": list(found), "errors": {k: r["error"] for k, r in found.items() if "error" in r}}))
            return found

    def variant_reference(self, sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """Eager outputs with the dynamic axes at `sizes`; a CaseError when eager itself fails there."""
        if self.is_export_shape(sizes):
            return self.reference(self.variant_batch)
        label = variant_label(sizes)
        found = self._variant_results.get(label)
        if found is None:
            return self.run_eager(self.variant_inputs(sizes))
        if "error" in found:
            raise CaseError(self.case.path, "sizes", f"the eager model itself fails at {label}: {found['error']}; "
                            "list only sizes the model supports")
        return found["reference"]

    def static_shape(self, fmt: str) -> bool:
        """Whether `fmt`'s artefacts have fixed shapes (exported once per batch size, and per shape variant)."""
        spec = self.case.export.get(fmt)
        if spec is not None and spec.artefact is not None:
            return False  # a prebuilt file is what it is
        route = FORMATS[fmt].route(self.case.framework)
        return bool(route and route.static_batch)

    @cached_property
    def framework(self):
        """The module of the case's source framework (see parity.frameworks)."""
        from parity import frameworks

        return frameworks.load(self.case.framework)

    # ---- tolerances (the case's levels, at the format's precision)
    def precision(self, fmt: str) -> str:
        return FORMATS[fmt].precision if fmt in FORMATS else "fp32"

    def tolerance_for(self, fmt: str, backend: str, output: str) -> tolerance.ResolvedTolerance:
        """Merge default <- format <- backend <- output, field by field."""
        return tolerance.resolve(self.case.tolerance_levels(fmt, backend, output), self.precision(fmt))

    def invariance_tolerance(self, fmt: str) -> tolerance.ResolvedTolerance:
        """Batch-size invariance: the case's `batch_invariance`, else a tight scale per precision."""
        return tolerance.invariance(self.case.batch_invariance, self.case.tolerance.formats.get(fmt),
                                    self.precision(fmt))

    def determinism_tolerance(self, backend: str) -> Optional[tolerance.ResolvedTolerance]:
        """None means bitwise identical (the default)."""
        return tolerance.determinism(self.case.determinism.tolerance.get(backend))

    @property
    def model(self):
        """The model exactly as the factory returned it (weights loaded). Built once."""
        if self._model_error is not None:
            raise self._model_error
        if self._model is None:
            try:
                start = time.perf_counter()
                model = self.framework.build_model(self.case)
                self._check_vocabulary(model)
                self._model = model
                self.timings["build_model_s"] = time.perf_counter() - start
            except CaseError as e:
                self._model_error = e
                raise
            except Exception as e:
                self._model_error = CaseError(self.case.path, "model.factory",
                                              f"{self.case.model.factory} failed: {short_error(e, 4)}")
                raise self._model_error from None
        return self._model

    def _check_vocabulary(self, model) -> None:
        """Token ids a case draws must exist in the model's vocabulary (where the model says its size)."""
        vocab = self.framework.vocabulary_size(model)
        if vocab is None:
            return
        for name, spec in self.case.inputs.items():
            if spec.distribution == "tokens" and spec.high > vocab:
                raise CaseError(self.case.path, f"inputs.{name}.high", f"draws token ids up to {int(spec.high) - 1} "
                                f"but the model's vocabulary has {vocab} ids (0..{vocab - 1}); set high: {vocab} "
                                "or less")

    @cached_property
    def eager(self):
        return self.framework.reference_model(self.model)

    @cached_property
    def _model_results(self) -> dict:
        """Output names, eager reference per batch size and model lint: from the cache, or computed once.

        Cached under the model key, so a warm run with nothing changed never builds the model.
        """
        from parity.pipeline.cache import model_key
        from parity.findings import Finding

        entry = self.cache.entry("model", model_key(self.case))
        with self.cache.lock(entry):
            if self.cache.complete(entry):
                meta = self.cache.read_json(entry, "meta.json")
                with np.load(entry / "reference.npz", allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
                reference = {size: {name: arrays[f"{name}@b{size}"] for name in meta["output_names"]}
                             for size in self.case.batch_sizes}
                return {**meta, "output_paths": [tuple(p) for p in meta["output_paths"]], "reference": reference,
                        "findings": [Finding(**f) for f in meta["findings"]], "cached": True}
            eager = self.eager  # builds the model (timed apart as build_model_s)
            start = time.perf_counter()
            raw = {size: self._eager_or_fail(eager, self.inputs(size)) for size in self.case.batch_sizes}
            paths = [p for p, _ in raw[min(raw)]]
            names, selected = self._select(paths)
            reference = {size: dict(zip(names, self._pick(found, selected))) for size, found in raw.items()}
            findings = self.framework.lint_model(self.model)
            self.timings["reference_s"] = time.perf_counter() - start
            meta = {"output_names": names, "output_paths": [list(p) for p in selected],
                    "returned": [dotted(p) for p in paths],
                    "flatten": _needs_flattening(paths, selected),
                    "keywords": self.framework.keyword_inputs(self.model, list(self.case.inputs))}
            with self.cache.writing(entry) as tmp:
                np.savez(tmp / "reference.npz", **{f"{n}@b{size}": a for size, out in reference.items()
                                                   for n, a in out.items()})
                (tmp / "meta.json").write_text(json.dumps({**meta, "findings": [f.as_dict() for f in findings]}))
            return {**meta, "output_paths": selected, "reference": reference, "findings": findings, "cached": False}

    def _eager_or_fail(self, eager, inputs: dict[str, np.ndarray]):
        """The eager model's outputs on `inputs`; ReferenceFailed naming the factory and the call if it raises."""
        try:
            return self.framework.run_eager(eager, inputs)
        except Exception as e:
            call = ", ".join(f"{n}: {a.dtype}[{', '.join(map(str, a.shape))}]" for n, a in inputs.items())
            raise ReferenceFailed(f"{self.case.path}: inputs: the eager model from {self.case.model.factory} raised "
                                  f"when called with ({call}): {short_error(e, 4)}; if it takes other shapes or dtypes, "
                                  "declare them under 'inputs' (shape per sample, without the batch dimension)") from None

    def _select(self, paths: list[tuple]) -> tuple[list[str], list[tuple]]:
        """(the case's output names, the key path of each) for the outputs the case compares.

        Without ``outputs:``, every returned tensor, by its dotted name. With it, the names select
        (and order) outputs by name; a model returning unnamed tensors (one, or a tuple) may instead
        be given one name per tensor, in order. Anything else is a case error listing the real names.
        """
        natural = [dotted(p) for p in paths]
        listed = self.case.outputs
        if listed is None:
            return natural, list(paths)
        if all(n in natural for n in listed):
            return list(listed), [paths[natural.index(n)] for n in listed]
        real = ", ".join(natural)
        if not has_names(paths):
            if len(listed) == len(paths):
                return list(listed), list(paths)
            raise CaseError(self.case.path, "outputs", f"lists {len(listed)} name(s) but the model returns "
                            f"{len(paths)} unnamed tensor(s) ({real}); list one name per returned tensor, in order")
        unknown = ", ".join(repr(n) for n in listed if n not in natural)
        raise CaseError(self.case.path, "outputs", f"the model returns no output named {unknown}; it returns: {real}. "
                        "List names from these (dotted for nested outputs)")

    @staticmethod
    def _pick(found: list[tuple[tuple, np.ndarray]], selected: list[tuple]) -> list[np.ndarray]:
        by_path = dict(found)
        missing = [dotted(p) for p in selected if p not in by_path]
        if missing:
            raise ValueError(f"the model did not return {', '.join(missing)} on this batch (its output structure "
                             f"changed: it returned {', '.join(dotted(p) for p, _ in found)})")
        return [by_path[p] for p in selected]

    def reference(self, size: int) -> dict[str, np.ndarray]:
        if size not in self._reference:
            cached = self._model_results["reference"]
            self._reference[size] = cached[size] if size in cached else self.run_eager(self.inputs(size))
        return self._reference[size]

    def run_eager(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = self.framework.run_eager(self.eager, inputs)
        return dict(zip(self.output_names, self._pick(found, self._model_results["output_paths"])))

    @property
    def output_names(self) -> list[str]:
        return self._model_results["output_names"]

    @property
    def export_wrapping(self) -> Optional[str]:
        """Why exporters get the model wrapped (flattened outputs, keyword inputs), or None."""
        meta = self._model_results
        parts = []
        if meta["flatten"]:
            parts.append(f"outputs flattened to a tuple ({', '.join(self.output_names)}) from the model's "
                         f"{'structured ' if has_names(meta['output_paths']) else ''}output")
        if meta["keywords"]:
            parts.append(f"inputs passed to forward by keyword ({', '.join(meta['keywords'])})")
        return "; ".join(parts) or None

    def model_for_export(self):
        """The copy of the model one export gets, wrapped when the outputs must be flattened."""
        meta = self._model_results
        return self.framework.model_for_export(self.model, meta["output_paths"] if meta["flatten"] else None,
                                               meta["keywords"], arity=len(self.case.inputs))

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

    def scratch_dir(self, kind: str, fmt: str, backend: str, directory: Optional[Path] = None) -> Path:
        """An empty directory for a tool's files about one target (`kind`: triage, sensitivity): `directory`
        if given, else build/<kind>/<fmt>-<backend>; emptied first, so no file of an earlier run is read."""
        import shutil

        path = Path(directory or self.build_dir / kind / f"{fmt}-{backend}")
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def artefact(self, fmt: str, sizes: Optional[dict[str, int]] = None) -> Artefact:
        """The artefact of `fmt`; with `sizes` (dynamic axes at other sizes than the export sizes),
        the one that runs there: the same artefact, or for a static-shape format one exported at them."""
        sizes = None if self.is_export_shape(sizes) or not self.static_shape(fmt) else sizes
        k = (fmt, variant_label(sizes) if sizes else "")
        if k not in self._artefacts:
            try:
                self._artefacts[k] = self._cached_export(fmt, sizes)
            except (ExportError, CaseError) as e:
                self._artefacts[k] = e
        found = self._artefacts[k]
        if isinstance(found, BaseException):
            raise found
        return found

    def _cached_export(self, fmt: str, sizes: Optional[dict[str, int]] = None) -> Artefact:
        """The artefact from the export cache, or exported now and stored there.

        The key covers everything that determines the artefact (parity.cache.export_key), so a
        cached artefact is never stale; failures are not cached.
        """
        spec = self.case.export.get(fmt)
        if spec is not None and spec.artefact is not None:
            unknown = sorted(set(spec.outputs) - set(self.output_names))
            if unknown:
                raise CaseError(self.case.path, f"export.{fmt}.outputs", f"maps {', '.join(unknown)}, which the case "
                                f"does not compare; its outputs are: {', '.join(self.output_names)}")
            names = [spec.outputs.get(n, n) for n in self.output_names]  # the artefact's own names
            return self._inspect(Artefact(fmt, self.case.resolve(spec.artefact), "prebuilt", list(self.case.inputs),
                                          names, {"prebuilt": True, **({"output_map": dict(spec.outputs)}
                                                                       if spec.outputs else {})}))
        from parity.pipeline.cache import export_key

        key = export_key(self.case, fmt, sizes)
        entry = self.cache.entry("export", key)
        failed = self.cache.entry("export-failed", key)  # the same key: a known failure is not retried
        with self.cache.lock(entry):
            if self.cache.complete(entry):
                data = self.cache.read_json(entry, "artefact.json")
                metadata = {**data["metadata"], "cached": True, "cache_key": key}
                return Artefact(fmt, entry / data["file"], data["source"], data["input_names"], data["output_names"],
                                metadata, {int(b): entry / name for b, name in data["batch_files"].items()})
            if self.cache.complete(failed):
                known = self.cache.read_json(failed, "error.json") or {}
                raise ExportError(f"{known.get('message', '?')} [a known failure, from the export cache: nothing the "
                                  "export depends on changed since; --parity-no-cache retries it]", known.get("cause"))
            try:
                with self.cache.writing(entry) as tmp:
                    artefact = self._export(fmt, tmp, sizes)
                    (tmp / "artefact.json").write_text(json.dumps({
                        "file": artefact.path.name, "source": artefact.source, "input_names": artefact.input_names,
                        "output_names": artefact.output_names, "metadata": artefact.metadata,
                        "batch_files": {b: p.name for b, p in artefact.batch_paths.items()}}, default=str))
            except ExportError as e:
                if not e.transient:  # a hang, a full disk, a lack of memory, a kill -9: retried next run
                    try:
                        with self.cache.writing(failed) as tmp:
                            (tmp / "error.json").write_text(json.dumps({"message": str(e), "cause": e.cause}))
                    except OSError:
                        pass  # not remembered: the export is retried next run
                raise
            except OSError as e:  # storing the artefact in the cache
                exhausted = exhausted_export(e, fmt, entry.parent)
                if exhausted is None:
                    raise
                raise exhausted from e
            artefact.path = entry / artefact.path.name
            artefact.batch_paths = {b: entry / p.name for b, p in artefact.batch_paths.items()}
            artefact.metadata.update(cached=False, cache_key=key)
            return artefact

    def _export(self, fmt: str, out_dir: Path, sizes: Optional[dict[str, int]] = None) -> Artefact:
        """Export `fmt` into the empty directory `out_dir` (with `sizes`: at that shape variant)."""
        route = FORMATS[fmt].route(self.case.framework)
        spec = self.case.export.get(fmt)
        input_names = list(self.case.inputs)
        jobs = self._jobs(fmt, out_dir, sizes)
        isolate = spec.isolate if spec is not None and spec.isolate is not None else route.isolate
        start = time.perf_counter()
        if isolate:  # the framework's export worker writes every batch size of the format
            from parity.pipeline.worker import export_in_worker

            self.output_names  # noqa: B018 - the eager reference first: a model that fails is reference-failed here

            metadata, source = export_in_worker(self.case, fmt, out_dir, spec.timeout_s if spec else DEFAULT_TIMEOUT_S,
                                                sizes, self.cache.root, self.cache.enabled)
        else:
            metadata, source = self.export_files(fmt, out_dir, sizes)
        metadata["isolated"] = bool(isolate)  # the largest batch's export metadata
        metadata["export_s"] = round(time.perf_counter() - start, 3)
        self.timings[f"export_{fmt}_s"] = metadata["export_s"]
        batch_paths = {} if metadata.get("one_artefact") else \
            {size: path for size, path, _ in jobs if size is not None}
        if metadata.get("one_artefact"):
            metadata["batch"] = f"static, one artefact: {metadata['one_artefact']}"
        if batch_paths:
            metadata["batch"] = "static: one artefact per batch size"
            metadata["artefacts"] = {f"b{size}": path.name for size, path in batch_paths.items()}
        if sizes:
            metadata["shape"] = f"static: exported at {variant_label(sizes)} (batch {self.variant_batch})"
        elif self.case.sizes:  # what the exporter says it did, else what the engine knows
            metadata.setdefault("dynamic_axes", self._dynamic_axes_text(fmt))
        if self.export_wrapping:
            metadata["wrapped"] = self.export_wrapping
        metadata["imports"] = [self.case.model.factory.partition(":")[0]]  # what loading a program may need
        artefact = Artefact(fmt, jobs[-1][1], source, input_names, self.output_names, metadata, batch_paths)
        metadata["size_bytes"] = artefact.size_bytes
        return self._inspect(artefact, sizes)

    def _export_dynamic_axes(self) -> list[dict[int, str]]:
        """Per input, in order: {axis (batch is 0): name} of its dynamic axes other than the batch."""
        found = self.case.dynamic_axes()
        return [found.get(name, {}) for name in self.case.inputs]

    def _dynamic_axes_text(self, fmt: str) -> str:
        axes = "; ".join(f"{name}: {', '.join(f'axis {a} {n}' for a, n in found.items())}"
                         for name, found in self.case.dynamic_axes().items())
        if self.static_shape(fmt):
            return f"static: {axes}; exported once more per other size"
        return f"{axes}: not declared to this exporter (it takes no dynamic shapes); the artefact runs at other " \
               "sizes as it was traced"

    def _jobs(self, fmt: str, out_dir: Path, sizes: Optional[dict[str, int]] = None) \
            -> list[tuple[Optional[int], Path, dict]]:
        """(batch size or None, file, example inputs) of each export a format needs."""
        info = FORMATS[fmt]
        if sizes:  # a static-shape format at one shape variant: one artefact, at the variant batch size
            tag = variant_label(sizes).replace("=", "").replace(",", "_")
            return [(self.variant_batch, out_dir / f"model.{tag}.b{self.variant_batch}{info.suffix}",
                     self.variant_inputs(sizes))]
        if info.route(self.case.framework).static_batch:  # one artefact per batch size, each traced at that size
            return [(size, out_dir / f"model.b{size}{info.suffix}", self.inputs(size))
                    for size in sorted(self.case.batch_sizes)]
        return [(None, out_dir / f"model{info.suffix}", self.example_inputs())]

    def export_files(self, fmt: str, out_dir: Path, sizes: Optional[dict[str, int]] = None) -> tuple[dict, str]:
        """Write every file of `fmt` into `out_dir` in this process; (metadata of the largest, source).

        A static-batch format is exported once, at the largest batch size, and kept as the one
        artefact of every batch size when its runner, resized to each smaller batch, gives the first
        rows of its own largest-batch outputs (within the batch-invariance tolerance of its
        precision). Otherwise (a reshape with the batch baked in refuses to resize, or a model that
        mixes samples gives other rows) it is exported once per batch size, and the metadata says why.
        """
        jobs = self._jobs(fmt, out_dir, sizes)
        largest, path, inputs = jobs[-1]
        metadata, source = self._export_one(fmt, largest, path, inputs)
        if len(jobs) == 1:
            return metadata, source
        reason = self._resize_refused(fmt, path, source, metadata, [size for size, _, _ in jobs])
        if reason is None:
            metadata["one_artefact"] = (f"exported at batch size {largest} and resized to "
                                        f"{', '.join(str(size) for size, _, _ in jobs[:-1])} at run time: resizing it "
                                        "was checked at export (same rows as at the largest batch)")
            return metadata, source
        metadata["per_batch_export"] = reason
        for size, other, other_inputs in jobs[:-1]:
            self._export_one(fmt, size, other, other_inputs)
        return metadata, source

    def _export_one(self, fmt: str, size: Optional[int], path: Path, inputs: dict) -> tuple[dict, str]:
        model = self.model_for_export()  # torch: a pristine copy (tracing may mutate it)
        try:
            return self.export_module(fmt, model, self.framework.export_inputs(inputs), path,
                                      list(self.case.inputs), self.output_names, whole=True)
        except ExportError as e:
            if size is None:
                raise
            raise ExportError(f"{e} (batch size {size})", e.cause, e.transient) from e

    def _resize_refused(self, fmt: str, path: Path, source: str, metadata: dict, batch_sizes: list[int]) \
            -> Optional[str]:
        """None when the artefact at `path` (exported at the largest of `batch_sizes`) serves every batch
        size resized; else why not, in one line."""
        info = FORMATS[fmt]
        artefact = Artefact(fmt, path, source, list(self.case.inputs), self.output_names, dict(metadata), {})
        largest = max(batch_sizes)
        same_rows = tolerance.ResolvedTolerance(atol=0.0, rtol=0.0, scale=tolerance.INVARIANCE_SCALES[self.precision(fmt)])
        # every backend that can run here: kernels differ (LiteRT's reference TRANSPOSE_CONV checks the
        # batch of its baked output shape, XNNPACK's does not)
        backends = [b for b in info.backends
                    if not load_object(info.runner_for(b)).unavailable_reason(b)]
        if not backends:
            return "no backend of this format runs here to check a resized artefact"
        backend = backends[0]
        try:
            self._inspect(artefact)  # what the runner needs to feed it (layout)
            for backend in backends:
                runner = load_object(info.runner_for(backend))(artefact, backend).activate()
                try:
                    full = runner.infer(self.inputs(largest))
                    for size in batch_sizes[:-1]:
                        for name, got, whole in zip(self.output_names, runner.infer(self.inputs(size)), full):
                            c = compare_output(name, np.asarray(whole)[:size], got, same_rows)
                            if not c.passed:
                                return (f"resized to batch {size} on {backend}, output {name} is not the first rows "
                                        f"of batch {largest}: {c.problem}")
                finally:
                    runner.deactivate()
        except Exception as e:  # the runtime refused the resize, or the artefact cannot run: per batch size
            return f"resizing to another batch size failed on {backend}: {short_error(e, 1)}"
        return None

    def expected(self, fmt: str = "", sizes: Optional[dict[str, int]] = None) -> Expected:
        """Shapes and dtypes the case gives and expects, per batch size, and the precision `fmt`
        promises (for structural checks); with `sizes`, of that shape variant at its batch size."""
        if sizes:
            b = self.variant_batch
            return Expected(batch_sizes=(b,), inputs={b: {n: tuple(a.shape) for n, a in self.variant_inputs(sizes).items()}},
                            input_dtypes={n: str(a.dtype) for n, a in self.pool.items()},
                            outputs={b: {n: tuple(a.shape) for n, a in self.variant_reference(sizes).items()}},
                            precision=self.precision(fmt))
        batches = tuple(sorted(self.case.batch_sizes))
        return Expected(
            batch_sizes=batches,
            inputs={b: {n: tuple(a.shape) for n, a in self.inputs(b).items()} for b in batches},
            input_dtypes={n: str(a.dtype) for n, a in self.pool.items()},
            outputs={b: {n: tuple(a.shape) for n, a in self.reference(b).items()} for b in batches},
            precision=self.precision(fmt),
        )

    def _inspect(self, artefact: Artefact, sizes: Optional[dict[str, int]] = None) -> Artefact:
        """Run the format's inspector (structural checks) once; its findings join the artefact's metadata."""
        info = FORMATS[artefact.format]
        if not info.inspector:
            return artefact
        start = time.perf_counter()
        try:
            found = load_object(info.inspector)(artefact, self.expected(artefact.format, sizes))
        except CaseError:
            raise
        except Exception as e:
            raise ExportError(f"the {artefact.format} artefact {artefact.path.name} failed its structural checks: "
                              f"{short_error(e)}") from e
        self.timings[f"inspect_{artefact.format}_s"] = time.perf_counter() - start
        artefact.metadata.update(found or {})
        return artefact

    def export_module(self, fmt: str, module, example: tuple, path: Path, input_names: list[str],
                      output_names: list[str], whole: bool = False,
                      extra_options: Optional[dict] = None) -> tuple[dict, str]:
        """Export `module` to `path` the way this case exports `fmt`: the case's own export
        function with its options, or the built-in exporter. Returns (metadata, source).
        Used for the whole model (`whole`: the case's dynamic axes apply) and, by triage, for
        single submodules; `extra_options` join the case's options (sensitivity's nodes_to_exclude)."""
        spec = self.case.export.get(fmt)
        options = {**(dict(spec.options) if spec is not None else {}), **(extra_options or {})}
        own = spec is not None and spec.function is not None
        who = f"the case's export function {spec.function}" if own else f"the built-in {fmt} exporter"
        source = f"function:{spec.function}" if own else "parity"
        try:
            if own:
                from parity.case import import_from_case

                try:
                    function = import_from_case(self.case, spec.function)
                except Exception as e:
                    raise CaseError(self.case.path, f"export.{fmt}.function",
                                    f"cannot import {spec.function}: {short_error(e, 4)}") from None
                metadata = function(module, example, path, **options) or {}
            else:
                function = load_object(FORMATS[fmt].route(self.case.framework).exporter)
                accepted = inspect.signature(function).parameters
                if "batch_sizes" in accepted:
                    options["batch_sizes"] = list(self.case.batch_sizes)  # for exporters with a static fallback
                if "calibration" in accepted:
                    options["calibration"] = self.calibration_data()  # for quantizing exporters
                if "dynamic_axes" in accepted and self.case.sizes and whole:
                    options["dynamic_axes"] = self._export_dynamic_axes()
                    if "dynamic_sizes" in accepted:  # for exporters that need bounds (Core ML's RangeDim)
                        options["dynamic_sizes"] = {n: sorted({self.case.export_sizes[n], *sizes})
                                                    for n, sizes in self.case.sizes.items()}
                metadata = function(module, example, path, input_names=input_names, output_names=output_names,
                                    **options)
        except CaseError:
            raise
        except Exception as e:
            exhausted = exhausted_export(e, fmt, path.parent)  # the machine's disk or memory: never cached
            if exhausted is not None:
                raise exhausted from e
            hint = export_hint(f"{type(e).__name__}: {e}")
            raise ExportError(f"{hint + ': ' if hint else ''}{who} raised {short_error(e)}") from e
        if not path.exists():
            raise ExportError(f"{who} wrote nothing at {path}")
        return (dict(metadata) if isinstance(metadata, dict) else {}), source

    def calibration_data(self) -> dict[str, np.ndarray]:
        """Calibration samples for quantizing exporters (never the evaluation data)."""
        acc = self.case.accuracy
        if acc is not None and acc.calibration is not None:
            return self.load_data(acc.calibration)[0]
        if acc is not None and acc.evaluation.source is not None:
            from parity.case import DataSource

            return self.load_data(DataSource(source=acc.evaluation.source, split="calibration"))[0]
        return self.pool

    def load_data(self, spec) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
        """(inputs by name, labels or None) of a DataSource."""
        names = list(self.case.inputs)
        if spec.source is not None:
            from parity.pipeline.datasets import load

            x, y = load(spec.source, spec.split or "test", spec.samples)
            declared = self.case.inputs[names[0]]
            if declared.shape is not None and list(x.shape[1:]) != declared.shape and \
                    [*x.shape[2:], x.shape[1]] == declared.shape:
                x = np.moveaxis(x, 1, -1)  # a channels-last case (Keras) gets the images channels-last
            return {names[0]: np.ascontiguousarray(x.astype(declared.dtype))}, y
        with np.load(self.case.resolve(spec.file), allow_pickle=False) as data:
            if len(names) == 1 and spec.inputs_key in data.files:
                inputs = {names[0]: data[spec.inputs_key]}
            else:
                inputs = {n: data[n] for n in names}
            labels = data[spec.labels_key] if spec.labels_key in data.files else None
        if spec.samples:
            inputs = {k: v[:spec.samples] for k, v in inputs.items()}
            labels = None if labels is None else labels[:spec.samples]
        return inputs, labels

    # ---- run
    def runner(self, fmt: str, backend: str, sizes: Optional[dict[str, int]] = None):
        """The activated runner of (fmt, backend), created once and reused by every check; with
        `sizes`, of the artefact that runs that shape variant (the same runner unless shapes are static)."""
        artefact = self.artefact(fmt, sizes)
        k = (fmt, backend, str(artefact.path))
        if k not in self._runners:
            runner_cls = load_object(FORMATS[fmt].runner_for(backend))
            try:
                start = time.perf_counter()
                self._runners[k] = runner_cls(artefact, backend).activate()
                self._time(f"load_{fmt}_{backend}_s", start)
            except BackendUnavailable:
                raise
            except Exception as e:
                self._runners[k] = RunnerError(f"the {fmt} export succeeded, but {runner_cls.__name__} on {backend} "
                                               f"could not load {artefact.path.name}: {short_error(e)}",
                                               "unsupported" if missing_kernel(e) else "load-failed")
        found = self._runners[k]
        if isinstance(found, BaseException):
            raise found
        return found

    def run_target(self, fmt: str, backend: str, inputs: dict[str, np.ndarray],
                   sizes: Optional[dict[str, int]] = None) -> dict[str, np.ndarray]:
        runner = self.runner(fmt, backend, sizes)
        start = time.perf_counter()
        try:
            outputs = runner.infer(inputs)
        except ParityError:  # already says what failed (BackendUnavailable: a skip)
            raise
        except Exception as e:  # the runtime's failure on this artefact, never parity's own (harness-error)
            call = ", ".join(f"{n}: {a.dtype}[{', '.join(map(str, a.shape))}]" for n, a in inputs.items())
            raise RunnerError(f"the {fmt} export succeeded, but {type(runner).__name__} on {backend} raised when run "
                              f"on ({call}): {short_error(e)}",
                              "unsupported" if missing_kernel(e) else "load-failed") from e
        self.timings[f"infer_{fmt}_{backend}_s"] = self.timings.get(f"infer_{fmt}_{backend}_s", 0.0) + \
            time.perf_counter() - start
        return self._name(outputs)

    def outputs(self, fmt: str, backend: str, size: int) -> dict[str, np.ndarray]:
        k = (fmt, backend, size)
        if k not in self._outputs:
            self._outputs[k] = self.run_target(fmt, backend, self.inputs(size))
        return self._outputs[k]

    def fresh_runner(self, fmt: str, backend: str):
        """A new, activated runner (a fresh runtime session); the caller deactivates it."""
        runner_cls = load_object(FORMATS[fmt].runner_for(backend))
        start = time.perf_counter()
        runner = runner_cls(self.artefact(fmt), backend).activate()
        self._time(f"load_{fmt}_{backend}_s", start)
        return runner

    def _time(self, key: str, start: float) -> None:
        """Add the seconds since `start` to timings[key] (framework work, for the overhead figure)."""
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - start

    @property
    def model_findings(self) -> list:
        """Training-mode lint of the model handed to exporters (as the factory returned it)."""
        return self._model_results["findings"]

    def artefact_findings(self, fmt: str) -> Optional[list]:
        """Static lint of the artefact, or None when the format has no linter."""
        if fmt not in self._findings:
            linter = FORMATS[fmt].linter
            self._findings[fmt] = None if linter is None else self._lint_artefact(fmt, linter)
        return self._findings[fmt]

    def _lint_artefact(self, fmt: str, linter: str) -> list:
        """Lint findings of a cached artefact are cached too, in an entry of their own under the artefact's
        key (loading a program can take seconds). Never inside the artefact's entry: its manifest lists
        the files the export wrote, and a file added later would make every warm run re-export."""
        from parity.findings import Finding

        artefact = self.artefact(fmt)
        key = artefact.metadata.get("cache_key")
        entry = self.cache.entry("lint", key) if key else None
        if entry is not None and self.cache.complete(entry):
            stored = self.cache.read_json(entry, "findings.json")
            if isinstance(stored, dict):
                return [Finding(**f) for f in stored.get("findings", [])]
        start = time.perf_counter()
        function = load_object(linter)
        # the batch each file was traced at tells the batch axis apart (one resized artefact: the largest)
        batch_paths = artefact.batch_paths or \
            ({max(self.case.batch_sizes): artefact.path} if artefact.metadata.get("one_artefact") else {})
        if batch_paths and "batch_paths" in inspect.signature(function).parameters:
            findings = function(artefact.path, batch_paths=batch_paths)  # to trace the batch axis
        else:
            findings = function(artefact.path)
        self._time(f"lint_{fmt}_s", start)
        if entry is not None and self.cache.enabled:
            with self.cache.lock(entry), self.cache.writing(entry) as tmp:
                (tmp / "findings.json").write_text(json.dumps({"findings": [f.as_dict() for f in findings]}))
        return findings

    def artefact_info(self, fmt: str) -> dict:
        a = self.artefact(fmt)
        return {"path": str(a.path), "source": a.source, **a.metadata}

    def close(self) -> None:
        for r in self._runners.values():
            if not isinstance(r, BaseException):
                r.deactivate()
        self._runners.clear()


def variant_label(sizes: dict[str, int]) -> str:
    """``seq=16`` (``height=32,width=48``): how a shape variant is named in test rows and reports."""
    return ",".join(f"{k}={v}" for k, v in sizes.items())


def _needs_flattening(paths: list[tuple], selected: list[tuple]) -> bool:
    """Whether exporters need the model wrapped to return `selected` as a flat tuple: unless it
    already returns one tensor, or a flat tuple of exactly the selected tensors in order."""
    flat = all(len(p) <= 1 and all(isinstance(k, int) for k in p) for p in paths)
    return not (flat and list(selected) == list(paths))
