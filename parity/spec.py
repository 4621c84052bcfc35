"""Case files: the declarative description of what to export, run and compare.

A case is a YAML file under ``cases/``. :func:`load_case` validates one with pydantic and returns a
:class:`Case`, or raises :class:`~parity.errors.CaseError` with one line that names the file, the
field and what was expected. Loading imports neither torch nor any runtime: factories and export
functions are located with ``importlib.util.find_spec`` and ``ast``, not imported.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import json
import re
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError,
                      ValidationInfo, field_validator, model_validator)

from parity.errors import CaseError
from parity.registry import BACKENDS, CHECKS, FORMATS, FRAMEWORKS, OPT_IN_CHECKS, formats_for

DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")

FrameworkName = Literal[tuple(FRAMEWORKS)]  # type: ignore[valid-type]
FormatName = Literal[tuple(FORMATS)]  # type: ignore[valid-type]
BackendName = Literal[tuple(BACKENDS)]  # type: ignore[valid-type]
CheckName = Literal[tuple(CHECKS)]  # type: ignore[valid-type]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _import_path(value: str) -> str:
    if not _IMPORT_PATH.match(value):
        raise ValueError(f"expected an import path 'package.module:function', got {value!r}")
    return value


class ModelSpec(_Strict):
    """The model: an importable factory, its keyword arguments, a seed and optional weights."""

    factory: str = Field(description="'package.module:function' returning a torch.nn.Module or a keras.Model")
    framework: Optional[FrameworkName] = Field(  # type: ignore[valid-type]
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
    """One named model input. ``shape`` is per sample: the batch dimension is the harness's."""

    shape: Optional[list[PositiveInt]] = None
    dtype: Literal[DTYPES] = "float32"  # type: ignore[valid-type]
    distribution: Literal["normal", "uniform", "randint"] = "normal"
    mean: float = 0.0
    std: NonNegFloat = 1.0
    low: float = 0.0
    high: float = 1.0
    file: Optional[str] = Field(default=None, description=".npz file of samples, relative to the case file")
    key: Optional[str] = Field(default=None, description="array name inside `file` (default: the input's name)")

    @model_validator(mode="after")
    def _shape_or_file(self) -> "InputSpec":
        if self.file is None and self.shape is None:
            raise ValueError("give either 'shape' (per-sample, without the batch dimension) or 'file'")
        if self.file is not None and not self.file.endswith(".npz"):
            raise ValueError(f"'file' must be an .npz file, got {self.file!r}")
        if self.distribution in ("uniform", "randint") and self.high <= self.low:
            raise ValueError(f"'high' ({self.high}) must be greater than 'low' ({self.low})")
        return self


class Tolerance(_Strict):
    """Bound on |obtained - expected| per element: ``atol + rtol*|expected| + scale*max|expected|``.

    Every field left unset falls through to a less specific level, then to the default:
    ``scale=1e-4`` (error relative to the output's largest magnitude), ``atol=rtol=0``. A case that
    sets ``atol`` or ``rtol`` and no ``scale`` gets exactly the elementwise rule it wrote.
    """

    atol: Optional[NonNegFloat] = None
    rtol: Optional[NonNegFloat] = None
    scale: Optional[NonNegFloat] = None
    allow_vacuous: Optional[bool] = None
    drift_factor: Optional[Annotated[float, Field(ge=1)]] = Field(
        default=None, description="golden check: fail when the error vs the reference grows beyond this "
        "factor of the error recorded with the golden (default 10)")


class Tolerances(_Strict):
    """A default and overrides per format, per backend and per output name (most specific wins)."""

    default: Tolerance = Field(default_factory=Tolerance)
    formats: dict[FormatName, Tolerance] = Field(default_factory=dict)  # type: ignore[valid-type]
    backends: dict[BackendName, Tolerance] = Field(default_factory=dict)  # type: ignore[valid-type]
    outputs: dict[str, Tolerance] = Field(default_factory=dict)


