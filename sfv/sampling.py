"""Samplers on the probability-flow ODE with the k-diffusion contract: `sampler(denoise, x, sigmas, ...)`, where
`denoise(x, σ) -> x0` hides the network, its preconditioning, conditioning and guidance (sfv.teachers).

x: latents [B, F, C, h, w] at the first level (x = x0 + σ_0·ε); sigmas: descending levels ending in the final
one (usually 0).

Long videos (N frames from a model trained on windows of W) are written against the same denoise:
  * `multidiffusion` wraps denoise: overlapping windows over one long latent, their x̂0 averaged per frame at
    every step (MultiDiffusion, Bar-Tal et al. 2023; Lumiere's temporal windows) — any sampler runs on it;
  * `chain_sample` samples window after window, each conditioned on a frame of the one before (I2V chaining),
    and blends the overlaps with the same per-frame weights.
"""

from __future__ import annotations

from typing import Callable

import torch

from sfv.errors import InputError
from sfv.noise import EDMPrecond

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


def flow_euler_sample(
    velocity: Denoise,
    x: torch.Tensor,
    levels: torch.Tensor,
    callback: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Euler in velocity form on flow levels t (descending, ending in the final one, usually 0): x ← x + (t' − t)·v.

    The same ODE as `euler_sample` in x0 form, written as diffusers' FlowMatchEulerDiscreteScheduler.step writes it
    (state in float32, dt a float32 difference of two grid values, the result in v's dtype), which keeps a flow
    family's stock pipeline reproduced bit for bit; the x0 form rounds differently (~1e-6). One step from t = 1 is
    x − v = x̂0 in both."""
    for i in range(len(levels) - 1):
        t, t_next = levels[i], levels[i + 1]
        v = velocity(x, t)
        x = (x.to(torch.float32) + (t_next - t) * v).to(v.dtype)
        if callback is not None:
            x = callback(i, t, x)
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
    add_noise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = EDMPrecond.add_noise,
) -> torch.Tensor:
    """Few-step sampling of a one-step generator (consistency models' multistep sampler, LADD):

        x̂0 = G(x, σ_i);   x = add_noise(x̂0, σ_{i+1}, ε),  ε ~ N(0, I) drawn by noise(x̂0)   (x = x̂0 at the final 0)

    Each step jumps to the data and re-noises to the next of the levels G was trained at, so G only ever sees
    the inputs it was trained on (SF-V §3.2: x_t = x0 + σ_t·ε at σ_t ∈ {σ_1 .. σ_{T_g−1}}). `add_noise` is the
    family's forward process (Precond.add_noise; EDM's x0 + σ·ε by default).
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x = denoise(x, sigma)
        if sigma_next > 0:
            x = add_noise(x, sigma_next, noise(x))
        if callback is not None:
            x = callback(i, sigma, x)
        if progress is not None:
            progress()
    return x


SAMPLERS = ("euler", "consistency")


def check_sampler(sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise InputError(f"sampler must be 'euler' or 'consistency', not {sampler!r}")


def solve(denoise: Denoise, x: torch.Tensor, levels: torch.Tensor, sampler: str = "euler",
          noise: Callable[[torch.Tensor], torch.Tensor] | None = None, add_noise=EDMPrecond.add_noise,
          window: int | None = None, overlap: int | None = None, callback=None, progress=None) -> torch.Tensor:
    """The body of every family's `Teacher.sample`: the family builds its denoiser (network, preconditioning,
    conditioning, guidance), its levels and its initial noise x; this runs the sampler on them.

    sampler: "euler" (the ODE, the stock pipelines') or "consistency" (a one-step student's few-step sampler,
    re-noising with `noise` by the family's `add_noise`). window, overlap: MultiDiffusion over temporal windows."""
    check_sampler(sampler)
    if window is not None:
        denoise = multidiffusion(denoise, x.shape[1], window, overlap)
    if sampler == "consistency":
        return consistency_sample(denoise, x, levels, noise, callback, progress, add_noise)
    return euler_sample(denoise, x, levels, callback, progress)


# ----------------------------------------------------------------------------------------------------
# Long videos: temporal windows

LONG_VIDEO = ("chain", "multidiffusion")


def check_windows(num_frames: int, window: int, overlap: int) -> None:
    """N frames in windows of W frames overlapping by O: needs 1 ≤ O < W ≤ N."""
    if window < 2:
        raise InputError(f"window must be at least 2 frames (got {window})")
    if not 1 <= overlap < window:
        raise InputError(f"overlap must be at least 1 and less than the window ({window} frames), got {overlap}")
    if num_frames < window:
        raise InputError(f"{num_frames} frames are fewer than the window of {window}: sample them in one window "
                         "(no long-video mode) or choose a smaller window")


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frame of each window: stride W − O from 0; the last window ends at frame N (so its overlap with
    the one before may be larger than O). N = W gives one window, [0]."""
    check_windows(num_frames, window, overlap)
    return list(range(0, num_frames - window, window - overlap)) + [num_frames - window]


def fusion_weights(num_frames: int, window: int, overlap: int) -> torch.Tensor:
    """MultiDiffusion's per-frame weights [K windows, N frames]: window k gives frame j the weight
    1/|{windows covering j}| (0 outside it), so Σ_k w_k(j) = 1 and the fused x̂0 = Σ_k w_k ⊙ x̂0_k is the
    least-squares solution of Σ_k ‖J − x̂0_k‖² over the windows (MultiDiffusion eq. 5, uniform W_i)."""
    starts = window_starts(num_frames, window, overlap)
    cover = torch.zeros(len(starts), num_frames)
    for k, s in enumerate(starts):
        cover[k, s : s + window] = 1
    return cover / cover.sum(0)


def _fuse(out: torch.Tensor, weights: torch.Tensor, k: int, start: int, x0: torch.Tensor) -> None:
    """out[:, window k] += w_k ⊙ x̂0_k, with x0 [B, W, ...] and out [B, N, ...] (in place)."""
    w = weights[k, start : start + x0.shape[1]].to(x0.device, x0.dtype)
    out[:, start : start + x0.shape[1]] += w.reshape(1, -1, *[1] * (x0.ndim - 2)) * x0


def multidiffusion(denoise: Denoise, num_frames: int, window: int, overlap: int) -> Denoise:
    """A denoiser for N frames from one for W: x̂0(x, σ) = Σ_k w_k ⊙ denoise(x[window k], σ), every window under
    the same conditioning. Any sampler runs on it, so the windows are reconciled at every step; with one
    window (N = W) it returns denoise(x, σ) bit for bit. Windows run one after the other (memory of one window)."""
    starts, weights = window_starts(num_frames, window, overlap), fusion_weights(num_frames, window, overlap)

    def fused(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # x: [B, N, C, h, w]
        x0 = torch.zeros_like(x)
        for k, s in enumerate(starts):
            _fuse(x0, weights, k, s, denoise(x[:, s : s + window], sigma))
        return x0

    return fused


def chain_sample(sample_window: Callable, condition_on_frame: Callable, cond, noise: torch.Tensor, window: int,
                 overlap: int) -> torch.Tensor:
    """Image-to-video chaining: window k + 1 is conditioned on the frame where it starts, generated by window k
    (with O = 1: window k's last frame), so its frame 0 continues the clip; overlapping frames are averaged with
    `fusion_weights`.

    sample_window(cond, ε [B, W, ...]) -> x0 [B, W, ...] runs a whole sampler for one window from its slice of
    the long initial noise ε [B, N, ...]; condition_on_frame(cond, x0 [B, ...]) -> the condition for a generated
    frame (Teacher.condition_on_frame). With one window (N = W) this is sample_window(cond, ε) bit for bit.
    """
    num_frames = noise.shape[1]
    starts, weights = window_starts(num_frames, window, overlap), fusion_weights(num_frames, window, overlap)
    out, x0 = None, None
    for k, s in enumerate(starts):
        if k:
            cond = condition_on_frame(cond, x0[:, s - starts[k - 1]])
        x0 = sample_window(cond, noise[:, s : s + window])
        if out is None:
            out = torch.zeros(x0.shape[0], num_frames, *x0.shape[2:], dtype=x0.dtype, device=x0.device)
        _fuse(out, weights, k, s, x0)
    return out


def long_video_windows(mode: str, num_frames: int, window: int | None, overlap: int | None,
                       model_window: int) -> tuple[int, int]:
    """(window, overlap) for a long-video mode, checked. Defaults: the model's own frame count as the window;
    overlap 1 for chain (the shared conditioning frame), half the window for multidiffusion."""
    if mode not in LONG_VIDEO:
        raise InputError(f"long-video mode must be one of {', '.join(LONG_VIDEO)}, not {mode!r}")
    window = model_window if window is None else window
    overlap = (1 if mode == "chain" else window // 2) if overlap is None else overlap
    check_windows(num_frames, window, overlap)
    return window, overlap


def sample_long_video(teacher, cond, num_frames: int, height: int, width: int, mode: str, window: int, overlap: int,
                      generator=None, latents: torch.Tensor | None = None, **sample_kwargs) -> torch.Tensor:
    """N frames from a model trained on windows, through the teacher protocol (sfv.teachers.Teacher): x0 latents
    [B, N, C, h, w]. `sample_kwargs` go to Teacher.sample (steps, sigmas, sampler, unet, guidance, callbacks).

    multidiffusion: one long latent; Teacher.sample denoises it window by window and fuses x̂0 at every step.
    chain: the long initial noise ε [B, N, ...] is drawn once (as for one window of N frames) and each window
    is sampled from its slice, conditioned on the previous window's frame at its start.
    """
    noise = teacher.initial_latents(len(cond), num_frames, height, width, torch.tensor(1.0), generator, latents)
    if mode == "multidiffusion":
        return teacher.sample(cond, num_frames, height, width, generator=generator, latents=noise,
                              window=window, overlap=overlap, **sample_kwargs)

    def sample_window(cond, eps):
        return teacher.sample(cond, window, height, width, generator=generator, latents=eps, **sample_kwargs)

    def condition_on_frame(cond, frame):
        return teacher.condition_on_frame(cond, frame, generator)

    return chain_sample(sample_window, condition_on_frame, cond, noise, window, overlap)
