"""Stable Video Diffusion (image-to-video) as an sfv teacher (the protocol in sfv/teachers/__init__.py).
With svd_condition.py (conditioning) and svd_unet.py (the UNet: denoiser, D's backbone, student weights) it is
the only code that knows SVD.

Everything else in sfv talks to SVD through one contract (EDM / k-diffusion style):

    denoise(x, sigma, cond) -> x0          x: noisy latents [B, F, C, h, w], x = x0 + sigma * eps

What that hides (docs/method.md, "The teacher"):
  * preconditioning `VScalingWithEDMcNoise` (EDM with sigma_data = 1 and a v-sign):
        c_skip = 1/(σ²+1),  c_out = −σ/√(σ²+1),  c_in = 1/√(σ²+1),  c_noise = ¼·ln σ
        x0 = c_skip·x + c_out·F(c_in·x, c_noise, cond)
  * conditioning: CLIP image embedding (sequence length 1), the *unscaled* VAE mode of the
    noise-augmented first frame concatenated to every frame on the channel dim (dim 2 of
    [B, F, C, h, w]), and added_time_ids = [fps − 1, motion_bucket_id, noise_aug_strength];
  * classifier-free guidance with a per-frame scale ramp (negative = zeros), applied to the
    network output in one doubled UNet batch, exactly as diffusers' pipeline does.

The multi-step sampler below reproduces `diffusers.StableVideoDiffusionPipeline` frame for frame for the
same seed (tests/test_teacher.py): same RNG draw order, same floating-point form. That holds bit for bit
in float32. In bf16/fp16 sfv keeps the latent state, CFG mix and preconditioning in float32 (the stock
pipeline rounds the state to the network dtype every step), so half-precision outputs differ from stock
at the rounding level — by design: precision is decided in svd_denoise and initial_latents only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)

from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from sfv.decoders import build_decoder
from sfv.errors import InputError
from sfv.images import check_output_type
from sfv.model_dir import check_video_size
from sfv.noise import generator_sigma_levels, karras_sigmas
from sfv.sampling import check_sampler, solve
from sfv.teachers.svd_condition import SVDCondition, SVDConditioning
from sfv.teachers.svd_folder import (check_scheduler, check_svd_folder, folder_generator_sigmas, load_svd_pipeline,
                                     scheduler_sigmas)
from sfv.teachers.svd_unet import PRECOND, SVDEncoder, load_student, sharding_units, student_from_state, svd_denoise

STOCK_STEPS, STOCK_GUIDANCE = 25, 3.0  # the stock pipeline's sampling: 25 Euler steps, CFG ramp 1 → 3


# ----------------------------------------------------------------------------------------------------
# The teacher


class SVDTeacher(SVDConditioning):
    """Stable Video Diffusion's components behind sfv's teacher protocol (sfv.teachers.Teacher).

    Any SVD-layout model works: the real teacher, a tiny test model, or an exported one-step student
    (SFVPipeline drives its own components through this class). Modules are shared, never copied.
    `decoder` picks the decoding slot (sfv.decoders): the stock temporal VAE by default.
    """

    precond = PRECOND
    default_steps, default_guidance = STOCK_STEPS, STOCK_GUIDANCE  # how a teacher samples unless told otherwise
    denoise_with = staticmethod(svd_denoise)  # (net, x, σ, cond, guidance) -> x0 for any SVD-layout UNet (G's too)

    def __init__(
        self,
        unet: UNetSpatioTemporalConditionModel,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder,
        feature_extractor,
        scheduler: EulerDiscreteScheduler,
        execution_device: torch.device | None = None,
        decoder="vae",  # a name in sfv.decoders.DECODERS or a built decoder
    ):
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.set_decoder(decoder)
        self.execution_device = execution_device  # set under model offload, where unet.device says "cpu"
        self.feature_extractor, self.scheduler = feature_extractor, scheduler
        self.video_processor = VideoProcessor(do_resize=True, vae_scale_factor=self.vae_scale_factor)
        self.check_scheduler(scheduler)

    # the folder's checks before any weights load, and loading (sfv/teachers/svd_folder.py)
    check_folder = staticmethod(check_svd_folder)
    folder_generator_sigmas = staticmethod(folder_generator_sigmas)
    check_scheduler = staticmethod(check_scheduler)

    # -- loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path_or_id: str | os.PathLike, torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None
    ) -> "SVDTeacher":
        """Load from a local diffusers folder or a hub id (e.g. stabilityai/stable-video-diffusion-img2vid)."""
        teacher = cls.from_pipeline(load_svd_pipeline(path_or_id, torch_dtype))
        return teacher.to(device) if device is not None else teacher

    @classmethod
    def from_pipeline(cls, pipe, execution_device: torch.device | None = None, decoder="vae") -> "SVDTeacher":
        return cls(pipe.unet, pipe.vae, pipe.image_encoder, pipe.feature_extractor, pipe.scheduler, execution_device, decoder)

    def to_pipeline(self, unet: UNetSpatioTemporalConditionModel | None = None) -> StableVideoDiffusionPipeline:
        """The stock diffusers pipeline over these components (optionally with another UNet)."""
        return StableVideoDiffusionPipeline(
            vae=self.vae,
            image_encoder=self.image_encoder,
            unet=unet if unet is not None else self.unet,
            scheduler=self.scheduler,
            feature_extractor=self.feature_extractor,
        )

    def export(self, net: UNetSpatioTemporalConditionModel, out, **kwargs):
        """The student `net` as a drop-in diffusers folder (svd_export.export_pipeline; kwargs: info, t_g, video)."""
        from sfv.teachers.svd_export import export_pipeline

        return export_pipeline(net, self, out, **kwargs)

    def export_lora(self, values: dict, lora, out) -> Path:
        """A LoRA student's adapter (sfv.lora; `values` by parameter name, `lora` the recipe's model.lora) as a peft
        adapter folder: `PeftModel.from_pretrained(teacher_unet, out)`. diffusers has no LoRA loader for SVD's UNet
        (no PeftAdapterMixin, `load_attn_procs` takes Custom Diffusion weights only): its stock path is the merged UNet
        of the export itself."""
        from sfv.lora import save_peft_adapter

        return save_peft_adapter(out, self.unet, values, lora)

    def load_student(self, source, path=None) -> UNetSpatioTemporalConditionModel:
        """A student's UNet (a checked folder or .safetensors file; svd_unet.load_student) in this architecture."""
        return load_student(source, self.unet, path if path is not None else source)

    def student_from_state(self, state: dict, path) -> UNetSpatioTemporalConditionModel:
        """This teacher's UNet architecture holding the student weights `state` (read from `path`); strict."""
        return student_from_state(state, self.unet, path)

    def set_decoder(self, decoder, folder: str | os.PathLike | None = None) -> "SVDTeacher":
        """Select the decoding slot: a name (sfv.decoders.DECODERS, built on this teacher's VAE; `folder` for a
        decoder with its own weights) or a decoder already built (e.g. the one SFVPipeline keeps)."""
        self.decoder = build_decoder(decoder, self.vae, folder) if isinstance(decoder, str) else decoder
        self.decoder_name = self.decoder.name
        return self

    def modules(self) -> list[torch.nn.Module]:
        """Every network the teacher holds (frozen during distillation)."""
        return [self.unet, self.vae, self.image_encoder]

    def to(self, device=None, dtype: torch.dtype | None = None) -> "SVDTeacher":
        for module in self.modules():
            module.to(device=device, dtype=dtype)
        return self

    def requires_grad_(self, flag: bool) -> "SVDTeacher":
        for module in self.modules():
            module.requires_grad_(flag)
        return self

    def encoder(self) -> SVDEncoder:
        """D's frozen backbone: the UNet's encoder half, weights shared."""
        return SVDEncoder(self.unet, self.precond)

    def sharding_units(self, net: torch.nn.Module | None = None) -> list[torch.nn.Module]:
        """The blocks FSDP shards one at a time in `net` (default: the teacher's UNet; G's copy has the same)."""
        return sharding_units(net if net is not None else self.unet)

    # -- facts about the model -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.execution_device if self.execution_device is not None else self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def condition_dim(self) -> int:
        """Width of `SVDCondition.pooled()`: the CLIP projection."""
        return self.image_encoder.config.projection_dim

    label_count = 3  # SVDCondition.labels(): fps − 1, motion_bucket_id, noise_aug_strength

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels // 2  # noisy latents ‖ image latents

    @property
    def default_num_frames(self) -> int:
        return self.unet.config.num_frames

    @property
    def net(self) -> UNetSpatioTemporalConditionModel:
        """The denoising network G is copied from (the protocol's name for SVD's UNet)."""
        return self.unet

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """[B, F, C, h, w] of the latents of B videos of F frames at H×W (the VAE compresses space only)."""
        f = self.vae_scale_factor
        return (batch_size, num_frames, self.latent_channels, height // f, width // f)

    def generator_levels(self, t_g: int) -> torch.Tensor:
        """G's training levels (SF-V §3.2): the top T_g − 1 of a T_g-level Karras grid on the scheduler's σ range."""
        return generator_sigma_levels(t_g, self.sigma_min, self.sigma_max)

    def level_grid(self, n: int) -> torch.Tensor:
        """n levels spanning the family's range, descending: where D's σ′ and DMD's σ are drawn."""
        return karras_sigmas(n, self.sigma_min, self.sigma_max)

    @property
    def sigma_min(self) -> float:
        return float(self.scheduler.config.sigma_min)

    @property
    def sigma_max(self) -> float:
        return float(self.scheduler.config.sigma_max)

    def sigmas(self, num_steps: int | None = None, custom: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ levels with the final one appended, initial-noise scale), float32 on CPU: the scheduler config's own
        schedule, exactly as the stock pipeline builds it (svd_folder.scheduler_sigmas; `custom` ends in the final σ)."""
        return scheduler_sigmas(self.scheduler.config, num_steps, custom)

    # -- denoising and sampling ------------------------------------------------------------------------
    def guidance(self, num_frames: int, max_scale: float, min_scale: float = 1.0) -> torch.Tensor | None:
        """SVD's classifier-free guidance: a per-frame scale ramp from min_scale (frame 0) to max_scale (last frame),
        [1, F, 1, 1, 1] on the teacher's device; None (no CFG, one UNet batch) when max_scale ≤ 1, as in the stock pipeline."""
        if max_scale <= 1:
            return None
        ramp = torch.linspace(min_scale, max_scale, num_frames)  # [F] ramp, frame 0 → last
        return ramp.to(self.device, torch.float32).reshape(1, num_frames, 1, 1, 1)

    def denoise(self, x: torch.Tensor, sigma, cond: SVDCondition, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """x0 = c_skip·x + c_out·F(c_in·x, c_noise, cond) with the teacher's UNet (see svd_denoise)."""
        return self.denoise_with(self.unet, x, sigma, cond, guidance)

    def initial_latents(
        self, batch_size: int, num_frames: int, height: int, width: int, init_sigma: torch.Tensor, generator=None, latents=None
    ) -> torch.Tensor:
        """Pure noise at the top level, [B, F, C, h, w], drawn like the stock pipeline."""
        shape = self.latent_shape(batch_size, num_frames, height, width)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise InputError(f"got {len(generator)} generators for {batch_size} videos; pass one per video")
        if latents is None:
            # float32 whatever the network's dtype: σ_max·ε at 700 would lose digits in bf16/fp16
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise InputError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        return latents.to(self.device, torch.float32) * init_sigma

    @torch.no_grad()
    def sample(
        self,
        cond: SVDCondition,
        num_frames: int,
        height: int,
        width: int,
        num_inference_steps: int = STOCK_STEPS,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = STOCK_GUIDANCE,
        generator=None,
        latents: torch.Tensor | None = None,
        net: UNetSpatioTemporalConditionModel | None = None,
        callback=None,
        progress=None,
        sampler: str = "euler",
        window: int | None = None,
        overlap: int | None = None,
    ) -> torch.Tensor:
        """Multi-step sampling with SVD's per-frame CFG ramp; returns x0 latents [B, F, C, h, w].

        `sigmas` (descending, ending in the final level, usually 0) overrides the Karras schedule;
        `net` runs another SVD-layout network (the one-step student) under the same conditioning.
        CFG is on when max_guidance_scale > 1 (as in the stock pipeline): a doubled UNet batch per step.
        sampler: "euler" (the stock pipeline's) or "consistency" (a one-step student's few-step sampler: x̂0,
        re-noised to the next level with noise drawn from `generator`; sfv.sampling.consistency_sample).
        window, overlap: MultiDiffusion over temporal windows of `window` frames (sfv.sampling.multidiffusion);
        the CFG ramp then spans one window, as each UNet call sees one.
        """
        check_sampler(sampler)
        sigmas, init_sigma = self.sigmas(num_inference_steps, custom=sigmas)
        net = net if net is not None else self.unet
        guidance = self.guidance(window if window is not None else num_frames, max_guidance_scale, min_guidance_scale)
        x = self.initial_latents(len(cond), num_frames, height, width, init_sigma, generator, latents)

        def denoise(x, sigma):
            return self.denoise_with(net, x, sigma, cond, guidance)

        def noise(like):  # ε for re-noising (the consistency sampler), float32 like the initial noise
            return randn_tensor(like.shape, generator=generator, device=like.device, dtype=torch.float32)

        return solve(denoise, x, sigmas, sampler, noise, self.precond.add_noise, window, overlap, callback, progress)

    # -- decoding --------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decode_chunk_size: int | None = None) -> torch.Tensor:
        """Latents [B, F, C, h, w] -> frames [B, 3, F, H, W] in [-1, 1] (float32) with the decoder slot,
        decode_chunk_size frames at a time (default: all frames at once)."""
        return self.decoder(latents, decode_chunk_size)

    def postprocess(self, frames: torch.Tensor, output_type: str = "np"):
        """[B, 3, F, H, W] in [-1, 1] -> 'np' [B, F, H, W, 3] / 'pt' [B, F, 3, H, W] in [0, 1] / 'pil' lists."""
        check_output_type(output_type)
        return self.video_processor.postprocess_video(video=frames, output_type=output_type)

    @torch.no_grad()
    def generate(
        self,
        image,
        height: int,
        width: int,
        num_frames: int | None = None,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        decode_chunk_size: int | None = None,
        generator=None,
        output_type: str = "np",
        **sample_kwargs,
    ):
        """Image -> video end to end (the stock pipeline's defaults: 25 steps, CFG ramp 1 → 3)."""
        num_frames = self.default_num_frames if num_frames is None else num_frames
        check_video_size(height, width, num_frames, self.vae_scale_factor)
        check_output_type(output_type)
        cond = self.encode_condition(image, height, width, fps, motion_bucket_id, noise_aug_strength, generator=generator)
        latents = self.sample(cond, num_frames, height, width, generator=generator, **sample_kwargs)
        if output_type == "latent":
            return latents
        return self.postprocess(self.decode(latents, decode_chunk_size), output_type)
