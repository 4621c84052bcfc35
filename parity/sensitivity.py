"""Precision sensitivity: which layers of a quantized artefact to keep in higher precision, verified.

For an INT8 artefact (``onnx_int8``) and the fp32 artefact it was quantized from, both run once on
the same inputs with every tensor read (:mod:`parity.formats.onnx.sensitivity`). Per quantized
layer (Conv, Gemm, MatMul, ...):

- **SQNR**: its dequantized output against the fp32 tensor, ``10 log10(sum ref^2 / sum (ref - q)^2)``.
  This is cumulative: it holds every earlier layer's noise too, so it falls with depth and on its
  own would blame the last layer.
- **own SQNR**, the rank: the noise the layer adds, ``-10 log10(10^(-SQNR/10) - 10^(-SQNR_in/10))``
  with ``SQNR_in`` that of its activation input (relative noise carries through a layer roughly
  unchanged; a layer whose output is no noisier than its input adds none: 120 dB). The lowest is rank 1.
- **kept alone in fp32**: the case's quantization re-run with that one node in the quantizer's own
  ``nodes_to_exclude``, and its accuracy (the N best-ranked layers only, N = ``max_candidates``).

Then the recommendation: nothing when the artefact as it is already meets the case's gate; else the
fewest layers, found by excluding layers greedily in rank order, re-quantizing each time, until the
gate is met, then dropping any layer the set still meets the gate without (a single layer that meets
it alone wins). Every figure comes from a re-quantized artefact, never an estimate: the export goes
through the case's own route (or export function) with ``nodes_to_exclude`` added to its options,
which is also what the user writes in the case to apply it.

The gate is the accuracy check's (:func:`parity.checks.accuracy.gate`: accuracy drop against fp32
eager, top-1 agreement, collapse, SQNR) on the case's labelled data, without the golden drift (a
re-quantized artefact has no golden). A case without an accuracy section is gated on its outputs'
tolerance for the format instead, and the report says so.

fp16 (``coreml_fp16``) goes the same way with the fp32 ``coreml`` package as the reference
(:mod:`parity.formats.coreml.sensitivity`: both programs on parity's MIL evaluator, every op's output
kept), coremltools' ``FP16ComputePrecision(op_selector=...)`` as the exclusion (the ``fp32_ops``
option of ``coreml_fp16``), and one difference: an op whose fp32 output exceeds fp16's range cannot
stay in fp32 alone (the cast back to fp16 overflows), so it is tried and kept together with the ops
downstream of it, until the values fit (``keep_with``).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

@dataclass(frozen=True)
class Route:
    """How one reduced-precision format is read layer by layer and re-exported with layers kept in fp32."""

    reader: str  # module:function -> (layers, unmatched, note)
    fp32: str  # the fp32 format compared with
    option: str  # the export option naming the layers kept in fp32
    redo: str  # what re-exporting is called ("re-quantizing")
    how: str  # the tool's own mechanism, in words


#: formats with a route: how their per-layer tensors are read and how layers are kept in fp32
ROUTES = {
    "onnx_int8": Route("parity.formats.onnx.sensitivity:layer_tensors", "onnx", "nodes_to_exclude", "re-quantizing",
                       "the case quantization with nodes_to_exclude"),
    "coreml_fp16": Route("parity.formats.coreml.sensitivity:layer_tensors", "coreml", "fp32_ops", "re-converting",
                         "the case conversion with fp32_ops, coremltools' FP16ComputePrecision op_selector"),
    "tflite_int8": Route("parity.formats.tflite.sensitivity:layer_tensors", "tflite", "float_ops", "re-quantizing",
                         "the case quantization with float_ops, ai-edge-quantizer recipe entries with algorithm_key "
                         "no_quantize"),
}

#: why the other reduced-precision formats have none yet
NOT_COVERED = {
    "coreml_int8": "coremltools' linear quantizer takes per-op configs (op_name_configs); that route is not "
                   "implemented yet",
    "torchscript_int8": "torch.ao dynamic quantization quantizes by module type (a qconfig per module would be the "
                        "route); not implemented",
    "pt2_int8": "the PT2E quantizer's per-module configs would be the route; not implemented",
}

OWN_SQNR_CAP_DB = 120.0
INPUT_SAMPLES = 128  # samples fed to the per-layer run (the gate uses the whole evaluation set)


@dataclass
class LayerRow:
    """One quantized layer: its SQNRs against fp32, its rank, and the gate's figures when it alone stays in fp32."""

    node: str
    op: str
    module: str
    tensor: str
    sqnr_db: float
    input_sqnr_db: Optional[float]
    own_sqnr_db: float
    rank: int = 0
    alone: Optional[dict] = None  # the Step figures of the re-quantized artefact with only this node excluded
    keep_with: list[str] = field(default_factory=list)  # nodes that must stay in fp32 with it (fp16 overflow)

    @property
    def unit(self) -> list[str]:
        """What is kept in fp32 to keep this layer in fp32."""
        return [self.node, *self.keep_with]