class ExportSpec(_Strict):
    """How one format is produced: our exporter with options, the user's function, or a file."""

    options: dict[str, Any] = Field(default_factory=dict)
    function: Optional[str] = Field(
        default=None, description="'package.module:function' called as f(model, example_inputs, path, **options)"
    )
    artefact: Optional[str] = Field(default=None, description="prebuilt artefact, relative to the case file")
    isolate: Optional[bool] = Field(
        default=None, description="export in a child process, so a crash or hang fails only this format "
        "(default: the format's setting; on for converters that import TensorFlow or coremltools)")
    timeout_s: Annotated[float, Field(gt=0)] = Field(default=900.0, description="isolated exports are killed after this")

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
    tolerance: dict[BackendName, Tolerance] = Field(  # type: ignore[valid-type]
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


class Case(_Strict):
    """A validated case file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.]+$")
    description: str = ""
    model: ModelSpec
    inputs: dict[str, InputSpec] = Field(min_length=1)
    outputs: Optional[list[str]] = Field(default=None, min_length=1)
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 2], min_length=1)
    formats: list[FormatName] = Field(default=None, min_length=1,  # type: ignore[valid-type]
                                      description="default: every format the model's framework exports to")
    backends: list[BackendName] = Field(default_factory=lambda: list(BACKENDS), min_length=1)  # type: ignore[valid-type]
    checks: list[CheckName] = Field(default_factory=lambda: [c for c in CHECKS if c not in OPT_IN_CHECKS],  # type: ignore[valid-type]
                                    min_length=1)
    tolerance: Tolerances = Field(default_factory=Tolerances)
    export: dict[FormatName, ExportSpec] = Field(default_factory=dict)  # type: ignore[valid-type]
    accuracy: Optional[Accuracy] = Field(default=None, description="labelled evaluation data and INT8 gates")
    batch_invariance: Tolerance = Field(
        default_factory=Tolerance, description="tolerance of batch-size invariance (default scale 1e-4 for fp32)")
    determinism: Determinism = Field(default_factory=Determinism)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    xfail: Optional[str] = Field(default=None, description="reason: tests of this case are expected to fail")
    xfail_checks: Optional[dict[CheckName, Union[Literal["all"], list[FormatName]]]] = Field(  # type: ignore
        default=None, description="which (check: formats) are expected to fail; default: every test")

    # Set by the loader, not by the file.
    path: str = ""

    @field_validator("batch_sizes", "formats", "backends", "checks")
    @classmethod
    def _unique(cls, v: list) -> list:
        dupes = sorted({str(x) for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_formats(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("formats") is None:
            model = data.get("model")
            framework = (model.get("framework") if isinstance(model, dict) else None) or "torch"
            data = {**data, "formats": formats_for(framework if framework in FRAMEWORKS else "torch")}
        return data

    @model_validator(mode="after")
    def _xfail_reason(self) -> "Case":
        if self.xfail_checks is not None and not self.xfail:
            raise ValueError("'xfail_checks' needs 'xfail': the reason the failures are expected")
        return self

    @property
    def framework(self) -> str:
        """The model's source framework (the loader fills it in when the file leaves it out)."""
        return self.model.framework or "torch"

    @property
    def directory(self) -> Path:
        return Path(self.path).parent

    def resolve(self, relative: str) -> Path:
        """A path from the case file, made absolute against the case file's directory."""
        p = Path(relative)
        return p if p.is_absolute() else self.directory / p

    def tolerance_for(self, fmt: str, backend: str, output: str) -> "ResolvedTolerance":
        """Merge default <- format <- backend <- output, field by field."""
        levels = [self.tolerance.default, self.tolerance.formats.get(fmt), self.tolerance.backends.get(backend),
                  self.tolerance.outputs.get(output)]
        merged: dict[str, Any] = {}
        for level in levels:
            if level is not None:
                merged.update({k: v for k, v in level.model_dump().items() if v is not None})
        explicit = "atol" in merged or "rtol" in merged
        precision = FORMATS[fmt].precision if fmt in FORMATS else "fp32"
        default_scale = DEFAULT_SCALES[precision]
        return ResolvedTolerance(
            atol=merged.get("atol", 0.0),
            rtol=merged.get("rtol", 0.0),
            scale=merged.get("scale", 0.0 if explicit else default_scale),
            allow_vacuous=merged.get("allow_vacuous", False),
            drift_factor=merged.get("drift_factor", DEFAULT_DRIFT_FACTOR),
            drift_floor=DRIFT_FLOORS[precision],
        )

    def invariance_tolerance(self, fmt: str) -> "ResolvedTolerance":
        """Batch-size invariance: the case's `batch_invariance`, else a tight scale per precision."""
        set_ = {k: v for k, v in self.batch_invariance.model_dump().items() if v is not None}
        explicit = "atol" in set_ or "rtol" in set_
        precision = FORMATS[fmt].precision if fmt in FORMATS else "fp32"
        default = INVARIANCE_SCALES[precision]
        per_format = self.tolerance.formats.get(fmt)
        if per_format is not None and per_format.scale is not None:
            default = max(default, per_format.scale)  # a format the case declares noisier is noisier per batch too
        return ResolvedTolerance(atol=set_.get("atol", 0.0), rtol=set_.get("rtol", 0.0),
                                 scale=set_.get("scale", 0.0 if explicit else default),
                                 allow_vacuous=set_.get("allow_vacuous", False))

    def determinism_tolerance(self, backend: str) -> Optional["ResolvedTolerance"]:
        """None means bitwise identical (the default)."""
        tol = self.determinism.tolerance.get(backend)
        if tol is None:
            return None
        return ResolvedTolerance(atol=tol.atol or 0.0, rtol=tol.rtol or 0.0, scale=tol.scale or 0.0,
                                 allow_vacuous=True)

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
            "inputs": {k: v.model_dump() for k, v in self.inputs.items()},
            "batch_sizes": self.batch_sizes,
            "seed": self.model.seed,
        }
        for name, spec in self.inputs.items():
            if spec.file:
                payload["inputs"][name]["file_sha256"] = _sha256(self.resolve(spec.file))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


