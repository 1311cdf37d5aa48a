"""SFVPipeline: a drop-in replacement for diffusers' StableVideoDiffusionPipeline that runs the one-step student.

    from sfv import SFVPipeline                       # was: from diffusers import StableVideoDiffusionPipeline
    pipe = SFVPipeline.from_pretrained("exported-sfv")  # was: StableVideoDiffusionPipeline.from_pretrained(...)
    frames = pipe(image, decode_chunk_size=8).frames[0]

Same call signature and output type. An export (a folder with sfv.json) is a student: the defaults are SF-V's
inference, one UNet pass at σ_max from pure noise, no classifier-free guidance (UNet batch = number of videos, no
unconditional branch). Any other SVD folder is a teacher: it samples as the stock pipeline does, on its own Euler
schedule with its CFG ramp (SVD: 25 steps, 1 → 3), through Teacher.sample.

Beyond the stock signature:
  * a student's num_inference_steps = 2 .. T_g − 1 samples on its own training levels (sfv.json's σ levels),
    re-noising x̂0 to the next level between steps (sfv.sampling.consistency_sample); 1 is the stock Euler step,
    `sigmas=` Euler on any schedule;
  * long_video = "chain" | "multidiffusion" with window, overlap: num_frames longer than the model's window
    (sfv.sampling.sample_long_video).

`export_pipeline` writes the student as a plain diffusers folder: the student UNet in SVD layout plus the
teacher's VAE, image encoder, feature extractor and scheduler, sfv.json (T_g, G's σ levels) and video.json (the
size it was trained at). The stock pipeline then reproduces SFVPipeline's frames with
`num_inference_steps=1, max_guidance_scale=1.0` (tests/test_pipeline.py).
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from diffusers import AutoencoderKLTemporalDecoder, DiffusionPipeline, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import StableVideoDiffusionPipelineOutput

from sfv.config import ModelConfig
from sfv.decoders import build_decoder, resolve_decoder
from sfv.errors import InputError, ModelLoadError, SFVError, first_line
from sfv.images import check_output_type
from sfv.model_dir import EXPORT_INFO, check_video_size, export_info, shipped_decoders
from sfv.noise import generator_sigma_levels, student_schedule
from sfv.sampling import long_video_windows, sample_long_video, window_starts
from sfv.teachers.svd import SVDTeacher
from sfv.teachers.svd_export import FAST_DECODER, export_pipeline  # noqa: F401  (public here)

__all__ = ["SFVPipeline", "EXPORT_INFO", "export_info", "shipped_decoders", "export_pipeline", "load_pipeline"]


class SFVPipeline(DiffusionPipeline):
    """Image-to-video with an SF-V student, or with a teacher on its stock schedule (components exactly as
    StableVideoDiffusionPipeline's)."""

    model_cpu_offload_seq = "image_encoder->unet->vae"
    _callback_tensor_inputs = ["latents"]
    decoder = "vae"  # the decoding slot (sfv.decoders): a name built on this pipeline's VAE, or a built decoder (set_decoder)
    t_g = ModelConfig.t_g  # T_g of an export whose sfv.json predates recording it
    sigma_levels: tuple[float, ...] | None = None  # a student's training levels (sfv.json); None: a teacher

    def __init__(self, vae: AutoencoderKLTemporalDecoder, image_encoder, unet: UNetSpatioTemporalConditionModel,
                 scheduler: EulerDiscreteScheduler, feature_extractor):
        super().__init__()
        self.register_modules(vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, decoder: str = "vae", **kwargs) -> "SFVPipeline":
        """DiffusionPipeline.from_pretrained; an export's sfv.json makes it a student on its training levels, a folder
        without one is a teacher.

        decoder: "vae" (the stock temporal VAE decoder: frames as the stock pipeline's), "tiny" (the fast decoder the
        export carries, sfv.json "decoders": fast_decoder/, `sfv export --decoder`), or a fast decoder folder."""
        name, folder = resolve_decoder(decoder, pretrained_model_name_or_path)
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        sampling = export_info(pretrained_model_name_or_path).get("sampling")
        if sampling is not None:
            levels = sampling.get("sigma_levels")
            pipe.as_student(levels if levels else int(sampling.get("t_g", cls.t_g)))
        if name != "vae":
            pipe.set_decoder(name, folder)
        return pipe

    def as_student(self, levels: int | list[float]) -> "SFVPipeline":
        """Sample as a one-step student trained on `levels` (G's σ levels, descending), or on the top T_g − 1 levels
        of a T_g-level Karras grid over the scheduler's σ range when an int T_g is given."""
        if isinstance(levels, int):
            self.t_g = levels
            config = self.scheduler.config
            levels = generator_sigma_levels(levels, float(config.sigma_min), float(config.sigma_max)).tolist()
        else:
            self.t_g = len(levels) + 1
        self.sigma_levels = tuple(float(v) for v in levels)
        return self

    @property
    def is_student(self) -> bool:
        return self.sigma_levels is not None

    def sampling_defaults(self) -> tuple[int, float]:
        """(steps, max guidance) when the call names none: a student's one step without CFG, a teacher's stock ones."""
        return sampling_defaults(self.is_student)

    def set_decoder(self, name: str, folder: str | os.PathLike | None = None) -> "SFVPipeline":
        """Decode with `name` from sfv.decoders.DECODERS ("vae", or "tiny" read from `folder`), built once here."""
        self.decoder = name if name == "vae" else build_decoder(name, self.vae, folder)
        return self

    def set_fast_paths(self, attention: str = "sdpa", channels_last: bool = False, compile: bool = False) -> "SFVPipeline":
        """Switch the speed paths that do not change the call (dtype: `.to(dtype=...)`; chunking:
        `decode_chunk_size=`). `sfv bench --fast-paths` measures what each buys. See `set_fast_paths`."""
        set_fast_paths(self.unet, self.vae, self.image_encoder, attention, channels_last, compile)
        return self

    # Read by stock-style step callbacks (`pipe.guidance_scale`, ...), as on StableVideoDiffusionPipeline.
    @property
    def guidance_scale(self):
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        if isinstance(self._guidance_scale, (int, float)):
            return self._guidance_scale > 1
        return bool(self._guidance_scale.max() > 1)

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @torch.no_grad()
    def __call__(
        self,
        image,
        height: int = 576,
        width: int = 1024,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        sigmas: list[float] | None = None,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float | None = None,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        decode_chunk_size: int | None = None,
        num_videos_per_prompt: int | None = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str | None = "pil",
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        return_dict: bool = True,
        long_video: str | None = None,
        window: int | None = None,
        overlap: int | None = None,
    ):
        """Generate videos from conditioning image(s); arguments as StableVideoDiffusionPipeline.__call__, plus:

        num_inference_steps, max_guidance_scale: None for the model's own (a student: 1 step, no CFG; a teacher: its
            stock schedule, SVD 25 steps with CFG 1 → 3). A student samples 1 (SF-V) up to T_g − 1 steps on its own σ
            levels (sfv.noise.student_schedule), x̂0 re-noised to the next level between steps; a teacher any number
            of Euler steps. `sigmas=` runs Euler on the given levels instead.
        long_video: None, "chain" or "multidiffusion": num_frames in windows of `window` frames (default: the
            model's) overlapping by `overlap` (default: 1 for chain, window // 2 for multidiffusion).

        Returns StableVideoDiffusionPipelineOutput(frames=...) (or the frames alone with return_dict=False):
        'pil' lists of frames, 'np' [B, F, H, W, 3], 'pt' [B, F, 3, H, W] in [0, 1], or 'latent'.
        """
        svd = SVDTeacher.from_pipeline(self, execution_device=self._execution_device, decoder=self.decoder)
        num_frames = num_frames if num_frames is not None else self.unet.config.num_frames
        check_video_size(height, width, num_frames, svd.vae_scale_factor)
        check_output_type(output_type)
        steps, guidance = self.sampling_defaults()
        num_inference_steps = steps if num_inference_steps is None else num_inference_steps
        max_guidance_scale = guidance if max_guidance_scale is None else max_guidance_scale
        sampler = "euler"
        if self.is_student and sigmas is None and num_inference_steps != 1:  # 1 step stays the stock Euler step
            levels = torch.tensor(self.sigma_levels, dtype=torch.float32)
            sigmas, sampler = student_schedule(levels, num_inference_steps).tolist(), "consistency"
        if long_video is not None:
            window, overlap = long_video_windows(long_video, num_frames, window, overlap, self.unet.config.num_frames)
        elif window is not None or overlap is not None:
            raise InputError("window and overlap go with long_video='chain' or 'multidiffusion'")
        self._guidance_scale = max_guidance_scale
        cond = svd.encode_condition(
            image, height, width, fps, motion_bucket_id, noise_aug_strength, num_videos_per_prompt or 1, generator
        )
        # as the stock pipeline, step callbacks see the per-frame CFG ramp, [B, F, 1, 1, 1] in the UNet's dtype
        ramp = torch.linspace(min_guidance_scale, max_guidance_scale, window or num_frames).unsqueeze(0)
        self._guidance_scale = ramp.to(svd.device, self.unet.dtype).repeat(len(cond), 1)[..., None, None, None]

        def on_step(i: int, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            if callback_on_step_end is None:
                return x
            kwargs = {k: x for k in callback_on_step_end_tensor_inputs if k == "latents"}
            return callback_on_step_end(self, i, svd.precond.c_noise(sigma), kwargs).pop("latents", x)  # t = c_noise(σ)

        self._num_timesteps = len(sigmas) - 1 if sigmas is not None else num_inference_steps
        sample_kwargs = dict(num_inference_steps=num_inference_steps, sigmas=sigmas, min_guidance_scale=min_guidance_scale,
                             max_guidance_scale=max_guidance_scale, sampler=sampler, callback=on_step)
        windows = 1 if long_video != "chain" else len(window_starts(num_frames, window, overlap))
        with self.progress_bar(total=self._num_timesteps * windows) as bar:
            if long_video is None:
                latents = svd.sample(cond, num_frames, height, width, generator=generator, latents=latents,
                                     progress=bar.update, **sample_kwargs)
            else:
                latents = sample_long_video(svd, cond, num_frames, height, width, long_video, window, overlap,
                                            generator, latents, progress=bar.update, **sample_kwargs)
        if output_type == "latent":
            frames = latents.to(self.unet.dtype)  # as the stock pipeline: latents in the model's dtype
        else:
            frames = svd.postprocess(svd.decode(latents, decode_chunk_size), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return frames
        return StableVideoDiffusionPipelineOutput(frames=frames)


def sampling_defaults(student: bool) -> tuple[int, float]:
    """(steps, max guidance scale) a model samples with unless told otherwise: a student 1 step without CFG (SF-V),
    a teacher its stock schedule (SVD: 25 steps, CFG ramp 1 → 3)."""
    return (1, 1.0) if student else (SVDTeacher.default_steps, SVDTeacher.default_guidance)


def sampling_line(student: bool, steps: int, max_guidance: float, min_guidance: float = 1.0) -> str:
    """How a model samples, in a few words: "student, 1 step" or "teacher, 25 steps, CFG 1→3"."""
    cfg = f", CFG {min_guidance:g}→{max_guidance:g}" if max_guidance > 1 else ""
    return f"{'student' if student else 'teacher'}, {steps} step{'s' if steps != 1 else ''}{cfg}"


def load_pipeline(model: str | os.PathLike, device: torch.device, dtype: torch.dtype = torch.float32,
                  decoder: str = "vae") -> SFVPipeline:
    """SFVPipeline.from_pretrained(model, decoder=) on `device` (safetensors only; decoder: vae | tiny | a fast decoder
    folder); a folder that does not load is one ModelLoadError line. Check the folder first with
    sfv.model_dir.check_model_dir (it names every missing file)."""
    try:
        return SFVPipeline.from_pretrained(model, decoder=decoder, dtype=dtype, use_safetensors=True).to(device)
    except SFVError:
        raise  # already one clear line (no such fast decoder, a damaged one)
    except Exception as e:  # corrupt weights, mismatched configs: a user problem, reported in one line
        raise ModelLoadError(f"could not load '{model}': {first_line(e)}") from None


def generate_frames(pipe: SFVPipeline, image, out_of_memory_hint: str, **kwargs):
    """One video, np [F, H, W, 3] in [0, 1]: pipe(image, output_type="np", **kwargs), finished on the device (so a
    timer around it measures the work). Running out of memory is one InputError that ends with the caller's hint."""
    try:
        frames = pipe(image, output_type="np", **kwargs).frames[0]
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
    except (torch.OutOfMemoryError, MemoryError):
        raise InputError(f"out of memory generating {kwargs.get('num_frames')} frames at {kwargs.get('height')}×"
                         f"{kwargs.get('width')} on {pipe.device}: {out_of_memory_hint}") from None
    return frames


ATTENTION = ("sdpa", "classic")


def set_fast_paths(unet, vae, image_encoder, attention: str = "sdpa", channels_last: bool = False, compile: bool = False) -> None:
    """Speed switches for SVD-layout modules; each can be turned on and off again.

    attention: "sdpa" = torch's scaled_dot_product_attention (diffusers' AttnProcessor2_0, transformers'
        "sdpa"; the default) or "classic" = explicit softmax(QKᵀ)V (AttnProcessor, "eager").
    channels_last: NHWC memory layout for the 2-D convolutions (the 3-D temporal convs keep theirs).
    compile: torch.compile of the UNet's forward (first calls compile; the module, its hooks and its
        state dict stay as they are). Off again restores the eager forward.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if attention not in ATTENTION:
        raise InputError(f"attention must be one of {', '.join(ATTENTION)}, not {attention!r}")
    for module in (unet, vae):
        module.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())
    clip_attention = "sdpa" if attention == "sdpa" else "eager"
    if hasattr(image_encoder, "set_attn_implementation"):  # transformers >= 4.48
        image_encoder.set_attn_implementation(clip_attention)
    else:
        image_encoder.config._attn_implementation = clip_attention
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for module in (unet, vae, image_encoder):
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.to(memory_format=layout)
    if compile and "forward" not in vars(unet):
        unet.forward = torch.compile(unet.forward)  # instance attribute: hooks and .config untouched
    elif not compile and "forward" in vars(unet):
        del unet.forward
