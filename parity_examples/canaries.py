"""Minimal models that reproduce real upstream bugs on the pinned stack (the canary cases).

Each is as small as the bug allows, with no weights: what it computes is defined by the operator
alone, so a failure can only come from the converter or the runtime named in its case file.
"""

from __future__ import annotations

import torch
from torch import nn


class NearestResize(nn.Module):
    """Nearest-neighbour upsampling of a length-26 signal to 64 samples (an upsampling factor whose
    coordinate lands exactly halfway for one output index)."""

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, size=self.size, mode="nearest")


def nearest_resize(size: int = 64) -> nn.Module:
    return NearestResize(size).eval()


class MaskedSoftmax(nn.Module):
    """Attention weights with padding masked the way Hugging Face models do it: masked scores set to
    ``torch.finfo(torch.float32).min``. A row whose keys are all masked gets uniform weights in eager
    (every score equals the same finite minimum)."""

    def forward(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(scores.masked_fill(mask == 0, torch.finfo(torch.float32).min), dim=-1)


def masked_softmax() -> nn.Module:
    return MaskedSoftmax().eval()


class LogSoftmax(nn.Module):
    """Log-probabilities of confident logits (gaps of tens between classes, as a trained classifier's)."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits, dim=-1)


def log_softmax() -> nn.Module:
    return LogSoftmax().eval()


class Variance(nn.Module):
    """The variance over the last axis with ``correction=2`` (divide by N - 2)."""

    def __init__(self, correction: int = 2) -> None:
        super().__init__()
        self.correction = correction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.var(x, dim=-1, correction=self.correction, keepdim=True)


def variance(correction: int = 2) -> nn.Module:
    return Variance(correction).eval()


class NearestDownsample(nn.Module):
    """Nearest-neighbour resize of an image to `size` (default: half of 8 x 8). PyTorch's ``nearest``
    takes source index ``floor(i * in / out)``: a 2x downsample keeps the even rows and columns."""

    def __init__(self, size: tuple[int, int] = (4, 4)) -> None:
        super().__init__()
        self.size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, size=self.size, mode="nearest")


def nearest_downsample(size: tuple[int, int] = (4, 4)) -> nn.Module:
    return NearestDownsample(size).eval()


class Log1p(nn.Module):
    """``log1p`` of small values (|x| ~ 1e-4, as in log-likelihoods of rare events), where
    ``log(1 + x)`` loses most of the digits of x to the rounding of 1 + x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log1p(x)


def log1p() -> nn.Module:
    return Log1p().eval()
