"""Example models for the shipped cases. Imports torch (only when a case builds one of them).

Random weights from the case's seed; BatchNorm running statistics are settled on random data so
that a model exported in training mode (batch statistics) visibly differs from eval mode.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def settle_batchnorm(model: nn.Module, sample_shape: tuple[int, ...], passes: int = 4, batch: int = 8) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics, then return the model in eval mode.

    Uses a cumulative average (momentum None) over `passes` forward passes in training mode on
    standard-normal data, so the statistics are the exact mean over the batches seen.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for _ in range(passes):
        model(torch.randn(batch, *sample_shape))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return model.eval()


class TinyCNN(nn.Module):
    """A small CNN: (Conv-BN-ReLU-MaxPool) x 2, dropout, linear."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16, size: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.dropout = nn.Dropout(0.25)
        self.classifier = nn.Linear(2 * width * (size // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.features(x), 1)))


def tiny_cnn(in_channels: int = 3, num_classes: int = 10, width: int = 16, size: int = 32,
             training: bool = False) -> nn.Module:
    """TinyCNN with settled BatchNorm statistics; ``training=True`` returns it left in training mode."""
    model = settle_batchnorm(TinyCNN(in_channels, num_classes, width, size), (in_channels, size, size))
    return model.train(training)


def torchvision_model(name: str, size: int = 64, num_classes: int = 1000) -> nn.Module:  # noqa: D103
    """A torchvision architecture with random weights (weights=None) and settled BatchNorm."""
    import torchvision

    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return settle_batchnorm(model, (3, size, size))


def resnet_with_training_block(size: int = 32, block: str = "layer2.0.bn1") -> nn.Module:
    """resnet18 in eval mode except one BatchNorm left in training mode (triage's planted bug)."""
    model = torchvision_model("resnet18", size=size, num_classes=10)
    model.get_submodule(block).train()
    return model


class DigitsCNN(nn.Module):
    """Small CNN with BatchNorm for 8x8 digits (the shipped INT8 case; weights trained by
    scripts/train_digits.py and committed as cases/weights/digits_cnn.safetensors)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(2 * width * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.features(x), 1)))


def digits_cnn(width: int = 16) -> nn.Module:
    """DigitsCNN in eval mode (load the trained weights through the case's model.weights)."""
    return DigitsCNN(width).eval()


class LayerZoo(nn.Module):
    """One of each common layer type, in a small image classifier.

    Depthwise-separable convolution, a dilated grouped convolution, max pooling and a strided
    convolution (down), a transposed convolution (kernel 4, stride 2) and a bilinear upsample
    followed by a 3x3 convolution (up), global average pooling, flatten and a linear layer.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.separable = nn.Sequential(
            nn.Conv2d(w, w, 3, padding=1, groups=w, bias=False), nn.BatchNorm2d(w), nn.ReLU6(),  # depthwise
            nn.Conv2d(w, 2 * w, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),  # pointwise
        )
        self.dilated = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=2, dilation=2, groups=2), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(self.down(self.dilated(self.separable(self.stem(x)))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def layer_zoo(in_channels: int = 3, num_classes: int = 10, width: int = 8, size: int = 32) -> nn.Module:
    """LayerZoo with settled BatchNorm statistics, in eval mode."""
    return settle_batchnorm(LayerZoo(in_channels, num_classes, width), (in_channels, size, size))