#: Default tolerance: error up to 1e-4 of the output's largest magnitude (fp32). mobilenet_v2 (depthwise
#: convolutions) exported to ONNX measured 1.4e-5 on this stack, so 1e-5 would flag a correct export;
#: a 1% change of one layer's weights gives 1e-3 and more. See README.
DEFAULT_SCALE = 1e-4
#: Default ``scale`` per artefact precision (``FormatInfo.precision``); int8 artefacts are judged mainly by
#: accuracy checks. fp16, measured on the shipped cases (coreml_fp16 on the MIL reference evaluator, error /
#: max|ref|): tiny_cnn 6.6e-4, layer_zoo 4.9e-4, resnet18 3.0e-3 (torch's own .half() gives 3.3e-3), so 5e-3
#: left resnet18 a margin of 1.7x; 1e-2 gives 3x and is still 1% of the output's largest value.
#: mobilenet_v2 (2.8e-2: BatchNorm variances down to 1.6e-5 amplify fp16 rounding) sets its own.
DEFAULT_SCALES = {"fp32": DEFAULT_SCALE, "fp16": 1e-2, "int8": 5e-2}
#: Batch-size invariance: the same sample alone and inside a batch should agree to float noise.
#: Not tighter than parity: mobilenet_v2 in TorchScript on CPU measured 1.1e-5 of max|output| between
#: batch 1 and batch 2 (oneDNN picks other kernels per batch size), while BatchNorm in training mode
#: moves outputs by 0.6 of max|output| and a batch-mean coupling by far more than 1e-4.
INVARIANCE_SCALES = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}
#: Learned drift thresholds: the golden check fails when a target's error against the reference
#: (relative to max|reference|) exceeds max(drift_factor x the error recorded with the golden, floor).
#: The floor, about 8 machine epsilons, keeps an exact recording (error 0) from failing on float noise.
DEFAULT_DRIFT_FACTOR = 10.0
DRIFT_FLOORS = {"fp32": 1e-6, "fp16": 8e-3, "int8": 5e-2}


