"""SF-V's losses and D's σ′ sampler against reference formulas."""

import math

import torch
from torch.testing import assert_close

from sfv import losses
from sfv.noise import LogNormalSigmaSampler, karras_sigmas


def _logits(seed, *shapes):
    g = torch.Generator().manual_seed(seed)
    return {f"h{i}": torch.randn(s, generator=g) * 2 for i, s in enumerate(shapes)}


def test_hinge_losses_equal_the_reference_formulas():
    real, fake = _logits(0, (2, 4, 3, 3), (2, 3, 3, 4)), _logits(1, (2, 4, 3, 3), (2, 3, 3, 4))
    ref_d = sum((torch.clamp(1 - real[k], min=0).mean() + torch.clamp(1 + fake[k], min=0).mean()) for k in real) / 2
    assert_close(losses.d_hinge_loss(real, fake), ref_d)
    assert_close(losses.g_hinge_loss(fake), -(fake["h0"].mean() + fake["h1"].mean()) / 2)
    zeros = {k: torch.zeros_like(v) for k, v in real.items()}
    assert losses.d_hinge_loss(zeros, zeros).item() == 2.0  # D at chance


def test_exact_r1_is_the_squared_input_gradient_norm():
    # D(x) = mean(w·x²) per video has the closed-form gradient 2·w·x / n
    x = torch.randn(3, 2, 4, 5, 5, requires_grad=True)
    w = torch.randn(2, 4, 5, 5)
    score = (w * x.square()).flatten(1).mean(1)
    expected = (2 * w * x / w.numel()).square().flatten(1).sum(1).mean()
    assert_close(losses.r1_exact(score, x), expected.detach())


def test_approximate_r1_matches_exact_r1_in_expectation():
    torch.manual_seed(0)
    w = torch.randn(64)
    x = torch.randn(4, 64, requires_grad=True)
    f = lambda v: torch.tanh(v @ w / 8)  # a smooth scalar "D" per sample
    exact = losses.r1_exact(f(x), x).item()
    eps, n = 1e-3, 4000
    approx = torch.stack([losses.r1_approx(f(x), f(x + eps * torch.randn_like(x)), eps) for _ in range(n)]).mean().item()
    assert abs(approx - exact) / exact < 0.05, (approx, exact)
    assert losses.r1_approx(f(x), f(x), eps).item() == 0.0


def test_pseudo_huber_equals_its_formula_and_behaves_like_l2_and_l1():
    a, b = torch.randn(3, 2, 4, 6, 6), torch.randn(3, 2, 4, 6, 6)
    c = losses.default_huber_c(a[0].numel())
    assert math.isclose(c, 0.00054 * math.sqrt(2 * 4 * 6 * 6))
    ref = (((a - b) ** 2).flatten(1).sum(1) + c**2).sqrt().sub(c).mean()
    assert_close(losses.pseudo_huber(a, b, c), ref)
    assert losses.pseudo_huber(a, a, c).item() == 0.0
    tiny = 1e-4 * torch.ones(1, 10)  # ‖e‖ << c: ≈ ‖e‖²/(2c)
    assert_close(losses.pseudo_huber(tiny, torch.zeros(1, 10), 1.0), torch.tensor(5e-8), rtol=1e-2, atol=0)


def test_sigma_prime_sampler_matches_the_lognormal():
    sampler = LogNormalSigmaSampler(karras_sigmas(1000, 0.002, 700.0), p_mean=-1.0, p_std=1.0)
    assert len(sampler.levels) == 1000 and math.isclose(sampler.probs.sum().item(), 1.0, rel_tol=1e-9)
    log_s = sampler(200_000, torch.Generator().manual_seed(0)).double().log()
    assert abs(log_s.median().item() - (-1.0)) < 0.03  # median σ′ ≈ e^−1 ≈ 0.37
    assert abs(log_s.std().item() - 1.0) < 0.03
    assert set(sampler(100).tolist()) <= set(sampler.levels.tolist())  # only grid levels
    shifted = LogNormalSigmaSampler(karras_sigmas(1000, 0.002, 700.0), p_mean=1.0)(50_000, torch.Generator().manual_seed(1))
    assert abs(shifted.double().log().median().item() - 1.0) < 0.05


def test_video_stats_see_a_small_consistent_separation_that_sign_accuracy_misses():
    """Every real video scores 0.05 above its fake, under per-position noise of std 1: per position D looks at
    chance, video by video it wins every pair. And the falsifier: with no gap the pair-win rate is near 0.5."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 1, generator=g)  # each pair's own level, shared by its real and fake video
    noise = lambda: torch.randn(64, 8, 16, 16, generator=g) * 0.3  # noqa: E731
    real = {"h0": base[..., None, None] + 0.025 + noise(), "h1": base[..., None, None] + 0.025 + noise()}
    fake = {"h0": base[..., None, None] - 0.025 + noise(), "h1": base[..., None, None] - 0.025 + noise()}
    stats = losses.logit_stats(real, fake)
    assert abs(stats["logits/sign_accuracy"] - 0.5) < 0.03
    assert stats["logits/pair_win"] == 1.0
    assert 0.04 < stats["logits/gap_over_spread"] < 0.06  # 0.05 over a spread of ≈ √(1 + 0.09)
    same = losses.video_stats({"h0": base[..., None, None] + noise()}, {"h0": base[..., None, None] + noise()})
    assert 0.3 < same["logits/pair_win"] < 0.7 and abs(same["logits/gap_over_spread"]) < 0.01
