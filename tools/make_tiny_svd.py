#!/usr/bin/env python
"""Build a random tiny SVD pipeline folder offline (loadable by diffusers' StableVideoDiffusionPipeline).

    python tools/make_tiny_svd.py --out runs/tiny-svd [--frames 8] [--unet-channels 32,64] \
        [--vae-channels 32,64] [--layers-per-block 1] [--seed 0] [--example-image runs/example.png]

Takes ~2 s on a 2-core CPU; the folder is ~6 MB of safetensors. Random weights: for plumbing, tests and
speed runs, not for looking at.
"""

import argparse
import sys
from pathlib import Path

from sfv.console import quiet_libraries
from sfv.errors import SFVError


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--frames", type=int, default=8, help="the UNet's default number of frames")
    p.add_argument("--unet-channels", type=_ints, default=(32, 64))
    p.add_argument("--vae-channels", type=_ints, default=(32, 64))
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--example-image", type=Path, default=None, help="also write a 64x64 test picture here")
    args = p.parse_args(argv)
    quiet_libraries()  # before the model libraries load: their warnings (e.g. "install torchvision") would bury ours
    from sfv.tiny import TinySVDConfig, example_image, save_tiny_svd

    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} exists and is not empty")
    config = TinySVDConfig(num_frames=args.frames, unet_channels=args.unet_channels, vae_channels=args.vae_channels,
                           layers_per_block=args.layers_per_block, seed=args.seed)
    try:
        save_tiny_svd(args.out, config)
    except SFVError as e:
        p.error(str(e))
    print(f"tiny SVD written to {args.out}")
    if args.example_image:
        args.example_image.parent.mkdir(parents=True, exist_ok=True)
        example_image(64, 64, args.seed).save(args.example_image)
        print(f"example image written to {args.example_image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
