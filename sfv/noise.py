"""The forward process of each family behind one preconditioning protocol, the Karras σ discretisation that SVD samples
on and that SF-V trains the generator at, and D's log-normal σ′.

A family's noise *level* is its own coordinate: SVD's σ (x = x0 + σ·ε, EDM), flow matching's t (x = (1−t)·x0 + t·ε,
Wan). Both are written as k-diffusion's scalings, x0 = c_skip·x + c_out·F(c_in·x, c_noise), by a `Precond`; where
families must be compared (D's noise embedding, D's log-normal levels, recipe thresholds) the common coordinate is
ln σ, with σ = t/(1−t) for flow (so ln σ = logit t, and D's log-normal σ′ is LADD/SD3's logit-normal t′).

Karras et al. 2022 (EDM), eq. 5:  σ_i = (σ_max^(1/ρ) + i/(N−1) · (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ,
with SVD's σ_min = 0.002, σ_max = 700, ρ = 7 (read from the scheduler config, never hard-coded here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sfv.errors import InputError


class Precond(Protocol):
    """A family's forward process and preconditioning, on its own level (σ for EDM, t for flow); levels broadcast to x."""

    def add_noise(self, x0: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor: ...  # x at level

    def scale_input(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor: ...  # c_in·x

    def c_noise(self, level: torch.Tensor) -> torch.Tensor: ...  # the network's timestep input

    def combine(self, out: torch.Tensor, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor: ...  # c_out·F + c_skip·x

    def loss_weight(self, level: torch.Tensor) -> torch.Tensor: ...  # λ = 1/c_out²: the error at the scale of F

    def log_sigma(self, level: torch.Tensor) -> torch.Tensor: ...  # the common coordinate ln σ

    def level_of_sigma(self, sigma: float) -> float: ...  # the inverse, for thresholds given in σ


@dataclass(frozen=True)
class EDMPrecond:
    """EDM's preconditioning (Karras et al. 2022, Tab. 1), written once for the denoiser, D's encoder input and
    the pipeline's timesteps:

        x0 = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ), cond)
        c_skip = σ_d²/(σ²+σ_d²),  c_out = sign·σ·σ_d/√(σ²+σ_d²),  c_in = 1/√(σ²+σ_d²),  c_noise = ¼·ln σ

    SVD (`VScalingWithEDMcNoise`) is σ_d = 1 with sign −1 (its network predicts v). `scale_input` and `combine`
    apply c_in and (c_skip, c_out) in the floating-point form of diffusers' EulerDiscreteScheduler
    (x/√(σ²+1), x/(σ²+1)), which is what keeps the stock pipeline reproduced bit for bit; multiplying by
    σ_d = 1 is exact, so the general form costs nothing there.
    """

    sigma_data: float = 1.0
    out_sign: float = 1.0

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """EDM's training weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)² = 1/c_out²: a denoiser trained with it sees every
        level's error at the scale of its network output (EDM eq. 8, Tab. 1)."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    @staticmethod
    def c_noise(sigma: torch.Tensor) -> torch.Tensor:
        """The network's noise-level input (SVD's continuous timestep): ¼·ln σ."""
        return 0.25 * sigma.log()

    def scale_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """c_in·x, as x/√(σ²+σ_d²); σ broadcastable to x."""
        return x / (sigma**2 + self.sigma_data**2) ** 0.5

    def combine(self, out: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 = c_out·F + c_skip·x, as F·(sign·σ·σ_d/√(σ²+σ_d²)) + x·σ_d²/(σ²+σ_d²); σ broadcastable to x."""
        sd2 = self.sigma_data**2
        return out * (self.out_sign * sigma * self.sigma_data / (sigma**2 + sd2) ** 0.5) + x * sd2 / (sigma**2 + sd2)

    @staticmethod
    def add_noise(x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x = x0 + σ·ε."""
        return x0 + sigma * noise

    @staticmethod
    def log_sigma(sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log()

    @staticmethod
    def level_of_sigma(sigma: float) -> float:
        return float(sigma)


@dataclass(frozen=True)
class FlowPrecond:
    """Flow matching (rectified flow; Wan, SD3) in its native level t ∈ (0, 1]: x_t = (1−t)·x0 + t·ε, and the
    network predicts the velocity v = ε − x0 at timestep `timescale`·t. As k-diffusion scalings on x_t:

        c_skip = 1,  c_out = −t,  c_in = 1,  c_noise = timescale·t     so  x0 = x_t − t·v

    (in EDM's coordinate σ = t/(1−t), x = x_t·(1+σ): c_skip = c_in = 1/(1+σ), c_out = −σ/(1+σ)). t = 1 is pure
    noise, where σ is infinite: the reason a family keeps its own level. λ(t) = 1/t², so ‖x̂0 − x0‖²/t² = ‖v̂ − v‖²,
    flow matching's own loss."""

    timescale: float = 1000.0

    @staticmethod
    def add_noise(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (1 - t) * x0 + t * noise

    @staticmethod
    def scale_input(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.timescale

    @staticmethod
    def combine(out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x - t * out

    @staticmethod
    def loss_weight(t: torch.Tensor) -> torch.Tensor:
        return 1 / t**2

    @staticmethod
    def log_sigma(t: torch.Tensor) -> torch.Tensor:
        return torch.logit(t)

    @staticmethod
    def level_of_sigma(sigma: float) -> float:
        return float(sigma) / (1 + float(sigma))


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


def student_schedule(levels: torch.Tensor, steps: int) -> torch.Tensor:
    """The σ schedule of `steps`-step sampling of a one-step generator on its L training levels (descending):
    `steps` of them evenly spaced in index, always σ_max first and, from 2 steps on, the lowest last; then the
    final 0. With SVD's T_g = 4 levels [700, 70.5, 2.27]: 1 → [700, 0], 2 → [700, 2.27, 0], 3 → all three, 0.
    """
    count = len(levels)
    if not 1 <= steps <= count:
        shown = ", ".join(f"{float(v):.3g}" for v in levels)
        raise InputError(f"num_inference_steps must be 1..{count} for a student trained at its T_g − 1 = {count} "
                         f"levels (σ = {shown}); got {steps} (pass sigmas= for Euler on another schedule)")
    index = torch.linspace(0, count - 1, steps).round().long() if steps > 1 else torch.zeros(1, dtype=torch.long)
    return torch.cat([levels[index], torch.zeros(1, dtype=levels.dtype)])


class LevelSampler:
    """σ drawn from the teacher's T Karras levels (`levels`, descending) with probabilities `probs`: one σ per video."""

    levels: torch.Tensor
    probs: torch.Tensor

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """σ for each of `batch_size` videos, [B] float32."""
        device = generator.device if generator is not None else "cpu"  # draw where the generator lives (CPU or CUDA)
        idx = torch.multinomial(self.probs.to(device), batch_size, replacement=True, generator=generator)
        return self.levels.to(device)[idx]


class UniformLevelSampler(LevelSampler):
    """DMD2's noise levels for the distribution-matching term and the fake score (its min/max step 0.02 T / 0.98 T):
    uniform over the middle 96 % of a family's T-level grid (Teacher.level_grid). On SVD's Karras [0.002, 700] the
    median σ is ≈ 16 and more than half of the draws are above 10, where a video's layout and motion are still open."""

    def __init__(self, levels: torch.Tensor, low: float = 0.02, high: float = 0.98):
        t = len(levels)
        self.levels = levels
        self.probs = torch.zeros(t, dtype=torch.float64)
        self.probs[int(low * t) : int(high * t) + 1] = 1.0
        self.probs = self.probs / self.probs.sum()


class LogNormalSigmaSampler(LevelSampler):
    """SF-V §3.2: D's re-noising level σ′, drawn from a family's T_d-level grid (Teacher.level_grid; SVD: Karras)
    weighted by a discretised log-normal in the common coordinate ln σ (`log_sigma`: Precond.log_sigma; for flow
    ln σ = logit t, so this is LADD/SD3's logit-normal).

    Level i gets the log-normal probability mass of its cell in ln σ (cell edges halfway between neighbouring
    levels, the outer cells open), i.e. P(i) = Φ((e_i⁺ − P_mean)/P_std) − Φ((e_i⁻ − P_mean)/P_std).
    With P_mean = −1, P_std = 1 the median σ′ is ≈ e⁻¹ ≈ 0.37 (docs/method.md). The same σ′ is used for the
    real and the fake video of a pair.
    """

    def __init__(self, levels: torch.Tensor, p_mean: float = -1.0, p_std: float = 1.0, log_sigma=torch.log):
        if p_std <= 0:
            raise ValueError(f"P_std must be positive (got {p_std})")
        self.levels = levels  # descending, [T_d]
        log_sigma = log_sigma(self.levels.double())
        edges = (log_sigma[1:] + log_sigma[:-1]) / 2  # descending cell boundaries, [T_d − 1]
        normal = torch.distributions.Normal(torch.tensor(p_mean, dtype=torch.float64), torch.tensor(p_std, dtype=torch.float64))
        cdf = torch.cat([torch.ones(1, dtype=torch.float64), normal.cdf(edges), torch.zeros(1, dtype=torch.float64)])
        self.probs = (cdf[:-1] - cdf[1:]).clamp_min(0)  # mass of the cell around each level, [T_d]
        self.probs = self.probs / self.probs.sum()
