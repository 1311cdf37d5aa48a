"""The toy teacher: a tiny SVD (AutoencoderKLTemporalDecoder + UNetSpatioTemporalConditionModel + CLIP image
encoder, the real diffusers classes) that sfv trains itself on the toy world, with SVD's conditioning and
the EDM v-prediction denoising objective. Saved as a diffusers folder, loadable by `SVDTeacher`,
`StableVideoDiffusionPipeline` and `sfv distill` like any SVD.

- VAE: [32, 64] (factor 2: 32×32 px -> 16×16×4 latents), trained on toy frames with MSE + a small KL; its
  `scaling_factor` is then set to 1 / std of its latents (how SD's 0.18215 was chosen).
- UNet: (32, 64) with cross-attention only at the 8×8 level (spatial attention at 16×16 costs more than
  the rest of the network together on a CPU), conditioned as SVD (CLIP embedding of frame 0, noise-augmented
  frame-0 latent concatenated to every frame, added time ids [fps − 1, motion bucket, noise aug]). The image
  conditioning is dropped 10% of the time so classifier-free guidance works. EMA weights are saved.
- CLIP image encoder: tiny and RANDOM, frozen — there is nothing to download here. Its embedding is a
  fixed random feature of frame 0; the frame-0 latent carries the image.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfv.teachers.svd import SVDCondition, SVDTeacher, svd_denoise
from sfv.tiny import TinySVDConfig, build_tiny_svd

SIZE, FRAMES, FPS = 32, 8, 8
NOISE_AUG = 0.02
TOY_SVD = TinySVDConfig(num_frames=FRAMES, unet_channels=(32, 64), cross_attention=(False, True), vae_channels=(32, 64))


@dataclass
class TeacherTraining:
    vae_minutes: float = 20.0
    vae_batch: int = 4  # videos (× 8 frames)
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    unet_minutes: float = 60.0
    unet_batch: int = 8
    unet_lr: float = 5e-4
    warmup: int = 200
    ema: float = 0.999
    p_mean: float = 0.3  # ln σ ~ N(p_mean, p_std²) (SVD: 0.7, 1.6; shifted down for 16×16 latents)
    p_std: float = 1.6
    uncond_prob: float = 0.1
    seed: int = 0


def load_world(folder: str | Path, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of a toy-world folder through sfv's video data path: frames [N, F, 3, H, W] in [0, 1] (float16 to
    save memory) and motion buckets [N]."""
    from sfv.data import ClipSpec, VideoFolder

    data = VideoFolder(folder, ClipSpec(FRAMES, SIZE, SIZE, FPS))
    n = len(data) if count is None else min(count, len(data))
    items = [data.load(i) for i in range(n)]
    return torch.stack([it["frames"] for it in items]).half(), torch.stack([it["motion_bucket_id"] for it in items])


def flip_augment(frames: torch.Tensor, buckets: torch.Tensor, preset: str = "v1") -> tuple[torch.Tensor, torch.Tensor]:
    """×4 data: each clip mirrored in x, in y and both (the world is symmetric under these flips, so these are
    toy-world clips too). v1: the motion bucket becomes that of the mirrored direction; v2: the bucket is the
    speed, which a mirror keeps (and an even K maps the direction set onto itself)."""
    from sfv.toy.world import bucket_for_direction, direction_for_bucket

    flips = ((-1,), (-2,), (-1, -2))
    if preset == "v2":
        return torch.cat([frames, *[frames.flip(d) for d in flips]]), buckets.repeat(4)
    k = torch.tensor([direction_for_bucket(b) for b in buckets.tolist()])
    out_f, out_b = [frames], [buckets]
    for dims, new_k in zip(flips, ((4 - k) % 8, (8 - k) % 8, (k + 4) % 8)):
        out_f.append(frames.flip(dims))
        out_b.append(torch.tensor([float(bucket_for_direction(int(d))) for d in new_k]))
    return torch.cat(out_f), torch.cat(out_b)


def _log(path: Path | None, row: dict) -> None:
    print(json.dumps(row), flush=True)
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def train_vae(vae, frames: torch.Tensor, cfg: TeacherTraining, log: Path | None = None) -> dict:
    """Fit the VAE to toy clips for cfg.vae_minutes (MSE + cfg.vae_kl·KL, decoder sees whole clips), then set
    its scaling_factor to 1/std of the latents. Returns final stats."""
    gen = torch.Generator().manual_seed(cfg.seed)
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < cfg.vae_minutes * 60:
        idx = torch.randint(len(frames), (cfg.vae_batch,), generator=gen)
        x = frames[idx].float().flatten(0, 1) * 2 - 1  # [B·F, 3, H, W]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        recon = vae.decode(z, num_frames=FRAMES).sample
        mse = F.mse_loss(recon, x)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1 - post.logvar).mean()
        loss = mse + cfg.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            psnr = 10 * math.log10(4 / mse.item())  # range [-1, 1] -> peak² = 4
            _log(log, {"phase": "vae", "step": step, "min": round((time.perf_counter() - start) / 60, 2), "mse": mse.item(),
                       "psnr": round(psnr, 2), "kl": kl.item()})
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        lat = torch.cat([vae.encode(frames[i : i + 64].float().flatten(0, 1) * 2 - 1).latent_dist.mode() for i in range(0, min(len(frames), 512), 64)])
        recon = vae.decode(lat[: 8 * FRAMES], num_frames=FRAMES).sample
        psnr = 10 * math.log10(4 / F.mse_loss(recon, frames[:8].float().flatten(0, 1) * 2 - 1).item())
    std = lat.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    stats = {"phase": "vae", "steps": step, "latent_std": std, "scaling_factor": 1.0 / std, "psnr": round(psnr, 2)}
    _log(log, stats)
    return stats


