"""Triage: find the first module whose export diverges from eager, for any format.

The eager reference (eval mode) runs once with forward hooks that record each submodule's real
inputs and outputs (copied, so in-place ops cannot change them), in execution order. Then:

- **Inside the artefact** (formats with an intermediate-tensor reader, ``FormatInfo.intermediates``,
  fp32 only): the artefact runs once and hands over its own tensors, mapped to the modules that made
  them; the first tensor over tolerance, in execution order, is the first divergence. No re-export,
  so the converter's fusions stay as they are (a module fused into another's tensor is named with it).
- **Module by module** (every other format, INT8, artefacts whose tensors map to no module): from the
  top of the module tree down, each child module is exported on its own *as the case's exporter
  would* (with the case's own export function if it has one), run on the format's runner with the
  recorded inputs and compared with the recorded output; the first child over tolerance is descended
  into. Cost: one export per module checked, so it is a tool for a failing target, not every run.

Either way the report adds, for the module found, the training-mode lint's findings and whether its
exported output depends on the batch (the first sample inside its batch vs in a batch of copies of
itself, which a fixed-batch artefact can run too).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np


from parity.compare import compare_outputs, min_cosine
from parity.errors import short_error
from parity.pipeline.run import CaseRun
from parity.errors import ExportError


@dataclass
class ModuleRow:
    """One module checked: its error in the exported artefact against eager, and the verdict."""

    path: str
    op: str
    status: str  # pass | fail | skip | error
    max_abs: float = 0.0
    rel_error: float = 0.0  # max abs error / max |eager output|
    cosine: float = 1.0
    detail: str = ""
    batch_dependent: Optional[bool] = None  # the exported module's output for a sample changes with its batch
    nonfinite: int = 0  # NaN/Inf elements in the artefact's tensor
    tensor: str = ""  # the artefact's tensor this row compares (in-artefact path)


@dataclass
class TriageReport:
    case: str
    format: str
    backend: str
    rows: list[ModuleRow] = field(default_factory=list)
    first_divergence: Optional[str] = None
    op: str = ""
    cause: str = ""
    lint: list[str] = field(default_factory=list)
    batch_dependent: Optional[bool] = None
    summary: str = ""
    method: str = ""  # how the rows were obtained: the artefact's own intermediates, or per-module export
    unmapped: list[str] = field(default_factory=list)  # modules (or tensors) that could not be compared, and why
    first_nonfinite: Optional[str] = None  # the first op whose output turned NaN/Inf (in-artefact path)
    #: modules without a tensor of their own that the exporter fused into the first divergence's tensor
    #: (a Conv folded into the BatchNorm after it): the bug may be in any of them
    fused_with: list[str] = field(default_factory=list)
    tolerance_scale: Optional[float] = None  # err/max|ref| a row may reach (the case's tolerance for the format)
    #: modules that returned their input unchanged in eager (Identity, Dropout in eval): nothing to compare
    passthrough: list[str] = field(default_factory=list)
    #: why the whole model does not export to this format (triage then exports module by module: the rows say
    #: which modules convert on their own)
    export_error: Optional[str] = None
    #: eager's outputs (NumPy) of the first diverging module, as the hooks recorded them (in-artefact path):
    #: what a repro bundle expects at that tensor; not part of as_dict()
    eager_at_divergence: list = field(default_factory=list, repr=False, compare=False)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("eager_at_divergence", None)
        return data

    def table(self) -> str:
        header = ("module", "op", "max_abs", "err/max|ref|", "cosine", "nonfinite", "result")

        def figures(r: ModuleRow) -> tuple:
            if r.status in ("error", "skip"):  # nothing was compared: no figure may read as a match
                return ("-", "-", "-", "-")
            return (f"{r.max_abs:.3g}", f"{r.rel_error:.3g}", f"{r.cosine:.6f}", str(r.nonfinite))

        lines = [header] + [(r.path, r.op, *figures(r), r.status + (f" ({r.detail})" if r.detail and r.status != "pass"
                                                                   else ""))
                            for r in self.rows]
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        body = "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
        extra = [f"method: {self.method}"] if self.method else []
        if self.first_nonfinite:
            extra.append(f"first non-finite value: {self.first_nonfinite}")
        if self.unmapped:
            shown = "; ".join(self.unmapped[:8]) + (f"; ... ({len(self.unmapped) - 8} more)" if len(self.unmapped) > 8
                                                     else "")
            extra.append(f"not compared: {shown}")
        if self.passthrough:
            extra.append(f"computing nothing in eval (returned their input): {len(self.passthrough)} modules "
                         f"({', '.join(self.passthrough[:4])}{', ...' if len(self.passthrough) > 4 else ''})")
        return "\n".join([f"triage of {self.case} / {self.format} / {self.backend}", body, *extra, self.summary])


def _record(model, inputs: tuple, calls: Optional[dict[str, int]] = None,
            keywords: Optional[list[str]] = None, passthrough: Optional[set] = None) -> dict[str, tuple]:
    """path -> (args, output) of each submodule's first call, in execution order; `calls`, when
    given, receives how many times each module was called; `keywords`: the inputs' names, when the
    model takes them by keyword (as the eager reference calls it); `passthrough`, when given, receives
    the modules that returned their one argument itself, unchanged (Identity, and Dropout or DropPath
    in eval mode): they compute nothing the artefact could hold."""
    import torch

    records: dict[str, tuple] = {}
    calls = {} if calls is None else calls
    pending: dict[str, tuple] = {}
    handles = []
    for path, module in model.named_modules():
        if not path:
            continue

        # Inputs are copied before the module runs and outputs right after: an in-place module
        # (Hardswish(inplace=True), used across timm) overwrites its input, and a later in-place op
        # would overwrite a recorded output.
        def pre_hook(mod, args, kwargs, path=path):
            if path not in records and path not in pending:
                pending[path] = (_clone(args), _clone(kwargs))

        def hook(mod, args, kwargs, output, path=path):
            calls[path] = calls.get(path, 0) + 1
            if path not in records and path in pending:
                before = pending.pop(path)
                if passthrough is not None and len(args) == 1 and not kwargs and output is args[0] \
                        and isinstance(output, torch.Tensor) and torch.equal(before[0][0], output):
                    passthrough.add(path)  # the same tensor object, not written in place
                records[path] = (*before, _clone(output))
        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(**dict(zip(keywords, inputs))) if keywords else model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return records


def _clone(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _tensors(obj) -> Optional[list]:
    """The tensors of a tuple/list/dict/tensor, or None if anything else is in it."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        out = []
        for o in obj:
            t = _tensors(o)
            if t is None:
                return None
            out += t
        return out
    if isinstance(obj, dict):
        return _tensors(list(obj.values()))
    return None


