"""Lint of a torch.export program: batch_norm with training=True, dropout on, random ops."""

from __future__ import annotations

from pathlib import Path

import parity._triton_first  # noqa: F401
from parity.findings import Finding

_RANDOM = ("rand", "randn", "rand_like", "randn_like", "bernoulli", "normal", "uniform", "randint", "multinomial",
           "rrelu")


def _module(node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else None


def lint(path: Path) -> list[Finding]:
    files = sorted(path.glob("b*.pt2")) if path.is_dir() else [path]
    findings: list[Finding] = []
    seen = set()
    for file in files[:1]:  # per-batch-size programs come from the same model in the same mode
        from parity.formats.pt2.runner import load_program

        program = load_program(file)
        for node in program.graph.nodes:
            if node.op != "call_function":
                continue
            op = str(node.target)
            name = getattr(node.target, "__name__", op)
            base = name.split(".")[0]
            args = node.args
            key = (op, node.name)
            if key in seen:
                continue
            seen.add(key)
            if base in ("batch_norm", "native_batch_norm") and len(args) > 5 and args[5] is True:
                findings.append(Finding("batchnorm-training", node.name, op, _module(node),
                                        "batch_norm(..., training=True): batch statistics at inference"))
            elif base in ("_native_batch_norm_legit_functional", "_native_batch_norm_legit") and \
                    len(args) > 5 and args[5] is True:
                findings.append(Finding("batchnorm-training", node.name, op, _module(node),
                                        "functional batch norm with training=True"))
            elif base in ("dropout", "native_dropout", "feature_dropout", "alpha_dropout") and \
                    len(args) > 2 and args[2] is not False:
                findings.append(Finding("dropout-training", node.name, op, _module(node), "dropout with train=True"))
            elif base in _RANDOM:
                findings.append(Finding("random-op", node.name, op, _module(node), "random number generator"))
    return findings
