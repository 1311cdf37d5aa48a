"""Fréchet distance between Gaussians fitted to features (FID/FVD):

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

computed by torchmetrics' `_compute_fid` (eigenvalues of Σ₁Σ₂) in float64.
"""

from __future__ import annotations

import torch
from torchmetrics.image.fid import _compute_fid


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D], N ≥ 2."""
    x = features.double()
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    return float(_compute_fid(mu1.double(), sigma1.double(), mu2.double(), sigma2.double()))
