"""Diffusers SVD folders on disk: what must be there, what their configs say, which sizes they can take.

Checked before any weights load, so a bad folder is one clear ModelLoadError naming every missing file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sfv.errors import InputError, ModelLoadError

# component -> (config file, accepted weight files); weights are safetensors only (no pickle loading).
_UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
REQUIRED = {
    "unet": ("config.json", _UNET_WEIGHTS),
    "vae": ("config.json", _UNET_WEIGHTS),
    "image_encoder": ("config.json", ("model.safetensors", "model.safetensors.index.json")),
    "feature_extractor": ("preprocessor_config.json", ()),
    "scheduler": ("scheduler_config.json", ()),
}


@dataclass(frozen=True)
class ModelInfo:
    """What sfv needs to know about a folder before loading it."""

    vae_scale_factor: int  # pixels per latent cell: 2 ** (len(vae.block_out_channels) − 1), 8 for SVD
    num_frames: int  # the UNet's default frame count (14 SVD, 25 SVD-XT)


def check_model_dir(path: str | os.PathLike) -> ModelInfo:
    """Raise ModelLoadError naming every file a diffusers SVD folder at `path` lacks or cannot parse."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(
            f"model folder '{path}' does not exist; pass a diffusers StableVideoDiffusionPipeline folder "
            "(e.g. one written by `sfv export` or tools/make_tiny_svd.py)"
        )
    missing = [] if (path / "model_index.json").is_file() else ["model_index.json"]
    for component, (config, weights) in REQUIRED.items():
        folder = path / component
        if not (folder / config).is_file():
            missing.append(f"{component}/{config}")
        if weights and not any((folder / w).is_file() for w in weights) and not _has_variant(folder, weights[0]):
            pickled = folder.is_dir() and any(folder.glob("*.bin"))
            hint = " (only pickle .bin weights found; sfv loads safetensors only — re-save with safe_serialization=True)" if pickled else ""
            missing.append(f"{component}/{weights[0]}{hint}")
    if missing:
        raise ModelLoadError(f"model folder '{path}' is incomplete: missing {', '.join(missing)}")
    vae, unet = _read_json(path / "vae" / "config.json"), _read_json(path / "unet" / "config.json")
    try:
        return ModelInfo(vae_scale_factor=2 ** (len(vae["block_out_channels"]) - 1), num_frames=int(unet.get("num_frames", 14)))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"config in '{path}' lacks a valid {e} entry; is this an SVD folder?") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot parse '{path}': {e}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"'{path}' is not a JSON object")
    return data


def _has_variant(folder: Path, weight_name: str) -> bool:
    stem, ext = weight_name.rsplit(".", 1)  # e.g. diffusion_pytorch_model.fp16.safetensors
    return folder.is_dir() and any(folder.glob(f"{stem}.*.{ext}"))


def check_video_size(height: int, width: int, num_frames: int, multiple: int) -> None:
    """Frames ≥ 1 and pixel sizes in whole latent cells.

    The VAE needs height/width in multiples of its scale factor; the spatio-temporal UNet needs nothing more
    (it forwards upsample sizes, so odd latent sizes work — checked on tiny models with 1 and 3 downsamplers).
    The stock pipeline asks for multiples of 8, which is the same for SVD (VAE factor 8).
    """
    if num_frames < 1:
        raise InputError(f"frames must be at least 1 (got {num_frames})")
    for name, value in (("height", height), ("width", width)):
        if value < multiple or value % multiple:
            raise InputError(
                f"{name} {value} is not a positive multiple of {multiple} (the VAE's scale factor); "
                f"try {max(multiple, round(value / multiple) * multiple)}"
            )
