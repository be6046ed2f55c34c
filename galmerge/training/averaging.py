"""Stochastic weight averaging (Izmailov et al. 2018) and the BatchNorm refresh it needs.

The average is an equal-weight mean of end-of-epoch parameters, summed in float64
(:class:`WeightAverage`). ``torch.optim.swa_utils.AveragedModel`` keeps a running
mean instead, in float32 (or with a float32 weight in float64): after 15 epochs of a
DeepMerge it differs from the float64 mean in the last bit of about 1 parameter in
600, so trained models would no longer reproduce their numbers; it is therefore not
used here. The BatchNorm refresh is torch's own ``update_bn``, given a view of the
model whose forward is the feature pass and whose only modules are the BatchNorm
layers that train (``--freeze conv`` layers keep their statistics).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from galmerge.training.data import DomainSplit, InfiniteSampler, augment_batch
from galmerge.training.models import FeatureClassifier

__all__ = ["WeightAverage", "mixed_batches", "recompute_batchnorm"]


class WeightAverage:
    """Running equal-weight average of a model's parameters (SWA, Izmailov et al. 2018).

    Only parameters are averaged; BatchNorm running statistics of the average
    must be recomputed (:func:`recompute_batchnorm`), since averaged weights
    change every layer's activations.
    """

    def __init__(self, model: nn.Module) -> None:
        self.count = 0
        self._sum = {n: torch.zeros_like(p, dtype=torch.float64)
                     for n, p in model.named_parameters()}

    @torch.no_grad()
    def add(self, model: nn.Module) -> None:
        """Add the model's current parameters to the average."""
        for n, p in model.named_parameters():
            self._sum[n] += p.detach().double()
        self.count += 1

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Overwrite the model's parameters with the average."""
        if not self.count:
            raise ValueError("no weights were added to the average")
        for n, p in model.named_parameters():
            p.copy_((self._sum[n] / self.count).to(p.dtype))


def mixed_batches(s_train: DomainSplit, t_train: DomainSplit, *, batch_size: int, steps: int,
                  rngs: list[np.random.Generator], augment: bool = False
                  ) -> Iterator[np.ndarray]:
    """``steps`` (at least 1) training batches drawn as in training: source then target,
    concatenated, augmented when the run augments."""
    s_sampler = InfiniteSampler(len(s_train), batch_size, rngs[0])
    t_sampler = InfiniteSampler(len(t_train), batch_size, rngs[1])
    for _ in range(max(1, steps)):
        xs, xt = s_train.images(s_sampler.next()), t_train.images(t_sampler.next())
        if augment:
            xs, xt = augment_batch(xs, rngs[2]), augment_batch(xt, rngs[2])
        yield np.concatenate([xs, xt])


class _TrainingBatchNorm(nn.Module):
    """What ``update_bn`` should see of a model: the feature pass as forward, and as
    modules only the BatchNorm layers outside ``frozen``."""

    def __init__(self, model: FeatureClassifier, frozen: list[nn.Module]) -> None:
        super().__init__()
        skip = {id(m) for f in frozen for m in f.modules()}
        self.layers = nn.ModuleList(
            m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in skip)
        self._features = model.features  # a bound method, not a registered submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)


@torch.no_grad()
def recompute_batchnorm(model: FeatureClassifier, batches: Iterable[np.ndarray],
                        device: torch.device, *, frozen: list[nn.Module] | None = None) -> None:
    """Recompute BatchNorm running statistics as a plain mean over ``batches``.

    The model is in training mode, frozen modules (``--freeze conv``) in eval mode
    and with their statistics untouched, as during training.
    """
    frozen = frozen or []
    view = _TrainingBatchNorm(model, frozen)
    if not len(view.layers):
        return
    was_training = model.training
    model.train()
    for f in frozen:
        f.eval()
    update_bn((torch.from_numpy(x) for x in batches), view, device)
    model.train(was_training)