@dataclass
class Step:
    """One artefact measured under the gate: the nodes kept in float, its figures, and the verdict."""

    excluded: list[str]
    figures: dict
    met: bool
    problems: list[str] = field(default_factory=list)

    def value(self, kind: str) -> str:
        if kind == "accuracy":
            return f"{self.figures['accuracy']:.2f}%"
        return f"{self.figures['scaled_error']:.3g} of max|output|"

    def headline(self, kind: str) -> str:
        return f"{'accuracy' if kind == 'accuracy' else 'error'} {self.value(kind)}"


@dataclass
class SensitivityReport:
    case: str
    format: str
    backend: str
    gate: str = ""  # the gate in words
    gate_source: str = ""  # where the gate comes from
    gate_kind: str = ""  # accuracy | tolerance
    method: str = ""
    layers: list[LayerRow] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    baseline: Optional[Step] = None  # the case's artefact as it is
    steps: list[Step] = field(default_factory=list)  # the greedy exclusions, in order
    recommended: list[str] = field(default_factory=list)
    final: Optional[Step] = None  # the recommended set, re-quantized and measured
    met: bool = False  # the gate is met by the artefact as is, or with the recommendation
    recommendation: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        header = ("rank", "layer", "op", "module", "SQNR dB", "input SQNR dB", "own SQNR dB", "kept alone in fp32")

        def alone(r: LayerRow) -> str:
            if r.alone is None:
                return "-"
            figure = f"{r.alone['accuracy']:.2f}%" if self.gate_kind == "accuracy" else \
                f"{r.alone['scaled_error']:.3g}"
            joint = f", with {', '.join(r.keep_with)}" if r.keep_with else ""
            return f"{figure} (gate {'met' if r.alone['met'] else 'failed'}{joint})"

        lines = [header] + [(str(r.rank), r.node, r.op, r.module or "-", _db(r.sqnr_db), _db(r.input_sqnr_db),
                             _db(r.own_sqnr_db), alone(r)) for r in sorted(self.layers, key=lambda r: r.rank)]
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        body = "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
        out = [f"precision sensitivity of {self.case} / {self.format} / {self.backend}", f"gate: {self.gate} ({self.gate_source})", body,
               f"method: {self.method}"]
        if self.unmatched:
            out.append("not compared: " + "; ".join(self.unmatched))
        if self.baseline is not None:
            out.append(f"as exported: {self.baseline.headline(self.gate_kind)}, gate "
                       + ("met" if self.baseline.met else f"failed ({self.baseline.problems[0]})"))
        for step in self.steps:
            out.append(f"keep {', '.join(step.excluded)} in fp32: {step.headline(self.gate_kind)}, gate "
                       + ("met" if step.met else "failed"))
        out.append(self.recommendation)
        return "\n".join(out)


def _db(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.1f}"


def unsupported(fmt: str) -> Optional[str]:
    """Why `fmt` has no sensitivity route, naming the formats that have one; None when it has one."""
    if fmt in ROUTES:
        return None
    why = NOT_COVERED.get(fmt, "it is not a reduced-precision format (nothing was quantized to undo)")
    return (f"precision sensitivity supports {', '.join(ROUTES)} (it re-exports with the tool's own option, "
            f"onnxruntime's nodes_to_exclude, coremltools' op_selector or ai-edge-quantizer's recipe, to verify each "
            f"recommendation); {fmt}: {why}")


def _own_sqnr(sqnr: float, input_sqnr: Optional[float]) -> float:
    if input_sqnr is None:
        return sqnr
    if input_sqnr == float("-inf"):  # its input is already non-finite or unrelated: nothing measurable is its own
        return OWN_SQNR_CAP_DB
    own = 10.0 ** (-sqnr / 10.0) - (10.0 ** (-input_sqnr / 10.0) if input_sqnr != float("inf") else 0.0)
    return OWN_SQNR_CAP_DB if own <= 10.0 ** (-OWN_SQNR_CAP_DB / 10.0) else float(-10.0 * np.log10(own))


