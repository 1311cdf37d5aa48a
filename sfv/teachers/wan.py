"""Wan 2.x image-to-video (flow-matching DiT) as an sfv teacher (the protocol in sfv/teachers/__init__.py). With
wan_condition.py and wan_net.py it is the only code that knows Wan. Its level is the flow time t ∈ (0, 1], the
scheduler's `sigmas` (sfv.noise.FlowPrecond):

    x_t = (1 − t)·x0 + t·ε        add_noise
    v   = F(x_t, 1000·t, cond)    the transformer (v = ε − x0)
    x0  = x_t − t·v               denoise / denoise_with (frame 0 replaced for TI2V)
    x  <- x + (t_next − t)·v      the Euler step (sfv.sampling.flow_euler_sample: the stock pipeline bit for bit)

Two conditioning layouts, read from the folder (`expand_timesteps` in model_index.json):

  Wan 2.1 I2V        input = noise (C) ‖ mask (4) ‖ VAE latent of [image, 0, …, 0] (C), C = 16: 36 channels;
                     CLIP penultimate hidden states as extra key/values in every cross-attention.
  Wan 2.2 TI2V-5B    input = noise with frame 0 replaced by the image latent; timestep 0 on frame 0's tokens;
                     the returned latents have frame 0 replaced again.
  Wan 2.2 A14B       (transformer_2 + boundary_ratio) the high-noise expert `transformer` is the network G is
                     copied from; G's levels must lie at or above the boundary (`generator_levels` checks it).

The scheduler must be FlowMatchEulerDiscreteScheduler: the hub folders' UniPC disagrees with itself at one step
(timestep 999, σ 0.999999), so the stock pipeline could not run a one-step student exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from sfv.errors import InputError, ModelLoadError, first_line
from sfv.images import check_output_type
from sfv.noise import FlowPrecond
from sfv.sampling import check_sampler, flow_euler_sample, solve
from sfv.teachers.wan_condition import WanCondition, WanConditioning
from sfv.teachers.wan_export import check_wan_dir, check_wan_size, export_folder, export_lora
from sfv.teachers.wan_net import WanEncoder, load_student, replace_first_frame, student_from_state, wan_velocity

STOCK_STEPS, STOCK_GUIDANCE = 50, 5.0  # WanImageToVideoPipeline's defaults


class WanTeacher(WanConditioning):
    """Wan 2.1 I2V / 2.2 TI2V / 2.2 A14B behind sfv's teacher protocol. Levels are flow times t (see module doc)."""

    default_steps, default_guidance = STOCK_STEPS, STOCK_GUIDANCE  # the stock pipeline's: 50 steps, CFG 5
    default_num_frames = 81

    def __init__(self, transformer: WanTransformer3DModel, vae: AutoencoderKLWan, text_encoder, tokenizer,
                 scheduler: FlowMatchEulerDiscreteScheduler, image_encoder=None, image_processor=None,
                 expand_timesteps: bool = False, transformer_2: WanTransformer3DModel | None = None,
                 boundary_ratio: float | None = None, execution_device: torch.device | None = None):
        cfg = scheduler.config
        if not isinstance(scheduler, FlowMatchEulerDiscreteScheduler) or cfg.use_dynamic_shifting or cfg.invert_sigmas \
                or cfg.stochastic_sampling or cfg.use_karras_sigmas or cfg.use_exponential_sigmas or cfg.use_beta_sigmas \
                or cfg.shift_terminal:
            raise ModelLoadError(
                f"scheduler is {type(scheduler).__name__}; sfv's Wan teacher needs FlowMatchEulerDiscreteScheduler with a "
                "fixed shift (the hub's UniPC config disagrees with itself at one step: timestep 999, σ 0.999999); "
                "replace scheduler/ with FlowMatchEulerDiscreteScheduler(shift=<the folder's flow_shift>)")
        if transformer is None:
            raise ModelLoadError("the Wan folder has no transformer/ (a low-noise-only folder cannot be distilled)")
        if (transformer_2 is None) != (boundary_ratio is None):
            raise ModelLoadError("Wan 2.2 A14B folders need both transformer_2 and boundary_ratio")
        if transformer.config.image_dim is not None and transformer.config.added_kv_proj_dim is None:
            raise ModelLoadError("transformer has image_dim but no added_kv_proj_dim: its image tokens would be read as text")
        self.transformer, self.transformer_2, self.boundary_ratio = transformer, transformer_2, boundary_ratio
        self.vae, self.text_encoder, self.tokenizer, self.scheduler = vae, text_encoder, tokenizer, scheduler
        self.image_encoder, self.image_processor = image_encoder, image_processor
        self.expand_timesteps = bool(expand_timesteps)
        self.execution_device = execution_device
        self.precond = FlowPrecond(float(cfg.num_train_timesteps))
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor)
        self._empty_prompt: torch.Tensor | None = None

    # -- loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> "WanTeacher":
        check_wan_dir(path)
        try:
            pipe = WanImageToVideoPipeline.from_pretrained(str(path), torch_dtype=torch_dtype, use_safetensors=True)
        except Exception as e:  # diffusers raises many types for a broken folder
            raise ModelLoadError(f"could not load Wan model '{path}': {first_line(e)}") from e
        teacher = cls.from_pipeline(pipe)
        return teacher.to(device) if device is not None else teacher

    @classmethod
    def from_pipeline(cls, pipe: WanImageToVideoPipeline, execution_device=None) -> "WanTeacher":
        return cls(pipe.transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, pipe.image_encoder,
                   pipe.image_processor, pipe.config.expand_timesteps, pipe.transformer_2, pipe.config.boundary_ratio,
                   execution_device)

    def to_pipeline(self, transformer: WanTransformer3DModel | None = None) -> WanImageToVideoPipeline:
        """The stock pipeline over these components (optionally with a student transformer); what `sfv export` saves."""
        return WanImageToVideoPipeline(
            tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae, scheduler=self.scheduler,
            image_processor=self.image_processor, image_encoder=self.image_encoder,
            transformer=transformer if transformer is not None else self.transformer,
            transformer_2=self.transformer_2, boundary_ratio=self.boundary_ratio, expand_timesteps=self.expand_timesteps)

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.transformer, self.transformer_2, self.vae, self.text_encoder, self.image_encoder) if m is not None]

    def to(self, device=None, dtype: torch.dtype | None = None) -> "WanTeacher":
        for module in self.modules():  # dtype=None leaves diffusers' float32-kept modules alone
            module.to(device=device) if dtype is None else module.to(device=device, dtype=dtype)
        return self

    def requires_grad_(self, flag: bool) -> "WanTeacher":
        for module in self.modules():
            module.requires_grad_(flag)
        return self

    # -- facts ---------------------------------------------------------------------------------------
    @property
    def net(self) -> WanTransformer3DModel:
        """The network G is copied from (A14B: the high-noise expert)."""
        return self.transformer

    @property
    def device(self) -> torch.device:
        return self.execution_device if self.execution_device is not None else self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    @property
    def vae_scale_factor(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    @property
    def vae_temporal_factor(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: VAE factor × patch size (16 for 2.1, 32 for TI2V-5B)."""
        return self.vae_scale_factor * int(self.transformer.config.patch_size[1])

    @property
    def condition_dim(self) -> int:
        """Width of WanCondition.pooled(): text width + image-latent channels (+ 4 mask channels for 2.1)."""
        return int(self.text_encoder.config.d_model) + self.latent_channels + (0 if self.expand_timesteps else self.vae_temporal_factor)

    label_count = 0  # WanCondition.labels(): no scalar conditions

    @property
    def sigma_max(self) -> float:
        return float(self.scheduler.sigma_max)  # t = 1: pure noise, the one-step level

    @property
    def sigma_min(self) -> float:
        return float(self.scheduler.sigma_min)  # the shifted 1/1000

    def latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.vae_temporal_factor + 1

    def check_video_size(self, num_frames: int, height: int, width: int) -> None:
        """Bad sizes are one InputError (the stock pipeline rounds them with a warning instead)."""
        check_wan_size(num_frames, height, width, self.vae_temporal_factor, self.vae_scale_factor,
                       int(self.transformer.config.patch_size[1]))

    @staticmethod
    def check_folder(path, num_frames: int, height: int, width: int) -> None:
        """The folder and the training size, checked before any weights load (configs only)."""
        check_wan_dir(path)
        vae = json.loads(Path(path, "vae", "config.json").read_text())
        patch = json.loads(Path(path, "transformer", "config.json").read_text()).get("patch_size", [1, 2, 2])
        check_wan_size(num_frames, height, width, int(vae.get("scale_factor_temporal", 4)),
                       int(vae.get("scale_factor_spatial", 8)), int(patch[1]))

    @staticmethod
    def folder_generator_sigmas(path, t_g: int) -> list[float]:
        """G's levels as noise levels σ = t / (1 − t) (descending; t = 1 is σ = inf), from the scheduler config alone."""
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(path), subfolder="scheduler")
        scheduler.set_timesteps(t_g)
        return [t / (1 - t) if t < 1 else float("inf") for t in scheduler.sigmas[: t_g - 1].tolist()]

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """[B, F', C, h, w]: the VAE compresses time 4× (F' = (F − 1)/4 + 1) and space 8× (16× for TI2V-5B)."""
        f = self.vae_scale_factor
        return (batch_size, self.latent_frames(num_frames), self.latent_channels, height // f, width // f)

    # -- levels ---------------------------------------------------------------------------------------
    def sigmas(self, num_steps: int | None = None, custom: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(levels t with the final 0 appended, initial-noise scale 1.0), float32 on CPU.

        The scheduler's own grid (a fresh FlowMatchEulerDiscreteScheduler from the folder's config, so the
        shift is honoured as the stock pipeline honours it). `custom` levels are used as given (no shift)."""
        if custom is not None:
            levels = torch.tensor([float(v) for v in custom], dtype=torch.float32)
            if len(levels) < 2 or bool((levels[1:] >= levels[:-1]).any()) or levels[0] > 1 or levels[-1] < 0:
                raise InputError("custom levels must be at least two strictly decreasing flow times in [0, 1], ending in the final one (usually 0)")
            return levels, torch.tensor(1.0)
        if num_steps is None or num_steps < 1:
            raise InputError(f"num_inference_steps must be at least 1 (got {num_steps})")
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(num_steps)
        return scheduler.sigmas.clone(), torch.tensor(1.0)

    def generator_levels(self, t_g: int) -> torch.Tensor:
        """G's training levels: the top T_g − 1 levels of the scheduler's T_g-step grid (t = 1 first, the inference
        level). A14B: all must be handled by the high-noise expert (t ≥ boundary_ratio)."""
        if t_g < 2:
            raise InputError(f"T_g must be at least 2 (got {t_g})")
        levels = self.sigmas(t_g)[0][: t_g - 1]
        if self.boundary_ratio is not None and float(levels[-1]) * 1000 < self.boundary_ratio * 1000:
            shown = ", ".join(f"{float(v):.3f}" for v in levels)
            raise InputError(f"Wan 2.2 A14B: G distils the high-noise expert, which handles t ≥ {self.boundary_ratio}; "
                             f"T_g = {t_g} gives levels {shown}: lower T_g or raise the scheduler's shift")
        return levels

    def level_grid(self, count: int) -> torch.Tensor:
        """`count` flow times t_k = k/(count + 1), descending, ends excluded: the grid D's σ′ (a discretised
        log-normal in ln σ = logit t, i.e. SD3/LADD's logit-normal) and DMD's levels are drawn on."""
        return torch.arange(count, 0, -1, dtype=torch.float64).div(count + 1).float()

    # -- denoising ---------------------------------------------------------------------------------------
    def guidance(self, num_frames: int, max_scale: float, min_scale: float = 1.0) -> torch.Tensor | None:
        """Wan's CFG: one scale for every frame (min_scale is SVD's ramp and is ignored); None when ≤ 1."""
        if max_scale <= 1:
            return None
        return torch.tensor(float(max_scale), dtype=torch.float32, device=self.device)

    def _net_for(self, t, net=None) -> WanTransformer3DModel:
        if net is not None or self.transformer_2 is None:
            return net if net is not None else self.transformer
        t_net = self.precond.c_noise(t)
        high = t_net >= self.boundary_ratio * self.precond.timescale
        if bool(high.all()):
            return self.transformer
        if not bool(high.any()):
            return self.transformer_2
        raise InputError("a batch mixes levels on both sides of Wan 2.2's expert boundary; split it by level")

    def velocity(self, x: torch.Tensor, t, cond: WanCondition, guidance=None, net=None) -> torch.Tensor:
        return wan_velocity(self._net_for(t, net), x, t, cond, guidance, self.expand_timesteps, self.precond.timescale)

    def denoise(self, x: torch.Tensor, t, cond: WanCondition, guidance=None) -> torch.Tensor:
        """x0 = x_t − t·v with the teacher (A14B: the expert that owns t); frame 0 replaced for TI2V."""
        return self.denoise_with(self._net_for(t), x, t, cond, guidance)

    def denoise_with(self, net: torch.nn.Module, x: torch.Tensor, t, cond: WanCondition, guidance=None) -> torch.Tensor:
        """The same for another network of this layout (G, its EMA, DMD's fake score). Not a staticmethod: the
        layout flag (expand_timesteps) is the teacher's."""
        v = wan_velocity(net, x, t, cond, guidance, self.expand_timesteps, self.precond.timescale)
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        x0 = self.precond.combine(v, x.float(), t.reshape(-1, 1, 1, 1, 1) if t.ndim else t)  # one level per video
        return replace_first_frame(x0, cond) if self.expand_timesteps else x0

    def initial_latents(self, batch_size: int, num_frames: int, height: int, width: int, init_sigma=1.0,
                        generator=None, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Pure noise ε [B, F', C, h, w], drawn in Wan's layout [B, C, F', h, w] as the stock pipeline draws it."""
        _, f_lat, c, h, w = self.latent_shape(batch_size, num_frames, height, width)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise InputError(f"got {len(generator)} generators for {batch_size} videos; pass one per video")
        if latents is None:
            latents = randn_tensor((batch_size, c, f_lat, h, w), generator=generator, device=self.device,
                                   dtype=torch.float32).permute(0, 2, 1, 3, 4)
        elif tuple(latents.shape) != (batch_size, f_lat, c, h, w):
            raise InputError(f"latents have shape {tuple(latents.shape)}, expected {(batch_size, f_lat, c, h, w)}")
        return latents.to(self.device, torch.float32) * torch.as_tensor(init_sigma, dtype=torch.float32)

    @torch.no_grad()
    def sample(self, cond: WanCondition, num_frames: int, height: int, width: int, num_inference_steps: int = STOCK_STEPS,
               sigmas: Sequence[float] | None = None, min_guidance_scale: float = 1.0,
               max_guidance_scale: float = STOCK_GUIDANCE, generator=None, latents: torch.Tensor | None = None,
               net: torch.nn.Module | None = None, callback=None, progress=None, sampler: str = "euler",
               window: int | None = None, overlap: int | None = None) -> torch.Tensor:
        """Multi-step sampling; x0 latents [B, F', C, h, w]. sampler: "euler" (velocity form: the stock pipeline bit
        for bit) or "consistency" (a one-step student's few-step sampler). `net` runs another network of this layout
        under the same conditioning."""
        check_sampler(sampler)
        if window is not None or overlap is not None:
            raise InputError("long videos (window, overlap) are not implemented for Wan yet; sample the frames in one window")
        self.check_video_size(num_frames, height, width)
        ts, init = self.sigmas(num_inference_steps, custom=sigmas)
        guidance = self.guidance(num_frames, max_guidance_scale, min_guidance_scale)
        x = self.initial_latents(len(cond), num_frames, height, width, init, generator, latents)
        if sampler == "euler":
            x = flow_euler_sample(lambda x, t: self.velocity(x, t, cond, guidance, net), x, ts, callback, progress)
        else:
            def noise(like):
                return randn_tensor(like.shape, generator=generator, device=like.device, dtype=torch.float32)

            def denoise(x, t):
                return self.denoise_with(net, x, t, cond, guidance) if net is not None else self.denoise(x, t, cond, guidance)

            x = solve(denoise, x, ts, "consistency", noise, self.precond.add_noise, callback=callback, progress=progress)
        return replace_first_frame(x, cond) if self.expand_timesteps else x

    # -- D, FSDP, students --------------------------------------------------------------------------------
    def encoder(self, blocks: int = 2, reduce_to: int | None = 256) -> WanEncoder:
        """D's frozen backbone: the first `blocks` transformer blocks (A14B: of the low-noise expert, which owns most
        of D's σ′ draws), tokens back on the grid, 1×1-reduced above `reduce_to` channels."""
        net = self.transformer_2 if self.transformer_2 is not None else self.transformer
        return WanEncoder(net, blocks, self.expand_timesteps, self.precond, reduce_to)

    def sharding_units(self, net: torch.nn.Module | None = None) -> list[torch.nn.Module]:
        """The WanTransformerBlocks of `net` (default: the teacher's transformer), the units FSDP shards."""
        return list((net if net is not None else self.transformer).blocks)

    def load_student(self, source: Path, path=None) -> WanTransformer3DModel:
        """A student transformer (a diffusers folder or a .safetensors state dict) in this architecture (wan_net)."""
        return load_student(source, self.transformer, path)

    def student_from_state(self, state: dict, path) -> WanTransformer3DModel:
        return student_from_state(state, self.transformer, path)

    def export(self, net: WanTransformer3DModel, out, info: dict | None = None, t_g: int | None = None, video=None,
               fast_decoder=None) -> Path:
        """The student as a folder stock `WanImageToVideoPipeline.from_pretrained` runs in one step (wan_export)."""
        return export_folder(self, net, out, info, t_g, video, fast_decoder)

    def export_lora(self, values: dict, lora, out) -> Path:
        """A LoRA student's adapter in diffusers' and ComfyUI's Wan LoRA layouts (wan_export.export_lora)."""
        return export_lora(self, values, lora, out)

    # -- decoding --------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decode_chunk_size: int | None = None) -> torch.Tensor:
        """x0 latents [B, F', C, h, w] -> frames [B, 3, F, H, W] in [−1, 1] (F = 4(F' − 1) + 1), as the stock
        pipeline decodes (z / (1/std) + mean). The causal VAE decodes a clip at once: no frame chunks."""
        c = self.latent_channels
        z = latents.permute(0, 2, 1, 3, 4).to(device=self.vae.device, dtype=self.vae.dtype)
        mean = torch.tensor(self.vae.config.latents_mean).view(1, c, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, c, 1, 1, 1).to(z.device, z.dtype)
        return self.vae.decode(z / inv_std + mean, return_dict=False)[0].float()

    def postprocess(self, frames: torch.Tensor, output_type: str = "np"):
        check_output_type(output_type)
        return self.video_processor.postprocess_video(video=frames, output_type=output_type)

    def set_decoder(self, decoder, folder=None) -> "WanTeacher":
        if decoder not in ("vae", None):
            raise InputError(f"decoder '{decoder}': the Wan family decodes with its own VAE only (no fast decoder yet)")
        return self

    decoder_name = "vae"
