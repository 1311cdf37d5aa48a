"""Score a toy Wan teacher (tools/train_toy_wan.py) and its one-step students on held-out conditionings of the toy
world v2, with the same metric as the SVD toy demo (sfv.toy.metric.score_futures: every video against every
possible future of its conditioning), beside the ceiling (real clips through the teacher's VAE) and the real clips.

    python tools/toy_wan_eval.py --teacher runs/toy-wan/toy-wan --student this-run=runs/toy-wan/distill/export \\
        --world runs/toy-wan/world-eval --seeds 4 --out runs/toy-wan/eval

Methods: the teacher at 25 and 4 Euler steps with CFG 3 (its stock sampler, sfv.load_pipeline's), at 1 step without
CFG, and each student at 1 step without CFG. Conditioning = frame 0 of a held-out clip + its caption (the speed
class). Video (seed s, conditioning i) draws its noise from a generator seeded 1000·s + i, for every method.
Writes eval.json, eval.md (the table) and branches.gif / branches.png (real | teacher-25 | teacher-4 | teacher-1 |
student-1, for two conditionings × the seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_toy_wan import FRAMES, SIZE, load_clips, write_wan_world  # noqa: E402

COLUMNS = ("toy_error", "coverage", "precision", "diversity", "energy", "position", "clutter", "conditioning")


def generate(teacher, cond, steps: int, guidance: float, seed: int, net=None) -> np.ndarray:
    """uint8 [N, F, H, W, 3]: every conditioning of `cond`, noise of video i from a generator seeded 1000·seed + i."""
    gens = [torch.Generator().manual_seed(1000 * seed + i) for i in range(len(cond))]
    x0 = teacher.sample(cond, FRAMES, SIZE, SIZE, num_inference_steps=steps, max_guidance_scale=guidance, generator=gens,
                        net=net)
    video = teacher.postprocess(teacher.decode(x0), "np")
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    from sfv.teachers.wan import WanTeacher
    from sfv.toy.metric import score_futures
    from sfv.toy.report import write_branch_grid
    from sfv.toy.world import read_world, scene_from_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", action="append", default=[], help="NAME=EXPORT_DIR (repeatable)")
    p.add_argument("--world", required=True, help="held-out v2 world of 9-frame clips (written when missing: 12 "
                                                  "conditionings × 4 draws, seed 2)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    world, out = Path(args.world), Path(args.out)
    if not world.is_dir():
        write_wan_world(world, 12, seed=2, samples=4)
    out.mkdir(parents=True, exist_ok=True)
    rows_json = read_world(world)[1]
    scenes = [scene_from_json(r) for r in rows_json if r["sample"] == 0]
    n = len(scenes)
    frames, captions = load_clips(world)  # conditioning-major: clip i·R + r
    refs = len(frames) // n
    real = (frames.float().permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
    real = real.reshape(n, refs, *real.shape[1:]).swapaxes(0, 1)  # [R, N, F, H, W, 3]
    first = frames.reshape(n, refs, *frames.shape[1:])[:, 0].float()
    teacher = WanTeacher.from_pretrained(args.teacher)
    with torch.no_grad():
        _, cond = teacher.encode_batch({"frames": first, "caption": captions[::refs]}, SIZE, SIZE)
    methods = [("teacher-25", 25, 3.0, None, args.teacher), ("teacher-4", 4, 3.0, None, args.teacher),
               ("teacher-1-nocfg", 1, 1.0, None, args.teacher)]
    for spec in args.student:
        name, folder = spec.split("=", 1)
        methods.append((name, 1, 1.0, WanTeacher.from_pretrained(folder).transformer, folder))
    rows, videos = [], {}
    for name, steps, guidance, net, folder in methods:
        t0 = time.perf_counter()
        gen = np.stack([generate(teacher, cond, steps, guidance, s, net) for s in range(args.seeds)])
        seconds = (time.perf_counter() - t0) / (args.seeds * n)
        videos[name] = gen
        s = score_futures(gen, scenes, real)
        rows.append({"name": name, "model": folder, "steps": steps, "cfg": guidance, "seconds_per_video": seconds,
                     **{k: s[k] for k in COLUMNS}})
        print(json.dumps(rows[-1]), flush=True)
    with torch.no_grad():
        recon = teacher.postprocess(teacher.decode(teacher.encode_video(frames.float())), "np")
    recon = (np.clip(recon, 0, 1) * 255).round().astype(np.uint8).reshape(n, refs, *real.shape[2:]).swapaxes(0, 1)
    for name, clips in (("real→VAE", recon), ("real", real)):
        s = score_futures(clips, scenes, real)
        rows.append({"name": name, "model": args.teacher if name != "real" else "", "steps": 0, "cfg": 0.0,
                     "seconds_per_video": 0.0, **{k: s[k] for k in COLUMNS}})
    grid = {("student-1" if k == methods[3][0] else k): v for k, v in videos.items()} if len(methods) > 3 else videos
    write_branch_grid(out, real, grid)
    head = "| method | steps | CFG | " + " | ".join(COLUMNS) + " | s/video |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for r in rows:
        lines.append(f"| {r['name']} | {r['steps']} | {r['cfg']:g} | " + " | ".join(f"{r[k]:.3f}" for k in COLUMNS)
                     + f" | {r['seconds_per_video']:.3f} |")
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    (out / "eval.json").write_text(json.dumps({"conditionings": n, "references": refs, "seeds": args.seeds,
                                               "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
