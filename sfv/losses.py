"""SF-V's objectives (§3.2, eqs. 8–11) as pure functions of tensors: none calls backward().

D returns several logit maps (one per head); every adversarial term averages each head's map and then the
heads, so the losses keep the scale of a single-logit hinge GAN (D loss 2.0 when all logits are 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _head_mean(logits: dict[str, torch.Tensor], fn) -> torch.Tensor:
    return torch.stack([fn(v).mean() for v in logits.values()]).mean()


def d_hinge_loss(real_logits: dict[str, torch.Tensor], fake_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    # L_D = E[max(0, 1 − D(x_real′))] + E[max(0, 1 + D(x_fake′))]                          (eq. 9)
    return _head_mean(real_logits, lambda d: F.relu(1 - d)) + _head_mean(fake_logits, lambda d: F.relu(1 + d))


def g_hinge_loss(fake_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    # L_G,adv = −E[D(x_fake′)]                                                             (eq. 10)
    return _head_mean(fake_logits, lambda d: -d)


def d_relativistic_loss(real_logits: dict[str, torch.Tensor], fake_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    # L_D = E[softplus(D(x_fake′) − D(x_real′))]   (relativistic pairing, R3GAN eq. 2; pair i = same c and σ′)
    return torch.stack([F.softplus(fake_logits[k] - real_logits[k]).mean() for k in fake_logits]).mean()


def g_relativistic_loss(real_logits: dict[str, torch.Tensor], fake_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    # L_G = E[softplus(D(x_real′) − D(x_fake′))]   (the same pairs, roles swapped; real logits carry no gradient to G)
    return torch.stack([F.softplus(real_logits[k] - fake_logits[k]).mean() for k in fake_logits]).mean()


def video_score(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """D's mean logit per video, [B]: the scalar whose input gradient R1 penalises."""
    return torch.stack([v.flatten(1).mean(1) for v in logits.values()]).mean(0)


def r1_exact(score: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    # R1 = E‖∇_x D(x_real′)‖²   (Mescheder et al. 2018), x_real′ = x0 + σ′ε; a double backward in training
    (grad,) = torch.autograd.grad(score.sum(), x_real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def r1_approx(score: torch.Tensor, score_perturbed: torch.Tensor, eps: float) -> torch.Tensor:
    # R1 ≈ E[((D(x′ + ε·n) − D(x′)) / ε)²],  n ~ N(0, I)                                 (as LADD / APT)
    # For small ε, D(x′+εn) − D(x′) ≈ ε·∇D·n and E_n[(∇D·n)²] = ‖∇D‖², so this is R1 in expectation
    # at the cost of one more forward pass instead of a double backward.
    return ((score_perturbed - score) / eps).square().mean()


def pseudo_huber(x0_pred: torch.Tensor, x0: torch.Tensor, c: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    # d(x̂0, x0) = √(‖x̂0 − x0‖² + c²) − c, ‖·‖ over the whole video latent, averaged over videos   (eq. 11)
    # written as ‖·‖² / (√(‖·‖² + c²) + c): the same value without float32 cancellation when ‖·‖ << c
    # mask [B] (0 or 1): only the videos whose reconstruction is on count; the mean stays over all B videos
    sq = (x0_pred.float() - x0.float()).square().flatten(1).sum(1)
    d = sq / ((sq + c * c).sqrt() + c)
    return (d if mask is None else d * mask).mean()


def dmd_direction(x0_pred: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    # ∇_x̂0 KL(p_fake ‖ p_real) ≈ (f_fake(x_σ) − f_real(x_σ)) / mean|x̂0 − f_real(x_σ)|   (DMD2 eq. 7 and its
    # per-video normalisation): the direction in which G's sample should NOT move; non-finite entries -> 0
    scale = (x0_pred.float() - real_x0.float()).abs().flatten(1).mean(1).reshape(-1, *[1] * (x0_pred.ndim - 1))
    return torch.nan_to_num((fake_x0.float() - real_x0.float()) / scale)


def dmd_loss(x0_pred: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    # L_DMD = ½·mean‖x̂0 − sg(x̂0 − direction)‖²: its gradient at x̂0 is the direction / numel (DMD2's form)
    return 0.5 * (x0_pred.float() - (x0_pred.float() - direction).detach()).square().mean()


def denoising_loss(x0_pred: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # L = E[λ(σ)·‖D(x0 + σε, σ) − x0‖²]   (EDM eq. 2; λ(σ) per video, [B]): the fake score's objective
    return (weight.float() * (x0_pred.float() - x0.float()).square().flatten(1).mean(1)).mean()


def default_huber_c(dim: int) -> float:
    """c = 0.00054·√d (Song & Dhariwal 2023, improved consistency training); SF-V does not state its c."""
    return 0.00054 * math.sqrt(dim)


def logit_stats(real_logits: dict[str, torch.Tensor], fake_logits: dict[str, torch.Tensor]) -> dict[str, float]:
    """What shows whether D learns: mean logits, their gap and the fraction on the right side of 0 (per position),
    and the same judged video by video (`video_stats`)."""
    real = torch.cat([v.detach().flatten().float() for v in real_logits.values()])
    fake = torch.cat([v.detach().flatten().float() for v in fake_logits.values()])
    return {
        **video_stats(real_logits, fake_logits),
        "logits/real_mean": real.mean().item(),
        "logits/fake_mean": fake.mean().item(),
        "logits/gap": (real.mean() - fake.mean()).item(),
        "logits/real_positive": (real > 0).float().mean().item(),
        "logits/fake_negative": (fake < 0).float().mean().item(),
        "logits/sign_accuracy": 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean()).item(),
    }


def video_stats(real_logits: dict[str, torch.Tensor], fake_logits: dict[str, torch.Tensor]) -> dict[str, float]:
    """D's verdict video by video; real_logits[i] and fake_logits[i] share a conditioning (a pair).

    Per-position sign accuracy hides a separation that is consistent but small next to the spread of the
    per-position logits: D can rank every real video above its fake while half the positions sit on the wrong
    side of 0. So: the pair-win rate P[D(real_i) > D(fake_i)] of the video scores, the video-level accuracy
    (sign of each video's score), and the gap of the mean logits over the standard deviation of all logits."""
    real, fake = video_score(real_logits).detach().float(), video_score(fake_logits).detach().float()  # [B]
    every = torch.cat([v.detach().flatten().float() for v in (*real_logits.values(), *fake_logits.values())])
    spread = every.std() if every.numel() > 1 else every.new_tensor(0.0)
    return {
        "logits/pair_win": (real > fake).float().mean().item(),
        "logits/video_accuracy": 0.5 * ((real > 0).float().mean() + (fake < 0).float().mean()).item(),
        "logits/gap_over_spread": ((real.mean() - fake.mean()) / spread.clamp_min(1e-12)).item(),
    }
