#!/usr/bin/env python
"""Build a random tiny Wan 2.x image-to-video folder offline (loadable by diffusers' WanImageToVideoPipeline).

    python tools/make_tiny_wan.py --out runs/tiny-wan [--layout wan21|wan22|a14b]

wan21: Wan 2.1 I2V's layout (36-channel input, CLIP image tokens); wan22: Wan 2.2 TI2V-5B's (frame-0 latent replaced,
16× VAE); a14b: Wan 2.2 I2V-A14B's two experts. Takes a few seconds on a 2-core CPU; ~10 MB of safetensors. Random
weights: for plumbing, tests and speed runs, not for looking at. Then, for example:

    sfv distill --recipe recipes/tiny_cpu.yaml model.teacher=runs/tiny-wan data.frames=5 data.height=32 data.width=48
"""

import argparse
import sys
from pathlib import Path

from sfv.console import quiet_libraries


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--layout", default="wan21", choices=("wan21", "wan22", "a14b"))
    args = p.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} exists and is not empty")
    quiet_libraries()
    from sfv.tiny_wan import build_pipeline, save

    save(build_pipeline(args.layout), args.out)
    print(f"tiny Wan ({args.layout}) written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
