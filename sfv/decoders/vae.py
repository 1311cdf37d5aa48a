"""The stock decoder: the teacher's temporal VAE decoder (AutoencoderKLTemporalDecoder), as the stock pipeline runs it."""

from __future__ import annotations

import torch


class VAEDecoder:
    """Latents [B, F, C, h, w] -> frames [B, 3, F, H, W] in [-1, 1] (float32); the VAE is shared, not copied."""

    name = "vae"

    def __init__(self, vae):
        self.vae = vae

    @property
    def module(self) -> torch.nn.Module:
        """The network that decodes (timed as the decode component by sfv bench)."""
        return self.vae.decoder

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, decode_chunk_size: int | None = None) -> torch.Tensor:
        num_frames = latents.shape[1]
        chunk = decode_chunk_size or num_frames  # frames per decoder call; default all at once
        z = 1 / self.vae.config.scaling_factor * latents.flatten(0, 1)  # [(B·F), C, h, w], undo the latent scaling
        frames = []
        for i in range(0, z.shape[0], chunk):
            zi = z[i : i + chunk].to(self.vae.dtype)
            frames.append(self.vae.decode(zi, num_frames=zi.shape[0]).sample)
        frames = torch.cat(frames)
        return frames.reshape(-1, num_frames, *frames.shape[1:]).permute(0, 2, 1, 3, 4).float()
