"""Stable Video Diffusion (image-to-video) as sfv's teacher — the only module that knows SVD's specifics.

Everything else in sfv talks to SVD through one contract (EDM / k-diffusion style):

    denoise(x, sigma, cond) -> x0          x: noisy latents [B, F, C, h, w], x = x0 + sigma * eps

What that hides (SFV_METHOD.md, "Teacher"):
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

import json
import os
import re
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)

# The antialiased resize the stock pipeline applies before CLIP. It is module-private in diffusers; we use
# the very same function (rather than a look-alike) because CLIP-embedding parity depends on it. diffusers
# is pinned to the minor version the parity tests were run against (pyproject.toml).
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from sfv.errors import InputError, ModelLoadError, first_line
from sfv.model_dir import check_model_dir, check_video_size

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
_SIGMAS_CACHE: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (scheduler config, steps) -> levels


# ----------------------------------------------------------------------------------------------------
# Conditioning and the denoiser


@dataclass
class SVDCondition:
    """What SVD's UNet is conditioned on, for B videos (the conditional branch only)."""

    image_embeds: torch.Tensor  # [B, 1, D]    CLIP image embedding -> encoder_hidden_states
    image_latents: torch.Tensor  # [B, C, h, w] VAE mode of the noise-augmented frame 0, NOT scaled
    added_time_ids: torch.Tensor  # [B, 3]       [fps − 1, motion_bucket_id, noise_aug_strength]

    def __len__(self) -> int:
        return self.image_embeds.shape[0]

    def negative(self) -> "SVDCondition":
        """The unconditional branch of CFG: zero embedding and zero image latent, same time ids."""
        return replace(self, image_embeds=torch.zeros_like(self.image_embeds), image_latents=torch.zeros_like(self.image_latents))

    def to(self, *args, **kwargs) -> "SVDCondition":
        return SVDCondition(*(t.to(*args, **kwargs) for t in (self.image_embeds, self.image_latents, self.added_time_ids)))


