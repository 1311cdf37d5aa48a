"""SF-V's one-step generator G (§3.2): the teacher's full network, copied and fully fine-tuned (or, with model.lora, a
LoRA over the teacher's network itself: sfv/lora.py).

    G(x_t, σ_t, c) = c_skip(σ_t)·x_t + c_out(σ_t)·F_θ(c_in(σ_t)·x_t, c_noise(σ_t), c)     (teacher's preconditioning)

Training inputs x_t = the teacher's add_noise(x0, σ_t, ε) with σ_t uniform over the family's T_g − 1 generator levels
(model.t_g, 4 by default; SVD: the top T_g − 1 of a T_g-level Karras grid, ≈ {700, 70.5, 2.27}); inference is one
pass at the top level (SVD: σ_max) from pure noise, without CFG.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from sfv.config import ModelConfig
from sfv.errors import ModelLoadError
from sfv.teachers import Condition, Teacher


class SFVGenerator(torch.nn.Module):
    """A trainable copy of the teacher's network behind the teacher's preconditioning: forward(x_t, level, cond) -> x0.

    `denoise_with(net, x, level, cond)` is the teacher family's denoiser (Teacher.denoise_with) and `levels` its
    training levels (Teacher.generator_levels), so G knows no model's quirks."""

    def __init__(self, net: torch.nn.Module, denoise_with, levels: torch.Tensor):
        super().__init__()
        self.net = net
        self.denoise_with = denoise_with
        self.levels = torch.as_tensor(levels, dtype=torch.float32).cpu().clone()  # not a buffer: no cast, no sync, no state

    @classmethod
    def from_teacher(cls, teacher: Teacher, t_g: int = ModelConfig.t_g) -> "SFVGenerator":
        """G initialised as an independent copy of the teacher's network (the teacher stays frozen and untouched)."""
        net = copy.deepcopy(teacher.net)
        net.requires_grad_(True)
        net.train()
        return cls(net, teacher.denoise_with, teacher.generator_levels(t_g))

    @classmethod
    def lora_on_teacher(cls, teacher: Teacher, lora, t_g: int = ModelConfig.t_g) -> "SFVGenerator":
        """G as a LoRA over the teacher's own network (recipe model.lora; sfv.lora): adapters injected in place, so the
        frozen base is the teacher's weights themselves (no copy) and the only trainable parameters are the adapters."""
        from sfv import lora as lora_

        lora_.add_adapters(teacher.net, lora)
        return cls(teacher.net, teacher.denoise_with, teacher.generator_levels(t_g))

    def forward(self, x_t: torch.Tensor, level: torch.Tensor | float, cond: Condition) -> torch.Tensor:
        """x_t: [B, F, C, h, w] at `level` (scalar or [B]) -> predicted x0 [B, F, C, h, w] (float32)."""
        return self.denoise_with(self.net, x_t, level, cond)

    @property
    def top_level(self) -> float:
        """The inference level (SVD: σ_max; flow: t = 1): G's one step starts there from pure noise."""
        return float(self.levels[0])

    def sample_level(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """σ_t ~ uniform over the training levels, one per video: [B] (on the CPU, like the draws' generator)."""
        device = generator.device if generator is not None else "cpu"  # draw where the generator lives (CPU or CUDA)
        levels = self.levels.to(device)
        return levels[torch.randint(len(levels), (batch_size,), generator=generator, device=device)]

    # -- student weights (safetensors only) -------------------------------------------------------
    @staticmethod
    def check_source(path: str | os.PathLike) -> Path:
        """The UNet folder or .safetensors file to load student weights from (checked before any loading)."""
        path = Path(path)
        if path.is_dir():
            folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
            if not (folder / "config.json").is_file() or not (folder / "diffusion_pytorch_model.safetensors").is_file():
                raise ModelLoadError(
                    f"generator folder '{path}' has no UNet: expected config.json and diffusion_pytorch_model.safetensors "
                    "(a diffusers UNet folder) or a unet/ subfolder"
                )
            return folder
        if path.suffix != ".safetensors" or not path.is_file():
            raise ModelLoadError(f"generator '{path}' is neither a UNet folder nor an existing .safetensors file")
        return path

    @classmethod
    def load_unet(cls, path: str | os.PathLike, teacher: Teacher) -> torch.nn.Module:
        """Student weights from a diffusers UNet folder, a folder holding `unet/`, or a .safetensors state dict,
        in the teacher's architecture (Teacher.load_student; the family checks the interface)."""
        return teacher.load_student(cls.check_source(path), path)
