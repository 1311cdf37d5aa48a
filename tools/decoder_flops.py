"""FLOPs of the fast tiny decoder against SVD's temporal VAE decoder at full size, counted on the meta device.

    python tools/decoder_flops.py [--frames 14 --height 576 --width 1024] [--out runs/decoder/flops.json]

Both networks are built on the meta device (nothing allocated, nothing downloaded: the SVD VAE config is
sfv.arch.SVD_VAE_CONFIG) and run once under torch.utils.flop_counter.FlopCounterMode, which counts the
multiply-adds of convolutions and matrix products by shape (2 FLOPs each); norms, activations and resampling
are not counted (they are a few % for both). Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sfv.console import ArgParser, check_positive, run_command


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def decoder_flops(frames: int, height: int, width: int) -> dict:
    from diffusers import AutoencoderKLTemporalDecoder

    from sfv.arch import SVD_VAE_CONFIG
    from sfv.decoders.tiny import TinyDecoderConfig, TinyTemporalDecoder

    with torch.device("meta"):
        # .to("meta"): AlphaBlender's scalar mix factors are created on the CPU whatever the device context
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG).to("meta").eval()
        tiny = TinyTemporalDecoder(TinyDecoderConfig.for_vae(vae)).eval()
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.zeros(1, frames, vae.config.latent_channels, height // f, width // f, device="meta")  # [B, F, C, h, w]
    with torch.no_grad():
        stock = count_flops(lambda: vae.decode(latents[0], num_frames=frames))
        fast = count_flops(lambda: tiny(latents))
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("vae_decoder", vae.decoder), ("tiny", tiny))}
    return {
        "frames": frames, "height": height, "width": width, "latents": list(latents.shape[1:]),
        "svd_vae_decoder": {"flops": stock, "parameters": params["vae_decoder"]},
        "tiny": {"flops": fast, "parameters": params["tiny"], "config": tiny.config.__dict__},
        "ratio": stock / fast,
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgParser(prog="decoder_flops", description="FLOPs of the tiny decoder vs SVD's temporal VAE decoder (meta device)")
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--height", type=int, default=576)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--out", default="runs/decoder/flops.json")

    def command(args):
        check_positive(args, "frames", "height", "width")
        r = decoder_flops(args.frames, args.height, args.width)
        print(f"decoding {r['frames']} frames at {r['width']}x{r['height']} (latents {r['latents']}):")
        print(f"{'decoder':<22}{'TFLOPs':>10}{'GFLOPs/frame':>14}{'params (M)':>12}")
        for name, key in (("SVD temporal VAE", "svd_vae_decoder"), ("tiny (sfv)", "tiny")):
            flops, n = r[key]["flops"], r[key]["parameters"]
            print(f"{name:<22}{flops / 1e12:>10.2f}{flops / r['frames'] / 1e9:>14.1f}{n / 1e6:>12.2f}")
        print(f"ratio: {r['ratio']:.1f}x fewer FLOPs")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {out}")

    return run_command(p, command, argv)


if __name__ == "__main__":
    sys.exit(main())