@torch.no_grad()
def vae_psnr(vae, frames: torch.Tensor, batch: int = 16) -> float:
    """PSNR (dB, pixels in [−1, 1]) of clips [N, F, 3, H, W] in [0, 1] encoded (mode) and decoded by the VAE."""
    err = 0.0
    for i in range(0, len(frames), batch):
        x = frames[i : i + batch].float().flatten(0, 1) * 2 - 1
        recon = vae.decode(vae.encode(x).latent_dist.mode(), num_frames=frames.shape[1]).sample
        err += F.mse_loss(recon, x, reduction="sum").item()
    return round(10 * math.log10(4 / (err / frames[: len(frames)].numel())), 2)


@torch.no_grad()
def encode_world(teacher: SVDTeacher, frames: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 latents [N, F, C, h, w] (scaled) and CLIP embeddings of frame 0 [N, 1, D] for every clip."""
    lat, emb = [], []
    for i in range(0, len(frames), batch):
        clip = frames[i : i + batch].float()
        lat.append(teacher.encode_video(clip))
        emb.append(teacher.encode_image(clip[:, 0]))
    return torch.cat(lat), torch.cat(emb)


def condition(teacher: SVDTeacher, frame0: torch.Tensor, embeds: torch.Tensor, buckets: torch.Tensor,
              generator: torch.Generator | None = None, noise_aug: float = NOISE_AUG) -> SVDCondition:
    """SVD's conditioning for clips whose frame 0 (in [0, 1], [B, 3, H, W]) and CLIP embedding are known."""
    pixels = frame0.float() * 2 - 1
    pixels = pixels + noise_aug * torch.randn(pixels.shape, generator=generator)
    image_latents = teacher.vae.encode(pixels).latent_dist.mode()
    return SVDCondition(embeds, image_latents, teacher.time_ids(FPS, buckets, noise_aug, len(frame0)))


def train_unet(teacher: SVDTeacher, frames: torch.Tensor, buckets: torch.Tensor, cfg: TeacherTraining,
               log: Path | None = None, snapshot=None, snapshot_every: int = 1000) -> tuple[torch.nn.Module, int]:
    """EDM v-prediction training of the teacher UNet (SVD preconditioning, weight (σ²+1)/σ²) for
    cfg.unet_minutes; returns the EMA UNet and the step count. `snapshot(ema, step)` is called every `snapshot_every` steps."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    latents, embeds = encode_world(teacher, frames)
    unet = teacher.unet.train().requires_grad_(True)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    start, step, recent = time.perf_counter(), 0, []
    while time.perf_counter() - start < cfg.unet_minutes * 60:
        idx = torch.randint(len(latents), (cfg.unet_batch,), generator=gen)
        x0 = latents[idx]
        with torch.no_grad():
            cond = condition(teacher, frames[idx, 0], embeds[idx], buckets[idx], gen)
            drop = (torch.rand(len(idx), generator=gen) < cfg.uncond_prob).float()
            keep = (1 - drop)
            cond = SVDCondition(cond.image_embeds * keep[:, None, None], cond.image_latents * keep[:, None, None, None],
                                cond.added_time_ids)
        sigma = (cfg.p_mean + cfg.p_std * torch.randn(len(idx), generator=gen)).exp()
        x = x0 + sigma[:, None, None, None, None] * torch.randn(x0.shape, generator=gen)
        pred = svd_denoise(unet, x, sigma, cond)
        weight = (sigma**2 + 1) / sigma**2
        loss = (weight[:, None, None, None, None] * (pred - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        recent.append(loss.item())
        if step % 50 == 0:
            _log(log, {"phase": "unet", "step": step, "min": round((time.perf_counter() - start) / 60, 2),
                       "loss": float(np.mean(recent)), "lr": sched.get_last_lr()[0]})
            recent = []
        if snapshot is not None and step % snapshot_every == 0:
            snapshot(ema, step)
    unet.eval().requires_grad_(False)
    _log(log, {"phase": "unet", "steps": step})
    return ema, step


def save_teacher(teacher: SVDTeacher, unet: torch.nn.Module, out: str | Path, meta: dict, toy_world: str = "v2") -> Path:
    """The toy teacher as a diffusers folder, its training record (toy_teacher.json) and the video it works at
    (video.json: SIZE×SIZE, FRAMES frames, FPS, the toy world); its UNet's sample_size is the latents' side."""
    from sfv.model_dir import VideoRecord, write_video_record

    out = Path(out)
    unet.register_to_config(sample_size=SIZE // teacher.vae_scale_factor)  # diffusers' default size: 16×16 latents
    pipe = teacher.to_pipeline(unet=unet)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "toy_teacher.json").write_text(json.dumps({"config": asdict(TOY_SVD), **meta}, indent=2) + "\n")
    write_video_record(out, VideoRecord(SIZE, SIZE, FRAMES, FPS, toy_world))
    return out


def build_teacher() -> SVDTeacher:
    return SVDTeacher.from_pipeline(build_tiny_svd(TOY_SVD))
