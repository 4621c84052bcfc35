"""Who is wrong, the export or the runtime? A failing target's artefact evaluated by its format's
reference backends (:attr:`parity.formats.spec.FormatInfo.oracles`) on the same inputs.

- the reference evaluation agrees with eager: the file is right, so the runtime that disagreed is
  wrong (file it with the runtime);
- the same runtime with its graph optimisations off agrees, the optimised session does not: a graph
  optimisation is wrong (reproduce with optimisations off);
- the reference evaluation disagrees too: the file computes something else, so the export is wrong
  (file it with the converter).

Not a check of its own: the parity check consults it on a failure. Pure comparison over
:class:`~parity.pipeline.run.CaseRun` outputs; it imports no framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from parity.compare import compare_outputs
from parity.formats import FORMATS
from parity.pipeline.run import CaseRun

RUNTIME = "runtime"
OPTIMISATION = "optimisation"
EXPORT = "export"
UNKNOWN = "unknown"


@dataclass
class Blame:
    """The verdict (`runtime`, `optimisation`, `export` or `unknown`), one sentence of why, one of
    what to do, and what each reference backend gave."""

    verdict: str
    sentence: str
    fix: str
    oracles: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "sentence": self.sentence, "fix": self.fix, "oracles": self.oracles}


def _agrees(run: CaseRun, fmt: str, oracle: str, sizes: list[int]) -> dict:
    """How `oracle` does against eager on `sizes`, at the failing backend's tolerance for the format:
    {"agrees": bool, "worst": err/max|ref|, "runner": name} or {"error": message}."""
    try:
        worst, agrees = 0.0, True
        for size in sizes:
            rows = compare_outputs(run.reference(size), run.outputs(fmt, oracle, size),
                                   lambda name: run.tolerance_for(fmt, oracle, name))
            for c in rows:
                agrees = agrees and c.passed
                worst = max(worst, float(c.scaled_error))
        return {"agrees": agrees, "worst": worst, "runner": run.runner(fmt, oracle).name}
    except Exception as e:  # the reference cannot run this file (an op it lacks): no evidence either way
        text = str(e).strip().splitlines()
        return {"error": text[0][:300] if text else type(e).__name__}


def blame(run: CaseRun, fmt: str, backend: str, sizes: list[int]) -> Optional[Blame]:
    """The verdict for `fmt` failing on `backend` at batch `sizes`, from the format's reference
    backends other than `backend`; None when the format has none to consult here."""
    info = FORMATS[fmt]
    oracles = [(b, kind) for b, kind in info.oracles if b != backend]
    if not oracles:
        return None
    failing = run.runner(fmt, backend).name
    seen = {b: _agrees(run, fmt, b, sizes) for b, _ in oracles}
    kinds = dict(oracles)
    reference = next((b for b, kind in oracles if kind == "reference" and "error" not in seen[b]), None)
    unoptimised = next((b for b, kind in oracles if kind == "unoptimised" and "error" not in seen[b]), None)

    def figure(b: str) -> str:
        return f"{b}, {seen[b]['runner']}: err/max|ref| {seen[b]['worst']:.3g}"

    if unoptimised is not None and seen[unoptimised]["agrees"]:
        return Blame(OPTIMISATION,
                     f"only the optimised session differs: {figure(unoptimised)} agrees with eager, so a graph "
                     f"optimisation of {failing} is wrong",
                     f"reproduce with graph optimisations off ({unoptimised}: ORT_DISABLE_ALL) and file it with the "
                     "runtime; until then run with optimisations off or lower the level", seen)
    if reference is not None and seen[reference]["agrees"]:
        return Blame(RUNTIME,
                     f"the artefact's reference evaluation agrees with eager ({figure(reference)}): the runtime "
                     f"({failing}) is wrong",
                     f"file it with the runtime (the artefact is right: attach it and the inputs); until then run "
                     f"on {reference} or another backend", seen)
    if reference is not None:
        return Blame(EXPORT,
                     f"the reference evaluation disagrees too ({figure(reference)}): the export is wrong",
                     "file it with the converter (the artefact computes something else than the model); "
                     "`parity triage` finds the first module that diverges", seen)
    errors = "; ".join(f"{b} ({kinds[b]}): {seen[b]['error']}" for b, _ in oracles if "error" in seen[b])
    return Blame(UNKNOWN, f"no reference backend could evaluate the artefact: {errors}",
                 "compare with another format, or run `parity triage`", seen)
