"""A student out of training: its weights — a UNet folder, a .safetensors state dict, or a training checkpoint of
either layout (one process's files, or FSDP's `sharded/` folder, consolidated here on one process) — written as a
drop-in diffusers folder (sfv.pipeline.export_pipeline), and with `comfyui` also as the files ComfyUI's model folders
take (sfv.comfyui), in its comfyui/ subfolder. `sfv export` is this module."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from sfv import checkpoint
from sfv import lora as lora_
from sfv.config import LoraConfig, ModelConfig
from sfv.errors import InputError, ModelLoadError, first_line
from sfv.model_dir import VideoRecord, read_video_record


def student_weights(ckpt: Path, weights: str, teacher: str | None) -> tuple[str, str | None, bool]:
    """(student weights, teacher folder, sharded?) of a training checkpoint; the teacher from its recipe by default.
    A sharded (FSDP) checkpoint holds the weights in its `sharded/` folder, consolidated on export."""
    if not (ckpt / "state.json").is_file():
        raise InputError(f"checkpoint '{ckpt}' is not a complete training checkpoint (no state.json)")
    state = checkpoint.verify(ckpt)  # a damaged file is one line naming it, before the teacher is loaded
    name = f"{checkpoint.STUDENT_WEIGHTS[weights]}.safetensors"
    if teacher is None:
        teacher = state.get("recipe", {}).get("model", {}).get("teacher") or None
    sharded = checkpoint.is_sharded(ckpt)
    return str(ckpt / checkpoint.SHARDED if sharded else ckpt / name), teacher, sharded


def read_full_weights(path: Path, name: str, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One model's whole weights from a checkpoint of either layout, on one process: `like` gives the keys,
    shapes and dtypes (e.g. the teacher UNet's state dict)."""
    if not checkpoint.is_sharded(path):
        return load_file(path / f"{name}.safetensors")
    return checkpoint.read_full(path, {name: like})[name]


