#!/usr/bin/env python
"""Precompute a latent cache for SF-V training (the same as `sfv cache`).

    python tools/cache_latents.py --teacher SVD_DIR --videos DIR --out CACHE_DIR --frames 14 --height 448 --width 768 [--fps 7]

Then train with `data.cache=CACHE_DIR` instead of `data.videos=...`: the VAE and CLIP encoders no longer run
every step. One clip per video (its epoch-0 clip); unusable files are skipped and listed.
"""

import sys

from sfv.cli import main

if __name__ == "__main__":
    sys.exit(main(["cache", *sys.argv[1:]]))
