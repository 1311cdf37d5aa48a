"""Tiny random SVD pipelines, built offline, loadable by the stock StableVideoDiffusionPipeline.

The architecture classes and the scheduler are SVD's own; only the widths shrink (after diffusers' own
SVD tests: UNet (32, 64), VAE [32, 64], a small CLIP ViT). Tests and smoke runs use them; nothing here is
a trained model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from sfv.arch import SVD_SCHEDULER_CONFIG, CLIPImageProcessor
from sfv.errors import InputError


@dataclass
class TinySVDConfig:
    num_frames: int = 8  # the UNet's default frame count (pipeline default when num_frames is None)
    unet_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    cross_attention: tuple[bool, ...] | None = None  # per UNet level; default: every level but the deepest
    attention_heads: int = 4
    embed_dim: int = 32  # CLIP projection = UNet cross-attention dim = added-time embedding dim
    vae_channels: tuple[int, ...] = (32, 64)  # VAE scale factor 2 ** (len - 1)
    clip_hidden: int = 32
    clip_layers: int = 2
    clip_image_size: int = 224  # the stock pipeline resizes PIL inputs to 224 before CLIP
    clip_patch_size: int = 32
    seed: int = 0


def build_tiny_svd(config: TinySVDConfig | None = None) -> StableVideoDiffusionPipeline:
    """A random tiny SVD (seeded, float32, CPU)."""
    c = config or TinySVDConfig()
    n_blocks = len(c.unet_channels)
    for name, chans in (("unet_channels", c.unet_channels), ("vae_channels", c.vae_channels)):
        if len(chans) < 2 or any(ch % 32 for ch in chans):
            raise InputError(f"{name} {tuple(chans)}: need at least two blocks, each a multiple of 32 (GroupNorm uses 32 groups)")
    attention = tuple(c.cross_attention) if c.cross_attention is not None else (True,) * (n_blocks - 1) + (False,)
    if len(attention) != n_blocks:
        raise InputError(f"cross_attention {attention}: need one flag per UNet level ({n_blocks})")
    down = {True: "CrossAttnDownBlockSpatioTemporal", False: "DownBlockSpatioTemporal"}
    up = {True: "CrossAttnUpBlockSpatioTemporal", False: "UpBlockSpatioTemporal"}
    torch.manual_seed(c.seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        num_frames=c.num_frames,
        down_block_types=tuple(down[a] for a in attention),
        up_block_types=tuple(up[a] for a in reversed(attention)),
        block_out_channels=tuple(c.unet_channels),
        layers_per_block=c.layers_per_block,
        cross_attention_dim=c.embed_dim,
        num_attention_heads=c.attention_heads,
        addition_time_embed_dim=c.embed_dim,
        projection_class_embeddings_input_dim=3 * c.embed_dim,  # fps − 1, motion bucket, noise aug
    )
    torch.manual_seed(c.seed)
    vae = AutoencoderKLTemporalDecoder(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(c.vae_channels),
        block_out_channels=tuple(c.vae_channels),
        latent_channels=4,
    )
    torch.manual_seed(c.seed)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=c.clip_hidden,
            projection_dim=c.embed_dim,
            num_hidden_layers=c.clip_layers,
            num_attention_heads=4,
            intermediate_size=2 * c.clip_hidden,
            image_size=c.clip_image_size,
            patch_size=c.clip_patch_size,
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size=c.clip_image_size, size=c.clip_image_size)
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
    for module in (unet, vae, image_encoder):
        module.eval()
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )


def save_tiny_svd(out_dir: str | os.PathLike, config: TinySVDConfig | None = None) -> Path:
    """Build a tiny SVD and save it as a diffusers folder (safetensors); returns the folder."""
    config = config or TinySVDConfig()
    out = Path(out_dir)
    build_tiny_svd(config).save_pretrained(out, safe_serialization=True)
    (out / "tiny_svd.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return out


def example_image(height: int = 64, width: int = 64, seed: int = 0):
    """A deterministic RGB test picture (gradient + a few coloured discs) as a PIL image."""
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), np.full_like(xx, 0.3, dtype=float)], -1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.25) * min(height, width)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return PIL.Image.fromarray((img * 255).round().astype("uint8"))


def write_moving_squares(out_dir: str | os.PathLike, count: int = 8, frames: int = 12, size: int = 48, fps: int = 8,
                         seed: int = 0, suffix: str = ".mp4") -> list[Path]:
    """Small real video files (a coloured square crossing a gradient background, a different speed and
    direction per file) for tests and smoke runs of the data path and the trainer. Not the toy world."""
    import numpy as np

    from sfv.video import write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        background = np.stack([xx, yy, 1 - xx], -1) * rng.uniform(0.2, 0.8, 3)
        color, side = rng.uniform(0.3, 1.0, 3), size // 4
        pos, vel = rng.uniform(0, size - side, 2), rng.uniform(-2.5, 2.5, 2)
        video = []
        for _ in range(frames):
            frame = background.copy()
            y, x = pos.astype(int)
            frame[y : y + side, x : x + side] = color
            video.append(frame)
            pos = pos + vel
            for k in range(2):  # bounce off the walls
                if not 0 <= pos[k] <= size - side:
                    vel[k] = -vel[k]
                    pos[k] = np.clip(pos[k], 0, size - side)
        paths.append(write_video(out / f"video{i:03d}{suffix}", np.stack(video), fps=fps))
    return paths
