"""SF-V training: latent adversarial fine-tuning of SVD into a one-step generator (§3.2). The one loop.

    accelerate launch -m sfv.train --recipe recipes/NAME.yaml [section.key=value ...] [--resume latest|DIR]
    sfv distill --recipe ...                                     (the same code)

Per iteration, on a batch of real clips x0 with conditioning c (frame 0):
  D phase  σ_t ~ U{top T_g−1 Karras levels}, fake = G(x0 + σ_t·ε, σ_t, c) without gradients;
           σ′ ~ discretised log-normal (the same for real and fake);
           L_D = hinge(D(x0 + σ′ε₁), D(fake + σ′ε₂)) [+ γ/2·R1 on the real input every r1_interval steps]
  G phase  x̂0 = G(x0 + σ_t·ε, σ_t, c);  L_G = −D(x̂0 + σ′ε) + λ·pseudo-Huber(x̂0, x0);  EMA of G
That is SF-V (recipes/toy_sfv_paper.yaml on the toy world). Recipe options beyond the paper, each off by default:
  discriminator.loss: relativistic   L_D = softplus(D(fake′) − D(real′)), L_G = softplus(D(real′) − D(fake′)); r2_gamma:
                                     the R1 penalty on the fake input too (R3GAN)
  generator.rec_max_sigma            the reconstruction only at G's levels σ_t ≤ it (gated)
  generator.rec_target: teacher      at σ_max, G(ε·σ_init) regresses onto the teacher's sample from ε (cached pairs)
  dmd.weight                         + w·L_DMD on G(ε·σ_init), with a fake-score network trained by denoising G's
                                     samples dmd.fake_steps_per_g times per G step (fake phase, before the G phase)
  train.lr_decay: cosine             every optimiser's rate decays to 0 at the end of the run (from train.lr_decay_from)
Lengths and cadences are counted in videos drawn from the data, over all processes. Every random draw of a
micro-batch (σ_t, σ′, ε, noise augmentation) comes from a generator seeded by its global data position, so a
run gives the same numbers on any number of processes (for the same global batch and batch_per_device).
Parallelism (DDP or FSDP2, recipe `parallel`) is laid out by sfv/distributed.py; each step's update is in sfv/steps.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sfv import checkpoint, distributed, heldout, lora, run_setup
from sfv.cache import LatentCache
from sfv.config import Recipe, add_train_arguments, load_recipe
from sfv.data import ClipSpec, ResumableSampler, VideoFolder, collate
from sfv.discriminator import Discriminator
from sfv.errors import InputError, SFVError
from sfv.generator import SFVGenerator
from sfv.model_dir import VideoRecord
from sfv.monitor import SAMPLE_CONDITION_SEED, Monitor, crossed
from sfv.noise import LogNormalSigmaSampler, UniformLevelSampler
from sfv.steps import (
    Parts,
    State,
    accumulate,
    d_step,
    fake_step,
    g_step,
    prepare,
    round_generator,
    set_learning_rates,
)
from sfv.teachers import Teacher, check_teacher_folder, load_teacher


class TrainingError(SFVError):
    """Training cannot go on (e.g. the loss stayed non-finite); the message says what to change."""


def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer != "adamw":
        raise InputError(f"optimizer '{cfg.optimizer}' is not available; use 'adamw' (no maintained SM3 package installs here)")
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_data(recipe: Recipe):
    d = recipe.data
    spec = ClipSpec.of(recipe)
    if d.cache:
        return LatentCache(d.cache, spec, recipe.svd.noise_aug_strength)
    if not d.videos:
        raise InputError("the recipe has neither data.videos nor data.cache; set one (e.g. data.videos=/path/to/videos)")
    return VideoFolder(d.videos, spec, seed=recipe.train.seed, metadata=d.metadata)


def build(recipe: Recipe, world: distributed.World, teacher: Teacher | None = None) -> Parts:
    """Frozen teacher, G (a copy of its UNet), D (its encoder + heads), EMA of G, one optimiser each; laid out
    over the processes per `recipe.parallel`. `teacher`: already built (e.g. random full-size weights for the
    memory report) instead of loaded from model.teacher."""
    gcfg, dcfg = recipe.generator, recipe.discriminator
    if teacher is None and not recipe.model.teacher:
        raise InputError("the recipe has no model.teacher; set it to an SVD diffusers folder (model.teacher=/path)")
    run_setup.seed(recipe.train.seed, world.rank)
    if teacher is None:
        teacher = load_teacher(recipe.model.teacher, device=world.device)
    run_setup.freeze(teacher)
    lora_cfg = recipe.model.lora
    backbone = teacher.encoder()  # with a LoRA G: the modules of G's base, adapters switched off in D's forward
    if lora_cfg is None:
        G = SFVGenerator.from_teacher(teacher, recipe.model.t_g)
    else:
        G = SFVGenerator.lora_on_teacher(teacher, lora_cfg, recipe.model.t_g)
    if recipe.model.gradient_checkpointing:  # per UNet block (recomputed in the backward)
        G.net.enable_gradient_checkpointing()
    blocks = len(backbone.block_channels)
    if dcfg.blocks is not None and not all(0 <= k < blocks for k in dcfg.blocks):
        raise InputError(f"discriminator.blocks {dcfg.blocks} must index the teacher's {blocks} encoder blocks (0..{blocks - 1})")
    D = Discriminator(backbone, teacher.condition_dim, dcfg.heads, dcfg.head_channels, dcfg.blocks,
                      teacher.label_count if dcfg.labels else 0).to(world.device)
    dmd = recipe.dmd
    fake = SFVGenerator.from_teacher(teacher, recipe.model.t_g) if dmd.weight else None  # DMD's fake score: a copy too
    bf16 = run_setup.use_bf16(recipe.train.precision, world.device)
    trained = [(net, teacher.sharding_units(net.net)) for net in (G, fake) if net is not None]
    if lora_cfg is None:
        # parameters only: buffers (a DiT's RoPE tables) are constants, and under FSDP they stay plain tensors beside DTensors
        ema = AveragedModel(G.net, multi_avg_fn=get_ema_multi_avg_fn(gcfg.ema), use_buffers=False)
        (G_ddp, *fake_ddp), D_ddp = distributed.parallelize(world, recipe.parallel.mode, trained,
                                                            [(ema.module, teacher.sharding_units(ema.module))], D, [teacher.net],
                                                            bf16=bf16, cpu_offload=recipe.parallel.cpu_offload)
    else:  # the base is frozen and shared with D and the teacher: only the adapters are sharded (sfv/distributed.py)
        (G_ddp, *fake_ddp), D_ddp = distributed.parallelize(world, recipe.parallel.mode, trained, [], D, [],
                                                            bf16=bf16, cpu_offload=recipe.parallel.cpu_offload,
                                                            frozen_base=lora.base_parameters(G.net))
        ema = lora.AdapterEMA(G.net, gcfg.ema)  # after sharding: the EMA's copies are sharded as the adapters are
    trainable = [q for q in G.parameters() if q.requires_grad]
    opt_g, opt_d = build_optimizer(trainable, gcfg), build_optimizer(D.trainable_parameters(), dcfg)  # after sharding
    sigma_d = LogNormalSigmaSampler(teacher.level_grid(dcfg.t_d), dcfg.p_mean, dcfg.p_std, teacher.precond.log_sigma)
    amp = torch.autocast(world.device.type, torch.bfloat16) if bf16 else nullcontext()
    init_sigma = float(teacher.sigmas(1)[1])
    parts = Parts(recipe, world, teacher, G, D, G_ddp, D_ddp, ema, opt_g, opt_d, sigma_d, amp, init_sigma)
    if fake is not None:
        parts.fake, parts.fake_ddp = fake, fake_ddp[0]
        parts.opt_fake = torch.optim.AdamW(fake.parameters(), lr=dmd.fake_lr, betas=tuple(gcfg.betas), weight_decay=gcfg.weight_decay)
        parts.sigma_dmd = UniformLevelSampler(teacher.level_grid(dcfg.t_d))
    return parts


def checkpointed(p: Parts) -> tuple[dict, dict]:
    """What a checkpoint holds: (models by file name, optimisers by file name with the module each steps)."""
    names = checkpoint.STUDENT_WEIGHTS
    if isinstance(p.ema, lora.AdapterEMA):  # a LoRA G: the adapters and their EMA, not the frozen base
        modules = {names["raw"]: lora.AdapterState(lora.adapter_parameters(p.G.net)), names["ema"]: p.ema.state(),
                   "discriminator_heads": p.D}
    else:
        modules = {names["raw"]: p.G.net, names["ema"]: p.ema.module, "discriminator_heads": p.D}
    optimizers = {"optim_g": (p.opt_g, p.G.net), "optim_d": (p.opt_d, p.D)}
    if p.fake is not None:
        modules["fake_score"], optimizers["optim_fake"] = p.fake.net, (p.opt_fake, p.fake.net)
    return modules, optimizers


def run(recipe: Recipe, resume: str | None = None, cpu: bool = False, overwrite: bool = False) -> Path:
    """Train per the recipe (resuming from a checkpoint if asked; `overwrite`: start a run folder that holds one again);
    returns the run folder."""
    cfg, dcfg = recipe.train, recipe.discriminator
    world = run_setup.start(cfg.run_dir, resume, overwrite, cpu, group=recipe.parallel.mode == "fsdp")
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
        check_teacher_folder(recipe.model.teacher, d.frames, d.height, d.width)
    check_options(recipe, dataset)
    p = build(recipe, world)
    if world.is_main:
        run_setup.checkpointing_hint(recipe.model.gradient_checkpointing, sum(q.numel() for q in p.G.parameters()), world.device)
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
    monitor = Monitor(run_dir, cfg, recipe.data, world, p.teacher, sample_cond)  # tensorboard, samples, progress
    run_setup.write_recipe(recipe, run_dir, world)
    pairs = heldout.make_pairs(recipe, cfg, dataset, p.teacher, p.sigma_d) if cfg.d_eval_every else None
    if pairs and state.videos == 0:
        monitor.heldout(state, heldout.judge(pairs, p.G, p.D, p.amp, p.teacher.precond.add_noise))  # where D starts

    def next_round(times):
        t = time.perf_counter()
        batch = next(loader)  # decoded clips (the rest of time/data_s is the teacher's VAE/CLIP encode)
        times["time/load_s"] += time.perf_counter() - t
        state.skipped_files = sorted(set(state.skipped_files).union(batch["skipped"]))  # unique paths + reasons
        gen = round_generator(cfg.seed, state.videos + world.rank, world.device)  # this micro-batch's first position
        state.videos += micro * world.size
        return prepare(batch, p.teacher, recipe, gen)

    monitor.start(state)
    while state.videos < cfg.total_videos:
        before, stats, times = state.videos, {}, {"time/data_s": 0.0, "time/load_s": 0.0, "time/d_s": 0.0, "time/g_s": 0.0}
        lr_scale = set_learning_rates(p, state.videos)  # train.lr_decay (1 throughout with `none`)
        for _ in range(dcfg.steps_per_g):
            t0 = time.perf_counter()
            batches = [next_round(times) for _ in range(rounds)]  # decode + VAE/CLIP encode (or read the cache)
            t1 = time.perf_counter()
            accumulate(stats, d_step(p, batches, state), dcfg.steps_per_g)
            times["time/data_s"] += t1 - t0
            times["time/d_s"] += time.perf_counter() - t1
        if state.videos > dcfg.warmup_videos:
            t2 = time.perf_counter()
            if p.fake is not None:  # DMD: the fake score catches up with G first (two time-scales)
                for _ in range(recipe.dmd.fake_steps_per_g):
                    accumulate(stats, fake_step(p, batches, state), recipe.dmd.fake_steps_per_g)
                times["time/fake_s"] = time.perf_counter() - t2
                t2 = time.perf_counter()
            stats.update(g_step(p, batches, state))  # G trains on the last D batch
            times["time/g_s"] = time.perf_counter() - t2
        stats.update({**times, "train/skipped_steps": state.skipped_steps, **({"train/lr_scale": lr_scale} if cfg.lr_decay != "none" else {})})
        monitor.step(state, stats, p.ema.module)
        if pairs and (crossed(before, state.videos, cfg.d_eval_every) or state.videos >= cfg.total_videos):
            monitor.heldout(state, heldout.judge(pairs, p.G, p.D, p.amp, p.teacher.precond.add_noise))
        if state.nonfinite_in_row >= cfg.max_nonfinite:
            raise TrainingError(f"stopped: {state.nonfinite_in_row} steps in a row had a non-finite loss "
                                f"(at {state.videos} videos); lower the learning rates or check the data")
        if crossed(before, state.videos, cfg.checkpoint_every) or state.videos >= cfg.total_videos:
            checkpoint.save(run_dir / "checkpoints", state.videos, world, modules, optimizers, {},
                            {"state": state.__dict__, "recipe": recipe.to_dict()}, cfg.keep_checkpoints,
                            sharded=recipe.parallel.mode == "fsdp")
    layout = {"parallel": recipe.parallel.mode, "processes": world.size, "generator_parameters": distributed.parameter_layout(p.G, world)}
    final = p.ema.module if state.g_steps else lora.AdapterNet(p.G.net) if recipe.model.lora else p.G.net
    adapters = final.gather(world) if isinstance(final, lora.AdapterNet) else None  # a LoRA G: base and adapters, whole
    if adapters is not None:
        unet = lora.merged_copy(p.G.net, adapters[1], adapters[0]).to(world.device)
    else:
        unet = None if isinstance(final, lora.AdapterNet) else distributed.unsharded(final, world, like=p.teacher.net)  # None off process 0
    monitor.finish(state, unet, layout)
    if cfg.export and world.is_main:
        export(recipe, state, unet, p.teacher, "ema" if state.g_steps else "initial (no G step yet)",
               adapters[1] if adapters is not None else None)
    distributed.shutdown(world)
    return run_dir


def export(recipe: Recipe, state: State, unet, teacher: Teacher, weights: str, adapters: dict | None = None) -> Path:
    """The student as the run folder's export/ (the family's Teacher.export), replacing an earlier one of this run.
    A LoRA student (`adapters`: its adapter values; `unet` has them merged in) also gets its adapter in the family's
    loader layout beside it, in export/lora/ (Teacher.export_lora)."""
    import shutil

    out = Path(recipe.train.run_dir) / "export"
    if out.exists():
        shutil.rmtree(out)
    info = {"teacher": recipe.model.teacher, "videos": state.videos, "g_steps": state.g_steps, "weights": weights}
    video = VideoRecord.trained(recipe.to_dict()["data"], recipe.model.teacher)
    if adapters is not None:
        info["lora"] = {**dataclasses.asdict(recipe.model.lora), "adapter": lora.ADAPTER_FOLDER}
    teacher.export(unet, out, info=info, t_g=recipe.model.t_g, video=video)
    if adapters is not None:
        teacher.export_lora(adapters, recipe.model.lora, out / lora.ADAPTER_FOLDER)
    print(f"sfv distill: exported the one-step student to {out}")
    return out


def check_options(recipe: Recipe, dataset) -> None:
    """The recipe options that need something of the teacher folder or the data, checked before any model loads."""
    gcfg, teacher = recipe.generator, recipe.model.teacher
    if recipe.model.lora is not None:
        lora.check_folder(teacher, recipe.model.lora)  # targets that match nothing: before the teacher loads
    if gcfg.rec_target == "teacher" and not getattr(dataset, "teacher_pairs", None):
        where = f"the latent cache '{recipe.data.cache}' has none" if recipe.data.cache else "data.videos are read as files"
        raise InputError(f"generator.rec_target=teacher needs teacher pairs, but {where}: write a cache with "
                         "`sfv cache ... --teacher-pairs K` and set data.cache to it")
    if recipe.dmd.weight and Path(teacher, "sfv.json").is_file():
        raise InputError(f"dmd.weight > 0 needs the teacher's multi-step score, but model.teacher '{teacher}' is an sfv "
                         "one-step student (sfv.json); point model.teacher at the multi-step teacher folder")
    from sfv.teachers import DEFAULT_FAMILY, family_class, family_of

    if family_of(teacher) != DEFAULT_FAMILY:
        changed = [f"svd.{f.name}" for f in dataclasses.fields(recipe.svd)
                   if getattr(recipe.svd, f.name) != f.default]
        if changed:
            raise InputError(f"{changed[0]} is an SVD setting, but model.teacher '{teacher}' is a {family_of(teacher)} "
                             "folder, which does not read it: remove it from the recipe")
    if recipe.discriminator.labels and not family_class(teacher).label_count:
        raise InputError(f"discriminator.labels=true embeds the teacher's scalar conditions (SVD's fps and motion bucket) in "
                         f"D, but model.teacher '{teacher}' is a {family_of(teacher)} folder, which has none: set "
                         "discriminator.labels=false")
    if gcfg.rec_max_sigma is not None:
        levels = family_class(teacher).folder_generator_sigmas(teacher, recipe.model.t_g)  # σ, descending
        if not levels[-1] <= gcfg.rec_max_sigma < levels[0]:
            shown = ", ".join(f"{v:.3g}" for v in levels)
            raise InputError(f"generator.rec_max_sigma {gcfg.rec_max_sigma:g} is outside G's levels ({shown}): choose a "
                             f"value from {levels[-1]:.3g} (only the lowest level reconstructs) to below {levels[0]:.3g}")


# -- command line -------------------------------------------------------------------------------------------


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="sfv.train", description="SF-V adversarial distillation of an SVD teacher into a one-step generator")
    add_train_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from sfv.console import ArgParser, run_command

    def command(args):
        recipe = load_recipe(args.recipe, args.overrides)
        run(recipe, args.resume, cpu=args.cpu, overwrite=args.overwrite)
        return 0

    return run_command(build_parser(ArgParser), command, argv)


if __name__ == "__main__":
    sys.exit(main())
