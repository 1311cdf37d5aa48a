"""SF-V training: latent adversarial fine-tuning of SVD into a one-step generator (§3.2). The one loop.

    accelerate launch -m sfv.train --recipe recipes/NAME.yaml [section.key=value ...] [--resume latest|DIR]
    sfv distill --recipe ...                                     (the same code)

Per iteration, on a batch of real clips x0 with conditioning c (frame 0):
  D phase  σ_t ~ U{top T_g−1 Karras levels}, fake = G(x0 + σ_t·ε, σ_t, c) without gradients;
           σ′ ~ discretised log-normal (the same for real and fake);
           L_D = hinge(D(x0 + σ′ε₁), D(fake + σ′ε₂)) [+ γ/2·R1 on the real input every r1_interval steps]
  G phase  x̂0 = G(x0 + σ_t·ε, σ_t, c);  L_G = −D(x̂0 + σ′ε) + λ·pseudo-Huber(x̂0, x0);  EMA of G
Lengths and cadences are counted in videos drawn from the data, over all processes. Every random draw of a
micro-batch (σ_t, σ′, ε, noise augmentation) comes from a generator seeded by its global data position, so a
run gives the same numbers on any number of processes (for the same global batch and batch_per_device).
Parallelism (DDP or FSDP2, recipe `parallel`) is laid out by sfv/distributed.py.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sfv import checkpoint, distributed, heldout, losses
from sfv.config import Recipe, add_train_arguments, load_recipe, save_recipe
from sfv.data import ClipSpec, LatentCache, ResumableSampler, VideoFolder, collate
from sfv.discriminator import Discriminator
from sfv.errors import InputError, SFVError
from sfv.generator import SFVGenerator
from sfv.model_dir import check_model_dir, check_video_size
from sfv.monitor import SAMPLE_CONDITION_SEED, Monitor, crossed
from sfv.noise import LogNormalSigmaSampler
from sfv.teachers import Condition, Teacher, load_teacher


class TrainingError(SFVError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message says what to change."""


@dataclass
class State:
    videos: int = 0  # real videos drawn from the data, all processes together
    g_steps: int = 0
    d_steps: int = 0
    skipped_steps: int = 0  # updates skipped for a non-finite loss
    nonfinite_in_row: int = 0
    skipped_files: list[str] = field(default_factory=list)


def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer != "adamw":
        raise InputError(f"optimizer '{cfg.optimizer}' is not available; use 'adamw' (no maintained SM3 package installs here)")
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_data(recipe: Recipe):
    d = recipe.data
    spec = ClipSpec.of(d)
    if d.cache:
        return LatentCache(d.cache, spec, d.noise_aug_strength)
    if not d.videos:
        raise InputError("the recipe has neither data.videos nor data.cache; set one (e.g. data.videos=/path/to/videos)")
    return VideoFolder(d.videos, spec, seed=recipe.train.seed, metadata=d.metadata)


def prepare(batch: dict, teacher: Teacher, recipe: Recipe, gen: torch.Generator) -> tuple[torch.Tensor, Condition]:
    """A data batch -> (x0 latents [B, F, C, h, w], conditioning). Videos are encoded by the frozen teacher."""
    d = recipe.data
    return teacher.encode_batch(batch, d.height, d.width, d.noise_aug_strength, gen)


@dataclass
class Parts:
    """Everything the two phases act on, built once by `build`."""

    recipe: Recipe
    world: distributed.World
    teacher: Teacher  # frozen; its UNet encoder is D's backbone
    G: SFVGenerator
    D: Discriminator
    G_ddp: torch.nn.Module  # G / D as the processes see them (DDP-wrapped or FSDP-sharded: sfv/distributed.py)
    D_ddp: torch.nn.Module
    ema: AveragedModel
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sigma_d: LogNormalSigmaSampler
    amp: object


