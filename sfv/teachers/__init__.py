"""Teachers: one file per model family behind one small protocol. The only place that knows a model's quirks.

The trainer, D, the pipeline, the bench and the latent cache talk to a teacher through `Teacher` and its
`Condition`; what a family hides behind it (SVD: v-prediction, ¼·ln σ timesteps, image latents concatenated
on channels, added time ids, CFG) stays in its file. Adding a family = one new file here implementing
`Teacher` + one entry in FAMILIES (docs/architecture.md).

    encode_batch(batch, ...)            -> (x0 [B, F, C, h, w], cond)     a data batch, encoded frozen
    precond                             -> sfv.noise.Precond: add_noise(x0, level, ε), c_in/c_noise/combine,
                                           loss_weight, log_sigma (the common ln σ), level_of_sigma
    denoise(x, level, cond[, guidance]) -> x0                              at the family's level (SVD: σ; flow: t)
    denoise_with(net, x, level, cond)   -> x0                              the same for another network (G)
    guidance(frames, scale)             -> the `guidance` argument of denoise for CFG at `scale` (None: no CFG)
    sample(cond, ..., net=None)         -> x0 latents                      the family's denoiser run by sfv.sampling.solve
    encoder()                           -> module: (x, σ′, cond) -> [features per block]   D's backbone
    decode(latents, chunk)              -> frames [B, 3, F, H, W] in [-1, 1]                the decoder slot
    condition_on_frame(cond, x0 frame)  -> cond for a clip continued from a generated frame   I2V chaining
    sigmas(steps)                       -> (levels ending in the final one, initial-noise scale)
    generator_levels(t_g) / level_grid(n) -> G's training levels (inference level first) / n levels over the range
    latent_shape(B, F, H, W)            -> the latents' shape
    net                                 -> the denoising network G is copied from
    sharding_units(net)                 -> the blocks FSDP shards
    load_student(source) / student_from_state(state, path) -> a student network in the teacher's architecture
    export(net, out, info, t_g, video)  -> the student as the family's folder
"""

from __future__ import annotations

import json
import os
from importlib import import_module
from pathlib import Path
from typing import Protocol, Sequence

import torch

from sfv.errors import ModelLoadError
from sfv.noise import Precond


class Condition(Protocol):
    """What a teacher's network is conditioned on, for B videos (the conditional branch)."""

    def __len__(self) -> int: ...

    def to(self, *args, **kwargs) -> "Condition": ...

    def repeat(self, n: int) -> "Condition": ...  # [n·B]: the batch n times over

    def negative(self) -> "Condition": ...  # CFG's unconditional branch

    def pooled(self) -> torch.Tensor: ...  # [B, E] one vector per video (D's projection heads)

    def labels(self) -> torch.Tensor: ...  # [B, L] the scalar conditions (SVD: fps − 1, motion bucket, noise aug.; Wan: none)

    def cache_tensors(self) -> dict[str, torch.Tensor]: ...  # per-clip tensors a latent cache stores


