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


#: A converter saying it has no conversion for an op (coremltools: "Unsupported fx node
#: _native_batch_norm_legit_functional"; "PyTorch convert function for op 'x' not implemented"; onnx2tf:
#: "CastLike OP is not yet implemented.").
_NO_CONVERSION = re.compile(r"Unsupported fx node (\w+)|convert function for op '([\w.]+)' not implemented|"
                            r"(\w+) OP is not yet implemented")


def export_hint(text: str) -> Optional[str]:
    """A plain statement of a known export limit recognised in an exporter's error text, or None."""
    if _DATA_DEPENDENT.search(text):
        nms = "NMS, " if "nms" in text.lower() else ""
        return (f"data-dependent control flow ({nms}a branch or shape that depends on input values): this route "
                "traces one static graph; export the part before it (the backbone and heads) or use a route that "
                "supports it")
    found = _NO_CONVERSION.search(text)
    if found:
        op = found.group(1) or found.group(2) or found.group(3)
        training = " (a training-mode op: is the model in eval mode?)" if "functional" in op or "train" in op else ""
        return (f"the converter has no conversion for op {op}{training}: change the model there, or use another "
                "route to the format")
    return None


#: What says the machine, not the export, ran out of something (disk, memory), in an error's text.
_EXHAUSTED = re.compile(r"No space left on device|Disk quota exceeded|Cannot allocate memory|std::bad_alloc",
                        re.IGNORECASE)


def resource_exhausted(exc: BaseException) -> Optional[str]:
    """"no space left on device" or "out of memory" when `exc` (or an exception it came from) says the
    machine ran out of disk or memory: a failure that says nothing about the model or the converter, so
    it must never be cached as a known failure. None otherwise."""
    import errno

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return "out of memory"
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left on device"
        if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
            return "out of memory"
        found = _EXHAUSTED.search(str(exc))
        if found:
            return "out of memory" if "alloc" in found.group(0).lower() else "no space left on device"
        exc = exc.__cause__ or exc.__context__
    return None


def exhausted_export(exc: BaseException, fmt: str, where) -> Optional[ExportError]:
    """A transient ExportError, in one line naming what ran out and where the export wrote, when `exc`
    says the machine ran out of disk or memory (:func:`resource_exhausted`); else None."""
    what = resource_exhausted(exc)
    if what is None:
        return None
    said = short_error(exc, 1).rstrip(":")
    if what == "out of memory":
        return ExportError(f"the {fmt} export ran out of memory ({said}); free memory or run fewer exports at once, "
                           "then run again (a failure like this is never cached as a known failure)", transient=True)
    filename = getattr(exc, "filename", None)
    return ExportError(f"the {fmt} export failed: no space left on device writing "
                       f"{filename if filename else f'under {where}'} ({said}); free space there, then run again "
                       "(a failure like this is never cached as a known failure)", transient=True)
