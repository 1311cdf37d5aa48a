"""The training steps of sfv/train.py's loop, one update each: D, DMD's fake score (only with recipe `dmd`), and G.
Each reads the accumulation rounds of one step (`Round`: real latents, conditioning, the round's generator, the
teacher pair if any) and the built `Parts`, and changes only its own network and optimiser (tests/test_train.py,
tests/test_options.py). The objectives are sfv/losses.py's pure functions; these functions draw the noise, call the
networks, and send the gradients back.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.optim.swa_utils import AveragedModel

from sfv import distributed, losses
from sfv.cache import pair_noise
from sfv.config import Recipe
from sfv.discriminator import Discriminator
from sfv.errors import InputError
from sfv.generator import SFVGenerator
from sfv.noise import LevelSampler, LogNormalSigmaSampler
from sfv.teachers import Condition, Teacher


@dataclass
class State:
    videos: int = 0  # real videos drawn from the data, all processes together
    g_steps: int = 0
    d_steps: int = 0
    skipped_steps: int = 0  # updates skipped for a non-finite loss
    nonfinite_in_row: int = 0
    skipped_files: list[str] = field(default_factory=list)


class Round(NamedTuple):
    """One accumulation round of a step: real latents, their conditioning, the round's generator and, from a
    latent cache with teacher pairs, the pair's noise ε and the teacher's sample from it (else None)."""

    x0: torch.Tensor  # [B, F, C, h, w]
    cond: Condition
    gen: torch.Generator
    pair: tuple[torch.Tensor, torch.Tensor] | None = None  # (ε, teacher x0), each [B, F, C, h, w]


def prepare(batch: dict, teacher: Teacher, recipe: Recipe, gen: torch.Generator) -> Round:
    """A data batch -> Round (x0 latents [B, F, C, h, w], conditioning, gen, teacher pair). Videos are encoded by the
    frozen teacher."""
    d = recipe.data
    x0, cond = teacher.encode_batch(batch, d.height, d.width, recipe.svd.noise_aug_strength, gen)
    pair = None
    if "pair_latents" in batch:
        noise = pair_noise(teacher, batch["pair_seed"], x0.shape[1], d.height, d.width)
        pair = (noise, batch["pair_latents"].to(x0.device, torch.float32))
    return Round(x0, cond, gen, pair)


def noised(p: "Parts", x0: torch.Tensor, level: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x0 at one level per video by the teacher's forward process (SVD: x0 + σ·ε), ε drawn from `gen`."""
    noise = torch.randn(x0.shape, generator=gen, device=x0.device)
    return p.teacher.precond.add_noise(x0, level.reshape(-1, 1, 1, 1, 1), noise)


def round_generator(seed: int, position: int, device) -> torch.Generator:
    """The generator of the micro-batch whose first video is global data position `position`."""
    return torch.Generator(device).manual_seed(seed * 2**32 + position)


@dataclass
class Parts:
    """Everything the steps act on, built once by `sfv.train.build`."""

    recipe: Recipe
    world: distributed.World
    teacher: Teacher  # frozen; its network's encoder is D's backbone
    G: SFVGenerator
    D: Discriminator
    G_ddp: torch.nn.Module  # G / D as the processes see them (DDP-wrapped or FSDP-sharded: sfv/distributed.py)
    D_ddp: torch.nn.Module
    ema: AveragedModel
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sigma_d: LogNormalSigmaSampler
    amp: object
    init_sigma: float = 1.0  # the sampler's initial noise scale at σ_max (SVD: √(σ_max² + 1)): G's input is ε·init_sigma
    fake: SFVGenerator | None = None  # DMD's fake-score network (a trainable copy of the teacher's), or None
    fake_ddp: torch.nn.Module | None = None
    opt_fake: torch.optim.Optimizer | None = None
    sigma_dmd: LevelSampler | None = None  # DMD's σ (sfv.noise.UniformLevelSampler)


