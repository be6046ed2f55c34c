"""The §2 losses against values computed by hand on tiny inputs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from galmerge.training.losses import (
    PAPER_MMD_SIGMA2,
    DomainAdversarialLoss,
    DomainClassifier,
    EntropyLoss,
    FisherLoss,
    GradientReversal,
    MMDLoss,
    SinkhornLoss,
    ganin_lambda,
    grad_reverse,
    total_loss,
)

XS = torch.tensor([[0.0], [1.0]])
XT = torch.tensor([[0.0], [2.0]])


def k(a: float, b: float) -> float:
    """Gaussian RBF with sigma^2 = 1 (Eq. 7)."""
    return math.exp(-((a - b) ** 2) / 2.0)


def test_mmd_unbiased_hand_computed() -> None:
    # Eq. 6: within-domain pairs i != j, all cross pairs
    ss = k(0, 1)
    tt = k(0, 2)
    st = (k(0, 0) + k(0, 2) + k(1, 0) + k(1, 2)) / 4
    want = ss + tt - 2 * st
    got = MMDLoss(sigma2=(1.0,), unbiased=True)(XS, XT)
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_mmd_biased_hand_computed() -> None:
    ss = (2 * k(0, 0) + 2 * k(0, 1)) / 4
    tt = (2 * k(0, 0) + 2 * k(0, 2)) / 4
    st = (k(0, 0) + k(0, 2) + k(1, 0) + k(1, 2)) / 4
    got = MMDLoss(sigma2=(1.0,), unbiased=False)(XS, XT)
    assert float(got) == pytest.approx(ss + tt - 2 * st, rel=1e-6)


def test_mmd_sums_kernels() -> None:
    one = MMDLoss(sigma2=(1.0,), unbiased=False)(XS, XT)
    four = MMDLoss(sigma2=(4.0,), unbiased=False)(XS, XT)
    both = MMDLoss(sigma2=(1.0, 4.0), unbiased=False)(XS, XT)
    assert float(both) == pytest.approx(float(one) + float(four), rel=1e-6)


def test_mmd_batch_bandwidth_is_mean_pairwise_distance() -> None:
    # z = [0, 1, 0, 2]: squared distances of the 6 pairs 1, 0, 4, 1, 1, 4 -> mean 11/6
    mmd = MMDLoss()
    z = torch.cat([XS, XT])
    d2 = (z - z.T) ** 2
    got = mmd.bandwidths(d2)
    want = torch.tensor([0.25, 0.5, 1.0, 2.0, 4.0]) * 11 / 6
    torch.testing.assert_close(got, want)


def test_paper_kernel_list() -> None:
    assert len(PAPER_MMD_SIGMA2) == 19 and PAPER_MMD_SIGMA2[0] == 1e-6
    v = MMDLoss(sigma2=PAPER_MMD_SIGMA2)(XS, XT)
    assert math.isfinite(float(v))


def test_mmd_identical_samples_and_mean_shift() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 16, generator=g)
    b = torch.randn(200, 16, generator=g)
    # the biased estimate of a sample against itself is exactly 0
    assert float(MMDLoss(unbiased=False)(a, a)) == pytest.approx(0.0, abs=1e-6)
    # two samples of one distribution: the unbiased estimate is ~0
    same = float(MMDLoss()(a, b))
    assert abs(same) < 0.02
    values = [float(MMDLoss()(a, b + shift)) for shift in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > same
    assert all(x < y for x, y in itertools.pairwise(values))
    assert values[-1] > 0.5


def test_mmd_gradient_pulls_domains_together() -> None:
    a = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    b = (torch.randn(50, 4, generator=torch.Generator().manual_seed(2)) + 1.0).requires_grad_()
    MMDLoss()(a, b).backward()
    # moving the target rows against the gradient lowers their mean towards the source mean
    assert float(b.grad.mean()) > 0


def test_mmd_needs_two_rows() -> None:
    with pytest.raises(ValueError):
        MMDLoss()(XS[:1], XT)


def _mean_sq_dist(a: torch.Tensor, b: torch.Tensor) -> float:
    z = torch.cat([a, b])
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    n = len(z)
    return float(d2.sum() / (n * (n - 1)))


def test_sinkhorn_zero_on_itself_and_half_squared_shift() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(60, 3, generator=g)
    loss = SinkhornLoss(eps_rel=0.005, iterations=300)
    assert float(loss(a, a.clone())) == pytest.approx(0.0, abs=1e-5)
    # a translated copy: OT with cost |x - y|^2 / 2 is |t|^2 / 2, and the debiasing removes
    # the entropic bias, so S_eps -> |t|^2 / 2 as eps -> 0 (in units of the mean sq. distance)
    for t in (0.5, 2.0):
        shift = torch.tensor([t, 0.0, 0.0])
        want = 0.5 * t * t / _mean_sq_dist(a, a + shift)
        assert float(loss(a, a + shift)) == pytest.approx(want, rel=0.05)
    values = [float(SinkhornLoss()(a, a + s)) for s in (0.25, 0.5, 1.0, 2.0)]
    assert all(0 < x < y for x, y in itertools.pairwise(values))


def test_sinkhorn_scale_free_value_and_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(40, 5, generator=g), torch.randn(70, 5, generator=g) + 1.0
    c = torch.tensor(1.0, requires_grad=True)
    v = SinkhornLoss()(c * a, c * b)
    v.backward()
    assert float(SinkhornLoss()(10 * a, 10 * b)) == pytest.approx(float(v.detach()), rel=1e-5)
    assert abs(float(c.grad)) < 1e-4  # shrinking every feature does not lower the loss


def test_sinkhorn_gradient_pulls_domains_together() -> None:
    a = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    b = (torch.randn(50, 4, generator=torch.Generator().manual_seed(2)) + 1.0).requires_grad_()
    loss = SinkhornLoss()
    before = loss(a, b)
    before.backward()
    assert float(b.grad.mean()) > 0
    with torch.no_grad():
        after = loss(a, b - 20.0 * b.grad)
    assert float(after) < float(before.detach())


def test_sinkhorn_needs_two_rows_and_positive_eps() -> None:
    with pytest.raises(ValueError):
        SinkhornLoss()(XS[:1], XT)
    with pytest.raises(ValueError):
        SinkhornLoss(eps_rel=0.0)


def test_grl_flips_and_scales_gradient() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = grad_reverse(x, 0.3)
    torch.testing.assert_close(y, x)
    (y * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.3 * torch.arange(4.0).expand(3, 4))


def test_grl_warmup_schedule() -> None:
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert ganin_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert ganin_lambda(2.0) == ganin_lambda(1.0)  # clamped
    grl = GradientReversal("ganin")
    seq = []
    for p in (0.0, 0.1, 0.3, 1.0):
        grl.set_progress(p)
        seq.append(grl.coeff)
    assert seq == sorted(seq) and seq[0] == 0.0
    assert GradientReversal("constant").coeff == 1.0


def test_domain_classifier_shape_and_paper_layout() -> None:
    dc = DomainClassifier(2592)
    linears = [m for m in dc.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2592, 1024), (1024, 1024),
                                                                   (1024, 1)]
    drops = [m.p for m in dc.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5, 0.5]
    assert dc(torch.randn(5, 2592)).shape == (5,)


class _Constant(torch.nn.Module):
    """A 'discriminator' that outputs w . f (w fixed), for hand computation."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.w


