"""Classifiers with the heads hospitals' models end in, in plain PyTorch (no timm, torchvision).

The same small backbone (64 px in, an 8×8 map of ``width * 2`` channels out) under
four heads, named and arranged as the libraries arrange them, so the converter's
hooks see the same module calls:

* ``resnet``: the map's global average → ``fc`` (pooling + linear: the exact CAM);
* ``timm_mobilenetv3``: ``global_pool`` (1×1 map) → ``conv_head`` (1×1 convolution)
  → ``act2`` (Hardswish) → ``flatten`` → ``classifier``;
* ``timm_efficientnet``: ``conv_head`` (1×1 on the full map) → ``bn2`` → ``act2``
  (SiLU) → ``global_pool`` → ``classifier`` (pooling + linear after the last map);
* ``torchvision_mobilenetv3``: ``avgpool`` → ``torch.flatten`` → ``classifier`` =
  Sequential(Linear, Hardswish, Dropout, Linear).
"""

from __future__ import annotations

import torch
from torch import nn


def backbone(channels: int, width: int) -> nn.Sequential:
    """Three stride-2 conv-BN-ReLU stages: [N, channels, 64, 64] → [N, 2 width, 8, 8]."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width * 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU(),
        nn.Conv2d(width * 2, width * 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
        nn.ReLU())


class ResNetStyle(nn.Module):
    """Global average pool + ``fc``."""

    def __init__(self, channels: int = 1, classes: int = 2, width: int = 16) -> None:
        super().__init__()
        self.features = backbone(channels, width)
        self.fc = nn.Linear(width * 2, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image → logits [N, classes]."""
        return self.fc(self.features(image).mean(dim=(2, 3)))


class TimmMobileNetV3Style(nn.Module):
    """timm's MobileNetV3 head: pool → ``conv_head`` 1×1 on the pooled map → hardswish."""

    def __init__(self, channels: int = 1, classes: int = 2, width: int = 16,
                 head: int = 64) -> None:
        super().__init__()
        self.features = backbone(channels, width)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(width * 2, head, 1, bias=True)
        self.act2 = nn.Hardswish()
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(head, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image → logits [N, classes]."""
        x = self.global_pool(self.features(image))
        return self.classifier(self.flatten(self.act2(self.conv_head(x))))


class TimmEfficientNetStyle(nn.Module):
    """timm's EfficientNet head: ``conv_head`` 1×1 on the full map → bn → SiLU → pool."""

    def __init__(self, channels: int = 1, classes: int = 2, width: int = 16,
                 head: int = 64) -> None:
        super().__init__()
        self.features = backbone(channels, width)
        self.conv_head = nn.Conv2d(width * 2, head, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(head)
        self.act2 = nn.SiLU()
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(head, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image → logits [N, classes]."""
        x = self.act2(self.bn2(self.conv_head(self.features(image))))
        return self.classifier(self.global_pool(x))


class TorchvisionMobileNetV3Style(nn.Module):
    """torchvision's MobileNetV3 head: avgpool → flatten → Linear, Hardswish, Dropout, Linear."""

    def __init__(self, channels: int = 1, classes: int = 2, width: int = 16,
                 head: int = 64) -> None:
        super().__init__()
        self.features = backbone(channels, width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(width * 2, head), nn.Hardswish(),
                                        nn.Dropout(0.2), nn.Linear(head, classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image → logits [N, classes]."""
        return self.classifier(torch.flatten(self.avgpool(self.features(image)), 1))


STYLES = {"resnet": ResNetStyle, "timm_mobilenetv3": TimmMobileNetV3Style,
          "timm_efficientnet": TimmEfficientNetStyle,
          "torchvision_mobilenetv3": TorchvisionMobileNetV3Style}


def timm_mobilenetv3(channels: int = 1, classes: int = 2) -> TimmMobileNetV3Style:
    """Factory (``tests.conversion.head_models:timm_mobilenetv3``)."""
    return TimmMobileNetV3Style(channels, classes)