def sensitivity(run, fmt: str, backend: str = "cpu", workdir: Optional[Path] = None,
                max_candidates: int = 8) -> SensitivityReport:
    """Rank the reduced-precision layers of `fmt` by SQNR and recommend, verified by re-exporting, the fewest
    to keep in fp32 for the case of `run` to meet its gate."""
    reason = unsupported(fmt)
    if reason:
        raise NotImplementedError(reason)
    from parity.artefact import Artefact
    from parity.case import load_object
    from parity.checks.accuracy import _sqnr_db
    from parity.formats import FORMATS

    case = run.case
    report = SensitivityReport(case.name, fmt, backend)
    workdir = run.scratch_dir("sensitivity", fmt, backend, workdir)
    measure, feeds = _gate(run, fmt, backend, report)
    report.baseline = measure(run.runner(fmt, backend), [])

    route = ROUTES[fmt]
    read = load_object(route.reader)
    sample = {k: v[:INPUT_SAMPLES] for k, v in feeds.items()}
    found, report.unmatched, note = read(run.artefact(route.fp32).path, run.artefact(fmt).path, sample, backend)

    def db(reference, obtained) -> float:  # NaN (a non-finite tensor) is as bad as it gets
        value = _sqnr_db(reference, obtained)
        return float("-inf") if np.isnan(value) else value

    for item in found:
        sqnr = db(item.fp32, item.quantized)
        inp = None if item.input_fp32 is None else db(item.input_fp32, item.input_quantized)
        report.layers.append(LayerRow(item.node, item.op, item.module, item.tensor, sqnr, inp, _own_sqnr(sqnr, inp),
                                      keep_with=list(getattr(item, "keep_with", []))))
    for rank, row in enumerate(sorted(report.layers, key=lambda r: r.own_sqnr_db), 1):
        row.rank = rank
    ranked = sorted(report.layers, key=lambda r: r.rank)

    requantize, why_not = _requantizer(run, fmt, workdir)
    report.method = (f"{note}; own SQNR (the rank) is the noise a layer adds to its input's; every other figure "
                     f"is measured on a re-exported artefact ({why_not or route.how})")
    measured: dict[frozenset, Step] = {}

    def verify(nodes: list[str]) -> Step:
        key = frozenset(nodes)
        if key not in measured:
            path = requantize(nodes, workdir / f"exclude-{len(measured)}{FORMATS[fmt].suffix}")
            runner_cls = load_object(FORMATS[fmt].runner_for(backend))
            with runner_cls(Artefact(fmt, path, "sensitivity", list(case.inputs), run.output_names), backend) as r:
                measured[key] = measure(r, list(nodes))
        return measured[key]

    if why_not:
        report.met = report.baseline.met
        report.recommendation = ("gate already met as exported: nothing to keep in higher precision"
                                 if report.met else f"no verified recommendation: {why_not}")
        return report
    candidates = ranked[:max_candidates]
    for row in candidates:
        step = verify(row.unit)
        row.alone = {**step.figures, "met": step.met}
    if report.baseline.met:
        report.met = True
        report.recommendation = (f"gate already met as exported ({report.baseline.headline(report.gate_kind)}): "
                                 "nothing to keep in higher precision")
        return report

    units: list[list[str]] = []

    def joined(parts: list[list[str]]) -> list[str]:
        return list(dict.fromkeys(n for part in parts for n in part))

    for row in candidates:
        if row.node in joined(units):
            continue
        units.append(row.unit)
        step = verify(joined(units))
        report.steps.append(step)
        if step.met:
            break
    if not report.steps or not report.steps[-1].met:
        last = report.steps[-1] if report.steps else report.baseline
        report.final = last
        report.recommendation = (f"no verified recommendation: keeping the {len(candidates)} most sensitive layers "
                                 f"in fp32 reaches {last.headline(report.gate_kind)}, still short of the gate; the "
                                 "error is not in a few layers' reduced precision (calibration data, activation "
                                 "ranges, or the fp32 export itself)")
        return report
    single = next((r.unit for r in candidates if r.alone["met"]), None)
    if single is not None:
        units = [single]
    else:  # drop what the set does not need, the least sensitive first
        for unit in reversed(list(units)):
            rest = [u for u in units if u is not unit]
            if rest and verify(joined(rest)).met:
                units = rest
    chosen = joined(units)
    report.recommended = chosen
    report.final = verify(chosen)
    report.met = True
    rows = {r.node: r for r in report.layers}
    named = ", ".join(f"{n} ({rows[n].op}{', ' + rows[n].module if rows[n].module else ''})" if n in rows else n
                      for n in chosen)
    existing = list(_case_options(run, fmt).get(route.option, []))
    report.recommendation = (
        f"keep {named} in fp32: {report.baseline.headline(report.gate_kind)} -> "
        f"{report.final.value(report.gate_kind)}, gate met ({report.gate}); verified by {route.redo} with "
        f"{route.option}; to apply it: export: {{{fmt}: {{options: {{{route.option}: "
        f"[{', '.join(existing + [n for n in chosen if n not in existing])}]}}}}}}")
    return report


