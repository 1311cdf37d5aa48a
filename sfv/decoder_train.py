"""Distil the teacher's temporal VAE decoder into the fast tiny decoder (sfv.decoders.tiny). The one loop.

    sfv distill-decoder --recipe recipes/decoder_toy.yaml [section.key=value ...] [--resume latest|DIR]
    accelerate launch --multi_gpu --num_processes N -m sfv.decoder_train --recipe ... [--resume latest]

Per step, on a batch of real clips x (frames in [−1, 1]) from a video folder, read as the SF-V trainer reads them
(or on a latent cache's rows, `sfv cache`: z is read, and with no frames there the real term is off),

    z = E(x)                                   the frozen teacher VAE's latents (mode × scaling_factor), [B, F, C, h, w]
    L = w_real · ‖D(z) − x‖ + w_teacher · ‖D(z) − VAE_dec(z)‖     (mean L1, or mean squared with loss.kind=l2)
      + w_generated · ‖D(ẑ) − VAE_dec(ẑ)‖      with model.student: ẑ = the one-step student's latents for the clips'
                                               conditioning (frame 0 + labels), the videos the decoder will decode

The first term learns the real frames, the second the stock decoder's frames of the same latents (what a drop-in
decoder should reproduce; on a generated video there is no real x). Generated latents are not distributed as
encoded real ones, and a decoder trained on real latents alone decodes them worse than the stock decoder (measured
on the toy teacher: docs/architecture.md), hence the third term. On several processes the decoder is replicated
with DDP (sfv/distributed.py) and train.batch_size is the global batch: process r of W takes every W-th clip of
it, so a step sees the same clips on any number of processes. Lengths are counted in videos seen and the data
order is sfv.data.ResumableSampler's, so `--resume` continues bit for bit on the same number of processes. Output:
<run_dir>/decoder/ (config.json + diffusion_pytorch_model.safetensors), log.jsonl, config.yaml, checkpoints/,
report.json.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sfv import checkpoint, distributed, run_setup
from sfv.config import MOVED, DataConfig, SVDConfig
from sfv.sections import load_sections
from sfv.cache import LatentCache
from sfv.data import ClipSpec, ResumableSampler, VideoFolder, collate
from sfv.decoders.tiny import TinyDecoderConfig, TinyTemporalDecoder
from sfv.errors import InputError
from sfv.model_dir import check_model_dir, check_video_size
from sfv.monitor import crossed
from sfv.teachers import Teacher, load_teacher


@dataclass
class DecoderModelConfig:
    teacher: str = ""  # the SVD folder whose VAE latents the decoder reads (and whose decoder it imitates)
    init: str | None = None  # start from this decoder folder instead of random weights
    student: str | None = None  # an exported one-step student (same VAE): also learn the stock decoder on its latents
    block_out_channels: list[int] | None = None  # widths per stage, deepest first (None: 64 each, 32 at full size)
    num_blocks: list[int] | None = None  # residual blocks per stage (None: 3 each, 1 at full size)


@dataclass
class DecoderLossConfig:
    kind: str = "l1"  # l1 | l2
    real_weight: float = 1.0  # against the real frames
    teacher_weight: float = 1.0  # against the stock VAE decoder's frames of the same latents
    generated_weight: float = 1.0  # with model.student: against the stock decoder's frames of the student's latents


@dataclass
class DecoderTrainConfig:
    run_dir: str = "runs/decoder"
    seed: int = 0
    batch_size: int = 4  # videos per step
    total_videos: int = 4000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    log_every: int = 200  # videos
    checkpoint_every: int = 1000  # videos
    keep_checkpoints: int = 2


@dataclass
class DecoderRecipe:
    model: DecoderModelConfig = field(default_factory=DecoderModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    svd: SVDConfig = field(default_factory=SVDConfig)
    loss: DecoderLossConfig = field(default_factory=DecoderLossConfig)
    train: DecoderTrainConfig = field(default_factory=DecoderTrainConfig)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists (what sfv.sections.save_recipe writes)


def load_decoder_recipe(path, overrides: list[str] = ()) -> DecoderRecipe:
    r = load_sections(DecoderRecipe, path, overrides, MOVED)
    if not r.model.teacher:
        raise InputError("the recipe has no model.teacher; set it to an SVD diffusers folder (model.teacher=/path)")
    if r.data.cache and r.loss.real_weight > 0:
        raise InputError("a latent cache holds latents, not frames: set loss.real_weight=0 (learn the stock decoder's "
                         "frames of the cached latents) or train from data.videos")
    if r.loss.kind not in ("l1", "l2"):
        raise InputError(f"recipe key 'loss.kind' must be one of l1, l2, not {r.loss.kind!r}")
    if min(r.loss.real_weight, r.loss.teacher_weight, r.loss.generated_weight) < 0 or r.loss.real_weight + r.loss.teacher_weight == 0:
        raise InputError("loss.real_weight, loss.teacher_weight and loss.generated_weight must be ≥ 0, and the first two not both 0")
    if r.model.student and not Path(r.model.student, "model_index.json").is_file():
        raise InputError(f"model.student '{r.model.student}' is not an exported student folder (no model_index.json)")
    for key in ("batch_size", "total_videos"):
        if getattr(r.train, key) < 1:
            raise InputError(f"recipe key 'train.{key}' must be at least 1, got {getattr(r.train, key)}")
    if r.train.lr <= 0:
        raise InputError(f"recipe key 'train.lr' must be greater than 0, got {r.train.lr}")
    return r


def decoder_loss(pred: torch.Tensor, real: torch.Tensor | None, stock: torch.Tensor | None, cfg: DecoderLossConfig,
                 generated: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """{'loss'[, 'real', 'teacher', 'generated']}: mean L1 (or squared) error of D(z) [B, 3, F, H, W] to each target
    given (and of D(ẑ) to the stock decoder's frames of ẑ, `generated` = (D(ẑ), VAE_dec(ẑ))), weighted sum."""
    def err(a, b):
        return (a - b).abs().mean() if cfg.kind == "l1" else (a - b).square().mean()

    out = {}
    if real is not None:
        out["real"] = err(pred, real)
    if stock is not None:
        out["teacher"] = err(pred, stock)
    if generated is not None:
        out["generated"] = err(*generated)
    out["loss"] = (cfg.real_weight * out.get("real", 0.0) + cfg.teacher_weight * out.get("teacher", 0.0)
                   + cfg.generated_weight * out.get("generated", 0.0))
    return out


def build_decoder_net(recipe: DecoderRecipe, teacher: Teacher) -> TinyTemporalDecoder:
    """The decoder to train: from model.init, or a fresh layout for the teacher's VAE (seeded by train.seed)."""
    m = recipe.model
    if m.init:
        net = TinyTemporalDecoder.from_pretrained(m.init).requires_grad_(True)
    else:
        run_setup.seed(recipe.train.seed)
        net = TinyTemporalDecoder(TinyDecoderConfig.for_vae(teacher.vae, m.block_out_channels, m.num_blocks))
    net.check_fits(teacher.vae, f"for '{m.teacher}'")
    return net.to(teacher.device).train()


def train_step(net, opt, teacher: Teacher, batch: dict, recipe: DecoderRecipe, student: Teacher | None = None,
               generator: torch.Generator | None = None) -> dict:
    """One update on a batch of clips (`frames` [B, F, 3, H, W] in [0, 1], or a latent cache's `latents`, and their
    labels); with a student, also on its one-step latents for the clips' conditioning (drawn from `generator`).
    `net` may be DDP-wrapped: one forward, one backward. Returns the losses as floats."""
    d = recipe.data
    generated = None
    with torch.no_grad():
        if student is not None:
            z, cond = teacher.encode_batch(batch, d.height, d.width, recipe.svd.noise_aug_strength, generator)
            z_gen = student.sample(cond, z.shape[1], d.height, d.width, num_inference_steps=1,
                                   max_guidance_scale=1.0, generator=generator)
            stock_gen = teacher.decode(z_gen)
        elif "latents" in batch:  # a latent cache row: already the teacher's latents
            z = batch["latents"].to(teacher.device)
        else:
            z = teacher.encode_video(batch["frames"])  # [B, F, C, h, w]
        stock = teacher.decode(z) if recipe.loss.teacher_weight > 0 else None  # [B, 3, F, H, W]
    real = batch["frames"].to(z.device).transpose(1, 2) * 2 - 1 if "frames" in batch else None  # [B, 3, F, H, W] in [−1, 1]
    pred = net(z if student is None else torch.cat([z, z_gen]))  # one forward (DDP reduces once per backward)
    if student is not None:
        pred, pred_gen = pred.split(len(z))
        generated = (pred_gen, stock_gen)
    losses = decoder_loss(pred, real, stock, recipe.loss, generated)
    losses["loss"].backward()
    clip = recipe.train.grad_clip
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), clip if clip > 0 else float("inf"))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {**{f"loss/{k}": v.item() for k, v in losses.items()}, "grad_norm": norm.item()}