class ResolvedTolerance(BaseModel):
    """The tolerance that applies to one output of one target."""

    model_config = ConfigDict(frozen=True)
    atol: float
    rtol: float
    scale: float
    allow_vacuous: bool = False
    drift_factor: float = DEFAULT_DRIFT_FACTOR
    drift_floor: float = 1e-6

    def describe(self) -> str:
        return f"atol={self.atol:g} rtol={self.rtol:g} scale={self.scale:g}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-5`` as a float (YAML 1.2), not as the string PyYAML's 1.1 rules give."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_case(path: str | Path) -> Case:
    """Read, validate and check one case file. Raises CaseError naming file, field and fix."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CaseError(shown, "", f"cannot read the file ({e.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise CaseError(shown, "", f"not valid YAML: {where}{problem}") from None
    if not isinstance(raw, dict):
        raise CaseError(shown, "", f"expected a mapping of case fields at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    raw.setdefault("name", path.stem)
    if "path" in raw:
        raise CaseError(shown, "path", "unknown field 'path' (it is set by the loader); remove it")
    raw["path"] = str(path.resolve())
    model = raw.get("model")
    if isinstance(model, dict) and model.get("framework") is None and isinstance(model.get("factory"), str) \
            and _IMPORT_PATH.match(model["factory"]):
        raw["model"] = {**model, "framework": infer_framework(model["factory"], [str(path.resolve().parent)])}
    try:
        case = Case.model_validate(raw)
    except ValidationError as e:
        field, problem = _describe_validation_error(e)
        raise CaseError(shown, field, problem) from None
    _check_references(case, shown)
    return case


def _check_references(case: Case, shown: str) -> None:
    """Things pydantic cannot see: files exist, factories are importable, shapes are consistent."""
    search = [str(case.directory)]
    _check_callable(case.model.factory, search, shown, "model.factory")
    for fmt in case.formats:
        if FORMATS[fmt].route(case.framework) is None:
            raise CaseError(shown, "formats", f"format {fmt!r} has no exporter for {case.framework} models; "
                            f"formats for {case.framework}: {', '.join(formats_for(case.framework))}")
    if case.model.weights is not None and not case.resolve(case.model.weights).is_file():
        raise CaseError(shown, "model.weights", f"file not found: {case.resolve(case.model.weights)}; "
                        "give a path relative to the case file")
    if case.outputs is not None and len(set(case.outputs)) != len(case.outputs):
        raise CaseError(shown, "outputs", "output names must be unique")
    for name, spec in case.inputs.items():
        if spec.file is None:
            continue
        field = f"inputs.{name}.file"
        data_path = case.resolve(spec.file)
        if not data_path.is_file():
            raise CaseError(shown, field, f"file not found: {data_path}; give a path relative to the case file")
        import numpy as np

        try:
            with np.load(data_path, allow_pickle=False) as data:
                key = spec.key or name
                if key not in data.files:
                    raise CaseError(shown, f"inputs.{name}.key", f"{data_path.name} has no array {key!r}; "
                                    f"it has: {', '.join(data.files)}")
                arr = data[key]
        except CaseError:
            raise
        except Exception as e:  # a corrupt or pickled file
            raise CaseError(shown, field, f"cannot read {data_path.name} as .npz without pickle: {e}") from None
        if arr.ndim < 1 or arr.shape[0] < max(case.batch_sizes):
            raise CaseError(shown, field, f"{data_path.name}[{key!r}] has {arr.shape[0] if arr.ndim else 0} "
                            f"samples, fewer than the largest batch size {max(case.batch_sizes)}")
        if spec.shape is not None and list(arr.shape[1:]) != list(spec.shape):
            raise CaseError(shown, f"inputs.{name}.shape", f"declared per-sample shape {list(spec.shape)} but "
                            f"{data_path.name}[{key!r}] holds samples of shape {list(arr.shape[1:])}")
    limits = case.latency.max_p50_ms
    if isinstance(limits, dict):
        unknown = sorted(set(limits) - set(case.batch_sizes))
        if unknown:
            raise CaseError(shown, "latency.max_p50_ms", f"batch size {unknown[0]} is not in batch_sizes "
                            f"{case.batch_sizes}; give limits for listed batch sizes only")
    if limits is not None and "latency" not in case.checks:
        raise CaseError(shown, "latency.max_p50_ms", f"a latency limit is set but 'latency' is not in checks "
                        f"{case.checks}; add it there, or the limit is never applied")
    for fmt, export in case.export.items():
        if export.function is not None:
            _check_callable(export.function, search, shown, f"export.{fmt}.function")
        if export.artefact is not None and not case.resolve(export.artefact).exists():
            raise CaseError(shown, f"export.{fmt}.artefact", f"file not found: {case.resolve(export.artefact)}")
        known = FORMATS[fmt].route(case.framework).exporter_options
        if export.function is None and export.artefact is None:
            unknown = sorted(set(export.options) - set(known))
            if unknown:
                raise CaseError(shown, f"export.{fmt}.options", f"unknown option {unknown[0]!r} for the built-in "
                                f"{fmt} exporter; it accepts: {', '.join(known) or 'none'}")
        if fmt not in case.formats:
            raise CaseError(shown, f"export.{fmt}", f"format {fmt!r} is configured but not listed in 'formats'")


#: Top-level modules whose import marks a factory module as Keras (else it is PyTorch).
_KERAS_MODULES = {"keras", "tensorflow", "tf_keras"}


def infer_framework(target: str, search: list[str]) -> str:
    """'keras' when the factory's module imports keras or tensorflow and not torch, else 'torch'.

    Read from the module's source (ast), never imported: loading a case imports no framework. The
    engine confirms the guess against what the factory returns; a case can name ``model.framework``.
    """
    origin = _module_origin(target.partition(":")[0], search)
    if not origin or not origin.endswith(".py"):
        return "torch"
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return "torch"
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    return "keras" if imported & _KERAS_MODULES and "torch" not in imported else "torch"


def _module_origin(module_name: str, search: list[str]) -> Optional[str]:
    """The file `module_name` would be imported from (with `search` on sys.path), without importing it."""
    added = [d for d in search if d not in sys.path]
    sys.path[:0] = added
    try:
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            found = None
    finally:
        for d in added:
            sys.path.remove(d)
    return None if found is None else (found.origin or "")


def _check_callable(target: str, search: list[str], shown: str, field: str) -> None:
    """Check that 'module:function' exists without importing the module (no torch at load time)."""
    module_name, _, attr = target.partition(":")
    origin = _module_origin(module_name, search)
    if origin is None:
        raise CaseError(shown, field, f"cannot find module {module_name!r}; it must be importable (installed, "
                        f"or a .py file beside the case file)")
    if origin and origin.endswith(".py"):
        try:
            tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
        except (OSError, SyntaxError) as e:
            raise CaseError(shown, field, f"cannot parse {origin}: {e}") from None
        names = _top_level_names(tree)
        if attr not in names:
            hint = difflib.get_close_matches(attr, names, n=1)
            raise CaseError(shown, field, f"module {module_name!r} defines no {attr!r}"
                            + (f"; did you mean {hint[0]!r}?" if hint else ""))


def _top_level_names(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.AnnAssign,)) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
    return names


def _describe_validation_error(err: ValidationError) -> tuple[str, str]:
    """One (field, problem) from pydantic's first error, worded for a person editing YAML."""
    first = err.errors()[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal[")))]
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    kind = first["type"]
    given = first.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(Case, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        problem = f"unknown field {loc[-1]!r}; expected one of: {', '.join(allowed)}"
        if hint:
            problem += f" (did you mean {hint[0]!r}?)"
        return field, problem
    if kind == "missing":
        return field, "required field is missing"
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "literal_error" and field.startswith(("tolerance.formats", "tolerance.backends", "export")):
        msg = f"unknown key: {msg}"
    shown_input = "" if isinstance(given, (dict, BaseModel)) or given is None else f" (got {given!r})"
    return field, f"{msg}{shown_input}"


def _allowed_fields(model: type[BaseModel], loc: list) -> list[str]:
    """The field names of the pydantic model found at `loc` inside `model`."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str) \
                and part in current.model_fields:
            current = current.model_fields[part].annotation
        current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [n for n in current.model_fields if n != "path"]
    return []


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X, dict[K, X] -> X, list[X] -> X (for walking nested models)."""
    while True:
        origin = typing.get_origin(tp)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if origin is None or not args:
            return tp
        tp = args[-1]


def discover(directory: str | Path) -> list[Path]:
    """Case files in `directory`, sorted: *.yaml and *.yml, not recursing into subdirectories."""
    d = Path(directory)
    return sorted([*d.glob("*.yaml"), *d.glob("*.yml")])


def load_cases(directory: str | Path) -> tuple[list[Case], list[CaseError]]:
    """Load every case in `directory`. Invalid files become errors; the valid ones still load."""
    cases: list[Case] = []
    errors: list[CaseError] = []
    seen: dict[str, str] = {}
    for path in discover(directory):
        try:
            case = load_case(path)
        except CaseError as e:
            errors.append(e)
            continue
        if case.name in seen:
            errors.append(CaseError(str(path), "name", f"case name {case.name!r} is already used by {seen[case.name]}; "
                                    "names must be unique (they name the golden directory)"))
            continue
        seen[case.name] = str(path)
        cases.append(case)
    return cases, errors
