"""Noise levels: the Karras σ discretisation that SVD samples on and that SF-V trains the generator at.

Karras et al. 2022 (EDM), eq. 5:  σ_i = (σ_max^(1/ρ) + i/(N−1) · (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ,
with SVD's σ_min = 0.002, σ_max = 700, ρ = 7 (read from the scheduler config, never hard-coded here).
"""

from __future__ import annotations

import numpy as np
import torch


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """N Karras levels from σ_max down to σ_min (float32, descending; no trailing zero).

    Computed in float64 and rounded once to float32, exactly as diffusers' EulerDiscreteScheduler does,
    so a sampler on these levels reproduces the stock pipeline bit for bit.
    """
    if n < 1:
        raise ValueError(f"need at least one noise level, got n={n}")
    ramp = np.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.from_numpy(sigmas.astype(np.float32))


def generator_sigma_levels(t_g: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """SF-V §3.2: the generator trains at σ_t uniform over {σ_1 .. σ_{T_g−1}} of a T_g-level Karras grid.

    That is the top T_g − 1 levels (the lowest, ≈ σ_min, is dropped). With SVD's range and T_g = 4 they
    are ≈ [700, 70.5, 2.27]; the top level σ_max is the one used at inference.
    """
    if t_g < 2:
        raise ValueError(f"T_g must be at least 2 (got {t_g}): the generator needs a level above σ_min")
    return karras_sigmas(t_g, sigma_min, sigma_max, rho)[:-1]