def _output_tensors(obj) -> list:
    """The tensors of a module's output, leaving out what is not one (the ``None`` of a Hugging Face
    attention returning ``(context, None)`` when it is not asked for its weights)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _output_tensors(o)]
    if isinstance(obj, dict):
        return _output_tensors(list(obj.values()))
    return []


def _regrouped(eager: tuple, got: tuple) -> bool:
    """Whether `got` is `eager` with its leading axes merged or split in row-major order (a TFLite fully
    connected op computes a [2, 10, 16] sequence as [20, 16]): the same trailing axes, and leading
    axes of the same size."""
    eager, got = tuple(eager), tuple(got)
    if eager == got or int(np.prod(eager)) != int(np.prod(got)) or not eager or not got:
        return False
    for k in range(1, min(len(eager), len(got)) + 1):
        if eager[-k] != got[-k]:
            return int(np.prod(eager[:len(eager) - k + 1])) == int(np.prod(got[:len(got) - k + 1])) and k > 1
    return True


#: how a tensor of the artefact was brought to eager's shape, as the method line says it
ALIGNED = {"regrouped": "with leading axes merged or split (as a fully connected op computes a sequence)",
           "to channels-first": "moved from channels-last to channels-first (only that fits eager's shape or values)",
           "to channels-last": "moved from channels-first to channels-last (only that fits eager's shape or values)"}
#: the layout moves tried for a tensor of rank 3+ that fits eager in neither shape nor values as it is
LAYOUTS = (("to channels-first", (-1, 1)), ("to channels-last", (1, -1)))


def _aligned(value: np.ndarray, expected: list[np.ndarray]):
    """(eager's tensor this one is, a function bringing the artefact's tensor to its shape, how) or
    (None, None, ""). Same shape first; then leading axes regrouped; then, for a tensor of rank 3 or
    more, a layout move (a converter that keeps activations channels-last without TRANSPOSE ops a layout
    trace could follow). A guessed alignment that is wrong reads as a divergence, never as a match."""
    for e in expected:
        if tuple(e.shape) == tuple(value.shape):
            return e, (lambda v: v), ""
    for e in expected:
        if _regrouped(e.shape, value.shape):
            return e, (lambda v, shape=tuple(e.shape): v.reshape(shape)), "regrouped"
    for how, moves in (LAYOUTS if value.ndim >= 3 else ()):
        for e in expected:
            if np.moveaxis(value, *moves).shape == tuple(e.shape):
                return e, (lambda v, m=moves: np.moveaxis(v, *m)), how
    return None, None, ""


def triage(run: CaseRun, fmt: str, backend: str, workdir: Optional[Path] = None) -> TriageReport:
    """Localise the divergence of `fmt` on `backend` for the case of `run`."""
    if run.case.framework != "torch":
        raise NotImplementedError(unsupported(run.case))
    import torch

    from parity.artefact import Artefact
    from parity.case import load_object
    from parity.formats import FORMATS

    case = run.case
    report = TriageReport(case.name, fmt, backend)
    workdir = run.scratch_dir("triage", fmt, backend, workdir)
    size = max(case.batch_sizes)
    inputs = tuple(torch.from_numpy(a) for a in run.example_inputs().values())
    calls: dict[str, int] = {}
    # GPT-2's forward(input_ids, past_key_values, attention_mask, ...): the mask goes by keyword
    noops: set[str] = set()
    records = _record(run.eager, inputs, calls, run.framework.keyword_inputs(run.eager, list(case.inputs)), noops)
    report.tolerance_scale = run.tolerance_for(fmt, backend, run.output_names[0]).scale
    as_returned = dict(run.model.named_modules())
    runner_cls = load_object(FORMATS[fmt].runner_for(backend))
    findings = {f.where: f for f in run.model_findings}

    fallback = ""
    try:  # exported (or cached) by the check that failed; a model that does not export at all is said first
        run.artefact(fmt)
    except ExportError as e:
        report.export_error = short_error(e, 2)
    if report.export_error:
        fallback = f"the whole model does not export to {fmt}"
    elif FORMATS[fmt].intermediates and FORMATS[fmt].precision != "fp32":
        fallback = (f"a {FORMATS[fmt].precision} artefact's tensors all carry quantization error against eager, so "
                    "the first one over tolerance says little; each module is quantized on its own instead")
    elif FORMATS[fmt].intermediates:  # the artefact's own tensors, one run, no re-export
        try:
            found = _in_artefact(run, fmt, backend, records, as_returned, report, calls, noops)
        except Exception as e:
            found, fallback = None, f"reading the artefact's intermediate tensors failed ({short_error(e, 1)})"
        if found is not None:
            if found[0]:  # kept for parity.bundle
                report.eager_at_divergence = [t.detach().cpu().numpy() for t in _tensors(records[found[0]][2]) or []]
            return _conclude(report, found[0], found[1], findings, fmt)
        fallback = fallback or report.method
        report.rows, report.unmapped = [], []
    report.method = "each module exported on its own and run on the target's runner (this format exposes no " \
                    "intermediate tensors)" if not fallback else f"each module exported on its own: {fallback}"

    def check(path: str) -> ModuleRow:
        module = as_returned[path]
        op = type(module).__name__
        args, kwargs, output = records[path]
        tensors_in, tensors_out = _tensors(args), _tensors(output)
        if kwargs or not tensors_in or len(tensors_in) != len(args) or tensors_out is None:
            return ModuleRow(path, op, "skip", detail="called with non-tensor arguments or outputs")
        names_in = [f"input{i}" for i in range(len(tensors_in))]
        names_out = [f"output{i}" for i in range(len(tensors_out))]
        target = workdir / f"{path}{FORMATS[fmt].suffix}"
        try:
            run.export_module(fmt, copy.deepcopy(module), tuple(t.detach().clone() for t in tensors_in), target,
                              names_in, names_out)
            feeds = {n: t.detach().cpu().numpy() for n, t in zip(names_in, tensors_in)}
            # the context manager deactivates the runner even when infer() raises
            with runner_cls(Artefact(fmt, target, "triage", names_in, names_out), backend) as runner:
                obtained = dict(zip(names_out, runner.infer(feeds)))
                # the same batch with every sample a copy of the first: what the first sample gives alone
                # to any op that reduces over the batch, at the file's own batch size (a fixed-batch file runs it)
                try:
                    alone = dict(zip(names_out, runner.infer({n: np.repeat(a[:1], a.shape[0], axis=0)
                                                              for n, a in feeds.items()}))) if size > 1 else None
                except Exception:
                    alone = None
        except ExportError as e:
            return ModuleRow(path, op, "error", detail=str(e).splitlines()[0][:200])
        except Exception as e:  # a runner that cannot load a lone submodule
            return ModuleRow(path, op, "error", detail=short_error(e, 1)[:200])
        expected = {n: t.detach().cpu().numpy() for n, t in zip(names_out, tensors_out)}
        tol = run.tolerance_for(fmt, backend, names_out[0])
        rows = compare_outputs(expected, obtained, lambda n: tol)
        worst = max(rows, key=lambda c: c.scaled_error)
        failed = [c for c in rows if not c.passed and not c.vacuous]
        row = ModuleRow(path, op, "fail" if failed else "pass", max_abs=worst.max_abs, rel_error=worst.scaled_error,
                        cosine=min_cosine(c.cosine for c in rows), detail=failed[0].problem if failed else "")
        if alone is not None:
            batch_rows = compare_outputs({n: a[:1] for n, a in obtained.items() if a.ndim and a.shape[0] == size},
                                         {n: a[:1] for n, a in alone.items() if n in obtained and obtained[n].ndim
                                          and obtained[n].shape[0] == size}, lambda n: tol)
            row.batch_dependent = any(not c.passed and not c.vacuous for c in batch_rows)
        return row

    def children(parent: str) -> list[str]:
        depth = parent.count(".") + 1 if parent else 0
        prefix = parent + "." if parent else ""
        return [p for p in records if p.startswith(prefix) and p.count(".") == depth]

    current = ""
    last_row: Optional[ModuleRow] = None
    while True:
        culprit = None
        for child in children(current):
            row = check(child)
            report.rows.append(row)
            if row.status == "fail":
                culprit, last_row = child, row
                break
        if culprit is None:
            break
        current = culprit

    return _conclude(report, current, last_row, findings, fmt)


def _conclude(report: TriageReport, current: str, last_row: Optional[ModuleRow], findings: dict,
              fmt: str) -> TriageReport:
    """The summary: the first divergence (`current`, its row), the lint of that module, the cause."""
    if report.export_error:
        failing = [r.path for r in report.rows if r.status == "error"]
        report.summary = (f"the whole model does not export to {fmt}: {report.export_error}; "
                          + (f"modules that do not export on their own: {', '.join(failing)}" if failing else
                             "every module checked exports on its own, so the failure comes from how forward() "
                             "combines them") + "; the rows compare the modules that do")
        report.first_divergence = current or None
        report.op = last_row.op if last_row else ""
        return report
    if not current:
        checked = [r for r in report.rows if r.status in ("pass", "fail")]
        if report.rows and not checked:
            report.summary = ("nothing could be compared (every module errored or was skipped: see the table); "
                              "triage cannot say where the export diverges")
        else:
            every = "every module compared" if report.method.startswith("the artefact's own") else \
                "every top-level module"
            report.summary = (f"no divergence: {every} matches eager within tolerance"
                              if all(r.status == "pass" for r in report.rows) else
                              "no module diverges on its own (some could not be checked: see the table); the "
                              "difference may come from how modules are combined in forward()")
            if len(checked) < len(report.unmapped):  # a verdict on a few rows must not read as a clean bill
                report.summary += (f"; but only {len(checked)} of {len(checked) + len(report.unmapped)} modules "
                                   "could be compared (see 'not compared'): a divergence may hide in the others")
        if findings:
            report.lint = [f"{f.where} ({f.op}): {f.detail}" for f in findings.values()]
            report.summary += (f"; but the model has modules in training mode ({', '.join(findings)}), which this "
                               f"{fmt} export silently ran in inference mode")
        return report
    report.first_divergence = current
    report.op = last_row.op
    report.batch_dependent = last_row.batch_dependent
    lint = [f for path, f in findings.items() if path == current or path.startswith(current + ".")]
    report.lint = [f"{f.where} ({f.op}): {f.detail}" for f in lint]
    if report.batch_dependent:
        report.cause = "batch statistics at inference" if any(f.kind == "batchnorm-training" for f in lint) else \
            "output depends on the batch"
    elif any(f.kind == "dropout-training" for f in lint):
        report.cause = "dropout active at inference"
    else:
        report.cause = f"computes something else than eager (error {last_row.rel_error:.3g} of max|output|)"
    tail = "; module is in training mode" if lint else ""
    fused = f" (its tensor also holds {', '.join(report.fused_with)}, fused into it by the exporter)" \
        if report.fused_with else ""
    report.summary = f"first divergence: {current} ({report.op}){fused}, {report.cause}{tail}"
    return report


def _in_artefact(run: CaseRun, fmt: str, backend: str, records: dict, modules: dict,
                 report: TriageReport, calls: dict[str, int],
                 noops: frozenset = frozenset()) -> Optional[tuple[str, Optional[ModuleRow]]]:
    """Rows from the artefact's own intermediate tensors: (first divergence or "", its row), or None
    when no tensor maps to a module (the caller falls back to exporting modules one by one)."""
    from parity.case import load_object
    from parity.formats import FORMATS

    feeds = run.example_inputs()
    size = int(next(iter(feeds.values())).shape[0])
    path = run.artefact(fmt).path_for(size)
    read = load_object(FORMATS[fmt].intermediates)
    got = read(path, feeds, backend, set(records))
    report.first_nonfinite = got.first_nonfinite
    report.unmapped = [f"{m}: no tensor of its own in the artefact (fused into another module's ops, or not "
                       "exported)" for m in got.unmapped if m in records and m not in noops]
    report.passthrough = sorted(m for m in got.unmapped if m in noops)
    if not got.mapped:
        report.method = got.note or "no tensor of the artefact maps to a module"
        return None
    report.method = f"the artefact's own intermediate tensors ({len(got.mapped)} mapped to modules): {got.note}"
    tol = run.tolerance_for(fmt, backend, run.output_names[0])
    first: Optional[ModuleRow] = None
    compared: set[str] = set()
    aligned: dict = {}  # tensor name -> the function that brought it to eager's shape (for the batch rerun too)
    moved: dict[str, int] = {}
    for item in got.mapped:
        if item.module not in records:
            report.unmapped.append(f"{item.module} (tensor {item.tensor}): not a module the eager model called")
            continue
        if calls.get(item.module, 1) > 1:  # ResNet's one ReLU, called after bn1 and after the sum
            report.unmapped.append(f"{item.module}: called {calls[item.module]} times in forward(); which call a "
                                   "tensor belongs to is ambiguous")
            continue
        expected = [t.detach().cpu().numpy() for t in _output_tensors(records[item.module][2])]
        match, align, how = _aligned(item.value, expected)
        if match is None:
            report.unmapped.append(f"{item.module} (tensor {item.tensor}, shape {list(item.value.shape)}): eager "
                                   f"output shapes {[list(e.shape) for e in expected]} differ")
            continue
        if item.tensor in compared:  # a parent returning its last child's tensor: the child's row says it
            continue
        compared.add(item.tensor)
        c = compare_outputs({"t": match}, {"t": align(item.value)}, lambda n: tol)[0]
        failed = not c.passed and not c.vacuous
        # A format whose layout the reader could not follow (litert-torch drops cancelling transposes, so a
        # [2, 8, 8, 8] tensor may be channels-last where eager's is channels-first): the other layout, kept
        # only where it matches; a transposed tensor matching eager by chance would need symmetric data.
        for other, moves in (() if not failed or item.value.ndim < 3 else LAYOUTS):
            swapped = (lambda v, a=align, m=moves: np.moveaxis(a(v), *m))
            if swapped(item.value).shape == match.shape:
                alt = compare_outputs({"t": match}, {"t": swapped(item.value)}, lambda n: tol)[0]
                if alt.passed:
                    c, failed, align, how = alt, False, swapped, other
                    break
        item.value, aligned[item.tensor] = align(item.value), align
        if how:
            moved[how] = moved.get(how, 0) + 1
        row = ModuleRow(item.module, type(modules[item.module]).__name__ if item.module in modules else item.op,
                        "fail" if failed else "pass", max_abs=c.max_abs, rel_error=c.scaled_error,
                        cosine=c.cosine, detail=c.problem if failed else "", nonfinite=c.nonfinite,
                        tensor=item.tensor)
        report.rows.append(row)
        if failed and first is None:
            first = row
    if moved:
        report.method += "; compared after aligning their shape with eager's: " + ", ".join(
            f"{n} {ALIGNED[how]}" for how, n in moved.items())
    if first is None:
        return "", None
    first = _parent_own_ops(first, got, records, modules, dict(run.eager.named_modules()), report, tol) or first
    # modules with no tensor of their own that ran (in eager) after the last module that still matched
    # and before the diverging one: the exporter folded them into its tensor
    order = list(records)
    index = {m: i for i, m in enumerate(order)}
    # rows inside the first divergence (a child judged on the artefact's own input) say nothing of what ran before it
    matched = [index[r.path] for r in report.rows[:report.rows.index(first)] if r.status == "pass" and r.path in index
               and not r.path.startswith(first.path + ".")]
    after = max(matched, default=-1)
    tensorless = set(records) - {item.module for item in got.mapped} - noops
    report.fused_with = [m for m in order[after + 1:index[first.path]]
                         if m in tensorless and not first.path.startswith(m + ".")
                         and not any(o.startswith(m + ".") for o in order)]  # leaves only
    # Does the artefact mix samples there? The same batch again with every other sample replaced by a copy
    # of the first: the first sample's tensor is what it would be alone for any op that reduces over the
    # batch, and the batch size is the file's, so a fixed-batch artefact (TFLite) runs it too.
    try:
        if size > 1:
            copies = {k: np.repeat(v[:1], v.shape[0], axis=0) for k, v in feeds.items()}
            again = read(path, copies, backend, set(records))
            solo = next((i.value for i in again.mapped if i.tensor == first.tensor), None)
            together = next(i.value for i in got.mapped if i.tensor == first.tensor)
            if solo is not None and first.tensor in aligned:
                solo = aligned[first.tensor](solo)  # aligned with eager as `together` was
            if solo is not None and solo.shape == together.shape:
                c = compare_outputs({"t": together[:1]}, {"t": solo[:1]}, lambda n: tol)[0]
                first.batch_dependent = not c.passed and not c.vacuous
    except Exception:
        pass  # the artefact could not run the batch again: batch dependence stays unknown
    return first.path, first


def _parent_own_ops(first: ModuleRow, got, records: dict, modules: dict, eager: dict, report: TriageReport,
                    tol) -> Optional[ModuleRow]:
    """The enclosing module, when the first failing module's input had already diverged and was made by
    that module's own ops (timm's BatchNormAct computes the BatchNorm in its own forward, then calls its
    ``act`` child): the divergence starts there. The child's row is then its own error (the eager
    child run on the artefact's input), and the parent's row follows it. None when that is not so."""
    import torch

    item = next((i for i in got.mapped if i.module == first.path and i.tensor == first.tensor), None)
    args, kwargs, _ = records[first.path]
    expected = _tensors(args)
    if item is None or kwargs or not item.inputs or expected is None or len(expected) != len(args) \
            or len(expected) != len(item.inputs):
        return None
    unused = list(item.inputs)
    fed = []  # the artefact's tensor for each of eager's arguments, matched by shape
    for arg in expected:
        match = next((i for i in unused if tuple(i[1].shape) == tuple(arg.shape)), None)
        if match is None:
            return None
        unused.remove(match)
        fed.append(match)
    parent, diverged = None, None
    for arg, (name, value, scopes) in zip(expected, fed):
        c = compare_outputs({"t": arg.detach().cpu().numpy()}, {"t": value}, lambda n: tol)[0]
        if not c.passed and not c.vacuous:
            made_in = scopes[-1] if scopes else ""
            if made_in in records and first.path.startswith(made_in + "."):
                parent, diverged = made_in, (name, c)
            break
    if parent is None:
        return None
    with torch.no_grad():  # a copy: an in-place or training-mode module changes itself or its input
        local = _tensors(copy.deepcopy(eager[first.path])(*(torch.from_numpy(v.copy()) for _, v, _ in fed))) or []
    own = next((t.detach().cpu().numpy() for t in local if tuple(t.shape) == tuple(item.value.shape)), None)
    if own is None:
        return None
    c = compare_outputs({"t": own}, {"t": item.value}, lambda n: tol)[0]
    failed = not c.passed and not c.vacuous
    first.status, first.max_abs, first.rel_error, first.cosine, first.nonfinite = \
        "fail" if failed else "pass", c.max_abs, c.scaled_error, c.cosine, c.nonfinite
    first.detail = f"against eager run on the artefact's own input: {c.problem}" if failed else ""
    name, c = diverged
    row = ModuleRow(parent, type(modules[parent]).__name__ if parent in modules else "", "fail", max_abs=c.max_abs,
                    rel_error=c.scaled_error, cosine=c.cosine, nonfinite=c.nonfinite, tensor=name,
                    detail=f"its own ops' tensor {name}, read by {first.path}: {c.problem}")
    mapped = next((i for i in got.mapped if i.module == parent), None)
    if mapped is not None:  # the parent's own output, when it has one (batch dependence is read there)
        out = next((t.detach().cpu().numpy() for t in _tensors(records[parent][2]) or []
                    if tuple(t.shape) == tuple(mapped.value.shape)), None)
        c = compare_outputs({"t": out}, {"t": mapped.value}, lambda n: tol)[0] if out is not None else None
        if c is not None and not c.passed and not c.vacuous:
            row = ModuleRow(parent, row.op, "fail", max_abs=c.max_abs, rel_error=c.scaled_error, cosine=c.cosine,
                            nonfinite=c.nonfinite, tensor=mapped.tensor, detail=c.problem)
    report.rows.insert(report.rows.index(first) + 1, row)
    return row


def write(report: TriageReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return path


def main(argv: Optional[list[str]] = None) -> int:
    """``parity triage CASE --format F [--backend B]``: print the table, optionally write JSON.

    Exit codes as the rest of the parity command: 0 no divergence, 1 a divergence found, 2 usage
    or case errors."""
    import argparse

    from parity.catalog import load_case
    from parity.errors import CaseError
    from parity.session import Session

    parser = argparse.ArgumentParser(prog="parity triage", description="find the first module whose export "
                                     "diverges from the eager model")
    parser.add_argument("case", help="a case name (looked up in --cases) or a path to a case file")
    parser.add_argument("--format", "-f", required=True, dest="fmt")
    parser.add_argument("--backend", "-b", default="cpu")
    parser.add_argument("--cases", default="cases", help="directory of case files (default: cases/)")
    parser.add_argument("--build", default="build/parity", help="build directory (default: build/parity)")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this file")
    parser.add_argument("--bundle", default=None, metavar="DIR",
                        help="write a repro bundle to file upstream into this empty or new directory: the smallest "
                             "artefact that shows the divergence, inputs, expected outputs, versions, README.txt and "
                             "a standalone repro.py")
    parser.add_argument("--model-explorer", default=None, metavar="FILE",
                        help="write each ONNX node's error as Google Model Explorer node data (JSON) to this file")
    parser.add_argument("--allow-external-paths", action="store_true",
                        help="let the case read files outside its directory of case files")
    parser.add_argument("--sensitivity", action="store_true",
                        help="for a reduced-precision format (onnx_int8, coreml_fp16, tflite_int8): each layer's SQNR "
                             "against fp32 "
                             "and the fewest layers to keep in fp32 to meet the case's accuracy gate, verified by "
                             "re-exporting with them kept in fp32")
    args = parser.parse_args(argv)
    if args.sensitivity:
        from parity.sensitivity import unsupported as no_route

        if no_route(args.fmt):
            print(f"error: {no_route(args.fmt)}")
            return 2
    path = Path(args.case)
    if not path.is_file():
        from parity.case.load import find_case_file

        path = find_case_file(args.cases, args.case)  # cases/canaries/<name>.yaml too
    try:
        cases_dir = Path(args.cases).resolve()
        root = cases_dir if path.resolve().is_relative_to(cases_dir) else path.parent
        case = load_case(path, root=root, allow_external=args.allow_external_paths)
    except CaseError as e:
        print(f"error: {e}")
        return 2
    if case.framework != "torch" and not args.sensitivity:  # sensitivity reads artefacts only: any framework
        print(f"error: {unsupported(case)}")
        return 2
    if args.fmt not in case.formats:
        print(f"error: {case.name} does not list format {args.fmt!r}; it lists: {', '.join(case.formats)}")
        return 2
    reason = load_runner_reason(args.fmt, args.backend)
    if reason:
        print(f"error: {reason}")
        return 2
    if args.bundle:
        from parity.bundle import BundleError, check_directory

        try:  # refused before the triage, which can take minutes
            check_directory(Path(args.bundle))
        except BundleError as e:
            print(f"error: {e}")
            return 2
    if args.sensitivity:
        from parity.sensitivity import cli

        return cli(case, args.fmt, args.backend, args.build, args.json)
    session = Session(args.build, "golden")
    run = session.case_run(case)
    report = triage(run, args.fmt, args.backend)
    print(report.table())
    failed = False
    if args.bundle or args.model_explorer:
        from parity.bundle import write_requested

        failed = write_requested(report, run, args.fmt, args.backend, args.bundle, args.model_explorer)
    session.close()
    if args.json:
        write(report, Path(args.json))
    return 2 if failed else 1 if report.first_divergence or report.export_error else 0


def unsupported(case) -> str:
    return (f"triage records submodule inputs with torch forward hooks and exports each submodule on its own: it "
            f"supports PyTorch models, and {case.name} is a {case.framework} model")


def load_runner_reason(fmt: str, backend: str) -> Optional[str]:
    from parity.case import load_object
    from parity.formats import FORMATS, missing_modules

    info = FORMATS.get(fmt)
    if info is None:
        return f"unknown format {fmt!r}; known: {', '.join(FORMATS)}"
    missing = missing_modules(info)
    if missing:
        return f"{fmt} needs {', '.join(missing)}: {info.install}"
    if backend not in info.backends:
        return f"{fmt} has no backend {backend!r}; it has: {', '.join(info.backends)}"
    return load_object(info.runner_for(backend)).unavailable_reason(backend)


if __name__ == "__main__":
    raise SystemExit(main())
