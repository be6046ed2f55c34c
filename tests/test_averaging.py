"""Weight averaging's BatchNorm refresh (torch's update_bn): the running statistics become the
plain mean over the given training batches; frozen layers keep theirs; modes are restored."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from galmerge.training.averaging import recompute_batchnorm
from galmerge.training.models import DeepMerge


def _batches(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((6, 3, 75, 75)).astype(np.float32) * (k + 1) for k in range(n)]


def test_running_statistics_are_the_mean_over_batches() -> None:
    torch.manual_seed(0)
    model = DeepMerge()
    first_bn = model.conv[1]
    seen: list[torch.Tensor] = []
    hook = first_bn.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].detach()))
    batches = _batches(3)
    model.eval()
    recompute_batchnorm(model, batches, torch.device("cpu"))
    hook.remove()
    assert len(seen) == 3 and not model.training  # mode restored
    mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in seen]).mean(0)
    torch.testing.assert_close(first_bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first_bn.running_var, var, rtol=1e-4, atol=1e-6)
    assert int(first_bn.num_batches_tracked) == 3 and first_bn.momentum == 0.1


def test_frozen_layers_keep_their_statistics() -> None:
    torch.manual_seed(1)
    model = DeepMerge()
    with torch.no_grad():  # statistics a refresh would visibly change
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(7.0)
    frozen_bn = model.conv[1]
    before = frozen_bn.running_mean.clone()
    frozen = [nn.Sequential(model.conv[0], model.conv[1])]
    recompute_batchnorm(model, _batches(2), torch.device("cpu"), frozen=frozen)
    assert torch.equal(frozen_bn.running_mean, before)
    assert float(frozen_bn.running_var[0]) == 7.0
    assert not torch.allclose(model.conv[5].running_mean, torch.full((16,), 3.0))
    assert int(model.conv[5].num_batches_tracked) == 2
