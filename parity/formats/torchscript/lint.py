"""Lint of a saved TorchScript module: batch_norm / dropout nodes with training on, random ops."""

from __future__ import annotations

from pathlib import Path

import parity._triton_first  # noqa: F401
import torch

from parity.findings import Finding

_DROPOUTS = {"aten::dropout", "aten::dropout_", "aten::feature_dropout", "aten::alpha_dropout",
             "aten::feature_alpha_dropout"}
_RANDOM = {"aten::rand", "aten::rand_like", "aten::randn", "aten::randn_like", "aten::bernoulli",
           "aten::bernoulli_", "aten::normal", "aten::uniform_", "aten::randint", "aten::randint_like",
           "aten::multinomial", "aten::rrelu", "aten::rrelu_with_noise"}


def _flag(value, module) -> object:
    """A bool argument's value: a constant, or the module's `training` attribute (scripted modules)."""
    node = value.node()
    if node.kind() == "prim::Constant":
        return value.toIValue()
    if node.kind() == "prim::GetAttr" and node.s("name") == "training":
        return getattr(module, "training", None)
    return None  # computed at run time


def lint(path: Path) -> list[Finding]:
    """Walk each submodule's own graph, so every finding is attributed to its module path."""
    from parity.formats.torchscript.runner import load_module

    root = load_module(path, "cpu")
    findings = []
    for module_path, module in root.named_modules():
        try:
            graph = module.graph
        except (AttributeError, RuntimeError):  # no forward (packed quantized params, containers)
            continue
        where = module_path or "<root>"
        for node in graph.nodes():
            kind = node.kind()
            inputs = list(node.inputs())
            name = f"{where}:{kind}"
            if kind == "aten::batch_norm" and len(inputs) > 5 and _flag(inputs[5], module) is not False:
                findings.append(Finding("batchnorm-training", name, kind, where,
                                        "batch_norm(..., training=True): batch statistics at inference"))
            elif kind == "aten::instance_norm" and len(inputs) > 5 and _flag(inputs[5], module) is True \
                    and inputs[3].type().kind() != "NoneType":
                findings.append(Finding("batchnorm-training", name, kind, where, "instance_norm with use_input_stats"))
            elif kind in _DROPOUTS and len(inputs) > 2 and _flag(inputs[2], module) is not False:
                findings.append(Finding("dropout-training", name, kind, where, "dropout(..., train=True)"))
            elif kind in _RANDOM:
                findings.append(Finding("random-op", name, kind, where, "random number generator"))
        if _reads_training(graph) and getattr(module, "training", False):
            # Scripted modules branch on self.training at run time; the saved flag decides.
            original = getattr(module, "original_name", type(module).__name__)
            kind = "batchnorm-training" if "Norm" in original else \
                "dropout-training" if "Dropout" in original else "training-mode"
            if not any(f.module == where for f in findings):
                findings.append(Finding(kind, f"{where}:self.training", original, where,
                                        "scripted forward reads self.training, saved as True"))
    return findings


def _reads_training(graph) -> bool:
    return any(n.kind() == "prim::GetAttr" and n.s("name") == "training" for n in graph.nodes())
