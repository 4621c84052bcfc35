"""A record as flat JUnit properties: `status`, `scaled_error`, `artefact.size_bytes`, `latency_ms.b1.p50`, ...

Only scalars become properties (lists such as shapes and indices, and the plot profiles, stay in
the JSON report); names are the dotted path inside the record's metrics, so they read the same as
the JSON. The failure message is not repeated: JUnit has it in the test's ``<failure>``.
"""

from __future__ import annotations

#: Record fields that become properties as they are (the rest of the record is `metrics`).
FIELDS = ("case", "format", "backend", "check", "status", "cause", "why", "fix", "duration_s", "xfail")
#: Keys never flattened: bulky or repeated elsewhere.
SKIP = ("profile", "tolerance", "path", "golden", "recorded_versions", "warnings", "name")


def flatten(record: dict) -> list[tuple[str, str]]:
    """[(name, value as text)] for the record's fields and every scalar metric."""
    props = [(k, _text(record[k])) for k in FIELDS if record.get(k) is not None]
    _walk(record.get("metrics") or {}, "", props)
    return props


def _walk(value, prefix: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in SKIP:
                continue
            _walk(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif value is None or isinstance(value, (list, tuple)):
        return
    else:
        out.append((prefix, _text(value)))


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def environment_properties(environment: dict) -> list[tuple[str, str]]:
    """Test-suite level properties: python, package versions, machine, CPU, GPUs."""
    if not environment:
        return []
    props = [("python", environment.get("python", {}).get("version", ""))]
    props += [(name, version) for name, version in (environment.get("packages") or {}).items()]
    plat = environment.get("platform") or {}
    props.append(("machine", f"{plat.get('system')} {plat.get('machine')} {plat.get('node')}"))
    cpu = environment.get("cpu") or {}
    props.append(("cpu", f"{cpu.get('model')} ({cpu.get('usable')} usable of {cpu.get('count')})"))
    props.append(("gpus", ", ".join(g.get("name", "") for g in environment.get("gpus") or []) or "none"))
    if environment.get("git"):
        props.append(("git.commit", str(environment["git"].get("commit"))))
    return props
