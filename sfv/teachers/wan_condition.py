"""Wan's conditioning for B videos: the caption's UMT5 states, the negative prompt's, the image latents of frame 0
and (Wan 2.1 I2V) CLIP's image tokens. Wan's CFG changes the text only."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

TEXT_LENGTH = 512  # diffusers' WanAttnProcessor hard-codes it: image tokens = encoder_hidden_states.shape[1] − 512


@dataclass
class WanCondition:
    """What Wan's transformer is conditioned on, for B videos (both CFG branches: Wan's CFG changes the text only)."""

    prompt_embeds: torch.Tensor  # [B, 512, D_text]  UMT5 states of the caption, zero after its tokens
    negative_prompt_embeds: torch.Tensor  # [B, 512, D_text]  CFG's unconditional text (default: the empty prompt)
    image_latents: torch.Tensor  # 2.1: [B, F, 4 + C, h, w] mask ‖ normalised VAE latent of [image, 0, …]; 2.2: [B, 1, C, h, w]
    image_embeds: torch.Tensor | None = None  # 2.1: [B, N_img, D_clip] CLIP penultimate states; 2.2: None

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    def _map(self, fn) -> "WanCondition":
        return WanCondition(*(None if getattr(self, f.name) is None else fn(getattr(self, f.name)) for f in fields(self)))

    def to(self, *args, **kwargs) -> "WanCondition":
        return self._map(lambda t: t.to(*args, **kwargs))

    def repeat(self, n: int) -> "WanCondition":
        return self._map(lambda t: t.repeat(n, *[1] * (t.ndim - 1)))

    @staticmethod
    def cat(conds: Sequence["WanCondition"]) -> "WanCondition":
        out = {}
        for f in fields(WanCondition):
            parts = [getattr(c, f.name) for c in conds]
            out[f.name] = None if parts[0] is None else torch.cat(parts)
        return WanCondition(**out)

    def negative(self) -> "WanCondition":
        """CFG's unconditional branch: the negative text, the same image conditioning (as the stock pipeline)."""
        return replace(self, prompt_embeds=self.negative_prompt_embeds)

    def pooled(self) -> torch.Tensor:
        """[B, D_text + C_img] for D's projection heads: the mean of the caption's token states ‖ the spatial mean of
        frame 0 of the image latents (all their channels: 2.1's include the 4 mask channels, constant 1 there).
        CLIP is left out: TI2V has none."""
        text = self.prompt_embeds.float()
        tokens = (text.abs().sum(-1) > 0).float()  # the stock pipeline zeroes the padding positions
        text = (text * tokens[..., None]).sum(1) / tokens.sum(1, keepdim=True).clamp_min(1)
        return torch.cat([text, self.image_latents[:, 0].float().mean((-2, -1))], dim=1)

    def labels(self) -> torch.Tensor:
        """Wan has no scalar conditions (no fps or motion bucket): [B, 0]."""
        return self.prompt_embeds.new_zeros(len(self), 0, dtype=torch.float32)

    def cache_tensors(self) -> dict[str, torch.Tensor]:
        out = {f.name: getattr(self, f.name).float().cpu() for f in fields(self) if getattr(self, f.name) is not None}
        out.pop("negative_prompt_embeds")  # one per teacher (the empty prompt), not per clip
        return out


