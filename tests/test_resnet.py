"""ResNet18 for 3x75x75 inputs (plain torch)."""

from __future__ import annotations

import torch

from galmerge.training.models import (
    ARCHITECTURES,
    DeepMerge,
    ResNet18,
    build_model,
    count_trainable_parameters,
)


def test_resnet18_parameter_counts() -> None:
    # torchvision's resnet18 backbone has 11,176,512 parameters; + a 512->2 head
    assert count_trainable_parameters(ResNet18()) == 11_176_512 + 512 * 2 + 2
    # the paper code's ResNetFc: + Linear(512->256) bottleneck, head 256->2
    assert count_trainable_parameters(ResNet18(bottleneck_dim=256)) == \
        11_176_512 + 512 * 256 + 256 + 256 * 2 + 2


def test_resnet18_features_classify_split_and_dropout() -> None:
    torch.manual_seed(0)
    m = ResNet18(dropout=0.6)
    x = torch.randn(3, 3, 75, 75)
    m.eval()
    f = m.features(x)
    assert f.shape == (3, 512) and m.feature_dim == 512
    torch.testing.assert_close(m(x), m.classify(f))
    m.train()
    a, b = m.classify(f), m.classify(f)
    assert not torch.equal(a, b)  # dropout active before the head in training mode


def test_registry_and_conv_modules() -> None:
    assert set(ARCHITECTURES) >= {"deepmerge", "resnet18"}
    assert isinstance(build_model("resnet18", dropout=0.6), ResNet18)
    for model in (DeepMerge(), ResNet18()):
        conv = model.conv_modules()
        n_conv = sum(p.numel() for mod in conv for p in mod.parameters())
        assert 0 < n_conv < count_trainable_parameters(model)