def load_data(recipe: DecoderRecipe):
    """The recipe's clips: data.cache (latents, `sfv cache`) or data.videos; fails before any model loads."""
    d = recipe.data
    if d.cache:
        return LatentCache(d.cache, ClipSpec.of(recipe), recipe.svd.noise_aug_strength)
    if not d.videos:
        raise InputError("the recipe has neither data.videos nor data.cache; set one (e.g. data.videos=/path/to/videos)")
    dataset = VideoFolder(d.videos, ClipSpec.of(recipe), seed=recipe.train.seed, metadata=d.metadata)
    dataset[(0, 0)]  # fail fast if no file is usable
    return dataset


def run(recipe: DecoderRecipe, resume: str | None = None, cpu: bool = False, overwrite: bool = False) -> Path:
    """Train per the recipe (resuming from a checkpoint if asked; `overwrite`: start a run folder that holds one again);
    returns the decoder folder. Collective on several processes (every process calls it)."""
    cfg = recipe.train
    world = run_setup.start(cfg.run_dir, resume, overwrite, cpu)
    if cfg.batch_size % world.size:
        raise InputError(f"train.batch_size {cfg.batch_size} is not a multiple of the {world.size} processes")
    micro = cfg.batch_size // world.size  # clips per process and step
    run_dir = Path(cfg.run_dir)
    d = recipe.data
    dataset = load_data(recipe)
    ckpt = checkpoint.resolve(resume, run_dir) if resume else None
    if Path(recipe.model.teacher).is_dir():
        check_video_size(d.height, d.width, d.frames, check_model_dir(recipe.model.teacher).vae_scale_factor)
    teacher = run_setup.freeze(load_teacher(recipe.model.teacher, device=world.device))
    student = None
    if recipe.model.student:  # the one-step student whose latents the decoder also learns (frozen)
        student = load_teacher(recipe.model.student, device=world.device).requires_grad_(False)
        if student.vae_scale_factor != teacher.vae_scale_factor or student.latent_channels != teacher.latent_channels:
            raise InputError(f"model.student '{recipe.model.student}' has another latent space than the teacher; "
                             "export the student with this teacher")
    net = build_decoder_net(recipe, teacher)  # a bad init folder stops here, before the run folder is touched
    net_ddp = distributed.wrap(net, world)  # the same start on every process (DDP broadcasts rank 0's weights)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    modules, optimizers = {"decoder": net}, {"optim": (opt, net)}
    videos, steps = 0, 0
    if ckpt:
        saved = checkpoint.load(ckpt, world, modules, optimizers, {})
        videos, steps = saved["state"]["videos"], saved["state"]["steps"]
    run_setup.write_recipe(recipe, run_dir, world)
    sampler = ResumableSampler(len(dataset), cfg.seed, world.rank, world.size, start=videos // world.size)
    loader = iter(torch.utils.data.DataLoader(dataset, micro, sampler=sampler, collate_fn=collate,
                                              num_workers=recipe.data.num_workers))
    skipped: set[str] = set()
    t0, start, first, stats = time.perf_counter(), videos, None, None
    log = open(run_dir / "log.jsonl", "a") if world.is_main else None
    # a progress bar on a terminal (process 0); the log lines below go to stdout either way
    bar = tqdm(total=cfg.total_videos, initial=videos, unit="video", desc="sfv distill-decoder", dynamic_ncols=True,
               disable=None if world.is_main else True)
    while videos < cfg.total_videos:
        batch = next(loader)
        skipped.update(batch["skipped"])
        # the student's noise: a pure function of (step, process), so a resumed run draws what an unbroken one would
        gen = torch.Generator(world.device).manual_seed((cfg.seed * 1_000_003 + steps) * world.size + world.rank)
        stats = train_step(net_ddp, opt, teacher, batch, recipe, student, gen)
        stats = dict(zip(stats, distributed.mean(list(stats.values()), world)))  # the global batch's losses
        before, videos, steps = videos, videos + cfg.batch_size, steps + 1
        first = first or stats
        bar.update(videos - bar.n)
        if world.is_main and (crossed(before, videos, cfg.log_every) or videos >= cfg.total_videos):
            rate = (videos - start) / max(time.perf_counter() - t0, 1e-9)
            log.write(json.dumps({"videos": videos, "steps": steps, **stats}) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{stats['loss/loss']:.4f}")
            bar.write(f"distill-decoder: {videos}/{cfg.total_videos} videos  loss {stats['loss/loss']:.4f}  ({rate:.1f} videos/s)")
        if crossed(before, videos, cfg.checkpoint_every) or videos >= cfg.total_videos:
            checkpoint.save(run_dir / "checkpoints", videos, world, modules, optimizers, {},
                            {"state": {"videos": videos, "steps": steps}, "recipe": recipe.to_dict()}, cfg.keep_checkpoints)
    bar.close()
    skipped = set().union(*distributed.gather_objects(skipped, world))
    out = run_dir / "decoder"
    if world.is_main:
        log.close()
        shutil.rmtree(out, ignore_errors=True)  # this run's own earlier output (a resumed run replaces it)
        net.eval().save_pretrained(out)
        report = {"videos": videos, "steps": steps, "processes": world.size, "first": first, "last": stats,
                  "seconds": time.perf_counter() - t0, "skipped_files": sorted(skipped), "decoder": str(out)}
        (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"distill-decoder: wrote {out}")
    distributed.shutdown(world)  # every process meets there first
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m sfv.decoder_train` (what `accelerate launch -m sfv.decoder_train` starts on each process)."""
    from sfv.config import add_train_arguments
    from sfv.console import ArgParser, run_command

    parser = ArgParser(prog="sfv.decoder_train", description="train the fast tiny decoder (= sfv distill-decoder)")
    add_train_arguments(parser)

    def command(args):
        run(load_decoder_recipe(args.recipe, args.overrides), args.resume, cpu=args.cpu, overwrite=args.overwrite)
        return 0

    return run_command(parser, command, argv)


if __name__ == "__main__":
    sys.exit(main())
