"""Samplers on the probability-flow ODE with the k-diffusion contract: `sampler(denoise, x, sigmas, ...)`, where
`denoise(x, σ) -> x0` hides the network, its preconditioning, conditioning and guidance (sfv.teachers).

x: latents [B, F, C, h, w] at the first level (x = x0 + σ_0·ε); sigmas: descending levels ending in the final
one (usually 0). Windowed long-video samplers belong here too: they are written against the same denoise.
"""

from __future__ import annotations

from typing import Callable

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_sample(
    denoise: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Euler on the probability-flow ODE (EDM Alg. 1 without churn): dx/dσ = (x − x0)/σ.

    One step from σ_max to 0 returns x0(σ_max) up to rounding — SF-V's one-step inference.
    `callback(i, σ, x)` returns the latents to continue from; `progress()` is called once per step.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma)
        d = (x - x0) / sigma
        x = x + d * (sigma_next - sigma)
        if callback is not None:
            x = callback(i, sigma, x)
        if progress is not None:
            progress()
    return x


def consistency_sample(
    denoise: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise: Callable[[torch.Tensor], torch.Tensor],
    callback: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Few-step sampling of a one-step generator (consistency models' multistep sampler, LADD):

        x̂0 = G(x, σ_i);   x = x̂0 + σ_{i+1}·ε,  ε ~ N(0, I) drawn by noise(x̂0)   (x = x̂0 at the final σ = 0)

    Each step jumps to the data and re-noises to the next of the levels G was trained at, so G only ever sees
    the inputs it was trained on (SF-V §3.2: x_t = x0 + σ_t·ε at σ_t ∈ {σ_1 .. σ_{T_g−1}}).
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x = denoise(x, sigma)
        if sigma_next > 0:
            x = x + sigma_next * noise(x)
        if callback is not None:
            x = callback(i, sigma, x)
        if progress is not None:
            progress()
    return x
