#!/usr/bin/env python
"""Long videos in the toy world: chain and MultiDiffusion windows with the distilled student (1–3 steps) and the
teacher chained, scored against the real long clips (the world is deterministic, so the real clip is the answer).

    python tools/long_video_toy.py --out runs/long-video            (defaults: 32 frames, window 8, 12 clips)

Real clips: `write_world` at 32 frames (seed 2: the demo's held-out scenes, continued), read through sfv's video data
path at 32×32. Every method runs through SFVPipeline with the same conditioning and seed per clip. Per method:

- toy_error on the whole clip, and per 8-frame quarter (drift over time); shape (objects kept at their size) and
  clutter (colours that are not the scene's) per quarter are the identity and colour drift;
- seams: acceleration error |Δ²c − Δ²c_true| (px/frame²) of the object centroids at frames whose neighbours are
  covered by different windows (t − 1 and t + 1 in different window sets) against the same inside windows;
- UNet calls and seconds per clip (median; end to end, decoding included), and output frames per second.

Writes report.json, report.md and grid.gif (rows: clips; columns: real | each method).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sfv.console import ArgParser, run_command
from sfv.errors import InputError

STUDENT, TEACHER = "models/toy-sfv-full", "models/toy-svd"


def build_parser() -> ArgParser:
    p = ArgParser(prog="python tools/long_video_toy.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/long-video")
    p.add_argument("--student", default=STUDENT)
    p.add_argument("--teacher", default=TEACHER)
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--student-steps", default="1,2,3")
    p.add_argument("--teacher-steps", type=int, default=25, help="teacher chained: Euler steps with SVD's CFG ramp 1 → 3 (0: skip)")
    return p


def methods(args) -> list[dict]:
    rows = []
    for mode, overlap in (("chain", 1), ("multidiffusion", args.window // 2)):
        for n in [int(v) for v in args.student_steps.split(",")]:
            rows.append({"name": f"student {mode} {n}-step", "model": args.student, "long_video": mode, "overlap": overlap,
                         "call": {"num_inference_steps": n}})
    if args.teacher_steps:
        rows.append({"name": f"teacher chain {args.teacher_steps}-step CFG", "model": args.teacher, "long_video": "chain",
                     "overlap": 1, "call": {"num_inference_steps": args.teacher_steps}})  # a teacher: its own CFG ramp
    return rows


def seam_frames(frames: int, window: int, overlap: int) -> np.ndarray:
    """[F] bool: t − 1 and t + 1 are covered by different sets of windows (the acceleration at t spans a seam)."""
    from sfv.sampling import fusion_weights

    cover = (fusion_weights(frames, window, overlap) > 0).numpy()  # [K, F]
    seam = np.zeros(frames, dtype=bool)
    seam[1:-1] = (cover[:, :-2] != cover[:, 2:]).any(axis=0)
    return seam


def acceleration_error(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """[N, F, K] |Δ²c − Δ²c_true| px/frame² at frame t (NaN at the ends and where the true object is not tracked)."""
    from sfv.toy.metric import CAP, describe

    g, r = describe(generated), describe(real)
    acc = lambda c: c[:, 2:] - 2 * c[:, 1:-1] + c[:, :-2]  # noqa: E731
    err = np.linalg.norm(acc(g["centre"]) - acc(r["centre"]), axis=-1)
    err = np.where(np.isfinite(err), np.minimum(err, CAP), CAP)
    ok = np.isfinite(acc(r["centre"])).all(-1) & r["present"][:, None, :]
    out = np.full(g["centre"].shape[:3], np.nan)
    out[:, 1:-1] = np.where(ok, err, np.nan)
    return out


def evaluate(args) -> dict:
    from PIL import Image

    from sfv.data import ClipSpec, VideoFolder
    from sfv.toy.metric import score
    from sfv.pipeline import SFVPipeline
    from sfv.teachers.svd import SVDTeacher
    from sfv.toy.report import save_grid_gif
    from sfv.toy.teacher import FPS, NOISE_AUG, SIZE
    from sfv.toy.world import write_world

    out = Path(args.out)
    folder = write_world(out / "world-long", args.clips, seed=2, frames=args.frames)
    data = VideoFolder(folder, ClipSpec(args.frames, SIZE, SIZE, FPS))
    items = [data.load(i) for i in range(args.clips)]
    real = np.stack([(it["frames"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8) for it in items])
    buckets = [int(it["motion_bucket_id"]) for it in items]
    images = [Image.fromarray(real[i, 0]) for i in range(args.clips)]

    pipes: dict[str, SFVPipeline] = {}
    rows, videos = [], {}
    for m in methods(args):
        pipe = pipes.get(m["model"]) or pipes.setdefault(m["model"], SFVPipeline.from_pretrained(m["model"], use_safetensors=True))
        pipe.set_progress_bar_config(disable=True)
        call = m["call"]  # a teacher folder samples on its own schedule (SFVPipeline's teacher mode)
        calls = []
        hook = pipe.unet.register_forward_hook(lambda mod, a, o: calls.append(1))
        gen, secs = [], []
        for i in range(args.clips):
            t = time.perf_counter()
            frames = pipe(images[i], height=SIZE, width=SIZE, num_frames=args.frames, fps=FPS, motion_bucket_id=buckets[i],
                          noise_aug_strength=NOISE_AUG, generator=torch.Generator().manual_seed(i), output_type="np",
                          long_video=m["long_video"], window=args.window, overlap=m["overlap"], **call).frames[0]
            secs.append(time.perf_counter() - t)
            gen.append((np.clip(frames, 0, 1) * 255).round().astype(np.uint8))
        hook.remove()
        gen = np.stack(gen)
        videos[m["name"]] = gen
        whole = score(gen, real)
        quarters = [score(gen[:, q : q + 8], real[:, q : q + 8]) for q in range(0, args.frames, 8)]
        acc = acceleration_error(gen, real)
        seam = seam_frames(args.frames, args.window, m["overlap"])
        seam_err, inside_err = np.nanmean(acc[:, seam]), np.nanmean(acc[:, ~seam & (np.arange(args.frames) > 0)
                                                                         & (np.arange(args.frames) < args.frames - 1)])
        seconds = statistics.median(secs)
        rows.append({"name": m["name"], "long_video": m["long_video"], "overlap": m["overlap"], "call": m["call"],
                     "unet_calls_per_clip": len(calls) / args.clips, "toy_error": whole["toy_error"],
                     "parts": {k: v for k, v in whole.items() if k not in ("toy_error", "videos")},
                     "quarters": [{k: q[k] for k in ("toy_error", "position", "shape", "clutter")} for q in quarters],
                     "seam_acceleration_error": float(seam_err), "inside_acceleration_error": float(inside_err),
                     "seconds_per_clip": seconds, "frames_per_second": args.frames / seconds})
        print(json.dumps({k: rows[-1][k] for k in ("name", "toy_error", "seam_acceleration_error",
                                                    "inside_acceleration_error", "seconds_per_clip")}), flush=True)
    # the ceiling of any generator in this latent space: the real long clips through the teacher's VAE
    vae = SVDTeacher.from_pipeline(pipes[args.student])
    frames = torch.stack([it["frames"] for it in items]).float()
    recon = vae.postprocess(vae.decode(vae.encode_video(frames)), "np")
    recon = (np.clip(recon, 0, 1) * 255).round().astype(np.uint8)
    acc = acceleration_error(recon, real)
    rows.append({"name": "real → VAE (ceiling)", "toy_error": score(recon, real)["toy_error"],
                 "quarters": [{k: q[k] for k in ("toy_error", "position", "shape", "clutter")}
                              for q in (score(recon[:, q : q + 8], real[:, q : q + 8]) for q in range(0, args.frames, 8))],
                 "seam_acceleration_error": None, "inside_acceleration_error": float(np.nanmean(acc)),
                 "seconds_per_clip": 0.0, "unet_calls_per_clip": 0})
    save_grid_gif(out / "grid.gif", [real[:3], *[v[:3] for v in videos.values()]], duration_ms=200)
    return {"clips": args.clips, "frames": args.frames, "window": args.window, "size": SIZE, "student": args.student,
            "teacher": args.teacher, "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
            "rows": rows}


def markdown(report: dict) -> str:
    lines = [f"{report['clips']} clips of {report['frames']} frames at {report['size']}×{report['size']}, window "
             f"{report['window']}; seam/inside: acceleration error px/frame² at window seams vs inside windows", "",
             "| method | UNet calls/clip | toy_error ↓ | toy_error per 8 frames | shape per 8 frames | clutter per 8 frames "
             "| seam / inside accel. error | s/clip | frames/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        q = r["quarters"]
        fmt = lambda k: " → ".join(f"{x[k]:.2f}" for x in q) if q else "—"  # noqa: E731
        fps = f"{report['frames'] / r['seconds_per_clip']:.0f}" if r["seconds_per_clip"] else "—"
        seam = "—" if r["seam_acceleration_error"] is None else f"{r['seam_acceleration_error']:.2f}"
        lines.append(f"| {r['name']} | {r['unet_calls_per_clip']:.0f} | {r['toy_error']:.3f} | {fmt('toy_error')} | "
                     f"{fmt('shape')} | {fmt('clutter')} | {seam} / {r['inside_acceleration_error']:.2f} | "
                     f"{r['seconds_per_clip']:.2f} | {fps} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    def run(args):
        for name in (args.student, args.teacher):
            if not Path(name, "model_index.json").is_file():
                raise InputError(f"model folder '{name}' not found")
        report = evaluate(args)
        out = Path(args.out)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "report.md").write_text(markdown(report))
        print(markdown(report))
        return 0

    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
