"""The SVD UNet under sfv: the EDM-preconditioned denoiser (teacher and student), its encoder half (SF-V's frozen
discriminator backbone, §3.2), its sharding units, and student weights loaded into the teacher's architecture."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from diffusers import UNetSpatioTemporalConditionModel
from safetensors.torch import load_file

from sfv.errors import ModelLoadError, first_line
from sfv.noise import EDMPrecond, Precond
from sfv.teachers.svd_condition import SVDCondition

# SVD's preconditioning (its scheduler config's `VScalingWithEDMcNoise`): EDM with σ_d = 1 and a v-sign,
# c_out = −σ/√(σ²+1). Shared by the denoiser and the encoder below.
PRECOND = EDMPrecond(sigma_data=1.0, out_sign=-1.0)


# LoRA target presets (sfv.lora; regular expressions matched in full against the UNet's module names). Linear layers only:
#   attn     to_q/to_k/to_v/to_out.0 of the spatial and temporal attention (attn1 and attn2)
#   attn_ff  + the feed-forwards (ff.net.0.proj, ff.net.2; the temporal blocks' ff_in)
#   linear   + proj_in/proj_out of each TransformerSpatioTemporalModel and the resnets' time_emb_proj (where σ enters)
_LORA_BLOCKS = r"(?:(?:down_blocks|up_blocks)\.\d+|mid_block)"
_LORA_TRANSFORMER = rf"{_LORA_BLOCKS}\.attentions\.\d+"
_LORA_ATTN = rf"{_LORA_TRANSFORMER}\.(?:transformer_blocks|temporal_transformer_blocks)\.\d+\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0)"
_LORA_FF = rf"{_LORA_TRANSFORMER}\.(?:transformer_blocks|temporal_transformer_blocks)\.\d+\.(?:ff|ff_in)\.net\.(?:0\.proj|2)"
_LORA_LINEAR = rf"{_LORA_TRANSFORMER}\.(?:proj_in|proj_out)|{_LORA_BLOCKS}\.resnets\.\d+\.(?:spatial_res_block|temporal_res_block)\.time_emb_proj"
LORA_TARGETS = {
    "attn": _LORA_ATTN,
    "attn_ff": f"{_LORA_ATTN}|{_LORA_FF}",
    "linear": f"{_LORA_ATTN}|{_LORA_FF}|{_LORA_LINEAR}",
}


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

    def __init__(self, unet: UNetSpatioTemporalConditionModel, precond: Precond | None = None):
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


def svd_denoise(
    unet: UNetSpatioTemporalConditionModel,
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    cond: SVDCondition,
    guidance: torch.Tensor | None = None,
    precond: Precond = PRECOND,
) -> torch.Tensor:
    """x0 = c_skip·x + c_out·F(c_in·x, c_noise, cond) for any UNet in SVD layout (teacher or student).

    x: [B, F, C, h, w] noisy latents (x0 + σ·ε); sigma: scalar or [B]; guidance: None (one UNet batch of B)
    or a per-frame CFG scale broadcastable to [B, F, 1, 1, 1] (one doubled batch, negative first).
    The preconditioning is computed in float32 and written in the same floating-point form as diffusers'
    EulerDiscreteScheduler (x/√(σ²+1), x/(σ²+1)) so the stock pipeline is reproduced bit for bit; the
    network runs in its own dtype. `precond`: SVD's own by default; another (sfv.noise.FlowPrecond) makes the same
    network a model of another forward process.
    """
    x = x.float()
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    s = sigma.reshape(-1, 1, 1, 1, 1).to(x.device) if sigma.ndim else sigma
    c_noise = precond.c_noise(sigma)
    x_in = precond.scale_input(x, s)  # c_in · x
    if guidance is None:
        net_cond = cond
    else:
        net_cond = SVDCondition.cat([cond.negative(), cond])
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
    return precond.combine(out, x, s)  # c_out · F + c_skip · x


# UNet config entries a student shares with the teacher's VAE, CLIP and time ids.
_INTERFACE = ("in_channels", "out_channels", "cross_attention_dim", "addition_time_embed_dim", "projection_class_embeddings_input_dim")


def load_student(source: Path, teacher_unet: UNetSpatioTemporalConditionModel, path) -> UNetSpatioTemporalConditionModel:
    """Student weights from a checked source (sfv.generator.SFVGenerator.check_source: a diffusers UNet folder or a
    .safetensors state dict, keys optionally prefixed `unet.`) in the teacher's architecture. The student must have
    the teacher's interface (channels, conditioning sizes): it runs with the teacher's VAE, image encoder and time ids."""
    try:
        if source.is_dir():
            unet = UNetSpatioTemporalConditionModel.from_pretrained(source, use_safetensors=True)
        else:
            state = {k.removeprefix("unet."): v for k, v in load_file(source).items()}
    except Exception as e:  # corrupt file / config: a user problem, one clear line
        raise ModelLoadError(f"cannot read generator weights '{path}': {first_line(e)}") from None
    if not source.is_dir():
        return student_from_state(state, teacher_unet, path)
    mismatched = [k for k in _INTERFACE if unet.config.get(k) != teacher_unet.config.get(k)]
    if mismatched:
        raise ModelLoadError(
            f"generator UNet '{path}' does not fit the teacher: "
            + ", ".join(f"{k}={unet.config.get(k)} (teacher {teacher_unet.config.get(k)})" for k in mismatched)
        )
    return unet


def student_from_state(state: dict[str, torch.Tensor], teacher_unet: UNetSpatioTemporalConditionModel,
                       path) -> UNetSpatioTemporalConditionModel:
    """The teacher's UNet architecture holding the student weights `state` (read from `path`); strict."""
    unet = copy.deepcopy(teacher_unet)
    try:
        missing, unexpected = unet.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ModelLoadError(f"generator weights '{path}' do not fit the teacher's UNet: {' '.join(str(e).split())[:300]}") from None
    if missing or unexpected:
        raise ModelLoadError(
            f"generator weights '{path}' do not fit the teacher's UNet: {len(missing)} missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); "
            "export with the teacher the generator was trained from"
        )
    return unet
