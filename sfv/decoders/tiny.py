"""A fast temporal decoder: latents [B, F, C, h, w] -> frames [B, 3, F, 8h, 8w] in [-1, 1], in the spirit of
TAESD / TAESDV (madebyollin): plain 3×3 conv residual blocks with ReLU (diffusers' `AutoencoderTinyBlock`,
the block of `AutoencoderTiny`'s `DecoderTiny`), nearest ×2 upsampling, no attention and no normalisation —
plus one cheap temporal mix per resolution so neighbouring frames agree (no flicker):

    latents / scaling_factor -> 3·tanh(z/3)                    unscale as the stock VAE, soft-clamp outliers
    conv_in, ReLU
    per stage s:  TemporalMix -> num_blocks[s] × AutoencoderTinyBlock -> (×2 nearest upsample, conv to next width)
    conv_out -> clamp to [-1, 1]

TemporalMix is x + conv_t(x), a centred 3-tap convolution over frames (per channel and pixel, [C, C, 3, 1, 1]),
initialised to zero so a fresh decoder is frame-independent and training adds only the mixing it needs. It
sees the frames of one decode chunk, as the stock temporal VAE decoder does.

DecoderTiny itself keeps one width at every stage and its output unclamped, so the stages are laid out here with
its block; the layout (widths, blocks per stage; `len(block_out_channels) − 1` upsamplings) lives in config.json
beside diffusion_pytorch_model.safetensors. Loading reads JSON and safetensors only (nothing is unpickled).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sfv.errors import ModelLoadError, first_line
from sfv.files import atomic_path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CLASS_NAME = "TinyTemporalDecoder"


@dataclass
class TinyDecoderConfig:
    latent_channels: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [64, 64, 64, 32])  # one width per stage, deepest first
    num_blocks: list[int] = field(default_factory=lambda: [3, 3, 3, 1])  # AutoencoderTinyBlocks per stage
    scaling_factor: float = 0.18215  # the VAE's: the slot's latents are VAE latents × scaling_factor

    @property
    def scale_factor(self) -> int:
        """Pixels per latent cell: one ×2 upsampling between consecutive stages."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def for_vae(cls, vae, block_out_channels=None, num_blocks=None) -> "TinyDecoderConfig":
        """A layout matching a VAE's latent channels, scale factor and latent scaling (default widths 64 → 32)."""
        stages = len(vae.config.block_out_channels)
        channels = list(block_out_channels) if block_out_channels else [64] * (stages - 1) + [32]
        blocks = list(num_blocks) if num_blocks else [3] * (stages - 1) + [1]
        return cls(vae.config.latent_channels, channels, blocks, float(vae.config.scaling_factor))


