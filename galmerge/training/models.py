"""Network architectures.

Every model maps (N, 3, 75, 75) images to 2 logits (column 1 = "merger") and
exposes :meth:`features` (the latent features the domain-adaptation losses
use) and :meth:`classify` (features -> logits), so that
``model(x) == model.classify(model.features(x))``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from galmerge.errors import GalmergeError


class DeepMerge(nn.Module):
    """DeepMerge as in DeepMerge II, Table A1 (PyTorch layer order of the paper's code).

    Conv(3->8, 5x5, pad 2)-BN-ReLU-MaxPool2, Conv(8->16, 3x3, pad 1)-BN-ReLU-MaxPool2,
    Conv(16->32, 3x3, pad 1)-BN-ReLU-MaxPool2, flatten (2592), Dense 64-ReLU-32-ReLU-2.
    174,626 trainable parameters (Table A1); no dropout (§3).
    """

    feature_dim = 32 * 9 * 9

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 8, kernel_size=5, stride=1, padding=2),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(8, 16, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, 32),
            nn.ReLU(inplace=True),
            nn.Linear(32, num_classes),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened conv features, (N, 2592)."""
        return torch.flatten(self.conv(x), 1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2) from features."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2)."""
        return self.classify(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"deepmerge": DeepMerge}


def register_architecture(name: str, cls: type[nn.Module]) -> None:
    """Make an architecture available to :func:`build_model` and checkpoints."""
    ARCHITECTURES[name] = cls


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiate an architecture by name."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise GalmergeError(
            f"unknown architecture {arch!r}", hint=f"use one of {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return cls(**kwargs)


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