def test_dann_loss_value_and_reversed_feature_gradient() -> None:
    w = torch.tensor([1.0, 0.0])
    grl = GradientReversal("constant", max_coeff=1.0)
    loss_fn = DomainAdversarialLoss(_Constant(w), grl)
    f_s = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    f_t = torch.tensor([[-1.0, 0.0], [0.0, 3.0]], requires_grad=True)
    loss = loss_fn(f_s, f_t)
    # BCE with logits: source rows label 1, target rows label 0
    sp = lambda z: math.log1p(math.exp(z))  # noqa: E731 softplus
    want = 0.5 * ((sp(-2.0) + sp(0.0)) / 2 + (sp(-1.0) + sp(0.0)) / 2)
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    # source logits (2, 0): one > 0; target logits (-1, 0): both <= 0
    assert loss_fn.domain_accuracy == pytest.approx(3 / 4)
    loss.backward()
    # without reversal the source feature gradient along w is negative (raise the logit);
    # the GRL flips it
    assert float(f_s.grad[0, 0]) > 0
    assert float(loss_fn.discriminator.w.grad[0]) != 0.0  # the classifier itself still learns


def test_fisher_trace_ratio_hand_computed() -> None:
    fl = FisherLoss(2, kind="tr", lambda_w=0.5, lambda_b=2.0)
    with torch.no_grad():
        fl.centres.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    h = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    with torch.no_grad():
        sw, sb = fl.traces(h, y)
    assert float(sw) == pytest.approx(1.0 + 2.0 + 0.0)
    assert float(sb) == pytest.approx(1.0 + 1.0)
    assert float(fl(h, y).detach()) == pytest.approx(0.5 * 3.0 / (2.0 * 2.0))
    td = FisherLoss(2, kind="td", lambda_w=0.5, lambda_b=2.0)
    with torch.no_grad():
        td.centres.copy_(fl.centres)
    assert float(td(h, y).detach()) == pytest.approx(0.5 * 3.0 - 2.0 * 2.0)


def test_fisher_ratio_falls_as_classes_separate() -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(40, 8, generator=g) * 0.3
    y = torch.arange(40) % 2
    values = []
    for sep in (0.5, 1.0, 2.0, 4.0):
        fl = FisherLoss(8, lambda_w=1.0, lambda_b=1.0)
        centres = torch.zeros(2, 8)
        centres[1, 0] = sep
        with torch.no_grad():
            fl.centres.copy_(centres)
        values.append(float(fl(centres[y] + noise, y).detach()))
    assert all(a > b for a, b in itertools.pairwise(values))


def test_fisher_guards_zero_over_zero() -> None:
    fl = FisherLoss(3, lambda_w=0.01, lambda_b=1.0)
    with torch.no_grad():
        fl.centres.zero_()
    h = torch.zeros(4, 3, requires_grad=True)
    v = fl(h, torch.tensor([0, 1, 0, 1]))
    assert math.isfinite(float(v.detach()))
    v.backward()
    assert torch.isfinite(h.grad).all()
    with pytest.raises(ValueError):
        FisherLoss(3, lambda_w=0.0, lambda_b=0.0)


def test_entropy_one_hot_zero_uniform_log2() -> None:
    em = EntropyLoss()
    assert float(em(torch.tensor([[100.0, -100.0], [-50.0, 50.0]]))) == pytest.approx(0.0,
                                                                                      abs=1e-12)
    assert float(em(torch.zeros(3, 2))) == pytest.approx(math.log(2))
    # mean over rows: one certain row, one uniform row
    assert float(em(torch.tensor([[100.0, -100.0], [0.0, 0.0]]))) == pytest.approx(
        math.log(2) / 2)


def test_total_loss_eq2() -> None:
    one = torch.tensor(1.0)
    got = total_loss(one, transfer=torch.tensor(2.0), fisher=torch.tensor(3.0),
                     entropy=torch.tensor(4.0), lambda_tl=0.5, lambda_fl=1.0, lambda_em=0.25)
    assert float(got) == pytest.approx(1 + 0.5 * 2 + 3 + 0.25 * 4)
    assert float(total_loss(one)) == 1.0
