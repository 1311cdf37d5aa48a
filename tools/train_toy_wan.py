"""Train a tiny Wan-architecture teacher (Wan 2.2 TI2V layout: AutoencoderKLWan + WanTransformer3DModel + UMT5,
the real diffusers classes) on the toy world v2 and save it as a `WanImageToVideoPipeline` folder (safetensors).

    python tools/train_toy_wan.py --world runs/toy-wan/world-train --out models/toy-wan \\
        [--count 2000] [--vae-minutes 15] [--dit-minutes 45]

The world is written first when --world does not exist (v2, 9 frames: Wan needs 4k+1; 64 px read at 32), and its
metadata.jsonl gains a `caption` per clip naming the speed class ("move slowly" / "move fast" / "move quickly": the
text that stands for SVD's motion bucket), so `sfv distill` reads the same labels as captions.

- VAE: AutoencoderKLWan with two causal stages (4× in time, 4× in space: 9×32×32 px -> 3×8×8×16 latents), trained
  with MSE + a small KL; its latents_mean / latents_std are then set to the per-channel statistics of the data.
- Transformer: WanTransformer3DModel, 4 blocks of 4 heads × 32, patch (1, 2, 2): 48 tokens per clip. Wan 2.2 TI2V's
  conditioning (frame 0's latent replaced by the image's, timestep 0 on its tokens), trained by flow matching exactly
  as sfv's sampler runs it (WanTeacher.velocity: x_t = (1 − t)·x0 + t·ε, target v = ε − x0, t logit-normal), the
  caption dropped 10 % of the time so CFG works. EMA weights are saved.
- UMT5 text encoder and tokenizer: sfv.tiny_wan's, random and frozen (a fixed random feature of the caption).
A training log (<out>.train.jsonl) and toy_teacher.json (the settings and minutes) are written beside the folder.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FRAMES, SIZE, FPS = 9, 32, 8
CAPTIONS = ("move slowly", "move fast", "move quickly")  # v2's speed classes (sfv.toy.world.SPEEDS)


@dataclass
class WanToyTraining:
    count: int = 2000
    vae_minutes: float = 15.0
    vae_batch: int = 8
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    dit_minutes: float = 45.0
    dit_batch: int = 16
    dit_lr: float = 5e-4
    warmup: int = 200
    ema: float = 0.999
    uncond_prob: float = 0.1
    shift: float = 3.0  # FlowMatchEulerDiscreteScheduler's shift at sampling (Wan 2.1-480P's)
    seed: int = 0


def caption_world(folder: Path) -> None:
    """Add the speed-class caption to every row of the world's metadata.jsonl (kept if already there)."""
    from sfv.toy.world import speed_for_bucket

    path = folder / "metadata.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row.setdefault("caption", CAPTIONS[speed_for_bucket(row["motion_bucket_id"])])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_wan_world(folder: Path, count: int, seed: int, samples: int = 1) -> None:
    from sfv.toy.world import write_world

    write_world(folder, count, seed=seed, frames=FRAMES, size=64, fps=FPS, preset="v2", samples=samples)
    caption_world(folder)


def load_clips(folder: Path, count: int | None = None):
    """frames [N, F, 3, H, W] in [0, 1] (float16) and captions, through sfv's data path."""
    import torch

    from sfv.data import ClipSpec, VideoFolder

    data = VideoFolder(folder, ClipSpec(FRAMES, SIZE, SIZE, FPS))
    n = len(data) if count is None else min(count, len(data))
    items = [data.load(i) for i in range(n)]
    return torch.stack([it["frames"] for it in items]).half(), [it["caption"] for it in items]


def build(cfg: WanToyTraining):
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel

    from sfv.tiny_wan import build_text_encoder, build_tokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer()
    text = build_text_encoder(len(tokenizer))
    vae = AutoencoderKLWan(base_dim=16, z_dim=16, dim_mult=[1, 2, 4], num_res_blocks=1, attn_scales=[],
                           temperal_downsample=[True, True], scale_factor_spatial=4, scale_factor_temporal=4).eval()
    net = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16,
                                out_channels=16, text_dim=text.config.d_model, freq_dim=64, ffn_dim=256, num_layers=4,
                                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64).eval()
    return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text, vae=vae, transformer=net, image_encoder=None,
                                   image_processor=None, expand_timesteps=True,
                                   scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg.shift))