def d_step(p: Parts, batches: list[Round], state: State) -> dict:
    """One D update over the accumulation rounds `batches`; G and the backbone stay untouched.

    L_D = E[max(0, 1 − D(x0 + σ′ε₁))] + E[max(0, 1 + D(x̂0 + σ′ε₂))]  (+ γ/2 · R1 every r1_interval steps, ×interval)
    relativistic: L_D = E[softplus(D(x̂0 + σ′ε₂) − D(x0 + σ′ε₁))];  r2_gamma: + γ₂/2 · R2, R1's form on the fake input
    """
    dcfg = p.recipe.discriminator
    reg = dcfg.r1 != "none" and state.d_steps % dcfg.r1_interval == 0
    exact = reg and dcfg.r1 == "exact"
    r2 = reg and dcfg.r2_gamma > 0
    adversarial = losses.d_relativistic_loss if dcfg.loss == "relativistic" else losses.d_hinge_loss
    stats = {}
    for r, (x0, cond, gen, _) in enumerate(batches):
        b = len(x0)
        with torch.no_grad(), p.amp:
            sigma_t = p.G.sample_level(b, gen).to(x0.device)  # drawn either way: the later draws stay the same
            if dcfg.fake_sigma == "max":
                sigma_t = torch.full_like(sigma_t, p.G.top_level)
            fake = p.G(noised(p, x0, sigma_t, gen), sigma_t, cond)
        s = p.sigma_d(b, gen).to(x0.device)  # the same σ′ for real and fake
        x_real, x_fake = noised(p, x0, s, gen), noised(p, fake, s, gen)
        inputs = [x_real.requires_grad_(exact), x_fake.requires_grad_(exact and r2)]
        if reg and dcfg.r1 == "approx":
            inputs.append(x_real + dcfg.r1_eps * torch.randn(x_real.shape, generator=gen, device=x_real.device))
        if r2 and dcfg.r1 == "approx":
            inputs.append(x_fake + dcfg.r1_eps * torch.randn(x_fake.shape, generator=gen, device=x_fake.device))
        n = len(inputs)
        # the exact R1 needs a double backward, which only the math SDPA kernel has on CPU
        kernel = torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH) if exact else nullcontext()
        with distributed.sync(p.D_ddp, r == len(batches) - 1), kernel:
            with p.amp:
                logits = p.D_ddp(torch.cat(inputs), s.repeat(n), cond.repeat(n))  # one pass: real ‖ fake (‖ perturbed)
                real, fake_logits, *perturbed = [{k: v.chunk(n)[i] for k, v in logits.items()} for i in range(n)]
                adv = loss = adversarial(real, fake_logits)
                if reg:
                    score = losses.video_score(real)
                    r1 = losses.r1_exact(score, x_real) if exact else losses.r1_approx(score, losses.video_score(perturbed[0]), dcfg.r1_eps)
                    loss = loss + dcfg.r1_gamma / 2 * dcfg.r1_interval * r1
                    accumulate(stats, {"loss/r1": r1.item()}, len(batches))
                if r2:
                    score = losses.video_score(fake_logits)
                    r2_value = (losses.r1_exact(score, x_fake) if exact else
                                losses.r1_approx(score, losses.video_score(perturbed[-1]), dcfg.r1_eps))
                    loss = loss + dcfg.r2_gamma / 2 * dcfg.r1_interval * r2_value
                    accumulate(stats, {"loss/r2": r2_value.item()}, len(batches))
            (loss / len(batches)).backward()
        accumulate(stats, {"loss/d": loss.item(), f"loss/d_{dcfg.loss}": adv.item(), **losses.logit_stats(real, fake_logits)}, len(batches))
    stats["grad_norm/d"] = apply_update(p.opt_d, p.D.trainable_parameters(), dcfg.grad_clip, loss, p.world, state)
    state.d_steps += 1
    return stats


def fake_step(p: Parts, batches: list[Round], state: State) -> dict:
    """One update of DMD's fake-score network on G's one-step samples (G, D and the teacher stay untouched):

    L_fake = E[λ(σ)·‖f_fake(x̂0 + σε, σ, c) − x̂0‖²],  x̂0 = G(ε′·σ_init, σ_max, c),  σ ~ DMD2's uniform levels
    """
    stats = {}
    for r, (x0, cond, gen, _) in enumerate(batches):
        b = len(x0)
        with torch.no_grad(), p.amp:
            x_gen = one_step(p, p.G, cond, x0, gen)
        sigma = p.sigma_dmd(b, gen).to(x0.device)
        with distributed.sync(p.fake_ddp, r == len(batches) - 1):
            with p.amp:
                pred = p.fake_ddp(noised(p, x_gen, sigma, gen), sigma, cond)
                loss = losses.denoising_loss(pred, x_gen, p.teacher.precond.loss_weight(sigma))
            (loss / len(batches)).backward()
        accumulate(stats, {"loss/fake": loss.item()}, len(batches))
    stats["grad_norm/fake"] = apply_update(p.opt_fake, list(p.fake.parameters()), p.recipe.generator.grad_clip, loss, p.world, state)
    return stats


