"""The case-file schema: pydantic models only (no YAML, no registry, no file system beyond hashing).

Names of formats, backends and checks are plain strings here: which exist is decided by the
registries, which the loader (:mod:`parity.case.load`) is handed through a
:class:`~parity.case.catalog.Catalog`, so this package imports none of them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationInfo,
                      field_validator, model_validator)

from parity.tolerance import Tolerance

DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
NonNegFloat = Annotated[float, Field(ge=0)]
#: The name of a dynamic axis (``seq``, ``height``): an identifier, shared by every input it appears in.
AxisName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
#: A whole number above zero, written as one: `true` or `2.0` is refused, not read as 1 or 2.
Count = Annotated[int, Field(gt=0, strict=True)]
#: Seconds an export may take in the worker before it is killed (export.<format>.timeout_s).
DEFAULT_TIMEOUT_S = 900.0
#: Largest batch size a case may list (its inputs are generated and held in memory at once).
MAX_BATCH = 4096
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _import_path(value: str) -> str:
    if not IMPORT_PATH.match(value):
        raise ValueError(f"expected an import path 'package.module:function', got {value!r}")
    return value


class ModelSpec(_Strict):
    """The model: an importable factory, its keyword arguments, a seed and optional weights."""

    factory: str = Field(description="'package.module:function' returning a torch.nn.Module or a keras.Model")
    framework: Optional[Literal["torch", "keras"]] = Field(
        default=None, description="torch or keras; default: inferred from what the factory's module imports "
        "(and confirmed against what the factory returns)")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    weights: Optional[str] = Field(
        default=None, description="torch: state dict, .pt/.pth (loaded weights_only) or .safetensors; keras: "
        ".weights.h5 (model.save_weights); relative to the case file"
    )

    _check_factory = field_validator("factory")(classmethod(lambda cls, v: _import_path(v)))

    @field_validator("weights")
    @classmethod
    def _weights_suffix(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v is None:
            return v
        if info.data.get("framework") == "keras":
            if not v.endswith(".weights.h5"):
                raise ValueError(f"a Keras model loads a .weights.h5 file (model.save_weights), got {v!r}")
        elif not v.endswith((".pt", ".pth", ".safetensors")):
            raise ValueError(f"expected a .pt, .pth or .safetensors file, got {v!r}")
        return v


class InputSpec(_Strict):
    """One named model input. ``shape`` is per sample: the batch dimension is the harness's.

    Generated inputs follow ``distribution``: ``normal`` (mean, std), ``uniform`` and ``randint``
    (in [low, high)), ``tokens`` (integer ids in [low, high), the vocabulary, with optional ``bos`` /
    ``eos`` ids and ``pad`` where the attention mask named by ``mask`` is zero), ``mask`` (an
    attention mask of ones, right-padded with zeros after the ``padding`` pattern) and ``edge``
    (normal values mixed with large magnitudes past fp16's exp overflow, exact ties, zeros and
    negatives). Everything is deterministic from the case's seed.
    """

    shape: Optional[list[Union[Count, AxisName]]] = Field(
        default=None, description="per-sample shape (no batch dimension); an entry may name a dynamic axis "
        "(`[seq]`), whose sizes the case's `sizes` lists (the first is the export size)")
    dynamic: dict[NonNegativeInt, AxisName] = Field(
        default_factory=dict, description="per-sample axis -> name of a dynamic axis, for an axis whose "
        "`shape` entry is a number (the export size): `{0: seq}`")
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    distribution: Literal["normal", "uniform", "randint", "tokens", "mask", "edge"] = "normal"
    mean: float = 0.0
    std: NonNegFloat = 1.0
    low: float = 0.0
    high: float = 1.0
    bos: Optional[NonNegativeInt] = Field(default=None, description="tokens: id at position 0 of every row ([CLS])")
    eos: Optional[NonNegativeInt] = Field(default=None, description="tokens: id at the last unpadded position ([SEP])")
    pad: NonNegativeInt = Field(default=0, description="tokens: id where the mask is zero")
    mask: Optional[str] = Field(default=None, description="tokens: the input holding this row's attention mask")
    padding: Literal["none", "right", "mixed"] = Field(
        default="mixed", description="mask: none (all ones); right (every row right-padded to a random length "
        ">= 1); mixed (the first row unpadded, the others right-padded)")
    empty_row: bool = Field(default=False, description="mask: the last sample is fully padded (all zeros), for "
                            "models that promise to handle it")
    large: PositiveFloat = Field(default=30.0, description="edge: magnitude of the large values (exp overflows "
                                 "fp16 past 11)")
    file: Optional[str] = Field(default=None, description=".npz file of samples, relative to the case file")
    key: Optional[str] = Field(default=None, description="array name inside `file` (default: the input's name)")

    @model_validator(mode="after")
    def _shape_or_file(self) -> "InputSpec":
        if self.file is None and self.shape is None:
            raise ValueError("give either 'shape' (per-sample, without the batch dimension) or 'file'")
        if self.file is not None and not self.file.endswith(".npz"):
            raise ValueError(f"'file' must be an .npz file, got {self.file!r}")
        if self.file is not None and (self.dynamic or self.axis_names()):
            raise ValueError("dynamic axes need generated inputs (their size changes); samples from 'file' have "
                             "one shape: drop 'dynamic' (and axis names in 'shape') or the file")
        if self.shape is not None:
            for axis, name in self.dynamic.items():
                if axis >= len(self.shape):
                    raise ValueError(f"'dynamic' names axis {axis} ({name}), but shape {self.shape} has per-sample "
                                     f"axes 0..{len(self.shape) - 1} (without the batch dimension)")
                if isinstance(self.shape[axis], str) and self.shape[axis] != name:
                    raise ValueError(f"'dynamic' calls axis {axis} {name!r}, 'shape' calls it {self.shape[axis]!r}; "
                                     "give one name")
        if self.distribution in ("uniform", "randint", "tokens") and self.high <= self.low:
            raise ValueError(f"'high' ({self.high}) must be greater than 'low' ({self.low})")
        if self.distribution == "tokens" and not self.dtype.startswith(("int", "uint")):
            raise ValueError(f"distribution tokens draws integer ids: set dtype to int64 (or int32), not {self.dtype}")
        if self.distribution == "tokens":
            for field in ("bos", "eos", "pad"):
                value = getattr(self, field)
                if value is not None and value >= self.high:
                    raise ValueError(f"'{field}' ({value}) must be a token id below 'high' ({self.high:g}, the "
                                     "vocabulary size)")
        elif self.mask is not None:
            raise ValueError(f"'mask' names the attention mask of token ids: it needs distribution: tokens, "
                             f"not {self.distribution}")
        return self

    def axis_names(self) -> dict[int, str]:
        """Per-sample axis -> dynamic axis name, from ``shape`` names and ``dynamic``."""
        named = {i: d for i, d in enumerate(self.shape or []) if isinstance(d, str)}
        return {**named, **self.dynamic}

    def sample_shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The per-sample shape with each dynamic axis at its size in `sizes` (else the shape's number)."""
        names = self.axis_names()
        return tuple(sizes[names[i]] if i in names and names[i] in sizes else int(d)
                     for i, d in enumerate(self.shape or []))