def noised(x0: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # x0 + σ·ε, one σ per video
    return x0 + sigma.reshape(-1, 1, 1, 1, 1) * torch.randn(x0.shape, generator=gen, device=x0.device)


def round_generator(seed: int, position: int, device) -> torch.Generator:
    """The generator of the micro-batch whose first video is global data position `position`."""
    return torch.Generator(device).manual_seed(seed * 2**32 + position)


def build(recipe: Recipe, world: distributed.World, teacher: Teacher | None = None) -> Parts:
    """Frozen teacher, G (a copy of its UNet), D (its encoder + heads), EMA of G, one optimiser each; laid out
    over the processes per `recipe.parallel`. `teacher`: already built (e.g. random full-size weights for the
    memory report) instead of loaded from model.teacher."""
    gcfg, dcfg = recipe.generator, recipe.discriminator
    if teacher is None and not recipe.model.teacher:
        raise InputError("the recipe has no model.teacher; set it to an SVD diffusers folder (model.teacher=/path)")
    torch.manual_seed(recipe.train.seed + world.rank)
    if teacher is None:
        teacher = load_teacher(recipe.model.teacher, device=world.device)
    teacher.requires_grad_(False)
    for module in teacher.modules():
        module.eval()
    G = SFVGenerator.from_teacher(teacher, recipe.model.t_g)
    if recipe.model.gradient_checkpointing:  # per UNet block (recomputed in the backward)
        G.unet.enable_gradient_checkpointing()
    backbone = teacher.encoder()
    blocks = len(backbone.block_channels)
    if dcfg.blocks is not None and not all(0 <= k < blocks for k in dcfg.blocks):
        raise InputError(f"discriminator.blocks {dcfg.blocks} must index the teacher's {blocks} encoder blocks (0..{blocks - 1})")
    D = Discriminator(backbone, teacher.condition_dim, dcfg.heads, dcfg.head_channels, dcfg.blocks).to(world.device)
    ema = AveragedModel(G.unet, multi_avg_fn=get_ema_multi_avg_fn(gcfg.ema), use_buffers=True)
    bf16 = _bf16(recipe.train.precision, world)
    G_ddp, D_ddp = distributed.parallelize(world, recipe.parallel.mode, G, teacher.sharding_units(G.unet), ema.module,
                                           teacher.sharding_units(ema.module), D, [teacher.unet], bf16=bf16,
                                           cpu_offload=recipe.parallel.cpu_offload)
    opt_g, opt_d = build_optimizer(G.parameters(), gcfg), build_optimizer(D.trainable_parameters(), dcfg)  # after sharding
    sigma_d = LogNormalSigmaSampler(teacher.sigma_min, teacher.sigma_max, dcfg.p_mean, dcfg.p_std, dcfg.t_d)
    amp = torch.autocast(world.device.type, torch.bfloat16) if bf16 else nullcontext()
    return Parts(recipe, world, teacher, G, D, G_ddp, D_ddp, ema, opt_g, opt_d, sigma_d, amp)


def d_step(p: Parts, batches: list, state: State) -> dict:
    """One D update over the accumulation rounds `batches` [(x0, cond, gen), ...]; G and the backbone stay untouched.

    L_D = E[max(0, 1 − D(x0 + σ′ε₁))] + E[max(0, 1 + D(x̂0 + σ′ε₂))]  (+ γ/2 · R1 every r1_interval steps, ×interval)
    """
    dcfg = p.recipe.discriminator
    reg = dcfg.r1 != "none" and state.d_steps % dcfg.r1_interval == 0
    exact = reg and dcfg.r1 == "exact"
    stats = {}
    for r, (x0, cond, gen) in enumerate(batches):
        b = len(x0)
        with torch.no_grad(), p.amp:
            sigma_t = p.G.sample_sigma(b, gen).to(x0.device)  # drawn either way: the later draws stay the same
            if dcfg.fake_sigma == "max":
                sigma_t = torch.full_like(sigma_t, p.G.sigma_max)
            fake = p.G(noised(x0, sigma_t, gen), sigma_t, cond)
        s = p.sigma_d(b, gen).to(x0.device)  # the same σ′ for real and fake
        x_real, x_fake = noised(x0, s, gen), noised(fake, s, gen)
        inputs = [x_real.requires_grad_(exact), x_fake]
        if reg and dcfg.r1 == "approx":
            inputs.append(x_real + dcfg.r1_eps * torch.randn(x_real.shape, generator=gen, device=x_real.device))
        n = len(inputs)
        # the exact R1 needs a double backward, which only the math SDPA kernel has on CPU
        kernel = torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH) if exact else nullcontext()
        with distributed.sync(p.D_ddp, r == len(batches) - 1), kernel:
            with p.amp:
                logits = p.D_ddp(torch.cat(inputs), s.repeat(n), cond.repeat(n))  # one pass: real ‖ fake (‖ perturbed)
                real, fake_logits, *perturbed = [{k: v.chunk(n)[i] for k, v in logits.items()} for i in range(n)]
                hinge = loss = losses.d_hinge_loss(real, fake_logits)
                if reg:
                    score = losses.video_score(real)
                    r1 = losses.r1_exact(score, x_real) if exact else losses.r1_approx(score, losses.video_score(perturbed[0]), dcfg.r1_eps)
                    loss = loss + dcfg.r1_gamma / 2 * dcfg.r1_interval * r1
                    _add(stats, {"loss/r1": r1.item()}, len(batches))
            (loss / len(batches)).backward()
        _add(stats, {"loss/d": loss.item(), "loss/d_hinge": hinge.item(), **losses.logit_stats(real, fake_logits)}, len(batches))
    stats["grad_norm/d"] = _apply(p.opt_d, p.D.trainable_parameters(), dcfg.grad_clip, loss, p.world, state)
    state.d_steps += 1
    return stats