def precondition(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD's EDM preconditioning with sigma_data = 1 and v-sign: (c_skip, c_out, c_in, c_noise)."""
    c_skip = 1 / (sigma**2 + 1)
    c_out = -sigma / (sigma**2 + 1) ** 0.5
    c_in = 1 / (sigma**2 + 1) ** 0.5
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def svd_denoise(
    unet: UNetSpatioTemporalConditionModel,
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    cond: SVDCondition,
    guidance: torch.Tensor | None = None,
) -> torch.Tensor:
    """x0 = c_skip·x + c_out·F(c_in·x, c_noise, cond) for any UNet in SVD layout (teacher or student).

    x: [B, F, C, h, w] noisy latents (x0 + σ·ε); sigma: scalar or [B]; guidance: None (one UNet batch of B)
    or a per-frame CFG scale broadcastable to [B, F, 1, 1, 1] (one doubled batch, negative first).
    The preconditioning is computed in float32 and written in the same floating-point form as diffusers'
    EulerDiscreteScheduler (x/√(σ²+1), x/(σ²+1)) so the stock pipeline is reproduced bit for bit; the
    network runs in its own dtype.
    """
    x = x.float()
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    s = sigma.reshape(-1, 1, 1, 1, 1).to(x.device) if sigma.ndim else sigma
    c_noise = 0.25 * sigma.log()
    x_in = x / (s**2 + 1) ** 0.5  # c_in · x
    if guidance is None:
        net_cond = cond
    else:
        net_cond = _cat_cond(cond.negative(), cond)
        x_in = torch.cat([x_in, x_in])
        c_noise = torch.cat([c_noise, c_noise]) if c_noise.ndim else c_noise
    frames = x_in.shape[1]
    image_latents = net_cond.image_latents.unsqueeze(1).repeat(1, frames, 1, 1, 1)  # [B, F, C, h, w]
    out = unet(
        torch.cat([x_in.to(unet.dtype), image_latents.to(unet.dtype)], dim=2),  # channels: noisy ‖ image latent
        c_noise.to(x.device),
        encoder_hidden_states=net_cond.image_embeds.to(unet.dtype),
        added_time_ids=net_cond.added_time_ids.to(unet.dtype),
        return_dict=False,
    )[0].float()
    if guidance is not None:
        out_uncond, out_cond = out.chunk(2)
        out = out_uncond + guidance * (out_cond - out_uncond)
    return out * (-s / (s**2 + 1) ** 0.5) + x / (s**2 + 1)  # c_out · F + c_skip · x


def _cat_cond(a: SVDCondition, b: SVDCondition) -> SVDCondition:
    return SVDCondition(
        torch.cat([a.image_embeds, b.image_embeds]),
        torch.cat([a.image_latents, b.image_latents]),
        torch.cat([a.added_time_ids, b.added_time_ids]),
    )


def euler_sample(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Euler on the probability-flow ODE (EDM Alg. 1 without churn): dx/dσ = (x − x0)/σ.

    sigmas: descending levels ending in the final one (0). One step from σ_max to 0 returns x0(σ_max)
    up to rounding — SF-V's one-step inference. `callback(i, sigma, x)` returns the latents to continue from.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma)
        d = (x - x0) / sigma
        x = x + d * (sigma_next - sigma)
        if callback is not None:
            x = callback(i, sigma, x)
        if progress is not None:
            progress()
    return x


# ----------------------------------------------------------------------------------------------------
# The UNet's encoder: SF-V's discriminator backbone


def sharding_units(unet: UNetSpatioTemporalConditionModel) -> list[torch.nn.Module]:
    """The UNet's repeated blocks (every SpatioTemporalResBlock and TransformerSpatioTemporalModel, in order):
    the units FSDP shards and gathers one at a time. What is left (conv_in/out, embeddings, up/down samplers)
    belongs to the root. A size-based policy would trip on the UNet's ModuleList containers."""
    from diffusers.models.resnet import SpatioTemporalResBlock
    from diffusers.models.transformers.transformer_temporal import (
        TransformerSpatioTemporalModel,
    )

    return [m for m in unet.modules() if isinstance(m, (SpatioTemporalResBlock, TransformerSpatioTemporalModel))]


class SVDEncoder(torch.nn.Module):
    """The encoder half of an SVD UNet (time and added-time embeddings, conv_in, down blocks) with the
    teacher's weights shared, not copied: SF-V's frozen discriminator backbone (§3.2).

    forward(x, σ′, cond) runs the UNet's own computation up to the end of each down block on
    c_in(σ′)·x ‖ image latents with the UNet's conditioning, and returns one feature map per down block,
    [(B·F), C_k, h_k, w_k] (the UNet's own frame-flattened layout). Frozen: no parameter needs a gradient,
    and `.train()` keeps it in eval mode; gradients still flow to x (for the G step and R1).
    """

    def __init__(self, unet: UNetSpatioTemporalConditionModel):
        super().__init__()
        for name in ("time_proj", "time_embedding", "add_time_proj", "add_embedding", "conv_in", "down_blocks"):
            setattr(self, name, getattr(unet, name))
        self.block_channels = list(unet.config.block_out_channels)  # C_k of each down block's output
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "SVDEncoder":
        return super().train(False)  # a frozen backbone: never in training mode

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: SVDCondition) -> list[torch.Tensor]:
        """x: noisy latents x0 + σ′·ε, [B, F, C, h, w]; sigma: [B] -> features per down block."""
        batch, frames = x.shape[:2]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(batch)
        x_in = x.float() / (sigma.reshape(-1, 1, 1, 1, 1) ** 2 + 1) ** 0.5  # c_in · x
        image_latents = cond.image_latents.unsqueeze(1).repeat(1, frames, 1, 1, 1)
        sample = torch.cat([x_in, image_latents.float()], dim=2).to(self.dtype)  # [B, F, 2C, h, w]
        # as UNetSpatioTemporalConditionModel.forward up to the mid block
        emb = self.time_embedding(self.time_proj(0.25 * sigma.log()).to(self.dtype))  # c_noise = ¼·ln σ′
        time_embeds = self.add_time_proj(cond.added_time_ids.flatten()).reshape(batch, -1).to(emb.dtype)
        emb = (emb + self.add_embedding(time_embeds)).repeat_interleave(frames, dim=0)
        context = cond.image_embeds.to(self.dtype).repeat_interleave(frames, dim=0)
        indicator = torch.zeros(batch, frames, dtype=self.dtype, device=x.device)
        h = self.conv_in(sample.flatten(0, 1))
        features = []
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
            else:
                h, _ = block(hidden_states=h, temb=emb, image_only_indicator=indicator)
            features.append(h)  # [(B·F), C_k, h_k, w_k]
        return features


# ----------------------------------------------------------------------------------------------------
# The teacher


class SVDTeacher:
    """Stable Video Diffusion's components behind sfv's contract.

    Any SVD-layout model works: the real teacher, a tiny test model, or an exported one-step student
    (SFVPipeline drives its own components through this class). Modules are shared, never copied.
    """

    def __init__(
        self,
        unet: UNetSpatioTemporalConditionModel,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder,
        feature_extractor,
        scheduler: EulerDiscreteScheduler,
        execution_device: torch.device | None = None,
    ):
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.execution_device = execution_device  # set under model offload, where unet.device says "cpu"
        self.feature_extractor, self.scheduler = feature_extractor, scheduler
        self.video_processor = VideoProcessor(do_resize=True, vae_scale_factor=self.vae_scale_factor)
        cfg = scheduler.config
        if not isinstance(scheduler, EulerDiscreteScheduler) or cfg.prediction_type != "v_prediction" or cfg.timestep_type != "continuous":
            raise ModelLoadError(
                f"scheduler is {type(scheduler).__name__} ({cfg.prediction_type}, {cfg.timestep_type}); SVD's "
                "preconditioning needs EulerDiscreteScheduler with prediction_type='v_prediction' and "
                "timestep_type='continuous' (the scheduler config SVD ships)"
            )

    # -- loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path_or_id: str | os.PathLike, torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None
    ) -> "SVDTeacher":
        """Load from a local diffusers folder or a hub id (e.g. stabilityai/stable-video-diffusion-img2vid)."""
        name = str(path_or_id)
        local = os.path.exists(name) or not _HUB_ID.match(name)
        if local:
            check_model_dir(name)
        try:
            pipe = StableVideoDiffusionPipeline.from_pretrained(name, dtype=torch_dtype, use_safetensors=True)
        except Exception as e:  # diffusers/huggingface_hub raise a zoo of types for "not there" / "broken"
            first = first_line(e)
            where = "" if local else (
                f" (there is no local folder '{name}'; as a hub id it could not be fetched — download it once "
                "with network access and pass the local folder)"
            )
            raise ModelLoadError(f"could not load SVD model '{name}': {first}{where}") from e
        teacher = cls.from_pipeline(pipe)
        return teacher.to(device) if device is not None else teacher

    @classmethod
    def from_pipeline(cls, pipe, execution_device: torch.device | None = None) -> "SVDTeacher":
        return cls(pipe.unet, pipe.vae, pipe.image_encoder, pipe.feature_extractor, pipe.scheduler, execution_device)

    def to_pipeline(self, unet: UNetSpatioTemporalConditionModel | None = None) -> StableVideoDiffusionPipeline:
        """The stock diffusers pipeline over these components (optionally with another UNet)."""
        return StableVideoDiffusionPipeline(
            vae=self.vae,
            image_encoder=self.image_encoder,
            unet=unet if unet is not None else self.unet,
            scheduler=self.scheduler,
            feature_extractor=self.feature_extractor,
        )

    def to(self, device=None, dtype: torch.dtype | None = None) -> "SVDTeacher":
        for module in (self.unet, self.vae, self.image_encoder):
            module.to(device=device, dtype=dtype)
        return self

    def requires_grad_(self, flag: bool) -> "SVDTeacher":
        for module in (self.unet, self.vae, self.image_encoder):
            module.requires_grad_(flag)
        return self

    # -- facts about the model -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.execution_device if self.execution_device is not None else self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

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
    def sigma_min(self) -> float:
        return float(self.scheduler.config.sigma_min)

    @property
    def sigma_max(self) -> float:
        return float(self.scheduler.config.sigma_max)

    def sigmas(self, num_steps: int | None = None, custom: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ levels with the final one appended, initial-noise scale), float32 on CPU.

        Taken from the scheduler config itself (a fresh EulerDiscreteScheduler, so every flag — Karras,
        σ range, final σ type, spacing — is honoured exactly as the stock pipeline honours it). `custom`
        lists the levels including the final one (usually 0). For SVD: Karras ρ = 7 on [0.002, 700]
        (sfv.noise.karras_sigmas, tested equal), and init noise √(σ_max² + 1) for "leading" spacing.
        Step-count schedules are cached per scheduler config (building the scheduler costs ~8 ms per call,
        a visible share of a one-step run on small models); callers get fresh copies.
        """
        if custom is None and num_steps is not None and num_steps >= 1:
            key = (json.dumps(dict(self.scheduler.config), sort_keys=True, default=repr), num_steps)
            if key not in _SIGMAS_CACHE:
                _SIGMAS_CACHE[key] = self._fresh_sigmas(num_steps, None)
            sigmas, init_sigma = _SIGMAS_CACHE[key]
            return sigmas.clone(), init_sigma.clone()
        return self._fresh_sigmas(num_steps, custom)

    def _fresh_sigmas(self, num_steps: int | None, custom: Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
        scheduler = EulerDiscreteScheduler.from_config(self.scheduler.config)
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

    # -- conditioning ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_condition(
        self,
        image,
        height: int,
        width: int,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> SVDCondition:
        """What the stock pipeline feeds the UNet for `image` (PIL, list of PIL, numpy HWC/BHWC, or a
        tensor [B, 3, H, W] in [0, 1]). Draws the noise-augmentation noise from `generator` first, as the
        stock pipeline does, so a following latent draw matches it.

        One deliberate difference: for batches of several images with num_videos_per_prompt > 1 the stock
        pipeline repeats embeddings per image but latents per batch (mismatched pairs); here both repeat
        per image.
        """
        image = as_pipeline_image(image)
        device = self.device
        embeds = self.encode_image(image)  # [B, 1, D]
        embeds = embeds.repeat_interleave(num_videos_per_prompt, dim=0)

        pixels = self.video_processor.preprocess(image, height=height, width=width).to(device)  # [B, 3, H, W] in [-1, 1]
        noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
        pixels = pixels + noise_aug_strength * noise
        latents = self._vae_encode(pixels).latent_dist.mode()  # unscaled: no scaling_factor
        latents = latents.repeat_interleave(num_videos_per_prompt, dim=0).to(embeds.dtype)

        # NOTE: SVD was micro-conditioned on fps − 1 (as in Stability's and diffusers' samplers).
        time_ids = torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=embeds.dtype)
        expected = self.unet.add_embedding.linear_1.in_features
        if self.unet.config.addition_time_embed_dim * 3 != expected:
            raise ModelLoadError(f"UNet expects an added time embedding of {expected}, not 3 × addition_time_embed_dim")
        time_ids = time_ids.repeat(len(embeds), 1).to(device)
        return SVDCondition(embeds, latents, time_ids)

    def _vae_encode(self, pixels: torch.Tensor):
        # As the stock pipeline: an fp16 VAE with force_upcast (SVD's) encodes in float32.
        if self.vae.dtype == torch.float16 and self.vae.config.force_upcast:
            self.vae.to(dtype=torch.float32)
            try:
                return self.vae.encode(pixels.float())
            finally:
                self.vae.to(dtype=torch.float16)
        return self.vae.encode(pixels.to(self.vae.dtype))

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Training videos [B, F, 3, H, W] in [0, 1] -> x0 latents [B, F, C, h, w] (VAE mode × scaling_factor),
        the space the UNet denoises in."""
        batch = frames.shape[0]
        pixels = frames.flatten(0, 1).to(self.device) * 2 - 1
        latents = self._vae_encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor
        return latents.reshape(batch, -1, *latents.shape[1:]).float()

    def time_ids(self, fps, motion_bucket_id, noise_aug_strength, batch_size: int) -> torch.Tensor:
        """added_time_ids [B, 3] = [fps − 1, motion_bucket_id, noise_aug_strength]; each a number or [B]."""
        cols = [torch.as_tensor(v, dtype=torch.float32).expand(batch_size) for v in (fps, motion_bucket_id, noise_aug_strength)]
        cols[0] = cols[0] - 1
        return torch.stack(cols, dim=1).to(self.device, self.image_encoder.dtype)

    @torch.no_grad()
    def encode_image(self, image) -> torch.Tensor:
        """CLIP image embedding [B, 1, D], as the stock pipeline computes it."""
        size = self.image_encoder.config.image_size  # 224 for SVD's ViT-H/14
        if not isinstance(image, torch.Tensor):
            image = self.video_processor.numpy_to_pt(self.video_processor.pil_to_numpy(image))
            image = _clip_resize(image, size)
        elif image.shape[-2:] != (size, size):
            image = _clip_resize(image, size)  # the stock pipeline would fail here; we resize like PIL input
        pixel_values = self.feature_extractor(
            images=image, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False, return_tensors="pt"
        ).pixel_values
        pixel_values = pixel_values.to(device=self.image_encoder.device, dtype=self.image_encoder.dtype)
        return self.image_encoder(pixel_values).image_embeds.unsqueeze(1)

    # -- denoising and sampling ------------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, sigma, cond: SVDCondition, guidance: torch.Tensor | None = None) -> torch.Tensor:
        return svd_denoise(self.unet, x, sigma, cond, guidance)

    def initial_latents(
        self, batch_size: int, num_frames: int, height: int, width: int, init_sigma: torch.Tensor, generator=None, latents=None
    ) -> torch.Tensor:
        """Pure noise at the top level, [B, F, C, h, w], drawn like the stock pipeline."""
        f = self.vae_scale_factor
        shape = (batch_size, num_frames, self.latent_channels, height // f, width // f)
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
        num_inference_steps: int = 25,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = 3.0,
        generator=None,
        latents: torch.Tensor | None = None,
        unet: UNetSpatioTemporalConditionModel | None = None,
        callback=None,
        progress=None,
    ) -> torch.Tensor:
        """Multi-step Euler sampling with SVD's per-frame CFG ramp; returns x0 latents [B, F, C, h, w].

        `sigmas` (descending, ending in the final level, usually 0) overrides the Karras schedule;
        `unet` runs another SVD-layout network (the one-step student) under the same conditioning.
        CFG is on when max_guidance_scale > 1 (as in the stock pipeline): a doubled UNet batch per step.
        """
        sigmas, init_sigma = self.sigmas(num_inference_steps, custom=sigmas)
        unet = unet if unet is not None else self.unet
        guidance = None
        if max_guidance_scale > 1:
            guidance = torch.linspace(min_guidance_scale, max_guidance_scale, num_frames)  # [F] ramp, frame 0 → last
            guidance = guidance.to(self.device, torch.float32).reshape(1, num_frames, 1, 1, 1)
        x = self.initial_latents(len(cond), num_frames, height, width, init_sigma, generator, latents)
        return euler_sample(lambda x, s: svd_denoise(unet, x, s, cond, guidance), x, sigmas, callback, progress)

    # -- decoding --------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decode_chunk_size: int | None = None) -> torch.Tensor:
        """Latents [B, F, C, h, w] -> frames [B, 3, F, H, W] in [-1, 1] (float32) with the temporal decoder,
        decode_chunk_size frames at a time (default: all frames at once)."""
        num_frames = latents.shape[1]
        chunk = decode_chunk_size or num_frames
        z = 1 / self.vae.config.scaling_factor * latents.flatten(0, 1)
        frames = []
        for i in range(0, z.shape[0], chunk):
            zi = z[i : i + chunk].to(self.vae.dtype)
            frames.append(self.vae.decode(zi, num_frames=zi.shape[0]).sample)
        frames = torch.cat(frames)
        return frames.reshape(-1, num_frames, *frames.shape[1:]).permute(0, 2, 1, 3, 4).float()

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


