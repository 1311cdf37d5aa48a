"""ComfyUI files for a student: its weights in the original (Stability / Wan-AI) key names that ComfyUI's model
folders take, and the inverse maps back to diffusers' names. `sfv export --comfyui` is the user of this module.

Every map here is a rename, written as rules on the key (derived from the model config's block layout, so one rule
covers the full-size models and the tiny test ones), with three documented exceptions that also reshape:
the OpenCLIP tower's q/k/v (one `in_proj` tensor, rows [q; k; v]), its projection (stored transposed) and the SVD
VAE's mid-block attention (diffusers' Linear [C, C] is a 1×1 convolution [C, C, 1, 1] in the original). Each
direction is written on its own (no dictionary inversion), so a round trip checks both.

The layouts were checked against ComfyUI's loading code at Comfy-Org/ComfyUI commit
a125cd84b054a57729b5eecab930ca9408719832: comfy/model_detection.py (`unet_prefix_from_state_dict`,
`detect_unet_config`: the sgm UNet branch and the Wan branch keyed on `head.modulation`), comfy/supported_models.py
(`SVD_img2vid`, `WAN21_T2V`, `WAN21_I2V`), comfy/supported_models_base.py (`vae_key_prefix`, `clip_vision_prefix`),
comfy/utils.py (`transformers_convert`: the in_proj split), comfy/lora.py and comfy/weight_adapter/lora.py (the LoRA
keys and their alpha / rank scale). No ComfyUI code is used or needed here.

The key maps live with their families: sfv/teachers/svd_comfyui.py (one SVD checkpoint: UNet, VAE, OpenCLIP tower)
and sfv/teachers/wan_comfyui.py (the Wan transformer and a Wan LoRA in ComfyUI's layout); this module holds the
registry of families that have one and writes the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sfv.errors import InputError
from sfv.teachers.svd_comfyui import (CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, svd_checkpoint, svd_from_checkpoint,  # noqa: F401
                                      svd_vae_from_original, svd_vae_to_original)
from sfv.teachers.wan_comfyui import LORA_PREFIX, WAN_PREFIX, wan_lora_to_comfyui, wan_transformer  # noqa: F401

# ----------------------------------------------------------------------------------------------------
# The families with a key map, and what `sfv export --comfyui` writes

COMFYUI_DIR = "comfyui"  # the export's subfolder: ComfyUI's models/ layout inside it (not in model_index.json)


def _svd_files(teacher, net, name: str) -> dict[str, dict[str, torch.Tensor]]:
    state, _ = svd_checkpoint(net.state_dict(), net.config, teacher.vae.state_dict(), teacher.vae.config,
                              teacher.image_encoder.state_dict())
    return {f"checkpoints/{name}.safetensors": state}


def _wan_files(teacher, net, name: str) -> dict[str, dict[str, torch.Tensor]]:
    return {f"diffusion_models/{name}.safetensors": wan_transformer(net.state_dict())}


# sfv.teachers.FAMILIES' "module:class" of a family -> its ComfyUI files (relative path -> state dict). Keyed by the
# exact class: a subclass may change the preconditioning or the network, which the file's layout states to ComfyUI.
LAYOUTS = {"sfv.teachers.svd:SVDTeacher": _svd_files, "sfv.teachers.wan:WanTeacher": _wan_files}


def check_family(family: str) -> None:
    """InputError unless `family` ("module:class", as in sfv.teachers.FAMILIES) has a ComfyUI key map."""
    if family not in LAYOUTS:
        names = ", ".join(k.split(":")[1] for k in LAYOUTS)
        raise InputError(f"--comfyui: the {family.split(':')[-1]} family has no ComfyUI key map (there is one for "
                         f"{names}); export without --comfyui")


def comfyui_files(teacher, net: torch.nn.Module, name: str) -> dict[str, dict[str, torch.Tensor]]:
    """The student `net` of `teacher`'s family as ComfyUI files: {path under models/: state dict}."""
    family = f"{type(teacher).__module__}:{type(teacher).__qualname__}"
    check_family(family)
    return LAYOUTS[family](teacher, net, name)


def write_comfyui(files: dict[str, dict[str, torch.Tensor]], folder: str | os.PathLike) -> list[Path]:
    """Write each state dict as safetensors under `folder` (ComfyUI's models/ layout), each file atomically."""
    from safetensors.torch import save_file

    from sfv.files import atomic_path

    written = []
    for rel, state in files.items():
        path = Path(folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, f".{path.name}.partial-{os.getpid()}.safetensors") as tmp:
            save_file(state, str(tmp))
        written.append(path)
    return written
