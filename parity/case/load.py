"""Loading case files: YAML, discovery, and error wording for a person editing YAML.

:func:`load_case` validates one file with the pydantic schema, checks its names against the
:class:`~parity.case.catalog.Catalog` it is handed and what it refers to
(:mod:`parity.case.references`), and returns a :class:`~parity.case.schema.Case`, or raises
:class:`~parity.errors.CaseError` with one line that names the file, the field and the fix.
"""

from __future__ import annotations

import difflib
import re
import typing
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from parity.case.catalog import Catalog
from parity.case.references import check_paths_inside, check_references, infer_framework
from parity.case.schema import IMPORT_PATH, Case
from parity.errors import CaseError


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


#: The most values a case file may expand to once YAML aliases are resolved (a real case has hundreds).
MAX_VALUES = 100_000


def _expanded_size(value: Any, limit: int = MAX_VALUES) -> int:
    """How many values `value` holds with every alias expanded, counting no further than `limit` + 1
    (so a billion-laughs file costs `limit` steps, not its exponential size)."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def load_case(path: str | Path, catalog: Catalog, root: Optional[str | Path] = None,
              allow_external: bool = False) -> Case:
    """Read, validate and check one case file. Raises CaseError naming file, field and fix.

    Every file the case reads must lie under `root` (default: the case file's directory) unless
    `allow_external`."""
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
    if _expanded_size(raw) > MAX_VALUES:
        raise CaseError(shown, "", f"the file expands to more than {MAX_VALUES} values (YAML anchors and aliases "
                        "nested in each other?); write the values out, or share less")
    raw = dict(raw)
    raw.setdefault("name", path.stem)
    if "path" in raw:
        raise CaseError(shown, "path", "unknown field 'path' (it is set by the loader); remove it")
    raw["path"] = str(path.resolve())
    if raw["name"] in (".", "..") or (isinstance(raw["name"], str) and set(raw["name"]) == {"."}):
        raise CaseError(shown, "name", f"case name {raw['name']!r} is not an identifier (it names a golden "
                        "directory); set 'name' to letters, digits, '_', '-' or '.'")
    model = raw.get("model")
    if isinstance(model, dict) and model.get("framework") is None and isinstance(model.get("factory"), str) \
            and IMPORT_PATH.match(model["factory"]):
        raw["model"] = {**model, "framework": infer_framework(model["factory"], [str(path.resolve().parent)])}
    try:
        case = Case.model_validate(raw)
    except ValidationError as e:
        field, problem = _describe_validation_error(e)
        raise CaseError(shown, field, problem) from None
    case = _with_catalog(case, shown, catalog)
    check_references(case, shown, catalog)
    if not allow_external:
        check_paths_inside(case, shown, Path(root) if root is not None else path.parent)
    return case


def _with_catalog(case: Case, shown: str, catalog: Catalog) -> Case:
    """Check every format, backend and check name against `catalog` and fill in the defaults."""
    updates: dict = {}
    if "shape_invariance" in case.checks and not case.sizes:  # listed by the user (defaults skip it)
        raise CaseError(shown, "checks", "shape_invariance runs the dynamic axes at their sizes, and this case "
                        "declares none; name one in an input's shape (shape: [seq]) with sizes: {seq: [8, 16]}, "
                        "or drop the check")
    if not case.formats:
        updates["formats"] = catalog.formats_for(case.framework, quantized=case.accuracy is not None)
    if not case.backends:
        updates["backends"] = catalog.default_backends
    if not case.checks:
        updates["checks"] = catalog.default_checks
    case = case.model_copy(update=updates)
    _names(shown, "formats", case.formats, catalog.formats, "format")
    _names(shown, "backends", case.backends, catalog.backends, "backend")
    _names(shown, "checks", case.checks, catalog.checks, "check")
    _names(shown, "export", list(case.export), catalog.formats, "format", keys=True)
    _names(shown, "tolerance.formats", list(case.tolerance.formats), catalog.formats, "format", keys=True)
    _names(shown, "tolerance.backends", list(case.tolerance.backends), catalog.backends, "backend", keys=True)
    _names(shown, "determinism.tolerance", list(case.determinism.tolerance), catalog.backends, "backend", keys=True)
    for check, formats in (case.xfail_checks or {}).items():
        _names(shown, "xfail_checks", [check], catalog.checks, "check", keys=True)
        if isinstance(formats, list):
            _names(shown, f"xfail_checks.{check}", formats, catalog.formats, "format")
    return case


def _names(shown: str, field: str, given: list[str], known: tuple[str, ...], what: str, keys: bool = False) -> None:
    for index, name in enumerate(given):
        if name not in known:
            where = f"{field}.{name}" if keys else f"{field}[{index}]"
            hint = difflib.get_close_matches(str(name), known, n=1)
            raise CaseError(shown, where, f"unknown {what} {name!r}; expected one of: "
                            f"{', '.join(repr(k) for k in known)}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _describe_validation_error(err: ValidationError) -> tuple[str, str]:
    """One (field, problem) from pydantic's first error, worded for a person editing YAML."""
    first = err.errors()[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal[", "constrained-")))]
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
    named = re.match(r"^([A-Za-z_][\w.\[\]-]*): (.+)$", msg, re.S)
    if named and named.group(1).split(".")[0].split("[")[0] in Case.model_fields:
        # a check across fields names its own field first ("inputs.ids.mask: ...")
        field = f"{field}.{named.group(1)}" if field else named.group(1)
        msg = named.group(2)
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
    """Case files under `directory`, its subdirectories included (``cases/canaries/...``), sorted by
    path: *.yaml and *.yml. Hidden subdirectories (a leading dot: .git, .tox) are skipped."""
    d = Path(directory)
    found = [p for p in (*d.rglob("*.yaml"), *d.rglob("*.yml"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts[:-1])]
    return sorted(found)


def find_case_file(directory: str | Path, name: str) -> Path:
    """The case file named `name` (its stem) under `directory` or one of its subdirectories, the
    top level first; `directory`/`name`.yaml when there is none (the loader then says it is missing)."""
    d = Path(directory)
    for path in sorted(discover(d), key=lambda p: (len(p.relative_to(d).parts), p)):
        if path.stem == name:
            return path
    return d / f"{name}.yaml"


def load_cases(directory: str | Path, catalog: Catalog,
               allow_external: bool = False) -> tuple[list[Case], list[CaseError]]:
    """Load every case in `directory`. Invalid files become errors; the valid ones still load. Files
    a case reads must lie under `directory` unless `allow_external`."""
    loaded: list[tuple[Path, Case]] = []
    errors: list[CaseError] = []
    for path in discover(directory):
        try:
            loaded.append((path, load_case(path, catalog, root=directory, allow_external=allow_external)))
        except CaseError as e:
            errors.append(e)
    files: dict[str, list[Path]] = {}
    for path, case in loaded:
        files.setdefault(case.name, []).append(path)
    cases = []
    for path, case in loaded:
        others = [_shown(p, directory) for p in files[case.name] if p != path]
        if others:  # neither is the right one: both are named, and neither runs
            errors.append(CaseError(str(path), "name", f"case name {case.name!r} is also the name of "
                                    f"{', '.join(others)}; names must be unique (each names a golden directory): "
                                    "rename one (its file, or its 'name' field)"))
        else:
            cases.append(case)
    return cases, sorted(errors, key=lambda e: e.path)


def _shown(path: Path, directory: str | Path) -> str:
    """`path` as a person finds it: relative to the cases directory (``canaries/x.yaml``)."""
    try:
        return str(path.relative_to(directory))
    except ValueError:
        return path.name