def log_row(path: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def train_vae(vae, frames, cfg: WanToyTraining, log: Path) -> dict:
    """MSE + KL on whole clips for cfg.vae_minutes; then latents_mean / latents_std from the data."""
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < cfg.vae_minutes * 60:
        idx = torch.randint(len(frames), (cfg.vae_batch,), generator=gen)
        x = frames[idx].float().permute(0, 2, 1, 3, 4) * 2 - 1  # [B, 3, F, H, W] in [−1, 1]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        mse = (rec - x).pow(2).mean()
        loss = mse + cfg.vae_kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            log_row(log, {"stage": "vae", "step": step, "mse": round(mse.item(), 5), "psnr": round(10 * math.log10(4 / mse.item()), 2),
                          "minutes": round((time.perf_counter() - t0) / 60, 2)})
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        zs = torch.cat([vae.encode(frames[i:i + 32].float().permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mode()
                        for i in range(0, min(len(frames), 512), 32)])
    mean, std = zs.mean((0, 2, 3, 4)), zs.std((0, 2, 3, 4))
    vae.register_to_config(latents_mean=[round(v, 4) for v in mean.tolist()], latents_std=[round(v, 4) for v in std.tolist()])
    return {"vae_steps": step, "vae_final_mse": round(mse.item(), 5)}


def train_dit(teacher, frames, captions, cfg: WanToyTraining, log: Path) -> tuple[object, dict]:
    """Flow matching through WanTeacher.velocity (the sampler's own call) for cfg.dit_minutes; returns the EMA net."""
    import torch

    from sfv.teachers.wan_condition import WanCondition

    with torch.no_grad():  # everything the frozen parts compute, once
        texts = {c: teacher.encode_prompt([c]) for c in CAPTIONS}
        empty = teacher.empty_prompt(1)
        x0s, images = [], []
        for i in range(0, len(frames), 64):
            x0, cond = teacher.encode_batch({"frames": frames[i:i + 64].float(), "caption": [""] * len(frames[i:i + 64])},
                                            SIZE, SIZE)
            x0s.append(x0)
            images.append(cond.image_latents)
        x0_all, image_all = torch.cat(x0s), torch.cat(images)
    text_all = torch.cat([texts[c] for c in captions])
    net = teacher.transformer
    net.train().requires_grad_(True)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.dit_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    t0, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < cfg.dit_minutes * 60:
        idx = torch.randint(len(x0_all), (cfg.dit_batch,), generator=gen)
        x0 = x0_all[idx]
        flips = torch.rand(3, generator=gen)  # the world is symmetric under mirrors: flip latents and conditioning together
        image = image_all[idx]
        for dim, p in zip((-1, -2), flips[:2]):
            if p < 0.5:
                x0, image = x0.flip(dim), image.flip(dim)
        text = text_all[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < cfg.uncond_prob
        text[drop] = empty.to(text.dtype)
        cond = WanCondition(text, empty.expand(len(idx), -1, -1), image, None)
        t = torch.sigmoid(torch.randn(len(idx), generator=gen))  # logit-normal (SD3)
        eps = torch.randn(x0.shape, generator=gen)
        x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
        v = teacher.velocity(x_t, t, cond, net=net)
        loss = (v - (eps - x0))[:, 1:].pow(2).mean()  # frame 0 is given (replaced by the image latent)
        for group in opt.param_groups:
            group["lr"] = cfg.dit_lr * min(1.0, (step + 1) / cfg.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - cfg.ema)
        losses.append(loss.item())
        step += 1
        if step % 200 == 0:
            log_row(log, {"stage": "dit", "step": step, "loss": round(sum(losses[-200:]) / 200, 5),
                          "minutes": round((time.perf_counter() - t0) / 60, 2)})
    net.eval().requires_grad_(False)
    return ema, {"dit_steps": step, "dit_final_loss": round(sum(losses[-200:]) / max(1, len(losses[-200:])), 5)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from sfv.model_dir import VideoRecord, write_video_record
    from sfv.teachers.wan import WanTeacher
    from sfv.tiny_wan import fix_model_index

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, help="toy-world v2 folder of 9-frame clips (written when missing)")
    p.add_argument("--out", required=True)
    for f, v in asdict(WanToyTraining()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    args = p.parse_args(argv)
    cfg = WanToyTraining(**{f: getattr(args, f) for f in asdict(WanToyTraining())})
    out, world = Path(args.out), Path(args.world)
    if out.exists():
        print(f"train_toy_wan: error: '{out}' exists; pick a new folder", file=sys.stderr)
        return 2
    if not world.is_dir():
        write_wan_world(world, cfg.count, seed=1)
    log = out.parent / f"{out.name}.train.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    frames, captions = load_clips(world, cfg.count)
    pipe = build(cfg)
    meta = {"world": str(world), "clips": len(frames), **train_vae(pipe.vae, frames, cfg, log)}
    teacher = WanTeacher.from_pipeline(pipe)
    ema, stats = train_dit(teacher, frames, captions, cfg, log)
    meta.update(stats)
    pipe.transformer = ema
    pipe.register_modules(transformer=ema)
    pipe.save_pretrained(out, safe_serialization=True)
    fix_model_index(out)
    write_video_record(out, VideoRecord(SIZE, SIZE, FRAMES, FPS, "v2"))
    meta["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    (out / "toy_teacher.json").write_text(json.dumps({"training": asdict(cfg), **meta}, indent=2) + "\n")
    print(f"train_toy_wan: {out} ({meta['minutes']} min: VAE {meta['vae_steps']} steps, transformer {meta['dit_steps']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
