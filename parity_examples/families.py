"""Example models of the families people ship: a BERT-style encoder, a ViT, MobileNetV3, an LSTM
tagger, a multi-head model returning a dict, and a detector. Imports torch (and transformers, timm or
torchvision for the factories that use them) only when a case builds one.

Every model has random weights from the case's seed and a small configuration, so the shipped
cases run in seconds on a CPU; nothing is downloaded. BatchNorm statistics are settled on random
data (see :func:`parity_examples.zoo.settle_batchnorm`).
"""

from __future__ import annotations

import torch
from torch import nn

from parity_examples.zoo import settle_batchnorm


def bert_classifier(vocab_size: int = 96, hidden: int = 32, layers: int = 2, heads: int = 2,
                    max_positions: int = 64, num_labels: int = 3) -> nn.Module:
    """transformers' ``BertForSequenceClassification`` from a small config (returns a ``ModelOutput``)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden,
                        max_position_embeddings=max_positions, num_labels=num_labels,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    return BertForSequenceClassification(config).eval()


def vit(size: int = 32, patch: int = 8, depth: int = 2, dim: int = 48, heads: int = 3,
        num_classes: int = 10) -> nn.Module:
    """A small timm VisionTransformer (class token, learned positions, pre-norm blocks, GELU)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=size, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                             mlp_ratio=2.0, num_classes=num_classes).eval()


def mobilenetv3(name: str = "mobilenetv3_small_050", size: int = 64, num_classes: int = 10,
                training_module: str | None = None) -> nn.Module:
    """A timm MobileNetV3 (in-place Hardswish, squeeze-excite), BatchNorm settled, in eval mode;
    ``training_module`` names one submodule left in training mode (a planted bug for triage)."""
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    model = settle_batchnorm(model, (3, size, size))
    if training_module:
        model.get_submodule(training_module).train()
    return model


class TwoHeads(nn.Module):
    """A small CNN trunk with two heads, returned as a dict: ``boxes`` (4 per sample) and
    ``class_logits`` (a detector's head layout, without the data-dependent post-processing)."""

    def __init__(self, num_classes: int = 5, width: int = 8) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.boxes = nn.Linear(2 * width, 4)
        self.classes = nn.Linear(2 * width, num_classes)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(image)
        return {"boxes": torch.sigmoid(self.boxes(features)), "class_logits": self.classes(features)}


def two_heads(num_classes: int = 5, width: int = 8, size: int = 32) -> nn.Module:
    """TwoHeads with settled BatchNorm, in eval mode."""
    return settle_batchnorm(TwoHeads(num_classes, width), (3, size, size))


class Tagger(nn.Module):
    """A sequence tagger: embedding, a bidirectional LSTM or GRU, a linear layer per token."""

    def __init__(self, vocab_size: int = 50, embed: int = 16, hidden: int = 16, tags: int = 5, cell: str = "lstm",
                 layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(embed, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


def tagger(vocab_size: int = 50, embed: int = 16, hidden: int = 16, tags: int = 5, cell: str = "lstm",
           layers: int = 1) -> nn.Module:
    """Tagger in eval mode."""
    return Tagger(vocab_size, embed, hidden, tags, cell, layers).eval()


def detector(size: int = 64, num_classes: int = 3) -> nn.Module:
    """torchvision's Faster R-CNN (MobileNetV3 FPN at 320) with random weights, in eval mode: its
    post-processing (NMS, a data-dependent number of boxes) is what export routes cannot trace."""
    import torchvision

    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes, min_size=size, max_size=size)
    return model.eval()
