"""SF-V's latent discriminator (§3.2–3.3): the teacher UNet's frozen encoder + spatial and temporal heads.

    D(x0, σ′, c) = { head_k(φ_k(c_in(σ′)·(x0 + σ′·ε), σ′, c)) }  for each encoder block k
        spatial head  k: φ_k as [(B·F), C, H, W], 2-D convs  -> one logit per frame and position
        temporal head k: φ_k as [(B·H·W), C, F], 1-D convs   -> one logit per position and frame

Heads are projection discriminators (Miyato & Koyama 2018): logit = w·h + ⟨h, e(c)⟩ with e(c) an embedding
of the CLIP image embedding, σ′ and the frame index (the paper's), and optionally of the family's scalar conditions
(`labels`; SVD: fps, motion bucket, noise augmentation), so that the projection term can judge whether a clip's
motion fits its motion bucket. Which heads are on (spatial / temporal / both) is a
recipe choice — the paper's ablation: both 180.9 FVD, spatial only 514.7, temporal only 539.2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sfv.lora import adapters_off
from sfv.teachers import Condition

HEAD_KINDS = ("spatial", "temporal")
EMBED_DIM = 64  # width of each part of e(c): the condition's pooled vector, σ′ and the frame index
COND_DIM = 3 * EMBED_DIM  # the three parts side by side (a fourth with `labels`)
BACKBONE_PREFIX = "backbone."  # D's frozen encoder (the teacher's weights): not trained, not in checkpoints
NOISE_SPREAD = 10  # c_noise(σ′) = ¼·ln σ′ spans ≈ [−1.6, 1.6] on [0.002, 700]; ×10 reaches the faster Fourier frequencies


def _fourier(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of x [...] -> [..., dim] (transformer-style frequencies)."""
    freqs = torch.exp(-math.log(10_000) * torch.arange(dim // 2, device=x.device) / (dim // 2))
    angles = x.float()[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class Head(nn.Module):
    """conv → GN → SiLU → conv → GN → SiLU, then a projection-conditioned 1×1 output (2-D or 1-D convs)."""

    def __init__(self, kind: str, block: int, in_channels: int, channels: int, cond_dim: int):
        super().__init__()
        conv = nn.Conv2d if kind == "spatial" else nn.Conv1d
        self.kind, self.block = kind, block  # which encoder block's features it judges
        self.body = nn.Sequential(
            conv(in_channels, channels, 3, padding=1), _norm(channels), nn.SiLU(),
            conv(channels, channels, 3, padding=1), _norm(channels), nn.SiLU(),
        )
        self.out = conv(channels, 1, 1)  # the unconditional part w·h
        self.embed = nn.Linear(cond_dim, channels)  # e(c) for the projection term

    def forward(self, features: torch.Tensor, cond: torch.Tensor, frames: int) -> torch.Tensor:
        """features: [(B·F), C, H, W]; cond: [B, F, E] -> logits [B, F, H, W] (spatial) or [B, H, W, F] (temporal)."""
        bf, c, height, width = features.shape
        batch = bf // frames
        e = self.embed(cond)  # [B, F, C_h]
        if self.kind == "spatial":
            h = self.body(features)  # [(B·F), C_h, H, W]
            proj = (h * e.flatten(0, 1)[:, :, None, None]).sum(1)  # ⟨h, e(c)⟩ per position
            logits = self.out(h)[:, 0] + proj / math.sqrt(h.shape[1])
            return logits.reshape(batch, frames, height, width)
        x = features.reshape(batch, frames, c, height, width).permute(0, 3, 4, 2, 1).reshape(-1, c, frames)  # [(B·H·W), C, F]
        h = self.body(x)  # [(B·H·W), C_h, F]
        e = e.permute(0, 2, 1).repeat_interleave(height * width, dim=0)  # [(B·H·W), C_h, F]
        logits = self.out(h)[:, 0] + (h * e).sum(1) / math.sqrt(h.shape[1])
        return logits.reshape(batch, height, width, frames)


class Discriminator(nn.Module):
    """Frozen teacher-encoder backbone (Teacher.encoder()) + trainable heads. `forward` returns one logit map per
    head (a dict); only `heads` and `cond_embed` have trainable parameters (`trainable_parameters()`).
    The backbone gives `block_channels` and its `precond` (for c_noise(σ′))."""

    def __init__(
        self,
        backbone: nn.Module,
        condition_dim: int,
        heads: str = "both",
        head_channels: int = 128,
        blocks: list[int] | None = None,
        labels: int = 0,
    ):
        """labels: how many of the condition's scalar conditions (`Condition.labels()`) e(c) embeds; 0: none (SF-V)."""
        super().__init__()
        kinds = HEAD_KINDS if heads == "both" else (heads,)
        if any(k not in HEAD_KINDS for k in kinds):
            raise ValueError(f"heads must be 'spatial', 'temporal' or 'both', not {heads!r}")
        self.backbone = backbone
        self.blocks = list(range(len(backbone.block_channels))) if blocks is None else list(blocks)
        self.labels = labels
        cond_dim = COND_DIM + (EMBED_DIM if labels else 0)
        embed = {"image": nn.Linear(condition_dim, EMBED_DIM)}  # the condition's pooled vector (SVD: CLIP image embedding)
        if labels:  # each scalar condition as Fourier features (as SVD's add_time_proj), then one projection
            embed["labels"] = nn.Linear(labels * EMBED_DIM, EMBED_DIM)
        embed["mix"] = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.cond_embed = nn.ModuleDict(embed)
        self.heads = nn.ModuleDict({
            f"{kind}{k}": Head(kind, k, backbone.block_channels[k], head_channels, cond_dim) for k in self.blocks for kind in kinds
        })

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith(BACKBONE_PREFIX)]

    def backbone_parameter_names(self) -> list[str]:
        """The frozen backbone's parameter names (the teacher's weights, or a LoRA G's shared base)."""
        return [name for name, _ in self.named_parameters() if name.startswith(BACKBONE_PREFIX)]

    def heads_requires_grad_(self, flag: bool) -> None:
        for p in self.trainable_parameters():
            p.requires_grad_(flag)

    def condition(self, sigma: torch.Tensor, cond: Condition, frames: int) -> torch.Tensor:
        """e(c): pooled condition ‖ c_noise(σ′) ‖ frame index (‖ scalar conditions) -> [B, F, E]."""
        batch = sigma.shape[0]
        image = self.cond_embed["image"](cond.pooled().float())[:, None].expand(batch, frames, -1)
        c_noise = 0.25 * self.backbone.precond.log_sigma(sigma.float())  # ¼·ln σ′ in every family (SVD's c_noise)
        noise = _fourier(c_noise * NOISE_SPREAD, EMBED_DIM)[:, None].expand(batch, frames, -1)
        index = _fourier(torch.arange(frames, device=sigma.device), EMBED_DIM)
        parts = [image, noise, index[None].expand(batch, -1, -1)]
        if self.labels:
            labels = _fourier(cond.labels().to(sigma.device), EMBED_DIM).flatten(1)  # [B, L·E]
            parts.append(self.cond_embed["labels"](labels)[:, None].expand(batch, frames, -1))
        return self.cond_embed["mix"](torch.cat(parts, dim=-1))

    def forward(self, x_noisy: torch.Tensor, sigma: torch.Tensor, cond: Condition) -> dict[str, torch.Tensor]:
        """x_noisy = x0 + σ′·ε, [B, F, C, h, w]; sigma: [B] -> {head name: logits}."""
        frames = x_noisy.shape[1]
        with adapters_off(self.backbone):  # a LoRA G's base is this backbone: D judges with the teacher's weights
            features = self.backbone(x_noisy, sigma, cond)
        e = self.condition(sigma, cond, frames)
        return {name: head(features[head.block].float(), e, frames) for name, head in self.heads.items()}
