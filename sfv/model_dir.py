"""Diffusers SVD folders on disk: what must be there, what their configs say, which sizes they can take, and what
sfv records beside them.

Checked before any weights load, so a bad folder is one clear ModelLoadError naming every missing file. Two files
of sfv's own sit beside the diffusers ones (stock diffusers ignores both):

    sfv.json     an `sfv export` (a student): how to sample it, its T_g and σ levels, its fast decoders, its origin;
                 a folder without it is a teacher, sampled on its stock schedule
    video.json   the video the model was trained on: height, width, frames, fps (and the toy world it knows, if any)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
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


EXPORT_INFO = "sfv.json"
VIDEO_RECORD = "video.json"


@dataclass(frozen=True)
class VideoRecord:
    """The video a model was trained on (video.json): what `sfv sample`, `cache` and `bench` default to."""

    height: int
    width: int
    frames: int
    fps: int
    toy_world: str | None = None  # the sfv toy world (sfv.toy.world preset) the model knows, e.g. "v2"

    def describe(self) -> str:
        return f"{self.frames} frames of {self.width}×{self.height} at {self.fps} fps"

    @classmethod
    def trained(cls, data: dict, teacher: str | os.PathLike | None) -> "VideoRecord":
        """What a run trained on: its recipe's data section (height, width, frames, fps), with the toy world its
        teacher knows (the teacher folder's own record), if any."""
        known = read_video_record(teacher) if teacher and Path(teacher).is_dir() else None
        return cls(int(data["height"]), int(data["width"]), int(data["frames"]), int(data["fps"]),
                   known.toy_world if known else None)


@dataclass(frozen=True)
class ModelInfo:
    """What sfv needs to know about a folder before loading it."""

    vae_scale_factor: int  # pixels per latent cell: 2 ** (len(vae.block_out_channels) − 1), 8 for SVD
    num_frames: int  # the UNet's default frame count (14 SVD, 25 SVD-XT)
    student: bool = False  # an sfv export (sfv.json); otherwise a teacher, sampled on its stock schedule
    student_steps: int = 0  # a student's most steps: its T_g − 1 training levels
    video: VideoRecord | None = None  # video.json, if the folder records it


def export_info(folder: str | os.PathLike) -> dict:
    """An `sfv export` folder's sfv.json ({} for any other folder, e.g. a teacher)."""
    path = Path(folder) / EXPORT_INFO
    return _read_json(path) if path.is_file() else {}


def shipped_decoders(folder: str | os.PathLike) -> dict[str, Path]:
    """The fast decoders an export carries (sfv.json "decoders", `sfv export --decoder`): name -> folder."""
    return {name: Path(folder) / sub for name, sub in export_info(folder).get("decoders", {}).items()}


def read_video_record(folder: str | os.PathLike) -> VideoRecord | None:
    """The folder's video.json, or None where it records none."""
    path = Path(folder) / VIDEO_RECORD
    if not path.is_file():
        return None
    data = _read_json(path)
    try:
        record = VideoRecord(**data)
        if min(record.height, record.width, record.frames, record.fps) < 1:
            raise ValueError("sizes must be positive")
        return record
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"'{path}' is not a video record (height, width, frames, fps): {e}") from None


def write_video_record(folder: str | os.PathLike, record: VideoRecord) -> None:
    data = {k: v for k, v in asdict(record).items() if v is not None}
    (Path(folder) / VIDEO_RECORD).write_text(json.dumps(data, indent=2) + "\n")


# families that `sfv distill` trains and `sfv sample` and `sfv serve` run, but that the commands reading SVD folders
# through check_model_dir (bench --teacher/--student, cache) do not run yet: where to run them
SAMPLED_ELSEWHERE = {"WanImageToVideoPipeline": "sample it with `sfv sample --model DIR --prompt ...`, `sfv serve --model DIR`, "
                                                "sfv.load_pipeline(folder) or "
                                                "diffusers' WanImageToVideoPipeline.from_pretrained(folder) "
                                                "(README, \"A second family: Wan 2.x\")"}


def check_model_dir(path: str | os.PathLike) -> ModelInfo:
    """Raise ModelLoadError naming every file a diffusers SVD folder at `path` lacks or cannot parse."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(
            f"model folder '{path}' does not exist; pass a diffusers StableVideoDiffusionPipeline folder "
            "(e.g. one written by `sfv export` or tools/make_tiny_svd.py)"
        )
    missing = [] if (path / "model_index.json").is_file() else ["model_index.json"]
    if not missing:
        name = _read_json(path / "model_index.json").get("_class_name")
        if name != "StableVideoDiffusionPipeline" and name in SAMPLED_ELSEWHERE:
            raise InputError(f"'{path}' is a {name} folder: this command runs SVD folders only so far; "
                             f"{SAMPLED_ELSEWHERE[name]}")
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
        factor, frames = 2 ** (len(vae["block_out_channels"]) - 1), int(unet.get("num_frames", 14))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"config in '{path}' lacks a valid {e} entry; is this an SVD folder?") from None
    info = export_info(path)
    return ModelInfo(factor, frames, student=bool(info), student_steps=student_steps(info) if info else 0,
                     video=read_video_record(path))


def student_steps(info: dict) -> int:
    """The most steps an export samples on its own training levels (sfv.json's σ levels: T_g − 1 of them)."""
    from sfv.config import ModelConfig

    sampling = info.get("sampling", {})
    levels = sampling.get("sigma_levels")
    return len(levels) if levels else int(sampling.get("t_g", ModelConfig.t_g)) - 1


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
