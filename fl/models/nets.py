"""The model architectures: an MLP for digits, the classic MNIST CNN and a CIFAR-10 CNN.

No dropout or batch norm: a forward pass consumes no randomness and holds no
running statistics, so training replays exactly and every state entry is a
trainable float tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from fl.models.layers import Conv2d

__all__ = ["CifarCNN", "MLP", "MnistCNN"]


class MLP(nn.Module):
    def __init__(self, input_dim: int, hidden: list[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MnistCNN(nn.Module):
    """Two 5x5 conv + max-pool blocks and two dense layers (46,730 parameters by default)."""

    def __init__(
        self, in_channels: int, channels: list[int], hidden: int, num_classes: int, image_size: int
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = Conv2d(in_channels, c1, 5)
        self.conv2 = Conv2d(c1, c2, 5)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for two 5x5 conv blocks")
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class CifarCNN(nn.Module):
    """Three 3x3 conv + max-pool blocks and two dense layers (about 190k parameters)."""

    def __init__(self, channels: list[int], hidden: int, num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = 3
        for c in channels:
            blocks += [Conv2d(width, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width = c
        self.features = nn.Sequential(*blocks)
        side = 32 // (2 ** len(channels))
        if side < 1:
            raise ValueError("too many conv blocks for 32x32 images")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
