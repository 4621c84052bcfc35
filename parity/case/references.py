"""What a case file refers to outside itself: files, factories, export functions, the framework.

Checked without importing the user's code (``importlib.util.find_spec`` and ``ast``), so loading a
case imports no framework; :func:`import_from_case` imports it when a stage needs it.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Optional

from parity.case.catalog import Catalog
from parity.case.schema import Case
from parity.errors import CaseError


def check_references(case: Case, shown: str, catalog: Catalog) -> None:
    """Things pydantic cannot see: files exist, factories are importable, shapes are consistent."""
    search = [str(case.directory)]
    _check_callable(case.model.factory, search, shown, "model.factory")
    for fmt in case.formats:
        if catalog.exporter_options(fmt, case.framework) is None:
            raise CaseError(shown, "formats", f"format {fmt!r} has no exporter for {case.framework} models; "
                            f"formats for {case.framework}: {', '.join(catalog.formats_for(case.framework))}")
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
    _check_input_size(case, shown)
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
        known = catalog.exporter_options(fmt, case.framework) or ()
        if export.function is None and export.artefact is None:
            unknown = sorted(set(export.options) - set(known))
            if unknown:
                raise CaseError(shown, f"export.{fmt}.options", f"unknown option {unknown[0]!r} for the built-in "
                                f"{fmt} exporter; it accepts: {', '.join(known) or 'none'}")
        if fmt not in case.formats:
            raise CaseError(shown, f"export.{fmt}", f"format {fmt!r} is configured but not listed in 'formats'")


#: The most memory a case's generated inputs may take at its largest batch and sizes.
MAX_INPUT_BYTES = 1 << 30


def _check_input_size(case: Case, shown: str) -> None:
    """Generated inputs are held in memory at once: refuse a case whose inputs could not be, before
    a MemoryError deep in the run."""
    import numpy as np

    variants = case.shape_variants() or [None]
    total = 0
    for name, spec in case.inputs.items():
        if spec.shape is None:
            continue
        elements = max(int(np.prod(case.sample_shape(name, v), dtype=np.float64)) for v in variants)
        total += elements * max(case.batch_sizes) * np.dtype(spec.dtype).itemsize
    if total > MAX_INPUT_BYTES:
        raise CaseError(shown, "batch_sizes", f"the inputs at batch {max(case.batch_sizes)} would take "
                        f"{total / 2**30:.1f} GiB (more than {MAX_INPUT_BYTES / 2**30:g} GiB); use smaller batch "
                        "sizes, per-sample shapes or sizes")


def case_paths(case: Case) -> list[tuple[str, str]]:
    """(field, path as written) of every file a case reads."""
    found = []
    if case.model.weights is not None:
        found.append(("model.weights", case.model.weights))
    found += [(f"inputs.{name}.file", spec.file) for name, spec in case.inputs.items() if spec.file is not None]
    found += [(f"export.{fmt}.artefact", e.artefact) for fmt, e in case.export.items() if e.artefact is not None]
    if case.accuracy is not None:
        for part in ("evaluation", "calibration"):
            source = getattr(case.accuracy, part)
            if source is not None and source.file is not None:
                found.append((f"accuracy.{part}.file", source.file))
    return found


def check_paths_inside(case: Case, shown: str, root: Path) -> None:
    """Every file the case reads resolves (links followed) inside `root`, the directory of case files."""
    root = root.resolve()
    for field, written in case_paths(case):
        target = case.resolve(written).resolve()
        if not target.is_relative_to(root):
            raise CaseError(shown, field, f"{written!r} resolves to {target}, outside the cases directory {root}; "
                            "keep the file under it, or pass --parity-allow-external-paths (parity run: "
                            "--allow-external-paths) to read files from anywhere")


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
        imported = _parse(origin)[1]
    except (OSError, SyntaxError, UnicodeDecodeError):
        return "torch"
    return "keras" if imported & _KERAS_MODULES and "torch" not in imported else "torch"


_PARSED: dict[tuple, tuple[ast.Module, frozenset]] = {}


def _parse(origin: str) -> tuple[ast.Module, frozenset]:
    """The module's syntax tree and the top-level packages it imports (absolute imports, anywhere in
    it), read once per version of the file: a hundred cases sharing a factory module parse it once."""
    stat = Path(origin).stat()
    key = (origin, stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        _PARSED[key] = (tree, frozenset(imported))
    return _PARSED[key]


def _module_origin(module_name: str, search: list[str]) -> Optional[str]:
    """The file `module_name` would be imported from (with `search` on sys.path), without importing it.

    A module file in `search` wins over one of the same name already imported (from another case
    directory): import_from_case loads the case's own. For a dotted name the packages on the way are
    not imported either (``importlib.util.find_spec('torchvision.models')`` would import torchvision,
    and with it torch: 3 s and 1 GiB for a case whose artefact is prebuilt); only where a package
    hides its submodules from the path finder (an import hook) is the parent imported after all."""
    top, _, rest = module_name.partition(".")
    spec = None
    try:
        spec = importlib.machinery.PathFinder.find_spec(top, search)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin in (None, "namespace"):  # a bare directory yields to a module anywhere
        added = [d for d in search if d not in sys.path]
        sys.path[:0] = added
        try:
            try:
                spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
            except (ImportError, ValueError):
                spec = None
        finally:
            for d in added:
                sys.path.remove(d)
    name = top
    for part in rest.split(".") if rest else []:
        name = f"{name}.{part}"
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        try:
            found = importlib.machinery.PathFinder.find_spec(name, locations) if locations else None
        except (ImportError, ValueError):
            found = None
        if found is None and spec is not None and locations:
            return _imported_origin(module_name, search)  # an import hook or a dynamic __path__
        spec = found
        if spec is None:
            return None
    return None if spec is None else (spec.origin or "")


def _imported_origin(module_name: str, search: list[str]) -> Optional[str]:
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


#: Directories of case files put on sys.path by import_from_case (their modules are not "installed").
_CASE_DIRS: set[Path] = set()


def _installed_elsewhere(top: str, directory: Path) -> Optional[str]:
    """Where `top` is importable from other than `directory` (a built-in, stdlib or installed
    module), or None."""
    if top in sys.builtin_module_names:
        return "built in"
    here = directory.resolve()
    case_dirs = {here, *_CASE_DIRS}
    loaded = sys.modules.get(top)
    namespace = loaded is not None and getattr(loaded, "__file__", None) is None and hasattr(loaded, "__path__")
    if loaded is not None and not namespace and getattr(loaded, "__parity_stamp__", None) is None:
        where = getattr(loaded, "__file__", None) or ""
        if not where or not Path(where).resolve().is_relative_to(here):
            return where or "already imported"
    path = [p for p in sys.path if p and Path(p).resolve() not in case_dirs]
    try:
        found = importlib.machinery.PathFinder.find_spec(top, path)
    except (ImportError, ValueError):
        found = None
    if found is None or found.origin in (None, "namespace"):
        return None  # a namespace package (a bare directory on sys.path) yields to a module file anyway
    return found.origin


def check_no_shadowing(target: str, directory: Path, shown: str, field: str) -> None:
    """A module beside the case file must not share its name with an installed one (``parity.py``,
    ``torch.py``): loading it would replace that package for every case of the session."""
    top = target.partition(":")[0].split(".")[0]
    local = next((p for p in (directory / f"{top}.py", directory / top / "__init__.py") if p.is_file()), None)
    if local is None:
        return
    elsewhere = _installed_elsewhere(top, directory)
    if elsewhere:
        raise CaseError(shown, field, f"{local} has the name of the installed module {top!r} ({elsewhere}); "
                        f"loading it would replace that module for every case: rename the file (and the "
                        f"'{top}:' in {field})")


def _check_callable(target: str, search: list[str], shown: str, field: str) -> None:
    """Check that 'module:function' exists without importing the module (no torch at load time)."""
    check_no_shadowing(target, Path(search[0]), shown, field)
    module_name, _, attr = target.partition(":")
    origin = _module_origin(module_name, search)
    if origin is None:
        raise CaseError(shown, field, f"cannot find module {module_name!r}; it must be importable (installed, "
                        f"or a .py file beside the case file)")
    if origin and origin.endswith(".py"):
        try:
            tree = _parse(origin)[0]
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


def import_from_case(case: Case, target: str):
    """Import 'module:attr', looking beside the case file too.

    A module beside the case file is (re)loaded from that file when the module of that name in
    sys.modules came from elsewhere or the file changed since, so two case directories with a
    models.py each, or an edited models.py, never get a stale module.
    """
    import parity._triton_first  # noqa: F401  (the user's module may import tensorflow)

    directory = str(case.directory)
    if directory not in sys.path:
        sys.path.append(directory)
    _CASE_DIRS.add(case.directory.resolve())
    top = target.partition(":")[0].split(".")[0]
    local = case.directory / f"{top}.py"
    if local.is_file():
        field = next((f"export.{fmt}.function" for fmt, e in case.export.items() if e.function == target),
                     "model.factory")
        check_no_shadowing(target, case.directory, case.path, field)
        # the content, not the mtime: two edits within one clock tick (or one second, for a .pyc)
        # keep the mtime and the size, and a persistent export worker would run the old code
        stamp = (str(local.resolve()), hashlib.sha256(local.read_bytes()).hexdigest())
        if getattr(sys.modules.get(top), "__parity_stamp__", None) != stamp:
            _load_file(top, local).__parity_stamp__ = stamp
    return load_object(target)


class _SourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the file as it is now: a ``__pycache__`` entry is validated by the source's mtime in
    whole seconds and its size, so an edit within the same second to a file of the same size would
    load the previous code."""

    def get_code(self, fullname):
        return compile(self.get_data(self.path), self.path, "exec", dont_inherit=True)


def _load_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path, loader=_SourceLoader(name, str(path)))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_object(path: str):
    """Import `package.module:attribute` and return the attribute."""
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
