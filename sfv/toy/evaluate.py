"""The toy demo's evaluation: every method (teacher step counts, students) generates videos for the held-out
conditionings × seeds and is scored with the toy metric (v1: `score`; v2: `score_futures` against every possible
future), beside the ceiling (the real clips through the teacher's VAE) and the real clips themselves."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sfv.errors import InputError
from sfv.toy.report import V2_COLUMNS, write_branch_grid, write_grids

TIMED_VIDEOS = 3  # per method: single-video calls timed for the latency column (median)


def evaluate_v1(args, methods: list[dict], out: Path) -> tuple[np.ndarray, list[dict]]:
    """Every method on every held-out conditioning and seed, one video per call through the pipeline path
    (SVDTeacher.generate, bit-exact with diffusers' StableVideoDiffusionPipeline); returns real clips and rows."""
    from PIL import Image
    from tqdm import tqdm

    from sfv.toy.metric import score
    from sfv.toy.teacher import load_world

    frames, buckets = load_world(out / "world-eval")
    real = (frames.float().permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)  # [N, F, H, W, 3]
    n, num_frames, size = real.shape[0], real.shape[1], real.shape[2]
    images = [Image.fromarray(real[i, 0]) for i in range(n)]
    models: dict = {}
    videos: dict[str, list[np.ndarray]] = {}
    rows = []
    bar = tqdm(total=len(methods) * args.seeds * n, desc="generate", unit="video")
    for m in methods:
        svd = _model(models, m)
        scores = []
        all_seeds, times = _generate(svd, images, buckets, m, size, num_frames, args.seeds, bar)
        for gen in all_seeds:
            videos.setdefault(m["name"], []).append(gen)
            scores.append(score(gen, real))
        parts = {k: statistics.mean(s[k] for s in scores) for k in scores[0] if k not in ("toy_error", "videos")}
        errs = [s["toy_error"] for s in scores]
        rows.append({**m, "toy_error": statistics.mean(errs), "toy_error_std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
                     "toy_error_per_seed": errs, "parts": parts, "seconds_per_video": statistics.median(times),
                     "seconds_per_video_timed": times})
    bar.close()
    # the ceiling of any generator in this latent space: the real clips encoded and decoded by the teacher's VAE
    vae = models[(methods[0]["model"], None)]
    t = time.perf_counter()
    recon = vae.postprocess(vae.decode(vae.encode_video(frames.float())), "np")
    recon_s = (time.perf_counter() - t) / n
    s = score((np.clip(recon, 0, 1) * 255).round().astype(np.uint8), real)
    rows.append({"name": "real→VAE", "model": methods[0]["model"], "steps": 0, "cfg": 0.0, "unet_evals": 0,
                 "toy_error": s["toy_error"], "toy_error_std": 0.0, "toy_error_per_seed": [s["toy_error"]],
                 "parts": {k: s[k] for k in s if k not in ("toy_error", "videos")}, "seconds_per_video": recon_s})
    rows.append({"name": "real", "model": "", "steps": 0, "cfg": 0.0, "unet_evals": 0, "toy_error": score(real, real)["toy_error"],
                 "toy_error_std": 0.0, "parts": {}, "seconds_per_video": 0.0})
    write_grids(out, real, videos)
    return real, rows


def evaluate_v2(args, methods: list[dict], out: Path) -> tuple[np.ndarray, list[dict]]:
    """v2: every method on every held-out conditioning and seed, scored with `score_futures` against the
    conditioning's possible futures (and `--references` true draws per conditioning); returns the real clips
    [R, N, F, H, W, 3] and the rows."""
    from PIL import Image
    from tqdm import tqdm

    from sfv.toy.metric import score_futures

    frames, scenes, real, buckets = load_heldout_v2(out / "world-eval", args.references)
    n, refs = len(scenes), args.references
    num_frames, size = real.shape[2], real.shape[3]
    images = [Image.fromarray(real[0, i, 0]) for i in range(n)]
    models: dict = {}
    videos: dict[str, np.ndarray] = {}
    rows = []
    bar = tqdm(total=len(methods) * args.seeds * n, desc="generate", unit="video")
    for m in methods:
        svd = _model(models, m)
        gen, times = _generate(svd, images, buckets, m, size, num_frames, args.seeds, bar)
        videos[m["name"]] = gen
        s = score_futures(gen, scenes, real)
        rows.append({**m, "toy_error": s["toy_error"], "toy_error_std": 0.0, "parts": _v2_parts(s),
                     "seconds_per_video": statistics.median(times), "seconds_per_video_timed": times})
    bar.close()
    vae = models[(methods[0]["model"], None)]  # the ceiling: the real draws through the teacher's VAE
    t = time.perf_counter()
    recon = vae.postprocess(vae.decode(vae.encode_video(frames.float())), "np")
    recon_s = (time.perf_counter() - t) / len(frames)
    recon = (np.clip(recon, 0, 1) * 255).round().astype(np.uint8).reshape(n, refs, *real.shape[2:]).swapaxes(0, 1)
    s = score_futures(recon, scenes, real)
    rows.append({"name": "real→VAE", "model": methods[0]["model"], "steps": 0, "cfg": 0.0, "unet_evals": 0,
                 "toy_error": s["toy_error"], "toy_error_std": 0.0, "parts": _v2_parts(s), "seconds_per_video": recon_s})
    s = score_futures(real, scenes, real)
    rows.append({"name": "real", "model": "", "steps": 0, "cfg": 0.0, "unet_evals": 0, "toy_error": s["toy_error"],
                 "toy_error_std": 0.0, "parts": _v2_parts(s), "seconds_per_video": 0.0})
    write_branch_grid(out, real, videos)
    return real, rows


def load_heldout_v2(folder: Path, references: int) -> tuple:
    """A v2 held-out world folder of N conditionings × `references` true draws (conditioning-major: clip i·R + r):
    its frames [N·R, F, C, H, W], scenes (N, the ground truth), real clips uint8 [R, N, F, H, W, 3] and each
    conditioning's motion bucket [N]."""
    from sfv.toy.teacher import load_world
    from sfv.toy.world import read_world, scene_from_json

    frames, buckets = load_world(folder)
    scenes = [scene_from_json(r) for r in read_world(folder)[1] if r["sample"] == 0]
    n = len(scenes)
    if len(frames) != n * references:
        raise InputError(f"'{folder}' holds {len(frames)} clips of {n} conditionings, not {references} true draws of each: "
                         f"write it with `python -m sfv.toy.world --preset v2 --samples {references}`")
    real = (frames.float().permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
    real = real.reshape(n, references, *real.shape[1:]).swapaxes(0, 1)
    return frames, scenes, real, buckets.reshape(n, references)[:, 0]


def _v2_parts(s: dict) -> dict:
    return {k: s[k] for k in V2_COLUMNS}


def _model(models: dict, m: dict):
    """Method m's model (loaded once per folder and decoder): an SVDTeacher over the folder, decoding with the stock
    VAE, or with m["decoder"] (a fast decoder folder, sfv.decoders.tiny) when the method names one."""
    from sfv.teachers.svd import SVDTeacher

    key = (m["model"], m.get("decoder"))
    if key not in models:
        models[key] = SVDTeacher.from_pretrained(m["model"], torch_dtype=torch.float32)
        if m.get("decoder"):
            models[key].set_decoder("tiny", m["decoder"])
    return models[key]


def _generate(svd, images: list, buckets, m: dict, size: int, num_frames: int, seeds: int, bar=None) -> tuple[np.ndarray, list[float]]:
    """Method `m` (steps, CFG) on every conditioning × seed: uint8 [S, N, F, H, W, 3] and the end-to-end seconds
    of TIMED_VIDEOS single-video calls (latency; seed 0's first conditionings). The rest is generated one seed
    at a time in one batch; video (seed s, conditioning i) draws from its own generator seeded 1000·s + i in the
    single-video order, so batching changes only floating-point rounding (tests/test_toy.py)."""
    out, times = None, []
    for seed in range(seeds):
        first = min(TIMED_VIDEOS, len(images)) if seed == 0 else 0
        videos = []
        for i in range(first):
            video, took = _timed_video(svd, images[i], buckets[i], m, size, num_frames, i)
            videos.append(video[None])
            times.append(took)
        if first < len(images):
            videos.append(_batch_videos(svd, images[first:], buckets[first:], m, size, num_frames,
                                        [1000 * seed + i for i in range(first, len(images))]))
        batch = np.concatenate(videos)
        out = np.empty((seeds, *batch.shape), np.uint8) if out is None else out
        out[seed] = batch
        if bar is not None:
            bar.update(len(images))
    return out, times


def _batch_videos(svd, images: list, buckets, m: dict, size: int, num_frames: int, seeds: list[int]) -> np.ndarray:
    """Videos of method `m` for several conditionings in one batch: uint8 [N, F, H, W, 3]."""
    from sfv.teachers.svd_condition import SVDCondition
    from sfv.toy.teacher import FPS, NOISE_AUG

    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    cond = SVDCondition.cat([svd.encode_condition(image, size, size, FPS, int(bucket), NOISE_AUG, generator=g)
                             for image, bucket, g in zip(images, buckets, gens)])
    latents = svd.sample(cond, num_frames, size, size, generator=gens, **_sampling(svd, m))
    return (np.clip(svd.postprocess(svd.decode(latents), "np"), 0, 1) * 255).round().astype(np.uint8)


def _sampling(svd, m: dict) -> dict:
    """Teacher.sample's arguments for method m: its steps and CFG; a student at more than one step samples on its own
    training levels (SFVPipeline's few-step sampler: x̂0 re-noised to the next level, sfv.sampling.consistency_sample)."""
    if m.get("student_levels") and m["steps"] > 1:
        from sfv.noise import student_schedule
        from sfv.pipeline import SFVPipeline, export_info

        t_g = int(export_info(m["model"]).get("sampling", {}).get("t_g", SFVPipeline.t_g))
        levels = svd.generator_levels(t_g)
        return {"sigmas": student_schedule(levels, m["steps"]).tolist(), "sampler": "consistency", "max_guidance_scale": m["cfg"]}
    return {"num_inference_steps": m["steps"], "max_guidance_scale": m["cfg"]}


def _timed_video(svd, image, bucket, m: dict, size: int, num_frames: int, seed: int) -> tuple[np.ndarray, float]:
    """One video of method `m` (steps, CFG) from frame 0 and its motion bucket: uint8 [F, H, W, 3], end-to-end seconds."""
    from sfv.toy.teacher import FPS, NOISE_AUG

    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    video = svd.generate(image, size, size, num_frames, fps=FPS, motion_bucket_id=int(bucket), noise_aug_strength=NOISE_AUG,
                         generator=g, output_type="np", **_sampling(svd, m))[0]
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8), time.perf_counter() - t