def export_student(out_dir: str, generator: str | None = None, teacher_dir: str | None = None, ckpt: str | None = None,
                   weights: str = "ema", t_g: int | None = None, decoder: str | None = None, lora: bool = False,
                   comfyui: bool = False) -> Path:
    """Write the student (`generator` weights with `teacher_dir`, or a training checkpoint `ckpt`, whose recipe
    names the teacher, T_g and the video it trained on) as a drop-in diffusers folder, with a fast decoder folder
    `decoder` (sfv.decoders.tiny) as its fast_decoder/ if given. t_g: the student's T_g (None: the checkpoint's, or
    the recipes' default); a checkpoint trained at another T_g is an InputError. A checkpoint of a LoRA student
    (recipe model.lora) holds adapters: they are merged into the teacher's network for the folder, and `lora` also
    writes the adapter in the family's loader layouts inside it, as lora/ (Teacher.export_lora). comfyui: also write
    the student in ComfyUI's original key names under comfyui/ (sfv.comfyui; a family without a key map is an
    InputError, before anything is written). Everything cheap is checked before the teacher loads."""
    from sfv.decoders import build_decoder
    from sfv.generator import SFVGenerator
    from sfv.files import check_export_target
    from sfv.teachers import load_teacher

    out = check_export_target(out_dir)
    if (generator is None) == (ckpt is None):
        raise InputError("pass exactly one of --generator PATH or --checkpoint DIR")
    if t_g is not None and t_g < 2:
        raise InputError(f"--t-g must be at least 2 (the student's σ levels include σ_max and one below it), got {t_g}")
    sharded, recipe = False, {}
    if lora and ckpt is None:
        raise InputError("--lora exports the adapter of a LoRA student's training checkpoint: pass --checkpoint DIR "
                         "(a run with model.lora set)")
    if ckpt is not None:
        generator, teacher_dir, sharded = student_weights(Path(ckpt), weights, teacher_dir)
        recipe = json.loads((Path(ckpt) / "state.json").read_text()).get("recipe", {})
        trained = recipe.get("model", {}).get("t_g", ModelConfig.t_g)
        if t_g is not None and t_g != trained:
            raise InputError(f"--t-g {t_g} disagrees with the checkpoint, trained at T_g = {trained} (its recipe's "
                             "model.t_g); leave --t-g out to export it as trained")
        t_g = trained
    lora_cfg = _lora_config(recipe, ckpt, lora)
    if teacher_dir is None:
        raise InputError("--teacher is required with --generator")
    if comfyui:
        from sfv.comfyui import check_family
        from sfv.teachers import FAMILIES, family_of

        check_family(FAMILIES[family_of(teacher_dir)])
    if not sharded and lora_cfg is None:
        SFVGenerator.check_source(generator)  # before the (slow) teacher load
    if decoder is not None:
        build_decoder("tiny", None, decoder)  # a missing or corrupt folder is one line before the teacher loads
    video = VideoRecord.trained(recipe["data"], teacher_dir) if "data" in recipe else \
        read_video_record(teacher_dir) if Path(teacher_dir).is_dir() else None
    teacher = load_teacher(teacher_dir)
    info = {"generator": str(generator), "teacher": str(teacher_dir)}
    values = None
    if lora_cfg is not None:
        values = _lora_values(teacher, lora_cfg, Path(ckpt), checkpoint.STUDENT_WEIGHTS[weights])
        unet = lora_.merged_copy(teacher.net, values)
        if lora:
            info["lora"] = {**dataclasses.asdict(lora_cfg), "adapter": lora_.ADAPTER_FOLDER}
    elif sharded:  # an FSDP checkpoint: every process's shards consolidated here, on one process
        name = checkpoint.STUDENT_WEIGHTS[weights]
        try:
            state = read_full_weights(Path(ckpt), name, teacher.net.state_dict())
        except (OSError, ValueError, KeyError, RuntimeError, AssertionError) as e:  # missing shards, another model
            raise ModelLoadError(f"cannot read {name} from sharded checkpoint '{ckpt}': {first_line(e)[:300]}") from None
        unet = teacher.student_from_state(state, generator)
    else:
        unet = SFVGenerator.load_unet(generator, teacher)
    extra = {} if decoder is None else {"fast_decoder": decoder}
    if comfyui:  # built before anything is written: the key maps are the last thing that can refuse
        from sfv.comfyui import COMFYUI_DIR, comfyui_files, write_comfyui

        files = comfyui_files(teacher, unet, out.resolve().name)
        info["comfyui"] = [f"{COMFYUI_DIR}/{rel}" for rel in files]
    out = teacher.export(unet, out, info=info, t_g=ModelConfig.t_g if t_g is None else t_g, video=video, **extra)
    if comfyui:
        write_comfyui(files, out / COMFYUI_DIR)
    if lora:
        teacher.export_lora(values, lora_cfg, out / lora_.ADAPTER_FOLDER)
    return out


def _lora_config(recipe: dict, ckpt, asked: bool) -> LoraConfig | None:
    """The checkpoint's model.lora (None: a full student); `--lora` on a checkpoint without adapters is an InputError."""
    section = recipe.get("model", {}).get("lora")
    if section is None:
        if asked:
            raise InputError(f"--lora: checkpoint '{ckpt}' holds no LoRA adapters (its run's model.lora is null: a full "
                             "student); export it without --lora")
        return None
    return LoraConfig(**section)


def _lora_values(teacher, cfg: LoraConfig, ckpt: Path, name: str) -> dict[str, torch.Tensor]:
    """A LoRA checkpoint's adapters (`name`: G's or their EMA), whole, by parameter name; the teacher's network gets
    adapters of the recipe's shape (their values are not used: the export merges `values`)."""
    like = {k: p.detach() for k, p in lora_.add_adapters(teacher.net, cfg).items()}
    try:
        values = read_full_weights(ckpt, name, like)
    except (OSError, ValueError, KeyError, RuntimeError, AssertionError) as e:
        raise ModelLoadError(f"cannot read {name} from checkpoint '{ckpt}': {first_line(e)[:300]}") from None
    if values.keys() != like.keys() or any(values[k].shape != like[k].shape for k in like):
        raise ModelLoadError(f"checkpoint '{ckpt}': {name} does not hold the adapters its recipe's model.lora describes "
                             f"({len(values)} tensors, {len(like)} expected); export with the teacher it was trained from")
    return values
