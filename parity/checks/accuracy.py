"""accuracy: accuracy on the case's labelled data, against fp32 eager and the golden record."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from parity.checks.base import Check, CheckResult, Context
from parity.pipeline.run import CaseRun
from parity.checks.base import golden_versions, precision, update_command
from parity.formats import FORMATS


def _predict(run: CaseRun, inputs: dict[str, np.ndarray], infer) -> np.ndarray:
    """First output over the whole data set, in chunks of the case's largest batch size (the last
    chunk padded, so static-batch artefacts run too)."""
    chunk = max(run.case.batch_sizes)
    n = len(next(iter(inputs.values())))
    outs = []
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in inputs.items()}
        m = len(next(iter(part.values())))
        if m < chunk:
            part = {k: np.concatenate([v, np.repeat(v[-1:], chunk - m, axis=0)]) for k, v in part.items()}
        outs.append(np.asarray(infer(part))[:m])
    return np.concatenate(outs)


def _sqnr_db(reference: np.ndarray, obtained: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - obtained) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def reference_scores(run: CaseRun, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """fp32 eager's scores on the evaluation inputs, computed once per case: every target (and every
    candidate triage's sensitivity re-quantizes) is compared with the same scores."""
    if run.eval_reference is None:
        run.eval_reference = _predict(run, inputs, lambda feed: run.run_eager(feed)[run.output_names[0]])
    return run.eval_reference


def gate(acc, reference: np.ndarray, obtained: np.ndarray, labels: np.ndarray) -> tuple[dict, list[str]]:
    """(figures, problems) of the scores `obtained` against fp32 eager's `reference` and the
    `labels`, under the case's accuracy section `acc`: collapse, accuracy drop, top-1 agreement and
    SQNR. The golden drift is not part of it (it needs a recorded artefact)."""
    ref_pred, pred = reference.argmax(1), obtained.argmax(1)
    fp32_accuracy = 100.0 * float((ref_pred == labels).mean())
    accuracy = 100.0 * float((pred == labels).mean())
    agreement = float((pred == ref_pred).mean())
    classes = reference.shape[1]
    figures = {"accuracy": accuracy, "fp32_accuracy": fp32_accuracy, "accuracy_drop": fp32_accuracy - accuracy,
               "top1_agreement": agreement, "sqnr_db": _sqnr_db(reference, obtained),
               "max_abs": float(np.abs(reference.astype(np.float64) - obtained).max())}
    problems = []
    counts = np.bincount(pred, minlength=classes)
    top_share = float(counts.max() / len(pred))
    fp32_share = float((ref_pred == int(counts.argmax())).mean())  # an imbalanced data set is not a collapse
    if agreement < 2.0 / classes or (top_share > 0.9 and fp32_share < 0.5) or float(np.std(obtained)) == 0.0:
        problems.append(f"collapsed: top-1 agreement with fp32 {100 * agreement:.1f}% (chance {100 / classes:.1f}%), "
                        f"{100 * top_share:.0f}% of samples predicted as one class; outputs saturated or the "
                        f"calibration/scales are wrong")
    if figures["accuracy_drop"] > acc.max_accuracy_drop:
        problems.append(f"accuracy {accuracy:.2f}% is {figures['accuracy_drop']:.2f} points below fp32 eager "
                        f"{fp32_accuracy:.2f}% (max_accuracy_drop {acc.max_accuracy_drop:g})")
    if agreement < acc.min_top1_agreement:
        problems.append(f"top-1 agreement with fp32 eager {100 * agreement:.2f}% < min_top1_agreement "
                        f"{100 * acc.min_top1_agreement:.2f}%")
    if acc.min_sqnr_db is not None and figures["sqnr_db"] < acc.min_sqnr_db:
        problems.append(f"SQNR {figures['sqnr_db']:.1f} dB < min_sqnr_db {acc.min_sqnr_db:g}")
    return figures, problems


def check_accuracy(run: CaseRun, fmt: str, backend: str, session: "Context") -> CheckResult:
    """Accuracy on the case's labelled data, against fp32 eager and against the golden record.

    Gates: accuracy drop (points) vs the fp32 eager model, top-1 agreement with it, optional SQNR,
    collapse (near-chance agreement, one class predicted for nearly everything), and drift below
    the accuracy recorded with the golden by more than ``drift_margin`` points.
    """

    case, acc = run.case, run.case.accuracy
    inputs, labels = run.load_data(acc.evaluation)
    if labels is None:
        return CheckResult("error", f"{case.path}: accuracy.evaluation has no labels "
                           f"('{acc.evaluation.labels_key}' array); add them or remove the accuracy section",
                           cause="case-error", why=f"accuracy.evaluation has no '{acc.evaluation.labels_key}' array")
    reference = reference_scores(run, inputs)
    runner = run.runner(fmt, backend)
    obtained = _predict(run, inputs, lambda feed: runner.infer(feed)[0])
    figures, problems = gate(acc, reference, obtained, labels)
    accuracy, fp32_accuracy, agreement = figures["accuracy"], figures["fp32_accuracy"], figures["top1_agreement"]
    size = run.artefact(fmt).size_bytes
    base = FORMATS[fmt].fp32
    fp32_size = run.artefact(base).size_bytes if base else None
    metrics = {"runner": runner.name, "samples": int(len(labels)), **figures,
               "size_bytes": size, "fp32_size_bytes": fp32_size,
               "size_ratio": (size / fp32_size) if fp32_size else None, "precision": precision(fmt)}

    name = f"{fmt}-{backend}.accuracy.json"
    store = session.golden
    if session.update_golden:
        store.write_json(case.name, name, {"accuracy": accuracy, "fp32_accuracy": fp32_accuracy,
                                           "samples": int(len(labels)), "versions": golden_versions(),
                                           "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        metrics["golden_written"] = True
    else:
        golden = store.read_json(case.name, name)
        if golden is None:
            problems.append(f"no golden accuracy for {fmt}/{backend} ({store.path(case.name, name)}); record it with: "
                            f"{update_command(session, case.name, fmt, backend, check='accuracy')}")
        else:
            metrics["golden_accuracy"] = golden["accuracy"]
            if accuracy < golden["accuracy"] - acc.drift_margin:
                problems.append(f"quantization drift: accuracy {accuracy:.2f}% fell {golden['accuracy'] - accuracy:.2f} "
                                f"points below the golden {golden['accuracy']:.2f}% (drift_margin {acc.drift_margin:g})")
    summary = (f"{fmt}/{backend} on {len(labels)} labelled samples: accuracy {accuracy:.2f}% (fp32 eager "
               f"{fp32_accuracy:.2f}%, drop {metrics['accuracy_drop']:.2f} points), top-1 agreement "
               f"{100 * agreement:.2f}%, SQNR {metrics['sqnr_db']:.1f} dB, size {size / 1024:.0f} KiB"
               + (f" ({100 * metrics['size_ratio']:.0f}% of fp32 {base})" if fp32_size else ""))
    if problems:
        missing = all(p.startswith("no golden accuracy") for p in problems)
        return CheckResult("failed", "\n".join([summary, *[f"  {p}" for p in problems]]), metrics,
                           cause="no-golden" if missing else "accuracy", why=problems[0].split("; record it")[0])
    return CheckResult("passed", summary, metrics)


class AccuracyCheck(Check):
    name = "accuracy"
    order = 60
    config = "accuracy"

    def applies(self, case, fmt):
        return case.accuracy is not None  # no labelled data declared: nothing to measure

    def run(self, run, fmt, backend, session):
        return check_accuracy(run, fmt, backend, session)


CHECK = AccuracyCheck()
