"""What `sfv.load_pipeline(folder)` returns for a Wan folder: sfv's own sampler (the trainer's path, WanTeacher.sample)
behind a call shaped like `WanImageToVideoPipeline.__call__`.

- A teacher folder (no sfv.json) samples as the stock pipeline does: 50 Euler steps of its scheduler, CFG 5.
- An `sfv export` folder samples as its student: 1 step at t = 1 without CFG (the same computation as the stock
  pipeline at `num_inference_steps=1, guidance_scale=1`), or up to T_g − 1 steps on the student's own levels
  (sfv.json), re-noised between steps (the consistency sampler).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput

from sfv.errors import InputError
from sfv.model_dir import export_info, read_video_record, student_steps
from sfv.teachers.wan import STOCK_GUIDANCE, STOCK_STEPS, WanTeacher

STOCK_HEIGHT, STOCK_WIDTH, STOCK_FPS = 480, 832, 16  # WanImageToVideoPipeline's defaults; its examples write 16 fps


def video_defaults(record) -> tuple[int, int, int, int]:
    """(frames, height, width, fps) of a folder's video record (sfv.model_dir.read_video_record), else the stock's."""
    if record is not None:
        return record.frames, record.height, record.width, record.fps
    return WanTeacher.default_num_frames, STOCK_HEIGHT, STOCK_WIDTH, STOCK_FPS


def load_wan_pipeline(folder, device, dtype=None, decoder: str = "vae") -> "WanSFVPipeline":
    return WanSFVPipeline.from_pretrained(folder, device, dtype, decoder)


class WanSFVPipeline:
    """A Wan teacher or student folder, sampled by sfv (see the module doc)."""

    def __init__(self, teacher: WanTeacher, info: dict | None = None, video=None):
        self.teacher, self.info, self.video = teacher, info or {}, video

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, decoder: str = "vae") -> "WanSFVPipeline":
        if decoder not in ("vae", None):
            raise InputError(f"decoder '{decoder}': the Wan family decodes with its own VAE only (no fast decoder yet)")
        teacher = WanTeacher.from_pretrained(folder, torch_dtype=dtype, device=device)
        teacher.execution_device = torch.device(device)
        return cls(teacher, export_info(folder) if Path(folder).is_dir() else {}, read_video_record(folder))

    @property
    def is_student(self) -> bool:
        return bool(self.info)

    @property
    def device(self) -> torch.device:
        return self.teacher.device

    @property
    def dtype(self) -> torch.dtype:
        return self.teacher.dtype

    def set_progress_bar_config(self, **kwargs) -> None:
        """Accepted for a stock pipeline's call sites; sfv's sampler draws no bar (pass `progress=` to the call)."""

    def sampling_defaults(self) -> tuple[int, float]:
        """(steps, guidance scale) unless told otherwise: a student 1 step without CFG, a teacher the stock 50 at 5."""
        return (1, 1.0) if self.is_student else (STOCK_STEPS, STOCK_GUIDANCE)

    @property
    def video_defaults(self) -> tuple[int, int, int, int]:
        """(frames, height, width, fps): what the folder records it was trained at (video.json), else the stock's."""
        return video_defaults(self.video)

    def _levels(self, steps: int) -> list[float] | None:
        """The student's first `steps` levels + 0 for few-step sampling; None = the scheduler's own grid."""
        if not self.is_student or steps == 1:
            return None
        most = student_steps(self.info)
        if steps > most:
            raise InputError(f"this student samples 1 to {most} steps on its own levels (T_g − 1), not {steps}")
        return [float(t) for t in self.info["sampling"]["levels"][:steps]] + [0.0]

    @torch.no_grad()
    def __call__(self, image, prompt: str = "", negative_prompt: str = "", num_frames: int | None = None,
                 height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator=None, latents: torch.Tensor | None = None,
                 output_type: str = "np", return_dict: bool = True, progress=None):
        """One video per prompt from `image` (PIL or [B, 3, H, W] in [0, 1]). output_type "latent" returns the stock
        pipeline's latent layout [B, C, F', h, w]; otherwise frames as the stock pipeline decodes them."""
        frames, h, w, _ = self.video_defaults
        num_frames, height, width = num_frames or frames, height or h, width or w
        steps, guidance = self.sampling_defaults()
        steps = num_inference_steps or steps
        guidance = guidance if guidance_scale is None else guidance_scale
        levels = self._levels(steps)
        cond = self.teacher.encode_condition(image, prompt, negative_prompt, height, width, num_frames)
        x0 = self.teacher.sample(cond, num_frames, height, width, num_inference_steps=steps, sigmas=levels,
                                 max_guidance_scale=guidance, generator=generator, progress=progress,
                                 latents=None if latents is None else latents.permute(0, 2, 1, 3, 4),
                                 sampler="euler" if levels is None else "consistency")
        if output_type == "latent":
            out = x0.permute(0, 2, 1, 3, 4)  # float32, as the stock pipeline returns them
        else:
            out = self.teacher.postprocess(self.teacher.decode(x0), output_type)
        return WanPipelineOutput(frames=out) if return_dict else (out,)