class WanConditioning:
    """Encoding images, captions and clips into WanCondition and latents, as WanImageToVideoPipeline does (the
    teacher's half that knows UMT5, CLIP and the VAE's normalisation). Mixed into WanTeacher."""

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """UMT5 states [B, 512, D] exactly as the stock pipeline (ftfy-cleaned, padded to 512, zero after the tokens)."""
        from diffusers.pipelines.wan.pipeline_wan_i2v import prompt_clean  # needs ftfy

        prompts = [prompt_clean(p) for p in prompts]
        inputs = self.tokenizer(prompts, padding="max_length", max_length=TEXT_LENGTH, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = inputs.input_ids, inputs.attention_mask
        lengths = mask.gt(0).sum(dim=1).long()
        device = self.text_encoder.device
        states = self.text_encoder(ids.to(device), mask.to(device)).last_hidden_state
        states = states.to(dtype=self.text_encoder.dtype, device=self.device)
        states = [u[:n] for u, n in zip(states, lengths)]
        return torch.stack([torch.cat([u, u.new_zeros(TEXT_LENGTH - u.size(0), u.size(1))]) for u in states])

    def empty_prompt(self, batch: int) -> torch.Tensor:
        """The empty prompt's states, encoded once: the default caption and the default negative prompt."""
        if self._empty_prompt is None:
            self._empty_prompt = self.encode_prompt([""])
        return self._empty_prompt.repeat(batch, 1, 1)

    @torch.no_grad()
    def encode_clip(self, image) -> torch.Tensor | None:
        """CLIP penultimate hidden states [B, N, D] (2.1 only; None for 2.2), as the stock pipeline."""
        if self.transformer.config.image_dim is None:
            return None
        pixels = self.image_processor(images=image, return_tensors="pt").to(self.image_encoder.device)
        return self.image_encoder(**pixels, output_hidden_states=True).hidden_states[-2].to(self.device)

    def _normalise(self, z: torch.Tensor) -> torch.Tensor:
        """(z − mean)·(1/std), the stock pipeline's arithmetic, z [B, C, F, h, w]."""
        c = self.latent_channels
        mean = torch.tensor(self.vae.config.latents_mean).view(1, c, 1, 1, 1).to(z.device, z.dtype)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, c, 1, 1, 1).to(z.device, z.dtype)
        return (z - mean) * inv_std

    @torch.no_grad()
    def encode_image_latents(self, pixels: torch.Tensor, num_frames: int) -> torch.Tensor:
        """pixels [B, 3, H, W] in [−1, 1] -> the image latents of the condition (sfv layout, float32):
        2.1 [B, F, 4 + C, h, w] (mask ‖ latent of [image, 0, …, 0]); 2.2 [B, 1, C, h, w]."""
        image = pixels.to(self.device, torch.float32).unsqueeze(2)  # [B, 3, 1, H, W]
        if self.expand_timesteps:
            video = image
        else:
            video = torch.cat([image, image.new_zeros(image.shape[0], 3, num_frames - 1, *image.shape[-2:])], dim=2)
        z = self.vae.encode(video.to(dtype=self.vae.dtype)).latent_dist.mode()
        z = self._normalise(z.to(self.device, torch.float32))
        if not self.expand_timesteps:
            mask = torch.zeros(z.shape[0], self.vae_temporal_factor, z.shape[2], *z.shape[-2:], device=z.device)
            mask[:, :, 0] = 1  # the stock pipeline's mask_lat_size: the 4 pixel frames of latent frame 0 are given
            z = torch.cat([mask, z], dim=1)
        return z.permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def encode_condition(self, image, prompt: str | Sequence[str] = "", negative_prompt: str | Sequence[str] = "",
                         height: int = 480, width: int = 832, num_frames: int = 81) -> WanCondition:
        """What the stock pipeline feeds the transformer for `image` (PIL or [B, 3, H, W] in [0, 1]) and the prompts."""
        self.check_video_size(num_frames, height, width)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        pixels = self.video_processor.preprocess(image, height=height, width=width).to(self.device, torch.float32)
        latents = self.encode_image_latents(pixels, num_frames)
        embeds = self.encode_clip(image)
        if len(latents) == 1 and len(prompts) > 1:  # one image for several prompts, as the stock pipeline repeats it
            latents = latents.repeat(len(prompts), 1, 1, 1, 1)
            embeds = embeds.repeat(len(prompts), 1, 1) if embeds is not None else None
        dtype = self.transformer.dtype
        return WanCondition(self.encode_prompt(prompts).to(dtype), self.encode_prompt(negatives).to(dtype), latents,
                            embeds.to(dtype) if embeds is not None else None)

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Training clips [B, F, 3, H, W] in [0, 1] (F = 4k+1) -> x0 latents [B, F', C, h, w] (normalised VAE mode)."""
        pixels = frames.to(self.device, torch.float32).permute(0, 2, 1, 3, 4) * 2 - 1
        z = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode()
        return self._normalise(z.to(torch.float32)).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def encode_batch(self, batch: dict, height: int, width: int, noise_aug_strength: float | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, WanCondition]:
        """A training batch -> (x0 [B, F', C, h, w], condition on frame 0 and the caption).

        batch: clips (`frames` [B, F, 3, H, W] in [0, 1], optional `caption` list, missing -> "") or latent-cache
        rows (`latents`, `prompt_embeds`, `image_latents`, `image_embeds` for 2.1). Nothing is random: Wan conditions
        on the clean frame, so `noise_aug_strength` (SVD's) is not used."""
        if "latents" in batch:
            x0 = batch["latents"].to(self.device, torch.float32)
            b = len(x0)
            embeds = batch.get("image_embeds")
            cond = WanCondition(batch["prompt_embeds"].to(self.device, self.dtype), self.empty_prompt(b).to(self.dtype),
                                batch["image_latents"].to(self.device, torch.float32),
                                embeds.to(self.device, self.dtype) if embeds is not None else None)
            return x0, cond
        frames = batch["frames"]
        b, num_frames = frames.shape[:2]
        self.check_video_size(num_frames, height, width)
        captions = batch.get("caption") or [""] * b
        captions = ["" if c is None else str(c) for c in captions]
        first = frames[:, 0]  # [B, 3, H, W] in [0, 1]
        latents = self.encode_image_latents(first * 2 - 1, num_frames)
        embeds = None
        if self.transformer.config.image_dim is not None:  # CLIP sees the frame as a PIL image would give it
            as_uint8 = (first.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            embeds = self.encode_clip(list(as_uint8)).to(self.dtype)
        text = self.empty_prompt(b) if not any(captions) else self.encode_prompt(captions)
        cond = WanCondition(text.to(self.dtype), self.empty_prompt(b).to(self.dtype), latents, embeds)
        return self.encode_video(frames), cond

    @torch.no_grad()
    def condition_on_frame(self, cond: WanCondition, frame: torch.Tensor, generator=None) -> WanCondition:
        """Chaining: the condition of a clip continued from a generated frame's x0 latents [B, C, h, w]."""
        pixels = self.decode(frame.unsqueeze(1))[:, :, 0]  # [B, 3, H, W] in [−1, 1]
        frames = cond.image_latents.shape[1]
        num_frames = 1 if self.expand_timesteps else (frames - 1) * self.vae_temporal_factor + 1
        latents = self.encode_image_latents(pixels, num_frames)
        embeds = None
        if cond.image_embeds is not None:
            as_uint8 = ((pixels + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            embeds = self.encode_clip(list(as_uint8)).to(cond.image_embeds.dtype)
        return replace(cond, image_latents=latents, image_embeds=embeds)
