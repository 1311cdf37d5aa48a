"""Train the toy teacher (a tiny SVD) on the toy world and save it as a diffusers folder (safetensors).

    python -c "from sfv.toy.world import write_world; write_world('runs/toy/world-train', 4000, seed=1)"
    python tools/train_toy_teacher.py --world runs/toy/world-train --out models/toy-svd

Two phases: the VAE (--vae-minutes), then the UNet on the VAE's latents (--unet-minutes); `--init DIR` starts
from a saved toy teacher (e.g. `--init models/toy-svd --vae-minutes 0` trains its UNet further).
A teacher folder's toy_teacher.json records every stage that made it (world, steps, learning rates, minutes; the
committed models/toy-svd-v2: about 2.5 h on a 2-core CPU in three stages), and video.json the video it works at.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path



def load_clips(world: str, count: int | None, cache: str | None):
    """Clips [N, F, 3, H, W], motion buckets [N] and the world's preset (v1/v2, from world.json; kept in the cache)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sfv.toy.teacher import load_world
    from sfv.toy.world import read_world

    if cache and Path(cache).is_file():
        saved = load_file(cache)
        with safe_open(cache, "pt") as f:
            preset = (f.metadata() or {}).get("preset", "v1")
        return saved["frames"][:count], saved["buckets"][:count], preset
    preset = read_world(world)[0]["preset"]
    frames, buckets = load_world(world, count)
    if cache:
        save_file({"frames": frames.contiguous(), "buckets": buckets.contiguous()}, cache, metadata={"preset": preset})
    return frames, buckets, preset


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    from sfv.toy.teacher import TeacherTraining

    p = parser_class(prog="train_toy_teacher.py", description=__doc__.split("\n")[0])
    p.add_argument("--world", required=True, help="toy-world folder (sfv.toy.world.write_world)")
    p.add_argument("--out", required=True)
    p.add_argument("--init", help="start from this toy teacher folder instead of random weights")
    p.add_argument("--count", type=int, default=None, help="use the first N videos")
    p.add_argument("--clips-cache", help="safetensors file of the decoded clips: read if present, else written (decoding "
                                         "2000 mp4 files takes minutes)")
    for f, v in asdict(TeacherTraining()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    return p


def main(argv: list[str] | None = None) -> int:
    from sfv.console import ArgParser, quiet_libraries, run_command

    quiet_libraries()  # before the model libraries are imported: their import-time warnings would bury sfv's error line
    return run_command(build_parser(ArgParser), train, argv)


def train(args) -> int:
    import torch

    from sfv.errors import InputError
    from sfv.teachers.svd import SVDTeacher
    from sfv.toy.teacher import (TeacherTraining, _log, build_teacher, flip_augment, save_teacher, train_unet, train_vae,
                                  vae_psnr)

    if not Path(args.world).is_dir() and not (args.clips_cache and Path(args.clips_cache).is_file()):
        raise InputError(f"--world '{args.world}' is not a folder; write one with sfv.toy.world.write_world")
    cfg = TeacherTraining(**{f: getattr(args, f) for f in asdict(TeacherTraining())})
    torch.manual_seed(cfg.seed)
    out = Path(args.out)
    log = out.parent / f"{out.name}.train.jsonl"
    t0 = time.perf_counter()
    frames, buckets, preset = load_clips(args.world, args.count, args.clips_cache)  # bad input fails here, before writing
    out.mkdir(parents=True, exist_ok=True)
    frames, buckets = flip_augment(frames, buckets, preset)
    print(f"loaded {len(frames)} clips (with flips) in {time.perf_counter() - t0:.0f} s", flush=True)
    teacher = SVDTeacher.from_pretrained(args.init) if args.init else build_teacher()
    history = json.loads((Path(args.init) / "toy_teacher.json").read_text()).get("history", []) if args.init else []
    if cfg.vae_minutes > 0:
        vae_stats = train_vae(teacher.vae, frames, cfg, log)
    else:  # a reused VAE: how well it reconstructs this world (64 clips, flips included)
        vae_stats = {"phase": "vae", "reused": args.init, "psnr": vae_psnr(teacher.vae, frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:64]])}
        _log(log, vae_stats)

    def save(unet, step=None):
        run = {"world": str(args.world), "preset": preset, "clips": len(frames), "training": asdict(cfg), "vae": vae_stats, "unet_steps": step,
               "torch_threads": torch.get_num_threads(), "wall_minutes": round((time.perf_counter() - t0) / 60, 1)}
        save_teacher(teacher, unet, out, {"history": [*history, run]}, toy_world=preset)

    save(*train_unet(teacher, frames, buckets, cfg, log, snapshot=save))
    print(f"saved {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