def check_output_type(output_type: str) -> None:
    if output_type not in ("np", "pt", "pil", "latent"):
        raise InputError(f"output_type must be 'np', 'pt', 'pil' or 'latent', not {output_type!r}")


def _clip_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    # As the stock pipeline: normalise to [-1, 1], antialiased bicubic resize, back to [0, 1].
    return (_resize_with_antialiasing(image * 2.0 - 1.0, (size, size)) + 1.0) / 2.0


def as_pipeline_image(image):
    """Normalise user images to what the stock pipeline accepts: PIL, list of PIL, or [B, 3, H, W] in [0, 1].

    numpy uint8 HWC / BHWC become PIL images (so they take exactly the PIL path); float numpy in [0, 1]
    and [3, H, W] tensors become [B, 3, H, W] tensors.
    """
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, (list, tuple)) and image and all(isinstance(i, PIL.Image.Image) for i in image):
        return [i.convert("RGB") if i.mode != "RGB" else i for i in image]
    if isinstance(image, np.ndarray):
        arr = image[None] if image.ndim == 3 else image
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise InputError(f"numpy images must be HWC or BHWC with 3 channels, got shape {image.shape}")
        if arr.dtype == np.uint8:
            pils = [PIL.Image.fromarray(a) for a in arr]
            return pils[0] if image.ndim == 3 else pils
        image = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(0, 3, 1, 2)
    if isinstance(image, torch.Tensor):
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[1] != 3:
            raise InputError(f"tensor images must be [3, H, W] or [B, 3, H, W], got shape {tuple(image.shape)}")
        if image.min() < 0 or image.max() > 1:
            raise InputError("tensor/float images must have values in [0, 1]; rescale with (x + 1) / 2 if they are in [-1, 1]")
        return image
    raise InputError(f"unsupported image type {type(image).__name__}; pass a PIL image, a numpy array or a tensor")