def g_step(p: Parts, batches: list, state: State) -> dict:
    """One G update (+ EMA); D's heads and backbone and the teacher stay untouched.

    L_G = −w·E[D(x̂0 + σ′ε)] + λ · pseudo-Huber(x̂0, x0),   x̂0 = G(x0 + σ_t·ε, σ_t, c)   (w = adv_weight, 1 in SF-V)

    The two terms' gradients are taken at x̂0 apart, then sent through G together (x̂0.backward(w·∇adv + λ·∇rec),
    the chain rule of the summed loss), so the log shows how strongly each term pulls on G's output at no extra
    cost: `grad/g_adv` against `grad/g_rec` says whether D's signal reaches G at all.
    """
    gcfg = p.recipe.generator
    stats = {}
    p.D.heads_requires_grad_(False)  # D is only a critic here: no head gradients in the G phase
    try:
        for r, (x0, cond, gen) in enumerate(batches):
            b = len(x0)
            sigma_t = p.G.sample_sigma(b, gen).to(x0.device)
            s = p.sigma_d(b, gen).to(x0.device)
            with distributed.sync(p.G_ddp, r == len(batches) - 1):
                with p.amp:
                    x0_pred = p.G_ddp(noised(x0, sigma_t, gen), sigma_t, cond)
                    y = x0_pred.detach().requires_grad_(True)  # x̂0 as a leaf: each term's gradient at G's output
                    adv = losses.g_hinge_loss(p.D(noised(y, s, gen), s, cond))
                    c = gcfg.huber_c if gcfg.huber_c is not None else losses.default_huber_c(x0[0].numel())
                    rec = losses.pseudo_huber(y, x0, c)
                    loss = gcfg.adv_weight * adv + gcfg.huber_weight * rec
                pull_adv = gcfg.adv_weight * torch.autograd.grad(adv, y)[0]
                pull_rec = gcfg.huber_weight * torch.autograd.grad(rec, y)[0]
                x0_pred.backward((pull_adv + pull_rec) / len(batches))
            _add(stats, {"loss/g": loss.item(), "loss/g_adv": adv.item(), "loss/g_rec": rec.item(),
                         "grad/g_adv": pull_adv.norm().item(), "grad/g_rec": pull_rec.norm().item()}, len(batches))
    finally:
        p.D.heads_requires_grad_(True)
    stats["grad/g_adv_over_rec"] = stats["grad/g_adv"] / max(stats["grad/g_rec"], 1e-12)
    stats["grad_norm/g"] = _apply(p.opt_g, list(p.G.parameters()), gcfg.grad_clip, loss, p.world, state)
    p.ema.update_parameters(p.G.unet)
    state.g_steps += 1
    return stats


