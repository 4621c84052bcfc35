"""Lint of the PyTorch model handed to exporters: which modules are still in training mode."""

from __future__ import annotations

import inspect

import parity._triton_first  # noqa: F401
import torch
from torch import nn

from parity.findings import Finding

_DROPOUT = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


def lint_model(model: nn.Module) -> list[Finding]:
    """Every module in training mode whose forward behaves differently in training mode."""
    findings = []
    for path, module in model.named_modules():
        if not module.training:
            continue
        op = type(module).__name__
        where = path or "<root>"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            findings.append(Finding("batchnorm-training", where, op, where,
                                    "computes batch statistics at inference"))
        elif isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats:
            findings.append(Finding("batchnorm-training", where, op, where,
                                    "uses per-call statistics instead of running statistics"))
        elif isinstance(module, _DROPOUT):
            if module.p > 0:
                findings.append(Finding("dropout-training", where, op, where, f"drops {module.p:g} of activations at random"))
        elif isinstance(module, nn.RReLU) or _reads_training_flag(type(module)):
            findings.append(Finding("training-mode", where, op, where, "forward reads self.training"))
    return findings


def _reads_training_flag(cls: type) -> bool:
    if cls.__module__.startswith("torch.nn."):
        return False  # torch's own modules are classified above; the rest ignore the flag
    try:
        return "self.training" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def is_training(model: nn.Module) -> bool:
    return any(m.training for m in model.modules())


__all__ = ["lint_model", "is_training", "torch"]
