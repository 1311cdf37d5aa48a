"""SF-V's one-step generator G (§3.2): the full teacher UNet, copied and fully fine-tuned.

    G(x_t, σ_t, c) = c_skip(σ_t)·x_t + c_out(σ_t)·F_θ(c_in(σ_t)·x_t, c_noise(σ_t), c)     (teacher's preconditioning)

Training inputs x_t = x0 + σ_t·ε with σ_t uniform over the top T_g − 1 levels of a T_g-level Karras grid
(model.t_g, 4 by default: ≈ {700, 70.5, 2.27} on SVD's range); inference is one pass at σ_max from pure noise, without CFG.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from sfv.config import ModelConfig
from sfv.errors import ModelLoadError
from sfv.noise import generator_sigma_levels
from sfv.teachers import Condition, Teacher


class SFVGenerator(torch.nn.Module):
    """A trainable copy of the teacher's network behind the teacher's preconditioning: forward(x_t, σ, cond) -> x0.

    `denoise_with(net, x, σ, cond)` is the teacher family's denoiser (Teacher.denoise_with), so G knows no
    model's quirks."""

    def __init__(self, unet: torch.nn.Module, denoise_with, sigma_min: float, sigma_max: float, t_g: int):
        super().__init__()
        self.unet = unet
        self.denoise_with = denoise_with
        self.sigma_min, self.sigma_max, self.t_g = float(sigma_min), float(sigma_max), int(t_g)

    @classmethod
    def from_teacher(cls, teacher: Teacher, t_g: int = ModelConfig.t_g) -> "SFVGenerator":
        """G initialised as an independent copy of the teacher UNet (the teacher stays frozen and untouched)."""
        unet = copy.deepcopy(teacher.unet)
        unet.requires_grad_(True)
        unet.train()
        return cls(unet, teacher.denoise_with, teacher.sigma_min, teacher.sigma_max, t_g)

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor | float, cond: Condition) -> torch.Tensor:
        """x_t: [B, F, C, h, w] = x0 + σ·ε; sigma: scalar or [B] -> predicted x0 [B, F, C, h, w] (float32)."""
        return self.denoise_with(self.unet, x_t, sigma, cond)

    def sigma_levels(self) -> torch.Tensor:
        """The training levels {σ_1 .. σ_{T_g−1}}: top T_g − 1 of a T_g-level Karras grid, descending."""
        return generator_sigma_levels(self.t_g, self.sigma_min, self.sigma_max)

    def sample_sigma(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """σ_t ~ uniform over the training levels, one per video: [B]."""
        levels = self.sigma_levels()
        device = generator.device if generator is not None else "cpu"  # draw where the generator lives (CPU or CUDA)
        return levels.to(device)[torch.randint(len(levels), (batch_size,), generator=generator, device=device)]

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