def one_step(p: Parts, net, cond: Condition, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`net`'s one-step video from pure noise, as at inference: net(ε·σ_init, σ_max, c), ε drawn from `gen`."""
    sigma = torch.full((len(like),), p.G.top_level, device=like.device)
    return net(torch.randn(like.shape, generator=gen, device=like.device) * p.init_sigma, sigma, cond)


def g_inputs(p: Parts, rnd: Round, sigma_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """G's input, its reconstruction target and which videos are reconstructed ([B] 0/1; None = all, as SF-V).

    SF-V: x0 + σ_t·ε → x0 at every level. rec_target=teacher: at σ_max the teacher pair instead (ε·σ_init → the
    teacher's sample from ε). rec_max_sigma: only levels ≤ it reconstruct the real clip (the teacher pair always)."""
    gcfg = p.recipe.generator
    x0, gen = rnd.x0, rnd.gen
    x_in, target, on = noised(p, x0, sigma_t, gen), x0, None
    if gcfg.rec_max_sigma is not None:
        on = (sigma_t <= p.teacher.precond.level_of_sigma(gcfg.rec_max_sigma)).float()  # σ in the recipe
    if gcfg.rec_target == "teacher":
        if rnd.pair is None:
            raise InputError("generator.rec_target=teacher needs teacher pairs in the batch: train from a latent cache "
                             "written with `sfv cache --teacher-pairs K` (data.cache)")
        top = (sigma_t == p.G.levels[0].to(sigma_t.device)).reshape(-1, 1, 1, 1, 1)  # G's top level, σ_max
        noise, teacher_x0 = rnd.pair
        x_in = torch.where(top, noise * p.init_sigma, x_in)
        target = torch.where(top, teacher_x0, x0)
        if on is not None:  # gated: the pair is reconstructed at σ_max whatever the gate says
            on = torch.maximum(on, top.flatten().float())
    return x_in, target, on


def g_step(p: Parts, batches: list[Round], state: State) -> dict:
    """One G update (+ EMA); D's heads and backbone, the teacher (and DMD's fake score) stay untouched.

    L_G = −w·E[D(x̂0 + σ′ε)] + λ · pseudo-Huber(x̂0, x0),   x̂0 = G(x0 + σ_t·ε, σ_t, c)   (w = adv_weight, 1 in SF-V)
    (+ the recipe options: the relativistic L_G, gated or teacher-pair reconstruction, w_dmd·L_DMD on G(ε·σ_init))

    The terms' gradients are taken at x̂0 apart, then sent through G together (x̂0.backward(w·∇adv + λ·∇rec + …),
    the chain rule of the summed loss), so the log shows how strongly each term pulls on G's output at no extra
    cost: `grad/g_adv` against `grad/g_rec` says whether D's signal reaches G at all.
    """
    gcfg, dmd, relativistic = p.recipe.generator, p.recipe.dmd, p.recipe.discriminator.loss == "relativistic"
    stats = {}
    p.D.heads_requires_grad_(False)  # D is only a critic here: no head gradients in the G phase
    try:
        for r, rnd in enumerate(batches):
            x0, cond, gen = rnd.x0, rnd.cond, rnd.gen
            b = len(x0)
            sigma_t = p.G.sample_level(b, gen).to(x0.device)
            s = p.sigma_d(b, gen).to(x0.device)
            x_in, target, on = g_inputs(p, rnd, sigma_t)
            main = gcfg.adv_weight > 0 or gcfg.huber_weight > 0 or not dmd.weight  # DMD alone needs no batch videos
            sigma_in, cond_in = sigma_t, cond
            if dmd.weight:  # DMD's sample from pure noise, in the same pass: [x̂0 of the batch ‖ G(ε·σ_init) per condition]
                noise = torch.randn(x0.shape, generator=gen, device=x0.device) * p.init_sigma
                top = torch.full_like(sigma_t, p.G.top_level)
                x_in, sigma_in, cond_in = ((torch.cat([x_in, noise]), torch.cat([sigma_t, top]), cond.repeat(2)) if main else
                                           (noise, top, cond))
            with distributed.sync(p.G_ddp, r == len(batches) - 1):
                with p.amp:
                    out = p.G_ddp(x_in, sigma_in, cond_in)
                    y = out.detach().requires_grad_(True)  # G's outputs as a leaf: each term's gradient at x̂0
                    terms, loss = {}, 0.0
                    if main:
                        x0_pred = y[:b]
                        fake_logits = p.D(noised(p, x0_pred, s, gen), s, cond)
                        if relativistic:
                            with torch.no_grad():
                                real_logits = p.D(noised(p, x0, s, gen), s, cond)
                            adv = losses.g_relativistic_loss(real_logits, fake_logits)
                        else:
                            adv = losses.g_hinge_loss(fake_logits)
                        c = gcfg.huber_c if gcfg.huber_c is not None else losses.default_huber_c(x0[0].numel())
                        rec = losses.pseudo_huber(x0_pred, target, c, on)
                        loss = gcfg.adv_weight * adv + gcfg.huber_weight * rec
                        terms = {"adv": (gcfg.adv_weight, adv), "rec": (gcfg.huber_weight, rec)}
                    if dmd.weight:
                        x_gen = y[b:] if main else y
                        with torch.no_grad():
                            direction = dmd_direction(p, x_gen, cond, gen)
                        terms["dmd"] = (dmd.weight, losses.dmd_loss(x_gen, direction))
                        loss = loss + dmd.weight * terms["dmd"][1]
                pulls = {k: w * torch.autograd.grad(term, y)[0] for k, (w, term) in terms.items()}
                out.backward(sum(pulls.values()) / len(batches))
            accumulate(stats, {"loss/g": loss.item(), **{f"loss/g_{k}": term.item() for k, (_, term) in terms.items()},
                         **{f"grad/g_{k}": pull.norm().item() for k, pull in pulls.items()}}, len(batches))
    finally:
        p.D.heads_requires_grad_(True)
    if "grad/g_adv" in stats:
        stats["grad/g_adv_over_rec"] = stats["grad/g_adv"] / max(stats["grad/g_rec"], 1e-12)
    stats["grad_norm/g"] = apply_update(p.opt_g, list(p.G.parameters()), gcfg.grad_clip, loss, p.world, state)
    p.ema.update_parameters(p.G.net)
    state.g_steps += 1
    return stats


@torch.no_grad()
def dmd_direction(p: Parts, x_gen: torch.Tensor, cond: Condition, gen: torch.Generator) -> torch.Tensor:
    """DMD's direction at G's samples x̂0 [B, F, C, h, w] (losses.dmd_direction): both scores at x̂0 + σε, the teacher
    with its CFG (dmd.guidance), the fake score without."""
    sigma = p.sigma_dmd(len(x_gen), gen).to(x_gen.device)
    x_t = noised(p, x_gen, sigma, gen)
    real = p.teacher.denoise(x_t, sigma, cond, p.teacher.guidance(x_gen.shape[1], p.recipe.dmd.guidance))
    return losses.dmd_direction(x_gen, real, p.fake_ddp(x_t, sigma, cond))


# -- shared by the steps ------------------------------------------------------------------------------------


def accumulate(stats: dict, values: dict, n: int) -> None:
    for k, v in values.items():
        stats[k] = stats.get(k, 0.0) + v / n


def lr_scale(cfg, videos: int) -> float:
    """The learning rates' factor after `videos` videos (train.lr_decay; 1 throughout with `none`)."""
    start = cfg.lr_decay_from * cfg.total_videos
    if cfg.lr_decay == "none" or videos <= start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (videos - start) / (cfg.total_videos - start))))


def set_learning_rates(p: Parts, videos: int) -> float:
    """Every optimiser's rate for the iteration that starts after `videos` videos: the recipe's rate × lr_scale (returned)."""
    r, scale = p.recipe, lr_scale(p.recipe.train, videos)
    for opt, lr in ((p.opt_g, r.generator.lr), (p.opt_d, r.discriminator.lr), (p.opt_fake, r.dmd.fake_lr)):
        for group in opt.param_groups if opt is not None else ():
            group["lr"] = lr * scale
    return scale


def apply_update(opt, params, clip: float, loss, world, state: State) -> float:
    """Clip and step — unless the loss or gradients are non-finite on any process: then skip and count."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf) if grads else torch.tensor(0.0)
    if distributed.any_true(not (torch.isfinite(loss) and torch.isfinite(distributed.full_value(norm))), world):
        state.skipped_steps += 1
        state.nonfinite_in_row += 1
    else:
        opt.step()
        state.nonfinite_in_row = 0
    opt.zero_grad(set_to_none=True)
    return float(distributed.full_value(norm))
