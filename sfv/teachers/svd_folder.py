"""SVD folders and their configs: the checks made on configs alone (before any weights load), G's levels and the
stock Euler schedule read from the scheduler config, and loading a local folder or a hub id into a stock
`StableVideoDiffusionPipeline` (safetensors only). `SVDTeacher` (sfv/teachers/svd.py) exposes them as its protocol's
members."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import torch
from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

from sfv.errors import InputError, ModelLoadError, first_line
from sfv.model_dir import check_model_dir, check_video_size
from sfv.noise import generator_sigma_levels

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
_SIGMAS_CACHE: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (scheduler config, steps) -> levels


def check_svd_folder(path, num_frames: int, height: int, width: int) -> None:
    """The folder and the training size, checked before any weights load (configs only)."""
    check_video_size(height, width, num_frames, check_model_dir(path).vae_scale_factor)


def folder_generator_sigmas(path, t_g: int) -> list[float]:
    """G's levels as noise levels σ (descending), from the folder's scheduler config alone (hub ids: SVD's)."""
    config = Path(path, "scheduler", "scheduler_config.json")
    data = json.loads(config.read_text()) if config.is_file() else {}
    return generator_sigma_levels(t_g, float(data.get("sigma_min", 0.002)), float(data.get("sigma_max", 700.0))).tolist()


def check_scheduler(scheduler) -> None:
    """The scheduler config must describe the preconditioning that `SVDTeacher.denoise_with` implements."""
    cfg = scheduler.config
    if not isinstance(scheduler, EulerDiscreteScheduler) or cfg.prediction_type != "v_prediction" or cfg.timestep_type != "continuous":
        raise ModelLoadError(
            f"scheduler is {type(scheduler).__name__} ({cfg.prediction_type}, {cfg.timestep_type}); SVD's "
            "preconditioning needs EulerDiscreteScheduler with prediction_type='v_prediction' and "
            "timestep_type='continuous' (the scheduler config SVD ships)"
        )


def load_svd_pipeline(path_or_id: str | os.PathLike, torch_dtype: torch.dtype | None = None) -> StableVideoDiffusionPipeline:
    """A local diffusers folder (checked first: every missing file named) or a hub id, as the stock pipeline; anything
    that does not load is one ModelLoadError line."""
    name = str(path_or_id)
    local = os.path.exists(name) or not _HUB_ID.match(name)
    if local:
        check_model_dir(name)
    try:
        return StableVideoDiffusionPipeline.from_pretrained(name, dtype=torch_dtype, use_safetensors=True)
    except Exception as e:  # diffusers/huggingface_hub raise a zoo of types for "not there" / "broken"
        where = "" if local else (
            f" (there is no local folder '{name}'; as a hub id it could not be fetched — download it once "
            "with network access and pass the local folder)"
        )
        raise ModelLoadError(f"could not load SVD model '{name}': {first_line(e)}{where}") from e


def scheduler_sigmas(config, num_steps: int | None = None, custom: Sequence[float] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ levels with the final one appended, initial-noise scale), float32 on CPU, of an EulerDiscreteScheduler config.

    Taken from the scheduler config itself (a fresh EulerDiscreteScheduler, so every flag — Karras, σ range, final σ
    type, spacing — is honoured exactly as the stock pipeline honours it). `custom` lists the levels including the
    final one (usually 0). For SVD: Karras ρ = 7 on [0.002, 700] (sfv.noise.karras_sigmas, tested equal), and init
    noise √(σ_max² + 1) for "leading" spacing. Step-count schedules are cached per scheduler config (building the
    scheduler costs ~8 ms per call, a visible share of a one-step run on small models); callers get fresh copies.
    """
    if custom is None and num_steps is not None and num_steps >= 1:
        key = (json.dumps(dict(config), sort_keys=True, default=repr), num_steps)
        if key not in _SIGMAS_CACHE:
            _SIGMAS_CACHE[key] = _fresh_sigmas(config, num_steps, None)
        sigmas, init_sigma = _SIGMAS_CACHE[key]
        return sigmas.clone(), init_sigma.clone()
    return _fresh_sigmas(config, num_steps, custom)


def _fresh_sigmas(config, num_steps: int | None, custom: Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    scheduler = EulerDiscreteScheduler.from_config(config)
    if custom is not None:
        custom = [float(v) for v in custom]
        if len(custom) < 2 or any(a <= b for a, b in zip(custom, custom[1:])):
            raise InputError("custom sigmas must be at least two strictly decreasing levels, ending in the final one (usually 0)")
        scheduler.set_timesteps(sigmas=custom)
    else:
        if num_steps is None or num_steps < 1:
            raise InputError(f"num_inference_steps must be at least 1 (got {num_steps})")
        scheduler.set_timesteps(num_steps)
    return scheduler.sigmas, torch.as_tensor(scheduler.init_noise_sigma, dtype=torch.float32)
