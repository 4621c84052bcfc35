"""Exceptions raised by parity. Imports nothing heavy."""

from __future__ import annotations

import re
from typing import Optional


class ParityError(Exception):
    """Base class of every error parity raises on purpose."""


class CaseError(ParityError):
    """A case file is invalid. The message names the file, the field and the fix."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: {field}" if field else str(path)
        super().__init__(f"{where}: {problem}")


class ExportError(ParityError):
    """An exporter (ours or the user's) failed. The message is cut to the lines that matter.

    ``cause`` (a name of :mod:`parity.causes`) is ``unsupported`` where the failure is a known limit
    of the route rather than a converter bug."""

    def __init__(self, message: str, cause: Optional[str] = None, transient: bool = False) -> None:
        super().__init__(message)
        self.cause = cause or ("unsupported" if export_hint(message) else "export-failed")
        self.transient = transient  # a hang's timeout may depend on the machine's load: never cached


class RunnerError(ParityError):
    """The artefact exported, but a runner could not load or run it (a runtime's missing kernel,
    the MIL reference evaluator's missing op). Not an export failure: the message says which.
    ``cause``: ``unsupported`` for a documented missing kernel, else ``load-failed``."""

    def __init__(self, message: str, cause: str = "load-failed") -> None:
        super().__init__(message)
        self.cause = cause


class ReferenceFailed(ParityError):
    """The eager model raised on the case's inputs: nothing can be compared. Names the factory and the call."""


class BackendUnavailable(ParityError):
    """A runtime backend cannot run here; the message is the skip reason."""


class GoldenError(ParityError):
    """A golden file is missing, unreadable or was recorded for another input spec."""


#: Terminal colour and cursor sequences some converters print into their exception texts.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def strip_ansi(text: str) -> str:
    """Text without ANSI escape sequences: they belong to terminals, not to reports."""
    return _ANSI.sub("", text)


def short_error(exc: BaseException, lines: int = 8) -> str:
    """An exception cut to the lines that matter: its type and the start of its message."""
    text = strip_ansi(f"{type(exc).__name__}: {exc}".strip())
    kept = [line for line in text.splitlines() if line.strip()]
    cut = kept[:lines]
    if len(kept) > lines:
        cut.append(f"... ({len(kept) - lines} more lines)")
        if "failed in the TorchScript interpreter" in text:
            cut.append(kept[-1])  # the interpreter's own error comes last, after its traceback
    return "\n".join(cut)


#: What runtimes say when they have no kernel for an op (onnxruntime's NOT_IMPLEMENTED, for one).
_NO_KERNEL = re.compile(r"NOT_IMPLEMENTED|Could not find an implementation for|no kernel for", re.IGNORECASE)


def missing_kernel(exc: BaseException) -> bool:
    """Whether `exc` says a runtime or evaluator lacks a kernel (a documented limit, not a broken file)."""
    return isinstance(exc, NotImplementedError) or type(exc).__name__ == "NotImplemented" or \
        bool(_NO_KERNEL.search(str(exc)))


#: What exporters say when a model's control flow or shapes depend on its input values.
_DATA_DEPENDENT = re.compile(r"GuardOnDataDependentSymNode|data-dependent|data dependent|torchvision::nms|"
                             r"Could not extract specialized integer|nonzero|unbacked", re.IGNORECASE)


def export_hint(text: str) -> Optional[str]:
    """A plain statement of a known export limit recognised in an exporter's error text, or None."""
    if _DATA_DEPENDENT.search(text):
        nms = "NMS, " if "nms" in text.lower() else ""
        return (f"data-dependent control flow ({nms}a branch or shape that depends on input values): this route "
                "traces one static graph; export the part before it (the backbone and heads) or use a route that "
                "supports it")
    return None