def checkpointed(p: Parts) -> tuple[dict, dict]:
    """What a checkpoint holds: (models by file name, optimisers by file name with the module each steps)."""
    names = checkpoint.STUDENT_WEIGHTS
    modules = {names["raw"]: p.G.unet, names["ema"]: p.ema.module, "discriminator_heads": p.D}
    optimizers = {"optim_g": (p.opt_g, p.G.unet), "optim_d": (p.opt_d, p.D)}
    return modules, optimizers


def run(recipe: Recipe, resume: str | None = None, cpu: bool = False) -> Path:
    """Train per the recipe (resuming from a checkpoint if asked); returns the run folder."""
    world = distributed.init(cpu=cpu, group=recipe.parallel.mode == "fsdp")
    cfg, dcfg = recipe.train, recipe.discriminator
    run_dir, micro = Path(cfg.run_dir), cfg.batch_per_device
    if cfg.batch_size % (micro * world.size):
        raise InputError(f"train.batch_size {cfg.batch_size} is not a multiple of batch_per_device × processes = {micro} × {world.size}")
    rounds = cfg.batch_size // (micro * world.size)  # gradient accumulation rounds per step
    dataset = build_data(recipe)
    dataset[(0, 0)]  # fail fast, before loading any model, if no file is usable
    if cfg.d_eval_every and recipe.data.eval_videos and not Path(recipe.data.eval_videos).is_dir():
        raise InputError(f"data.eval_videos '{recipe.data.eval_videos}' does not exist: write D's held-out videos there, "
                         "point data.eval_videos at a folder of videos, or set train.d_eval_every=0")
    ckpt = checkpoint.resolve(resume, run_dir) if resume else None
    if Path(recipe.model.teacher).is_dir():
        d = recipe.data
        check_video_size(d.height, d.width, d.frames, check_model_dir(recipe.model.teacher).vae_scale_factor)
    p = build(recipe, world)
    state = State()
    modules, optimizers = checkpointed(p)
    if ckpt:
        saved = checkpoint.load(ckpt, world, modules, optimizers, {})
        state = State(**saved["state"])
        p.ema.n_averaged.fill_(state.g_steps)  # one EMA update per G step
    sampler = ResumableSampler(len(dataset), cfg.seed, world.rank, world.size, start=state.videos // world.size)
    loader = iter(torch.utils.data.DataLoader(dataset, micro, sampler=sampler, collate_fn=collate, num_workers=recipe.data.num_workers,
                                              generator=torch.Generator().manual_seed(cfg.seed)))  # leaves the global RNG alone
    count = min(cfg.sample_count, len(dataset))  # fixed conditioning for sample videos: frame 0 of the first clips
    sample_cond = prepare(collate([dataset[(i, 0)] for i in range(count)]), p.teacher, recipe,
                          torch.Generator(world.device).manual_seed(SAMPLE_CONDITION_SEED))[1] if world.is_main and count else None
    monitor = Monitor(run_dir, recipe, world, p.teacher, sample_cond)  # tensorboard, samples, progress, export
    if world.is_main:
        save_recipe(recipe, run_dir / "config.yaml")
    pairs = heldout.make_pairs(recipe, dataset, p.teacher, p.sigma_d) if cfg.d_eval_every else None
    if pairs and state.videos == 0:
        monitor.heldout(state, heldout.judge(pairs, p.G, p.D, p.amp))  # where D starts

    def next_round(times):
        t = time.perf_counter()
        batch = next(loader)  # decoded clips (the rest of time/data_s is the teacher's VAE/CLIP encode)
        times["time/load_s"] += time.perf_counter() - t
        state.skipped_files = sorted(set(state.skipped_files).union(batch["skipped"]))  # unique paths + reasons
        gen = round_generator(cfg.seed, state.videos + world.rank, world.device)  # this micro-batch's first position
        state.videos += micro * world.size
        return (*prepare(batch, p.teacher, recipe, gen), gen)

    monitor.start(state)
    while state.videos < cfg.total_videos:
        before, stats, times = state.videos, {}, {"time/data_s": 0.0, "time/load_s": 0.0, "time/d_s": 0.0, "time/g_s": 0.0}
        for _ in range(dcfg.steps_per_g):
            t0 = time.perf_counter()
            batches = [next_round(times) for _ in range(rounds)]  # decode + VAE/CLIP encode (or read the cache)
            t1 = time.perf_counter()
            _add(stats, d_step(p, batches, state), dcfg.steps_per_g)
            times["time/data_s"] += t1 - t0
            times["time/d_s"] += time.perf_counter() - t1
        if state.videos > dcfg.warmup_videos:
            t2 = time.perf_counter()
            stats.update(g_step(p, batches, state))  # G trains on the last D batch
            times["time/g_s"] = time.perf_counter() - t2
        stats.update({**times, "train/skipped_steps": state.skipped_steps})
        monitor.step(state, stats, p.ema.module)
        if pairs and (crossed(before, state.videos, cfg.d_eval_every) or state.videos >= cfg.total_videos):
            monitor.heldout(state, heldout.judge(pairs, p.G, p.D, p.amp))
        if state.nonfinite_in_row >= cfg.max_nonfinite:
            raise TrainingError(f"stopped: {state.nonfinite_in_row} steps in a row had a non-finite loss "
                                f"(at {state.videos} videos); lower the learning rates or check the data")
        if crossed(before, state.videos, cfg.checkpoint_every) or state.videos >= cfg.total_videos:
            checkpoint.save(run_dir / "checkpoints", state.videos, world, modules, optimizers, {},
                            {"state": state.__dict__, "recipe": recipe.to_dict()}, cfg.keep_checkpoints,
                            sharded=recipe.parallel.mode == "fsdp")
    layout = {"parallel": recipe.parallel.mode, "processes": world.size, "generator_parameters": distributed.parameter_layout(p.G, world)}
    monitor.finish(state, p.ema.module if state.g_steps else p.G.unet, "ema" if state.g_steps else "initial (no G step yet)", layout)
    distributed.shutdown(world)
    return run_dir


# -- small helpers of the loop ----------------------------------------------------------------------------


def _bf16(precision: str, world) -> bool:
    if precision not in ("auto", "fp32", "bf16"):
        raise InputError(f"train.precision must be auto, fp32 or bf16, not {precision!r}")
    return precision == "bf16" or (precision == "auto" and world.device.type == "cuda")


def _add(stats: dict, values: dict, n: int) -> None:
    for k, v in values.items():
        stats[k] = stats.get(k, 0.0) + v / n


def _apply(opt, params, clip: float, loss, world, state: State) -> float:
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


# -- command line -------------------------------------------------------------------------------------------


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="sfv.train", description="SF-V adversarial distillation of an SVD teacher into a one-step generator")
    add_train_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from sfv.console import ArgParser, run_command

    def command(args):
        recipe = load_recipe(args.recipe, args.overrides)
        run(recipe, args.resume, cpu=args.cpu)
        return 0

    return run_command(build_parser(ArgParser), command, argv)


if __name__ == "__main__":
    sys.exit(main())
