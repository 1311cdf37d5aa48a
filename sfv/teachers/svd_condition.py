"""SVD's conditioning: what its UNet is conditioned on (SVDCondition) and how SVDTeacher builds it from images
and training batches, exactly as diffusers' StableVideoDiffusionPipeline does (docs/method.md, "The teacher"):

  * CLIP image embedding of the image resized (antialiased) to the encoder's size, sequence length 1;
  * the *unscaled* VAE mode of the noise-augmented image, concatenated to every frame on dim 2 of [B, F, C, h, w];
  * added_time_ids = [fps − 1, motion_bucket_id, noise_aug_strength].
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

# The antialiased resize the stock pipeline applies before CLIP. It is module-private in diffusers; we use
# the very same function (rather than a look-alike) because CLIP-embedding parity depends on it. diffusers
# is pinned to the minor version the parity tests were run against (pyproject.toml).
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from diffusers.utils.torch_utils import randn_tensor

from sfv.errors import ModelLoadError
from sfv.images import as_pipeline_image

# ----------------------------------------------------------------------------------------------------
# What the UNet is conditioned on


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

    def _map(self, fn) -> "SVDCondition":
        return SVDCondition(*(fn(getattr(self, f.name)) for f in fields(self)))

    def to(self, *args, **kwargs) -> "SVDCondition":
        return self._map(lambda t: t.to(*args, **kwargs))

    def repeat(self, n: int) -> "SVDCondition":
        """The batch n times over, [n·B, ...] (e.g. real ‖ fake in one D pass)."""
        return self._map(lambda t: t.repeat(n, *[1] * (t.ndim - 1)))

    @staticmethod
    def cat(conds: Sequence["SVDCondition"]) -> "SVDCondition":
        """Batches one after the other (e.g. negative ‖ positive in one CFG pass)."""
        return SVDCondition(*(torch.cat([getattr(c, f.name) for c in conds]) for f in fields(SVDCondition)))

    def pooled(self) -> torch.Tensor:
        """One vector per video for D's projection heads: the CLIP image embedding, [B, D]."""
        return self.image_embeds[:, 0]

    def labels(self) -> torch.Tensor:
        """The scalar conditions, [B, 3]: fps − 1, motion_bucket_id, noise_aug_strength (the added time ids)."""
        return self.added_time_ids.float()

    def cache_tensors(self) -> dict[str, torch.Tensor]:
        """What a latent cache stores per clip (float32, CPU); the time ids come from the clip's labels."""
        return {"image_latents": self.image_latents.float().cpu(), "image_embeds": self.image_embeds.float().cpu()}


# ----------------------------------------------------------------------------------------------------
# Building it: a mixin of SVDTeacher (uses its unet, vae, image_encoder, feature_extractor, video_processor, device)


class SVDConditioning:
    """SVDTeacher's conditioning methods: images -> SVDCondition, training batches -> (x0, SVDCondition)."""

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
        embeds, latents = self._encode_first_frame(image, height, width, noise_aug_strength, num_videos_per_prompt, generator)
        # NOTE: SVD was micro-conditioned on fps − 1 (as in Stability's and diffusers' samplers).
        time_ids = torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=embeds.dtype)
        expected = self.unet.add_embedding.linear_1.in_features
        if self.unet.config.addition_time_embed_dim * 3 != expected:
            raise ModelLoadError(f"UNet expects an added time embedding of {expected}, not 3 × addition_time_embed_dim")
        time_ids = time_ids.repeat(len(embeds), 1).to(self.device)
        return SVDCondition(embeds, latents, time_ids)

    @torch.no_grad()
    def condition_on_frame(self, cond: SVDCondition, frame: torch.Tensor, generator=None) -> SVDCondition:
        """The condition for continuing a clip from a generated frame (image-to-video chaining): its x0 latents
        [B, C, h, w] are decoded and encoded as a conditioning image is (CLIP embedding; VAE mode of the image
        noise-augmented at the strength in the time ids, drawn from `generator`); the time ids are kept."""
        pixels = self.decode(frame.unsqueeze(1))[:, :, 0]  # [B, 3, H, W] in [-1, 1]
        image = ((pixels + 1) / 2).clamp(0, 1)
        strength = cond.added_time_ids[:, 2].float().reshape(-1, 1, 1, 1).to(self.device)  # per video
        embeds, latents = self._encode_first_frame(image, image.shape[-2], image.shape[-1], strength, 1, generator)
        return SVDCondition(embeds, latents, cond.added_time_ids)

    def _encode_first_frame(self, image, height, width, noise_aug_strength, num_videos_per_prompt, generator):
        """(CLIP embedding [B, 1, D], unscaled VAE mode of the noise-augmented image [B, C, h, w])."""
        image = as_pipeline_image(image)
        device = self.device
        embeds = self.encode_image(image)  # [B, 1, D]
        embeds = embeds.repeat_interleave(num_videos_per_prompt, dim=0)

        pixels = self.video_processor.preprocess(image, height=height, width=width).to(device)  # [B, 3, H, W] in [-1, 1]
        noise = randn_tensor(pixels.shape, generator=generator, device=device, dtype=pixels.dtype)
        pixels = pixels + noise_aug_strength * noise
        latents = self._vae_encode(pixels).latent_dist.mode()  # unscaled: no scaling_factor
        return embeds, latents.repeat_interleave(num_videos_per_prompt, dim=0).to(embeds.dtype)

    @torch.no_grad()
    def encode_batch(
        self, batch: dict, height: int, width: int, noise_aug_strength: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, SVDCondition]:
        """A training batch -> (x0 latents [B, F, C, h, w], condition on frame 0).

        batch: video clips (`frames` [B, F, 3, H, W] in [0, 1]) or latent-cache rows (`latents` and the
        `cache_tensors` of the condition), each with its labels `fps` and `motion_bucket_id` [B] (time ids).
        The noise augmentation of frame 0 is drawn from `generator`.
        """
        if "latents" in batch:  # a latent cache (sfv cache): encoded once, ahead of training
            x0 = batch["latents"].to(self.device)
            embeds, latents = batch["image_embeds"].to(self.device), batch["image_latents"].to(self.device)
        else:
            frames = batch["frames"]  # [B, F, 3, H, W] in [0, 1]
            embeds, latents = self._encode_first_frame(frames[:, 0], height, width, noise_aug_strength, 1, generator)
            x0 = self.encode_video(frames)
        time_ids = self.time_ids(batch["fps"], batch["motion_bucket_id"], noise_aug_strength, len(x0))
        return x0, SVDCondition(embeds, latents, time_ids)

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


def _clip_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    # As the stock pipeline: normalise to [-1, 1], antialiased bicubic resize, back to [0, 1].
    return (_resize_with_antialiasing(image * 2.0 - 1.0, (size, size)) + 1.0) / 2.0
