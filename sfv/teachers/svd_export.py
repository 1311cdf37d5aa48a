"""SVD's export: a student UNet written as a plain diffusers folder (`StableVideoDiffusionPipeline`, so stock
diffusers loads it), with sfv.json saying how to sample it. What `SVDTeacher.export` and `sfv export` write and
`sfv.pipeline.SFVPipeline` reads back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from diffusers import UNetSpatioTemporalConditionModel

from sfv.config import ModelConfig
from sfv.decoders import build_decoder
from sfv.decoders.tiny import CONFIG_NAME, WEIGHTS_NAME
from sfv.files import atomic_path, check_export_target
from sfv.model_dir import EXPORT_INFO, VideoRecord, write_video_record
from sfv.noise import generator_sigma_levels
from sfv.version import __version__

FAST_DECODER = "fast_decoder"  # the export's subfolder for a fast decoder (not in model_index.json: stock diffusers skips it)


def export_pipeline(
    unet: UNetSpatioTemporalConditionModel, teacher, out_dir: str | os.PathLike, info: dict | None = None,
    t_g: int = ModelConfig.t_g, fast_decoder: str | os.PathLike | None = None, video: VideoRecord | None = None,
) -> Path:
    """Write the drop-in diffusers folder for a student UNet, atomically (temp folder + rename).

    Contents: model_index.json (StableVideoDiffusionPipeline, so stock diffusers loads it), unet/ (the student),
    vae/, image_encoder/, feature_extractor/, scheduler/ (the teacher's; its 1-step Karras schedule is σ_max),
    sfv.json (how to sample it — T_g and G's σ levels, read back by SFVPipeline.from_pretrained — and where it came
    from) and video.json (`video`: the size, frames and fps it was trained at), when known.
    fast_decoder: a tiny decoder folder (sfv.decoders.tiny), checked against the VAE and copied to fast_decoder/;
    sfv.json lists it under "decoders" (SFVPipeline.from_pretrained(folder, decoder="tiny")). Weights are safetensors.
    """
    if fast_decoder is not None:
        build_decoder("tiny", teacher.vae, fast_decoder)  # loads and fits, before anything is written
    out = check_export_target(out_dir)
    levels = generator_sigma_levels(t_g, teacher.sigma_min, teacher.sigma_max).tolist()  # G's, as it trained on them
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        teacher.to_pipeline(unet=unet).save_pretrained(tmp, safe_serialization=True)
        meta = {
            "sfv_version": __version__,
            "pipeline": "SFVPipeline",
            "sampling": {"num_inference_steps": 1, "max_guidance_scale": 1.0, "sigma": teacher.sigma_max, "t_g": t_g,
                         "sigma_levels": levels},
            "decoder": teacher.decoder_name,  # what the stock pipeline decodes with
            **(info or {}),
        }
        if fast_decoder is not None:
            (tmp / FAST_DECODER).mkdir()
            for name in (CONFIG_NAME, WEIGHTS_NAME):  # the folder's two files, nothing else it may hold
                shutil.copy2(Path(fast_decoder) / name, tmp / FAST_DECODER / name)
            meta["decoders"] = {"tiny": FAST_DECODER}
        (tmp / EXPORT_INFO).write_text(json.dumps(meta, indent=2) + "\n")
        if video is not None:
            write_video_record(tmp, video)
    return out