class TemporalMix(nn.Module):
    """x + conv_t(x): a centred 3-tap convolution over frames, zero-initialised (identity at start)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:  # x: [(B·F), C, H, W]
        v = x.unflatten(0, (-1, num_frames)).transpose(1, 2)  # [B, C, F, H, W]
        return x + self.conv(v).transpose(1, 2).flatten(0, 1)


class TinyTemporalDecoder(nn.Module):
    """The network: latents [B, F, C, h, w] -> frames [B, 3, F, H, W] in [-1, 1] (see the module docstring)."""

    def __init__(self, config: TinyDecoderConfig):
        super().__init__()
        if len(config.block_out_channels) != len(config.num_blocks) or len(config.num_blocks) < 1:
            raise ModelLoadError(f"tiny decoder config: block_out_channels {config.block_out_channels} and num_blocks "
                                 f"{config.num_blocks} need one entry per stage")
        self.config = config
        widths = config.block_out_channels
        self.conv_in = nn.Conv2d(config.latent_channels, widths[0], 3, padding=1)
        self.mix = nn.ModuleList(TemporalMix(w) for w in widths)
        self.blocks = nn.ModuleList(
            nn.Sequential(*(AutoencoderTinyBlock(w, w, "relu") for _ in range(n))) for w, n in zip(widths, config.num_blocks)
        )
        self.up = nn.ModuleList(  # ×2 nearest, then a conv to the next stage's width
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w_next, 3, padding=1, bias=False))
            for w, w_next in zip(widths, widths[1:])
        )
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        num_frames = latents.shape[1]
        z = latents.flatten(0, 1) / self.config.scaling_factor  # [(B·F), C, h, w], the VAE's unscaled latents
        x = torch.relu(self.conv_in(torch.tanh(z / 3) * 3))
        for s, (mix, blocks) in enumerate(zip(self.mix, self.blocks)):
            x = blocks(mix(x, num_frames))
            if s < len(self.up):
                x = self.up[s](x)
        x = self.conv_out(x).clamp(-1, 1)  # [(B·F), 3, H, W]
        return x.unflatten(0, (-1, num_frames)).transpose(1, 2)  # [B, 3, F, H, W]

    # -- the decoder folder: config.json + diffusion_pytorch_model.safetensors ---------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the folder atomically (a half-written folder never appears under its name)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            config = {"_class_name": CLASS_NAME, **asdict(self.config)}
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, tmp / WEIGHTS_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "TinyTemporalDecoder":
        """Load a decoder folder; a missing, incomplete or corrupt one is one ModelLoadError that says the fix."""
        folder = Path(folder)
        fix = "write one with `sfv distill-decoder` (it lands in the run folder's decoder/)"
        if not folder.is_dir():
            raise ModelLoadError(f"tiny decoder folder '{folder}' does not exist; {fix}")
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
        if missing:
            pickled = " (sfv loads safetensors only, never pickle .bin files)" if any(folder.glob("*.bin")) else ""
            raise ModelLoadError(f"tiny decoder folder '{folder}' is incomplete: missing {', '.join(missing)}{pickled}; {fix}")
        try:
            raw = json.loads((folder / CONFIG_NAME).read_text())
            if raw.get("_class_name") != CLASS_NAME:
                raise ValueError(f"_class_name is {raw.get('_class_name')!r}, not {CLASS_NAME!r}")
            config = TinyDecoderConfig(**{k: v for k, v in raw.items() if not k.startswith("_")})
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"tiny decoder config '{folder / CONFIG_NAME}' is not valid: {first_line(e)[:200]}; {fix}") from None
        net = cls(config)
        try:
            state = load_file(folder / WEIGHTS_NAME)
            net.load_state_dict(state, strict=True)
        except (OSError, SafetensorError, RuntimeError) as e:
            raise ModelLoadError(f"tiny decoder weights '{folder / WEIGHTS_NAME}' are corrupt or do not match config.json: "
                                 f"{first_line(e)[:200]}; re-export or retrain the decoder") from None
        return net.eval().requires_grad_(False)

    def check_fits(self, vae, where: str = "") -> None:
        """Raise ModelLoadError unless this decoder reads the VAE's latents: channels, scale factor, scaling."""
        c = self.config
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        problems = []
        if c.latent_channels != vae.config.latent_channels:
            problems.append(f"it reads {c.latent_channels} latent channels, the VAE writes {vae.config.latent_channels}")
        if c.scale_factor != vae_factor:
            problems.append(f"it upsamples ×{c.scale_factor}, the VAE's scale factor is {vae_factor}")
        if abs(c.scaling_factor - vae.config.scaling_factor) > 1e-6 * abs(vae.config.scaling_factor):
            problems.append(f"its scaling_factor is {c.scaling_factor}, the VAE's {vae.config.scaling_factor}")
        if problems:
            raise ModelLoadError(f"tiny decoder{f' {where}' if where else ''} does not fit this model: {'; '.join(problems)}; "
                                 "train one for this VAE with `sfv distill-decoder`")


class TinyDecoder:
    """The slot's callable over a TinyTemporalDecoder: latents [B, F, C, h, w] -> frames [B, 3, F, H, W] in [−1, 1],
    float32, decode_chunk_size frames per call (default: all). The network follows the latents' device."""

    name = "tiny"

    def __init__(self, net: TinyTemporalDecoder):
        self.net = net

    @property
    def module(self) -> nn.Module:
        """The network that decodes (timed as the decode component by sfv bench)."""
        return self.net

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, decode_chunk_size: int | None = None) -> torch.Tensor:
        net = self.net.to(latents.device)
        dtype = next(net.parameters()).dtype
        chunk = decode_chunk_size or latents.shape[1]
        frames = [net(latents[:, i : i + chunk].to(dtype)) for i in range(0, latents.shape[1], chunk)]
        return torch.cat(frames, dim=2).float()
