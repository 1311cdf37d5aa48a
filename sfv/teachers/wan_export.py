"""Files of the Wan family: the folder checks (4k+1 frames, the ×16/×32 grid, the scheduler a one-step export needs),
the export that stock `WanImageToVideoPipeline` runs in one step, and a LoRA student's adapter in diffusers' and
ComfyUI's LoRA layouts. Functions of a WanTeacher (sfv/teachers/wan.py delegates to them)."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import WanImageToVideoPipeline

from sfv.errors import InputError, ModelLoadError
from sfv.files import atomic_path, check_export_target
from sfv.model_dir import EXPORT_INFO, write_video_record


def export_folder(teacher, net, out, info: dict | None = None, t_g: int | None = None, video=None, fast_decoder=None) -> Path:
    """The student as a folder stock `WanImageToVideoPipeline.from_pretrained` runs: this teacher's components
    with `net` as the transformer and FlowMatchEulerDiscreteScheduler, whose one step (`num_inference_steps=1,
    guidance_scale=1`) is exactly G's pass at t = 1; sfv.json records G's levels, video.json the training size."""
    from sfv import __version__
    from sfv.config import ModelConfig

    if fast_decoder is not None:
        raise InputError("the Wan family has no fast decoder yet: export without --decoder")
    t_g = ModelConfig.t_g if t_g is None else t_g
    out = check_export_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        teacher.to_pipeline(net).save_pretrained(tmp, safe_serialization=True)
        meta = {"sfv_version": __version__, "pipeline": "WanImageToVideoPipeline",
                "sampling": {"num_inference_steps": 1, "guidance_scale": 1.0, "t_g": t_g,
                             "levels": teacher.generator_levels(t_g).tolist()}, **(info or {})}
        (tmp / EXPORT_INFO).write_text(json.dumps(meta, indent=2) + "\n")
        if video is not None:
            write_video_record(tmp, video)
    return out

def export_lora(teacher, values: dict, lora, out) -> Path:
    """A LoRA student's adapter (sfv.lora; `values` by parameter name, `lora` the recipe's model.lora) in diffusers'
    Wan LoRA layout (pytorch_lora_weights.safetensors, `transformer.*` keys, the adapter's config as metadata, without
    which the loader takes alpha = r): stock `WanImageToVideoPipeline.load_lora_weights(out)` on the teacher's folder
    gives the student."""
    from sfv.lora import file_state, peft_config

    out = Path(out)
    state = file_state(values)
    config = peft_config(teacher.transformer, lora)
    WanImageToVideoPipeline.save_lora_weights(out, transformer_lora_layers=state, safe_serialization=True,
                                              transformer_lora_adapter_metadata=config.to_dict())
    write_comfyui_lora(out, state, config)
    return out


COMFYUI_LORA = "comfyui_lora.safetensors"  # in the adapter folder; goes in ComfyUI's models/loras/


def write_comfyui_lora(out: Path, state: dict, config) -> None:
    """A Wan LoRA student's adapter also in ComfyUI's LoRA layout, beside the diffusers file (out/COMFYUI_LORA):
    `state` holds the adapter tensors under diffusers' module names (`blocks.N.attn1.to_q.lora_A.weight`), `config`
    peft's LoraConfig (rank, alpha). sfv.comfyui.wan_lora_to_comfyui writes the names and alpha."""
    from safetensors.torch import save_file

    from sfv.comfyui import wan_lora_to_comfyui

    tensors = wan_lora_to_comfyui(state, alpha=float(config.lora_alpha), rank=int(config.r))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(Path(out) / COMFYUI_LORA))


def check_wan_dir(path) -> None:
    """One ModelLoadError naming what a Wan folder lacks (the per-family folder check)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"model folder '{path}' does not exist; pass a diffusers WanImageToVideoPipeline folder")
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read '{path / 'model_index.json'}': {e}") from None
    if index.get("_class_name") != "WanImageToVideoPipeline":
        raise ModelLoadError(f"'{path}' is a {index.get('_class_name')} folder, not WanImageToVideoPipeline")
    needed = ["transformer/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"]
    if index.get("image_encoder", [None])[0] is not None:
        needed.append("image_encoder/config.json")
    if index.get("transformer_2", [None])[0] is not None:
        needed.append("transformer_2/config.json")
    missing = [n for n in needed if not (path / n).is_file()]
    for component in ("transformer", "vae", "text_encoder"):
        if (path / component).is_dir() and not any((path / component).glob("*.safetensors")):
            missing.append(f"{component}/*.safetensors")
    if missing:
        raise ModelLoadError(f"model folder '{path}' is incomplete: missing {', '.join(missing)}")


def check_wan_size(num_frames: int, height: int, width: int, temporal: int, spatial: int, patch: int) -> None:
    """Frames 4k+1 (the VAE compresses time `temporal`×) and sides in whole patches of latent cells."""
    if num_frames < 1 or num_frames % temporal != 1:
        lower = max(1, (num_frames - 1) // temporal * temporal + 1)
        raise InputError(f"Wan needs {temporal}k+1 frames (the VAE compresses time {temporal}×); got {num_frames}, "
                         f"try {lower} or {lower + temporal}")
    m = spatial * patch
    for name, value in (("height", height), ("width", width)):
        if value < m or value % m:
            raise InputError(f"{name} {value} is not a multiple of {m} (VAE ×{spatial} · patch {patch}); "
                             f"try {max(m, round(value / m) * m)}")
