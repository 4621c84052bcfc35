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
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from parity.errors import CaseError
from parity.registry import BACKENDS, CHECKS, FORMATS

DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")

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

    factory: str = Field(description="'package.module:function' returning a torch.nn.Module")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    weights: Optional[str] = Field(
        default=None, description="state dict, .pt/.pth (loaded weights_only) or .safetensors; relative to the case file"
    )

    _check_factory = field_validator("factory")(classmethod(lambda cls, v: _import_path(v)))

    @field_validator("weights")
    @classmethod
    def _weights_suffix(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.endswith((".pt", ".pth", ".safetensors")):
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

    @field_validator("function")
    @classmethod
    def _function_path(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _import_path(v)

    @model_validator(mode="after")
    def _one_source(self) -> "ExportSpec":
        if self.function is not None and self.artefact is not None:
            raise ValueError("give 'function' or 'artefact', not both")
        return self


class Case(_Strict):
    """A validated case file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.]+$")
    description: str = ""
    model: ModelSpec
    inputs: dict[str, InputSpec] = Field(min_length=1)
    outputs: Optional[list[str]] = Field(default=None, min_length=1)
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 2], min_length=1)
    formats: list[FormatName] = Field(default_factory=lambda: list(FORMATS), min_length=1)  # type: ignore[valid-type]
    backends: list[BackendName] = Field(default_factory=lambda: list(BACKENDS), min_length=1)  # type: ignore[valid-type]
    checks: list[CheckName] = Field(default_factory=lambda: list(CHECKS), min_length=1)  # type: ignore[valid-type]
    tolerance: Tolerances = Field(default_factory=Tolerances)
    export: dict[FormatName, ExportSpec] = Field(default_factory=dict)  # type: ignore[valid-type]
    xfail: Optional[str] = Field(default=None, description="reason: every test of this case is expected to fail")

    # Set by the loader, not by the file.
    path: str = ""

    @field_validator("batch_sizes", "formats", "backends", "checks")
    @classmethod
    def _unique(cls, v: list) -> list:
        dupes = sorted({str(x) for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return v

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
        default_scale = DEFAULT_SCALES[FORMATS[fmt].precision] if fmt in FORMATS else DEFAULT_SCALE
        return ResolvedTolerance(
            atol=merged.get("atol", 0.0),
            rtol=merged.get("rtol", 0.0),
            scale=merged.get("scale", 0.0 if explicit else default_scale),
            allow_vacuous=merged.get("allow_vacuous", False),
        )

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


class ResolvedTolerance(BaseModel):
    """The tolerance that applies to one output of one target."""

    model_config = ConfigDict(frozen=True)
    atol: float
    rtol: float
    scale: float
    allow_vacuous: bool = False

    def describe(self) -> str:
        return f"atol={self.atol:g} rtol={self.rtol:g} scale={self.scale:g}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- loading


def load_case(path: str | Path) -> Case:
    """Read, validate and check one case file. Raises CaseError naming file, field and fix."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CaseError(shown, "", f"cannot read the file ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
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
    for fmt, export in case.export.items():
        if export.function is not None:
            _check_callable(export.function, search, shown, f"export.{fmt}.function")
        if export.artefact is not None and not case.resolve(export.artefact).exists():
            raise CaseError(shown, f"export.{fmt}.artefact", f"file not found: {case.resolve(export.artefact)}")
        known = FORMATS[fmt].exporter_options
        if export.function is None and export.artefact is None:
            unknown = sorted(set(export.options) - set(known))
            if unknown:
                raise CaseError(shown, f"export.{fmt}.options", f"unknown option {unknown[0]!r} for the built-in "
                                f"{fmt} exporter; it accepts: {', '.join(known) or 'none'}")
        if fmt not in case.formats:
            raise CaseError(shown, f"export.{fmt}", f"format {fmt!r} is configured but not listed in 'formats'")


def _check_callable(target: str, search: list[str], shown: str, field: str) -> None:
    """Check that 'module:function' exists without importing the module (no torch at load time)."""
    module_name, _, attr = target.partition(":")
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
    if found is None:
        raise CaseError(shown, field, f"cannot find module {module_name!r}; it must be importable (installed, "
                        f"or a .py file beside the case file)")
    origin = found.origin
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
