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

__all__ = [
    "ARCHITECTURES",
    "DeepMerge",
    "FeatureClassifier",
    "ResNet18",
    "build_feature_model",
    "build_model",
    "count_trainable_parameters",
    "register_architecture",
]


class FeatureClassifier(nn.Module):
    """Interface of every architecture: ``forward(x) == classify(features(x))``."""

    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Latent features (N, feature_dim) used by the domain-adaptation losses."""
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Logits (N, 2) from features; column 1 = merger."""
        raise NotImplementedError

    def conv_modules(self) -> list[nn.Module]:  # pragma: no cover - interface
        """The convolutional + BatchNorm part (frozen by ``--freeze conv``)."""
        raise NotImplementedError


class DeepMerge(FeatureClassifier):
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


    def conv_modules(self) -> list[nn.Module]:
        """The convolutional + BatchNorm part (frozen by ``--freeze conv``)."""
        return [self.conv]


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity or 1x1-conv shortcut (He et al. 2015)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(FeatureClassifier):
    """ResNet18 (He et al. 2015) for 3x75x75 inputs, in plain torch.

    The standard ImageNet layout (7x7/2 stem, 3x3/2 max-pool, four stages of two
    basic blocks with 64/128/256/512 channels, global average pooling), as
    torchvision's ``resnet18`` that the paper's code uses (randomly initialised,
    ``pretrained=False``). A 75x75 input gives 3x3 maps after the last stage.

    ``features(x)`` is the pooled 512-d vector (or, with ``bottleneck_dim > 0``,
    a linear bottleneck as in the paper's code ``ResNetFc``, which used 256);
    ``classify`` applies ``dropout`` (Table A2: 0.6) and a linear layer to 2 logits.

    Trainable parameters: 11,177,538 without bottleneck; 11,308,354 with the
    256-d bottleneck. The paper quotes 22,484,866 for its ResNet18 (§3), about
    twice either number; torchvision's ResNet18 backbone has 11,176,512, so the
    quoted figure cannot be a plain ResNet18 count.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, dropout: float = 0.0,
                 bottleneck_dim: int = 0) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        in_ch = 64
        for i, ch in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(_BasicBlock(in_ch, ch, stride), _BasicBlock(ch, ch, 1)))
            in_ch = ch
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bottleneck: nn.Module
        if bottleneck_dim > 0:
            self.bottleneck = nn.Linear(512, bottleneck_dim)
            self.feature_dim = bottleneck_dim
        else:
            self.bottleneck = nn.Identity()
            self.feature_dim = 512
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, (N, feature_dim)."""
        h = self.pool(self.layers(self.stem(x)))
        return self.bottleneck(torch.flatten(h, 1))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2) from features (dropout first, when set)."""
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2)."""
        return self.classify(self.features(x))

    def conv_modules(self) -> list[nn.Module]:
        """The convolutional + BatchNorm part (frozen by ``--freeze conv``)."""
        return [self.stem, self.layers]


ARCHITECTURES: dict[str, type[nn.Module]] = {"deepmerge": DeepMerge, "resnet18": ResNet18}


def build_feature_model(arch: str, **kwargs: Any) -> FeatureClassifier:
    """:func:`build_model`, checked to expose ``features``/``classify`` (for training)."""
    model = build_model(arch, **kwargs)
    if not isinstance(model, FeatureClassifier):
        raise GalmergeError(f"architecture {arch!r} has no features()/classify() split",
                            hint="derive it from galmerge.training.models.FeatureClassifier")
    return model


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