class Teacher(Protocol):
    precond: Precond  # the forward process and c_skip, c_out, c_in, c_noise (sfv.noise)
    device: torch.device
    dtype: torch.dtype
    latent_channels: int
    vae_scale_factor: int
    default_num_frames: int
    condition_dim: int  # width of Condition.pooled()
    label_count: int  # width of Condition.labels()
    default_steps: int  # how the family samples unless told otherwise (SVD: 25 Euler steps, CFG ramp 1 → 3)
    default_guidance: float
    net: torch.nn.Module  # the denoising network G is copied from

    def modules(self) -> list[torch.nn.Module]: ...

    def encode_batch(self, batch: dict, height: int, width: int, noise_aug_strength: float,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, Condition]: ...

    def denoise(self, x: torch.Tensor, sigma, cond: Condition, guidance: torch.Tensor | None = None) -> torch.Tensor: ...

    def guidance(self, num_frames: int, max_scale: float, min_scale: float = 1.0) -> torch.Tensor | None: ...

    @staticmethod
    def denoise_with(net: torch.nn.Module, x: torch.Tensor, sigma, cond: Condition,
                     guidance: torch.Tensor | None = None) -> torch.Tensor: ...

    def sample(self, cond: Condition, num_frames: int, height: int, width: int, num_inference_steps: int = 25,
               sigmas: Sequence[float] | None = None, min_guidance_scale: float = 1.0, max_guidance_scale: float = 3.0,
               generator=None, latents: torch.Tensor | None = None, net: torch.nn.Module | None = None,
               callback=None, progress=None, sampler: str = "euler", window: int | None = None,
               overlap: int | None = None) -> torch.Tensor: ...

    def initial_latents(self, batch_size: int, num_frames: int, height: int, width: int, init_sigma: torch.Tensor,
                        generator=None, latents: torch.Tensor | None = None) -> torch.Tensor: ...  # σ_0·ε

    def condition_on_frame(self, cond: Condition, frame: torch.Tensor, generator=None) -> Condition: ...  # chaining

    def encoder(self) -> torch.nn.Module: ...

    def decode(self, latents: torch.Tensor, decode_chunk_size: int | None = None) -> torch.Tensor: ...

    def load_student(self, source: Path, path=None) -> torch.nn.Module: ...  # student weights in this architecture

    def student_from_state(self, state: dict, path) -> torch.nn.Module: ...  # the same from a state dict

    def set_decoder(self, decoder, folder=None) -> "Teacher": ...  # the decoding slot, by name (sfv.decoders) or built

    def postprocess(self, frames: torch.Tensor, output_type: str = "np"): ...

    def sigmas(self, num_steps: int | None = None, custom: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def sharding_units(self, net: torch.nn.Module | None = None) -> list[torch.nn.Module]: ...

    def generator_levels(self, t_g: int) -> torch.Tensor: ...  # G's levels, descending, the inference level first

    def level_grid(self, n: int) -> torch.Tensor: ...  # n levels over the family's range, descending

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]: ...

    def export(self, net: torch.nn.Module, out, **kwargs): ...  # the student as the family's folder


# model_index.json's pipeline class -> "module:class" of the family that loads it
FAMILIES = {"StableVideoDiffusionPipeline": "sfv.teachers.svd:SVDTeacher",
            "WanImageToVideoPipeline": "sfv.teachers.wan:WanTeacher"}
# and -> "module:function" that loads the family's pipeline over a folder (sfv.load_pipeline); kept apart from the
# teacher classes because the pipelines import them
PIPELINES = {"StableVideoDiffusionPipeline": "sfv.pipeline:load_pipeline",
             "WanImageToVideoPipeline": "sfv.teachers.wan_pipeline:load_wan_pipeline"}
SVD = "StableVideoDiffusionPipeline"
DEFAULT_FAMILY = SVD  # for hub ids, whose model_index.json is not on disk


def family_of(path_or_id: str | os.PathLike) -> str:
    """The pipeline class a local diffusers folder names in model_index.json (hub ids: DEFAULT_FAMILY)."""
    index = Path(path_or_id) / "model_index.json"
    if not index.is_file():
        return DEFAULT_FAMILY  # a hub id, or a folder the family's own checks will report as incomplete
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ModelLoadError(f"cannot parse '{index}': {e}") from None
    if name not in FAMILIES:
        raise ModelLoadError(f"'{path_or_id}' is a {name} folder; sfv has teachers for {', '.join(FAMILIES)}")
    return name


def family_class(path_or_id: str | os.PathLike):
    """The teacher class of a folder's family (imported on demand)."""
    module, cls = FAMILIES[family_of(path_or_id)].split(":")
    return getattr(import_module(module), cls)


def check_teacher_folder(path: str | os.PathLike, num_frames: int, height: int, width: int) -> None:
    """A local teacher folder and the size it will be trained at, checked by its family before any weights load."""
    family_class(path).check_folder(path, num_frames, height, width)


def load_teacher(path_or_id: str | os.PathLike, torch_dtype: torch.dtype | None = None,
                 device: str | torch.device | None = None) -> Teacher:
    """Load a teacher, picking its family from the folder (model_index.json's pipeline class)."""
    return family_class(path_or_id).from_pretrained(path_or_id, torch_dtype=torch_dtype, device=device)


def load_pipeline(folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  decoder: str = "vae"):
    """The family's pipeline over a local folder (sfv.load_pipeline): a teacher folder (no sfv.json) samples as the
    teacher on its stock schedule, an `sfv export` folder as its student (1 step, no CFG, unless told otherwise).
    SVD: sfv.SFVPipeline; Wan: sfv.teachers.wan_pipeline.WanSFVPipeline."""
    module, name = PIPELINES[family_of(folder)].split(":")
    load = getattr(import_module(module), name)
    return load(folder, torch.device(device), dtype or torch.float32, decoder=decoder)