def _case_options(run, fmt: str) -> dict:
    spec = run.case.export.get(fmt)
    return dict(spec.options) if spec is not None else {}


def _requantizer(run, fmt: str, workdir: Path) -> tuple[Callable[[list[str], Path], Path], str]:
    """(a function that re-exports `fmt` the case's way with nodes added to the route's option
    (nodes_to_exclude, fp32_ops), why that cannot be done or "")."""
    option = ROUTES[fmt].option
    spec = run.case.export.get(fmt)
    if spec is not None and spec.artefact is not None:
        return None, f"the case's {fmt} artefact is prebuilt ({spec.artefact}): there is no export to re-run"
    if spec is not None and spec.function is not None:
        from parity.case import import_from_case

        params = inspect.signature(import_from_case(run.case, spec.function)).parameters
        if option not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None, (f"the case's export function {spec.function} takes no {option} option, so the "
                          f"{'conversion' if option == 'fp32_ops' else 'quantization'} cannot be re-run with "
                          "layers kept in float")
    else:
        from parity.case import load_object
        from parity.formats import FORMATS

        params = inspect.signature(load_object(FORMATS[fmt].route(run.case.framework).exporter)).parameters
        if option not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None, (f"the built-in {fmt} exporter for {run.case.framework} takes no {option} option, so the "
                          f"{'conversion' if option == 'fp32_ops' else 'quantization'} cannot be re-run with layers "
                          "kept in float")
    existing = list(_case_options(run, fmt).get(option, []))

    def requantize(nodes: list[str], path: Path) -> Path:
        run.export_module(fmt, run.model_for_export(), run.framework.export_inputs(run.example_inputs()), path,
                          list(run.case.inputs), run.output_names, whole=True,
                          extra_options={option: existing + [n for n in nodes if n not in existing]})
        return path

    return requantize, ""


def _gate(run, fmt: str, backend: str, report: SensitivityReport):
    """(a function measuring a runner under the case's gate -> Step, the inputs for the per-layer run)."""
    case = run.case
    acc = case.accuracy
    if acc is not None:
        from parity.checks.accuracy import _predict, gate, reference_scores

        inputs, labels = run.load_data(acc.evaluation)
        if labels is None:
            raise ValueError(f"{case.path}: accuracy.evaluation has no labels ('{acc.evaluation.labels_key}' array): "
                             "the accuracy gate cannot be measured")
        reference = reference_scores(run, inputs)
        report.gate_kind = "accuracy"
        report.gate = (f"max drop {acc.max_accuracy_drop:g} point(s), min top-1 agreement "
                       f"{100 * acc.min_top1_agreement:g}%"
                       + (f", min SQNR {acc.min_sqnr_db:g} dB" if acc.min_sqnr_db is not None else ""))
        report.gate_source = (f"the accuracy check's gate against fp32 eager on {len(labels)} labelled samples, "
                              "without the golden drift")

        def measure(runner, excluded: list[str]) -> Step:
            figures, problems = gate(acc, reference, _predict(run, inputs, lambda feed: runner.infer(feed)[0]), labels)
            return Step(excluded, figures, not problems, problems)

        return measure, inputs

    from parity.compare import compare_outputs

    size = max(case.batch_sizes)
    inputs, expected = run.inputs(size), run.reference(size)
    report.gate_kind = "tolerance"
    report.gate = f"the outputs within the case's {fmt} tolerance"
    report.gate_source = (f"the case has no accuracy section, so the gate is the parity comparison of the outputs "
                          f"with eager on the batch of {size}")

    def measure(runner, excluded: list[str]) -> Step:
        obtained = dict(zip(run.output_names, runner.infer(inputs)))
        rows = compare_outputs(expected, obtained, lambda n: run.tolerance_for(fmt, backend, n))
        failed = [c for c in rows if not c.passed and not c.vacuous]
        figures = {"scaled_error": max(c.scaled_error for c in rows), "max_abs": max(c.max_abs for c in rows)}
        return Step(excluded, figures, not failed, [f"{c.name}: {c.problem}" for c in failed])

    return measure, inputs


def write(report: SensitivityReport, path: Path) -> Path:
    """The report as JSON at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2, default=float) + "\n")
    return path


def cli(case, fmt: str, backend: str, build: str, json_path: Optional[str]) -> int:
    """``parity triage CASE -f FMT --sensitivity``: print the table and the recommendation, optionally
    write JSON. Exit 0 when the artefact as exported meets the gate, 1 when it does not."""
    from parity.session import Session

    session = Session(build, "golden")
    try:
        report = sensitivity(session.case_run(case), fmt, backend)
    finally:
        session.close()
    print(report.table())
    if json_path:
        write(report, Path(json_path))
    return 0 if report.baseline.met else 1
