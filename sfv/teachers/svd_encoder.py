"""The encoder half of an SVD UNet: SF-V's frozen discriminator backbone (§3.2), and the UNet's sharding units."""

from __future__ import annotations

import torch
from diffusers import UNetSpatioTemporalConditionModel

from sfv.noise import EDMPrecond

# SVD's preconditioning (its scheduler config's `VScalingWithEDMcNoise`): EDM with σ_d = 1 and a v-sign,
# c_out = −σ/√(σ²+1). Shared by the denoiser (svd.py) and this encoder.
PRECOND = EDMPrecond(sigma_data=1.0, out_sign=-1.0)


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

    def __init__(self, unet: UNetSpatioTemporalConditionModel, precond: EDMPrecond | None = None):
        super().__init__()
        self.precond = precond if precond is not None else PRECOND  # c_in and c_noise, as the denoiser's
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

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond) -> list[torch.Tensor]:
        """x: noisy latents x0 + σ′·ε, [B, F, C, h, w]; sigma: [B]; cond: SVDCondition -> features per down block."""
        batch, frames = x.shape[:2]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(batch)
        x_in = self.precond.scale_input(x.float(), sigma.reshape(-1, 1, 1, 1, 1))  # c_in · x
        image_latents = cond.image_latents.unsqueeze(1).repeat(1, frames, 1, 1, 1)
        sample = torch.cat([x_in, image_latents.float()], dim=2).to(self.dtype)  # [B, F, 2C, h, w]
        # as UNetSpatioTemporalConditionModel.forward up to the mid block
        emb = self.time_embedding(self.time_proj(self.precond.c_noise(sigma)).to(self.dtype))
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
