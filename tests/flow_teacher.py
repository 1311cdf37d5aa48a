"""A tiny flow-matching teacher family, written against sfv's teacher protocol the way a new family is: the proof that
the loop has no EDM left in it before a real flow family (Wan) lands.

It reuses SVD's conditioning and network layout (a real diffusers UNetSpatioTemporalConditionModel, CLIP and VAE,
built offline by sfv.tiny) but gives the network rectified flow's forward process and preconditioning
(sfv.noise.FlowPrecond: x_t = (1−t)·x0 + t·ε, the network predicts v = ε − x0 at timestep 1000·t) and
diffusers' FlowMatchEulerDiscreteScheduler as its grid. Everything a family owns is overridden here; nothing in
sfv/ is told that this family exists.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from sfv.errors import InputError
from sfv.noise import FlowPrecond
from sfv.teachers.svd import SVDTeacher
from sfv.teachers.svd_unet import svd_denoise
from sfv.tiny import TinySVDConfig, build_tiny_svd

FLOW = FlowPrecond()
SHIFT = 3.0  # Wan 2.1 480P's flow_shift


class TinyFlowTeacher(SVDTeacher):
    """SVD's components as a rectified-flow model: the family's level is t ∈ (0, 1], t = 1 pure noise."""

    precond = FLOW
    denoise_with = staticmethod(partial(svd_denoise, precond=FLOW))

    @staticmethod
    def check_scheduler(scheduler) -> None:
        if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
            raise InputError(f"a flow teacher needs FlowMatchEulerDiscreteScheduler, not {type(scheduler).__name__}")

    @classmethod
    def build(cls, seed: int = 0) -> "TinyFlowTeacher":
        pipe = build_tiny_svd(TinySVDConfig(num_frames=4, seed=seed))
        return cls(pipe.unet, pipe.vae, pipe.image_encoder, pipe.feature_extractor, FlowMatchEulerDiscreteScheduler(shift=SHIFT))

    def _grid(self, steps: int) -> torch.Tensor:
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        return scheduler.sigmas.float()  # t levels, descending from 1, ending in the final 0

    def sigmas(self, num_steps=None, custom=None):
        """(t levels ending in 0, initial-noise scale 1): pure noise is ε itself at t = 1."""
        levels = torch.tensor([float(v) for v in custom]) if custom is not None else self._grid(num_steps)
        return levels, torch.tensor(1.0)

    def generator_levels(self, t_g: int) -> torch.Tensor:
        """The top T_g − 1 levels of FlowMatchEuler's T_g-step grid at the scheduler's shift; t = 1 first."""
        return self._grid(t_g)[: t_g - 1]

    def level_grid(self, n: int) -> torch.Tensor:
        """n levels strictly inside (0, 1), descending, shifted like the scheduler's: finite logit t everywhere."""
        t = torch.linspace(1, 0, n + 2, dtype=torch.float64)[1:-1]
        return (SHIFT * t / (1 + (SHIFT - 1) * t)).float()

    @property
    def sigma_min(self) -> float:
        return float(self.level_grid(1000)[-1])

    @property
    def sigma_max(self) -> float:
        return 1.0

    def export(self, net, out, info=None, t_g: int = 4, video=None) -> Path:
        """The student as a folder of this family: the network, the scheduler, and its levels."""
        out = Path(out)
        if out.exists():
            shutil.rmtree(out)
        net.save_pretrained(out / "net", safe_serialization=True)
        self.scheduler.save_pretrained(out / "scheduler")
        (out / "sfv.json").write_text(json.dumps({"levels": self.generator_levels(t_g).tolist(), **(info or {})}) + "\n")
        return out

    def with_student(self, folder) -> "TinyFlowTeacher":
        """This family's components with the student network of an export folder (loaded from disk)."""
        from diffusers import UNetSpatioTemporalConditionModel

        net = UNetSpatioTemporalConditionModel.from_pretrained(Path(folder) / "net")
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(Path(folder) / "scheduler")
        return type(self)(net.eval(), self.vae, self.image_encoder, self.feature_extractor, scheduler)