class Tolerances(_Strict):
    """A default and overrides per format, per backend and per output name (most specific wins)."""

    default: Tolerance = Field(default_factory=Tolerance)
    formats: dict[str, Tolerance] = Field(default_factory=dict)
    backends: dict[str, Tolerance] = Field(default_factory=dict)
    outputs: dict[str, Tolerance] = Field(default_factory=dict)


class ExportSpec(_Strict):
    """How one format is produced: our exporter with options, the user's function, or a file."""

    options: dict[str, Any] = Field(default_factory=dict)
    function: Optional[str] = Field(
        default=None, description="'package.module:function' called as f(model, example_inputs, path, **options)"
    )
    artefact: Optional[str] = Field(default=None, description="prebuilt artefact, relative to the case file")
    outputs: dict[str, str] = Field(
        default_factory=dict, description="prebuilt artefact: case output name -> the artefact's own output "
        "name, where they differ (outputs are matched by name, never silently by position)")
    isolate: Optional[bool] = Field(
        default=None, description="export in parity's export worker process, so a crash or hang fails only this "
        "format (default: on; false runs the export in the session's own process, e.g. to debug it)")
    timeout_s: Annotated[float, Field(gt=0)] = Field(default=DEFAULT_TIMEOUT_S, description="exports in the worker "
                                                     "are killed after this many seconds")

    @field_validator("function")
    @classmethod
    def _function_path(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _import_path(v)

    @model_validator(mode="after")
    def _one_source(self) -> "ExportSpec":
        if self.function is not None and self.artefact is not None:
            raise ValueError("give 'function' or 'artefact', not both")
        return self


class Determinism(_Strict):
    """Repeated runs: `runs` calls in one session and one in a fresh session must agree."""

    runs: Annotated[int, Field(ge=2)] = 3
    tolerance: dict[str, Tolerance] = Field(
        default_factory=dict, description="per backend known not to be bitwise deterministic (GPU reductions); "
        "default: bitwise identical")


class DataSource(_Strict):
    """Labelled or calibration data: a built-in source (``digits``) or an .npz file."""

    source: Optional[Literal["digits"]] = None
    split: Optional[Literal["train", "test", "calibration"]] = None
    file: Optional[str] = Field(default=None, description=".npz relative to the case file")
    inputs_key: str = "inputs"
    labels_key: str = "labels"
    samples: Optional[PositiveInt] = Field(default=None, description="use only the first N samples")

    @model_validator(mode="after")
    def _one(self) -> "DataSource":
        if (self.source is None) == (self.file is None):
            raise ValueError("give either 'source' (built-in: digits) or 'file' (.npz)")
        return self


class Accuracy(_Strict):
    """Accuracy on labelled data, and the gates quantized (and all other) targets must meet."""

    evaluation: DataSource
    calibration: Optional[DataSource] = Field(
        default=None, description="calibration data for INT8 exports (default: the source's 'calibration' "
        "split, disjoint from evaluation; else the case's generated inputs)")
    max_accuracy_drop: Annotated[float, Field(ge=0)] = Field(default=1.0, description="points below fp32 eager")
    min_top1_agreement: Annotated[float, Field(ge=0, le=1)] = 0.97
    min_sqnr_db: Optional[float] = None
    drift_margin: Annotated[float, Field(ge=0)] = Field(
        default=0.5, description="points the accuracy may fall below the one recorded with the golden")


class LatencySpec(_Strict):
    """How the latency check times each target, and an optional gate on the median.

    ``max_p50_ms`` is one limit for every batch size, or a mapping batch size -> limit; a
    batch size it does not name is reported, not gated.
    """

    warmup: NonNegativeInt = Field(default=10, description="untimed runs first (TorchScript optimises after ~5)")
    runs: PositiveInt = Field(default=20, description="timed runs per batch size")
    budget_s: PositiveFloat = Field(default=1.0, description="seconds each phase (warm-up, timed) may take per "
                                                             "batch size before it stops early (after >= 3 runs)")
    max_p50_ms: Optional[PositiveFloat | dict[PositiveInt, PositiveFloat]] = None

    def limit_for(self, batch_size: int) -> Optional[float]:
        if isinstance(self.max_p50_ms, dict):
            return self.max_p50_ms.get(batch_size)
        return self.max_p50_ms


#: An upstream thread: a web address, or ``owner/repository#number`` (a GitHub issue or pull request).
THREAD = re.compile(r"^(https?://\S+|[A-Za-z0-9][\w.-]*/[\w.-]+#\d+)$")


class Canary(_Strict):
    """A case that pins a real upstream bug as a strict expected failure: the thread that reports it,
    and the release that fixes it where one exists. When the pinned stack stops reproducing the bug
    the case passes, and the XPASS reads as the upstream fix having arrived (:meth:`arrived`)."""

    upstream: str = Field(description="the upstream thread: a web address, or 'owner/repository#number'")
    fixed_in: Optional[str] = Field(default=None, description="the release that carries the fix "
                                    "('coremltools 9.1'), where one exists; default: not fixed yet")

    @field_validator("upstream")
    @classmethod
    def _thread(cls, v: str) -> str:
        if not THREAD.match(v.strip()):
            raise ValueError(f"expected a web address (https://...) or 'owner/repository#number', got {v!r}")
        return v.strip()

    def arrived(self, path: str = "") -> str:
        """What an XPASS of this canary means, and what to do: one line."""
        fixed = f", fixed in {self.fixed_in}," if self.fixed_in else ""
        where = f" of {Path(path).name}" if path else ""
        return (f"upstream fix arrived: the bug of {self.upstream}{fixed} no longer reproduces on this stack; "
                f"remove the xfail{where} (and keep the case as a regression test, or delete it)")


class Case(_Strict):
    """A validated case file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", description="an identifier: it names the case's "
                      "golden directory (default: the file's stem)")
    description: str = ""
    model: ModelSpec
    inputs: dict[str, InputSpec] = Field(min_length=1)
    outputs: Optional[list[str]] = Field(default=None, min_length=1)
    batch_sizes: list[BatchSize] = Field(default_factory=lambda: [1, 2], min_length=1)
    sizes: dict[AxisName, Annotated[list[Count], Field(min_length=1)]] = Field(
        default_factory=dict, description="dynamic axis name -> the sizes shape invariance runs it at; the export "
        "size is the number in the inputs' `shape`, else the first listed here")
    # The names below are checked against the registries by the loader (parity.case.load), which fills
    # in the defaults: every format the framework exports to, every backend, every default check.
    formats: list[str] = Field(default_factory=list, description="default: every format the model's framework "
                               "exports to")
    backends: list[str] = Field(default_factory=list, description="default: every backend")
    checks: list[str] = Field(default_factory=list, description="default: every check that is not opt-in")
    tolerance: Tolerances = Field(default_factory=Tolerances)
    export: dict[str, ExportSpec] = Field(default_factory=dict)
    accuracy: Optional[Accuracy] = Field(default=None, description="labelled evaluation data and INT8 gates")
    batch_invariance: Tolerance = Field(
        default_factory=Tolerance, description="tolerance of batch-size invariance (default scale 1e-4 for fp32)")
    determinism: Determinism = Field(default_factory=Determinism)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    xfail: Optional[str] = Field(default=None, description="reason: tests of this case are expected to fail")
    xfail_checks: Optional[dict[str, Union[Literal["all"], list[str]]]] = Field(
        default=None, description="which (check: formats) are expected to fail; default: every test")
    canary: Optional[Canary] = Field(
        default=None, description="the case pins a real upstream bug (a strict xfail): {upstream: thread, "
        "fixed_in: release}; an XPASS then says the upstream fix arrived")

    # Set by the loader, not by the file.
    path: str = ""

    @field_validator("batch_sizes", "formats", "backends", "checks")
    @classmethod
    def _unique(cls, v: list) -> list:
        dupes = sorted({str(x) for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return v

    @field_validator("sizes")
    @classmethod
    def _unique_sizes(cls, v: dict) -> dict:
        for name, sizes in v.items():
            dupes = sorted({s for s in sizes if sizes.count(s) > 1})
            if dupes:
                raise ValueError(f"{name}: listed more than once: {', '.join(map(str, dupes))}")
        return v

    @model_validator(mode="after")
    def _dynamic_axes(self) -> "Case":
        declared: dict[str, list[str]] = {}
        export_sizes: dict[str, tuple[int, str]] = {}
        for name, spec in self.inputs.items():
            for axis, axis_name in spec.axis_names().items():
                declared.setdefault(axis_name, []).append(name)
                given = (spec.shape or [])[axis]
                if isinstance(given, int):
                    if axis_name in export_sizes and export_sizes[axis_name][0] != given:
                        other, where = export_sizes[axis_name]
                        raise ValueError(f"inputs.{name}.shape: axis {axis_name!r} has size {given} here but {other} "
                                         f"in inputs.{where}; an axis has one export size")
                    export_sizes.setdefault(axis_name, (given, name))
        for axis_name, users in declared.items():
            if axis_name not in self.sizes:
                raise ValueError(f"inputs.{users[0]}: dynamic axis {axis_name!r} has no sizes; add "
                                 f"sizes: {{{axis_name}: [...]}} (the sizes it is checked at)")
        for axis_name in self.sizes:
            if axis_name not in declared:
                raise ValueError(f"sizes.{axis_name}: no input has a dynamic axis named {axis_name!r} (declared: "
                                 f"{', '.join(sorted(declared)) or 'none'}); name it in an input's 'shape' or "
                                 "'dynamic', or drop it")
        return self

    @model_validator(mode="after")
    def _mask_references(self) -> "Case":
        for name, spec in self.inputs.items():
            if spec.mask is None:
                continue
            other = self.inputs.get(spec.mask)
            if other is None or other.distribution != "mask":
                masks = [n for n, s in self.inputs.items() if s.distribution == "mask"]
                raise ValueError(f"inputs.{name}.mask: {spec.mask!r} is not an input with distribution: mask "
                                 f"(those are: {', '.join(masks) or 'none'}); name one, or drop 'mask'")
            if other.sample_shape(self.export_sizes) != spec.sample_shape(self.export_sizes) or \
                    other.axis_names() != spec.axis_names():
                raise ValueError(f"inputs.{name}.mask: {spec.mask!r} has shape {other.shape}"
                                 f"{' dynamic ' + str(other.axis_names()) if other.axis_names() else ''}, {name} has "
                                 f"{spec.shape}{' dynamic ' + str(spec.axis_names()) if spec.axis_names() else ''}; "
                                 "a mask has one entry per token")
        return self

    @model_validator(mode="after")
    def _xfail_reason(self) -> "Case":
        if self.xfail_checks is not None and not self.xfail:
            raise ValueError("'xfail_checks' needs 'xfail': the reason the failures are expected")
        if self.canary is not None and not self.xfail:
            raise ValueError("canary: a canary is a strict expected failure: add 'xfail' with what goes wrong "
                             "upstream")
        return self

    @property
    def xfail_reason(self) -> Optional[str]:
        """The reason pytest shows for an expected failure (XFAIL, XPASS(strict)): `xfail`, and for a
        canary what a pass would mean."""
        if not self.xfail or self.canary is None:
            return self.xfail
        return f"{self.xfail} [canary; if this passes, the {self.canary.arrived(self.path)}]"

    @property
    def framework(self) -> str:
        """The model's source framework (the loader fills it in when the file leaves it out)."""
        return self.model.framework or "torch"

    @property
    def export_sizes(self) -> dict[str, int]:
        """Dynamic axis -> the size exporters trace at and every other check runs at."""
        found = {name: sizes[0] for name, sizes in self.sizes.items()}
        for spec in self.inputs.values():
            for axis, name in spec.axis_names().items():
                if isinstance((spec.shape or [])[axis], int):
                    found[name] = int(spec.shape[axis])
        return found

    def sample_shape(self, name: str, sizes: Optional[dict[str, int]] = None) -> tuple[int, ...]:
        """Input `name`'s per-sample shape at `sizes` (default: the export sizes)."""
        return self.inputs[name].sample_shape({**self.export_sizes, **(sizes or {})})

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Input name -> {full axis (batch is 0): dynamic axis name}, for exporters."""
        return {name: {axis + 1: axis_name for axis, axis_name in sorted(spec.axis_names().items())}
                for name, spec in self.inputs.items() if spec.axis_names()}

    def shape_variants(self) -> list[dict[str, int]]:
        """Every combination of the dynamic axes' sizes, the export sizes first; [] without dynamic axes."""
        if not self.sizes:
            return []
        import itertools

        names = list(self.sizes)
        export = self.export_sizes
        choices = [list(dict.fromkeys([export[n], *self.sizes[n]])) for n in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*choices)]

    @property
    def directory(self) -> Path:
        return Path(self.path).parent

    def resolve(self, relative: str) -> Path:
        """A path from the case file, made absolute against the case file's directory."""
        p = Path(relative)
        return p if p.is_absolute() else self.directory / p

    def tolerance_levels(self, fmt: str, backend: str, output: str) -> list[Optional[Tolerance]]:
        """The tolerance levels that apply to one output, least specific first (see parity.tolerance.resolve)."""
        return [self.tolerance.default, self.tolerance.formats.get(fmt), self.tolerance.backends.get(backend),
                self.tolerance.outputs.get(output)]

    def expects_failure(self, check: str, fmt: str) -> bool:
        """Whether (check, fmt) of this case is a declared expected failure."""
        if not self.xfail:
            return False
        if self.xfail_checks is None:
            return True
        formats = self.xfail_checks.get(check)
        return formats == "all" or (isinstance(formats, list) and fmt in formats)

    def input_fingerprint(self) -> str:
        """Hash of everything that determines the generated inputs (golden files record it)."""
        payload = {
            "inputs": {k: _fingerprinted(v, self.sample_shape(k) if v.shape is not None else None)
                       for k, v in self.inputs.items()},
            "batch_sizes": self.batch_sizes,
            "seed": self.model.seed,
        }
        for name, spec in self.inputs.items():
            if spec.file:
                payload["inputs"][name]["file_sha256"] = _sha256(self.resolve(spec.file))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


#: Generator fields added after goldens were first recorded: left out of the fingerprint while at
#: their defaults, so goldens of inputs that did not change stay valid.
_LATER_FIELDS = ("bos", "eos", "pad", "mask", "padding", "empty_row", "large")


def _fingerprinted(spec: InputSpec, shape: Optional[tuple[int, ...]]) -> dict:
    """What determines the inputs at the export sizes: the shape as numbers (a dynamic axis's other
    sizes do not change them, so adding sizes keeps goldens valid)."""
    data = spec.model_dump()
    data["shape"] = None if shape is None else list(shape)
    del data["dynamic"]
    for name in _LATER_FIELDS:
        if data[name] == InputSpec.model_fields[name].default:
            del data[name]
    return data


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
