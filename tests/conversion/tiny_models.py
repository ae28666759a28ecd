"""Small models and a shapes dataset for the converter tests (not shipped on the box).

``TinyClassifier`` and ``SmallResNet`` are architectures the project does not
ship; ``shapes_dataset`` draws images whose class is visible (blank, disc,
bar), so a few seconds of training give a model whose AUC means something and
whose INT8 copy can be held to the fidelity gate.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TinyClassifier(nn.Module):
    """Three conv-BN-ReLU stages, global average pool, a linear layer: logits [N, classes]."""

    def __init__(self, channels: int = 1, classes: int = 1, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width * 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
            nn.ReLU(),
            nn.Conv2d(width * 2, width * 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
            nn.ReLU())
        self.head = nn.Linear(width * 2, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image [N, C, H, W] → logits [N, classes]."""
        return self.head(self.features(image).mean(dim=(2, 3)))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class SmallResNet(nn.Module):
    """A small residual network (stem, three residual stages, GAP, linear)."""

    def __init__(self, channels: int = 3, classes: int = 3, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.stages = nn.Sequential(_Block(width, width, 2), _Block(width, width * 2, 2),
                                    _Block(width * 2, width * 4, 2))
        self.fc = nn.Linear(width * 4, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image [N, C, H, W] → class logits [N, classes]."""
        return self.fc(self.stages(self.stem(image)).mean(dim=(2, 3)))


def tiny_classifier(channels: int = 1, classes: int = 1) -> TinyClassifier:
    """Factory (``tests.conversion.tiny_models:tiny_classifier``)."""
    return TinyClassifier(channels, classes)


def small_resnet(channels: int = 3, classes: int = 3, width: int = 16) -> SmallResNet:
    """Factory (``tests.conversion.tiny_models:small_resnet``)."""
    return SmallResNet(channels, classes, width)


def shapes_dataset(count: int, size: int, classes: int = 2, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Grey images [N, size, size] in [0, 1] and labels [N]: 0 blank, 1 disc, 2 bar.

    Positions, sizes, brightness and noise vary; with ``classes == 2`` only
    blank and disc are drawn.
    """
    images, labels, _ = shapes_with_masks(count, size, classes, seed)
    return images, labels


def shapes_with_masks(count: int, size: int, classes: int = 2, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`shapes_dataset` with the true mask of each shape [N, size, size] (bool)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((count, size, size), np.float32)
    masks = np.zeros((count, size, size), bool)
    labels = rng.integers(0, classes, count)
    for i, label in enumerate(labels):
        img = 0.25 + 0.1 * rng.standard_normal((size, size))
        cx, cy = rng.uniform(0.25, 0.75, 2)
        r = rng.uniform(0.08, 0.2)
        contrast = rng.uniform(0.25, 0.6)
        if label == 1:
            masks[i] = ((xx - cx) ** 2 + (yy - cy) ** 2) < r**2
        elif label == 2:
            masks[i] = (np.abs(xx - cx) < r * 1.5) & (np.abs(yy - cy) < r * 0.3)
        img += contrast * masks[i]
        images[i] = np.clip(img, 0.0, 1.0)
    return images, labels.astype(np.int64), masks


def as_input(images: np.ndarray, channels: int, mean: float = 0.3, std: float = 0.2
             ) -> np.ndarray:
    """Grey [N, H, W] → normalised float32 [N, C, H, W] (grey repeated over C)."""
    x = ((images - mean) / std)[:, None].astype(np.float32)
    return np.repeat(x, channels, axis=1)


def train_quickly(model: nn.Module, x: np.ndarray, labels: np.ndarray, epochs: int = 4,
                  sigmoid: bool = False, seed: int = 0) -> nn.Module:
    """A few epochs of Adam so the model's scores mean something; returns it in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    loss_fn = nn.BCEWithLogitsLoss() if sigmoid else nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            out = model(xt[idx])
            target = yt[idx].float()[:, None] if sigmoid else yt[idx]
            loss = loss_fn(out, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
