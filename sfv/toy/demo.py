"""The README's main command: SF-V end to end in the toy world, on a CPU.

    python -m sfv.toy.demo            # = make demo: world -> SF-V distillation -> export -> report

1. writes a toy world (real mp4 files + metadata) for training and a held-out set of conditionings;
2. distils the shipped toy teacher (models/toy-svd) into a one-step student with the SF-V trainer
   (recipes/toy.yaml, unchanged trainer: `sfv distill` does the same) and exports it;
3. generates every held-out conditioning with the teacher at 25/16/8/4/1 steps (CFG as SVD: per-frame scale
   1 → 3, a doubled UNet batch) and with the student (and the committed fully-trained student, if present) at
   1 step, over several seeds, through the stock-equivalent pipelines, timing each video end to end;
4. scores them with the toy metric (`sfv.metrics.toy`) and writes report.json, report.md, a GIF grid per seed
   (real | teacher-25 | teacher-4 | teacher-1 | student-1 …) and quality-vs-time.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sfv.errors import InputError

DEFAULT_TEACHER = {"v1": "models/toy-svd", "v2": "models/toy-svd-v2"}  # each world's own teacher
DEFAULT_FULL = {"v1": "models/toy-sfv-full"}
GRID_METHODS = ("teacher-25", "teacher-4", "teacher-1", "teacher-1-nocfg", "student-1", "student-full-1")
BRANCH_GRID = ("teacher-25", "teacher-4", "teacher-1", "teacher-1-nocfg", "student-1", "student-full-1")


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="python -m sfv.toy.demo", description="SF-V end to end in the toy world (the README's main command)")
    p.add_argument("--out", default="runs/demo", help="output folder (replaced)")
    p.add_argument("--teacher", help="toy teacher folder (default: the world's own, " + ", ".join(f"{k}: {v}" for k, v in DEFAULT_TEACHER.items()) + ")")
    p.add_argument("--recipe", default="recipes/toy.yaml")
    p.add_argument("--full-student", help="a committed fully-distilled student to report too (default: the world's own, "
                                           "v1: models/toy-sfv-full; skipped if absent)")
    p.add_argument("--student", help="evaluate this exported student folder instead of distilling one (skips the training world)")
    p.add_argument("--train-videos", type=int, default=1000, help="toy-world videos written for distillation")
    p.add_argument("--eval", type=int, default=12, help="held-out conditionings (frame 0 + motion bucket)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", default="25,16,8,4,1", help="teacher step counts (CFG as SVD)")
    p.add_argument("--world", default="v1", help="toy-world preset: v1 (one future per conditioning) or v2 (the bucket "
                                                  "sets the speed; K directions per object)")
    p.add_argument("--directions", type=int, default=4, help="v2: K, directions per object")
    p.add_argument("--references", type=int, default=4, help="v2: real clips per held-out conditioning (true draws)")
    p.add_argument("--without-cfg", action="store_true", help="also score every teacher step count without CFG")
    p.add_argument("--teacher-only", action="store_true", help="score the teacher only (no distillation, no student)")
    p.add_argument("overrides", nargs="*", help="recipe overrides, section.key=value (e.g. train.total_videos=16)")
    return p


def main(argv: list[str] | None = None) -> int:
    from sfv.console import ArgParser, run_command

    return run_command(build_parser(ArgParser), demo, argv)


def demo(args) -> int:
    from sfv.config import load_recipe
    from sfv.toy.world import check_world, write_world

    t0 = time.perf_counter()
    steps = _parse_steps(args.steps)
    check_world(args.world, args.directions)
    args.teacher = args.teacher or DEFAULT_TEACHER[args.world]
    args.full_student = DEFAULT_FULL.get(args.world, "") if args.full_student is None else args.full_student
    if args.world == "v2" and (args.seeds < 2 or args.references < 2):
        raise InputError(f"--seeds {args.seeds} / --references {args.references}: v2 scores diversity over ≥ 2 samples (4 or more advised)")
    if not Path(args.teacher, "model_index.json").is_file():
        raise InputError(f"toy teacher '{args.teacher}' not found (it is committed in models/; regenerate with tools/train_toy_teacher.py)")
    out = Path(args.out)
    recipe = load_recipe(args.recipe, [f"model.teacher={args.teacher}", f"data.videos={out / 'world-train'}",
                                       f"train.run_dir={out / 'distill'}", *args.overrides])
    if args.student and not Path(args.student, "model_index.json").is_file():
        raise InputError(f"--student '{args.student}' is not an exported sfv/diffusers folder (no model_index.json)")
    if out.exists() and any(out.iterdir()):
        if not (out / "world-eval").is_dir():  # never delete a folder this demo did not write
            raise InputError(f"--out '{out}' exists and is not a previous demo output; remove it or choose another folder")
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    skip_distill = bool(args.student) or args.teacher_only
    world = {"preset": args.world, "directions": args.directions}
    print(f"[1/4] toy world {args.world}: {0 if skip_distill else args.train_videos} training videos, {args.eval} held-out "
          "conditionings", flush=True)
    if not skip_distill:
        write_world(out / "world-train", args.train_videos, seed=1, progress=True, **world)
    write_world(out / "world-eval", args.eval, seed=2, samples=args.references if args.world == "v2" else 1, **world)
    t_world = time.perf_counter() - t0

    t1 = time.perf_counter()
    if args.teacher_only:
        print("[2/4] SF-V distillation skipped: scoring the teacher only", flush=True)
        run_dir, student = out, None
    elif args.student:
        print(f"[2/4] SF-V distillation skipped: evaluating {args.student}", flush=True)
        run_dir, student = out, Path(args.student)
    else:
        print(f"[2/4] SF-V distillation of {args.teacher} ({args.recipe}: {recipe.train.total_videos} videos, "
              f"batch {recipe.train.batch_size})", flush=True)
        from sfv.train import run

        run_dir = run(recipe)
        student = run_dir / "export"
    t_distill = time.perf_counter() - t1

    print(f"[3/4] generating {args.eval} held-out videos × {args.seeds} seeds per method", flush=True)
    t2 = time.perf_counter()
    methods = _methods(args, steps, student)
    real, results = (_evaluate_v2 if args.world == "v2" else _evaluate)(args, methods, out)
    t_eval = time.perf_counter() - t2

    print("[4/4] report", flush=True)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()] if (run_dir / "log.jsonl").is_file() else []
    report = {
        "wall_s": round(time.perf_counter() - t0, 1),
        "phases_s": {"world": round(t_world, 1), "distill": round(t_distill, 1), "evaluate": round(t_eval, 1)},
        "teacher": args.teacher, "recipe": args.recipe, "overrides": list(args.overrides), "world": world,
        "distill": {"total_videos": recipe.train.total_videos, "batch_size": recipe.train.batch_size,
                    "g_steps": 0 if args.teacher_only else recipe.train.total_videos // recipe.train.batch_size,
                    "last_log": log[-1] if log else None},
        "eval": {"conditionings": args.eval, "seeds": args.seeds, "frames": real.shape[-4], "size": real.shape[-3],
                 **({"references": args.references} if args.world == "v2" else {})},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")},
        "rows": results,
        "targets": _targets(results),
    }
    write_report(report, out)
    print(summary_table(report))
    print(f"demo: {out / 'report.md'} ({report['wall_s'] / 60:.1f} min)")
    return 0


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--steps '{text}': give comma-separated step counts, e.g. 25,16,8,4,1") from None
    if not steps or min(steps) < 1:
        raise InputError(f"--steps '{text}': step counts must be ≥ 1")
    return steps


def _methods(args, steps: list[int], export: Path) -> list[dict]:
    methods = [{"name": f"teacher-{k}", "model": args.teacher, "steps": k, "cfg": 3.0, "unet_evals": 2 * k} for k in steps]
    # the teacher's one step without CFG is exactly the student before any training (G starts as a copy)
    for k in (steps if args.without_cfg else [1]):
        methods.append({"name": f"teacher-{k}-nocfg", "model": args.teacher, "steps": k, "cfg": 1.0, "unet_evals": k})
    if export is None:
        return methods
    methods.append({"name": "student-1", "model": str(export), "steps": 1, "cfg": 1.0, "unet_evals": 1})
    if args.full_student and Path(args.full_student, "model_index.json").is_file():
        methods.append({"name": "student-full-1", "model": args.full_student, "steps": 1, "cfg": 1.0, "unet_evals": 1})
    return methods


def _evaluate(args, methods: list[dict], out: Path) -> tuple[np.ndarray, list[dict]]:
    """Every method on every held-out conditioning and seed, one video per call through the pipeline path
    (SVDTeacher.generate, bit-exact with diffusers' StableVideoDiffusionPipeline); returns real clips and rows."""
    from PIL import Image
    from tqdm import tqdm

    from sfv.metrics.toy import score
    from sfv.teachers.svd import SVDTeacher
    from sfv.toy.teacher import FPS, NOISE_AUG, load_world

    frames, buckets = load_world(out / "world-eval")
    real = (frames.float().permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)  # [N, F, H, W, 3]
    n, num_frames, size = real.shape[0], real.shape[1], real.shape[2]
    images = [Image.fromarray(real[i, 0]) for i in range(n)]
    models: dict[str, SVDTeacher] = {}
    videos: dict[str, list[np.ndarray]] = {}
    rows = []
    bar = tqdm(total=len(methods) * args.seeds * n, desc="generate", unit="video")
    for m in methods:
        svd = models.setdefault(m["model"], SVDTeacher.from_pretrained(m["model"], torch_dtype=torch.float32))
        scores, times = [], []
        for seed in range(args.seeds):
            gen, secs = [], []
            for i in range(n):
                video, took = _timed_video(svd, images[i], buckets[i], m, size, num_frames, 1000 * seed + i)
                secs.append(took)
                gen.append(video)
                bar.update()
            gen = np.stack(gen)
            videos.setdefault(m["name"], []).append(gen)
            scores.append(score(gen, real))
            times.append(statistics.median(secs))
        parts = {k: statistics.mean(s[k] for s in scores) for k in scores[0] if k not in ("toy_error", "videos")}
        errs = [s["toy_error"] for s in scores]
        rows.append({**m, "toy_error": statistics.mean(errs), "toy_error_std": statistics.stdev(errs) if len(errs) > 1 else 0.0,
                     "toy_error_per_seed": errs, "parts": parts, "seconds_per_video": statistics.median(times),
                     "seconds_per_video_per_seed": times})
    bar.close()
    # the ceiling of any generator in this latent space: the real clips encoded and decoded by the teacher's VAE
    vae = models[methods[0]["model"]]
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


def _evaluate_v2(args, methods: list[dict], out: Path) -> tuple[np.ndarray, list[dict]]:
    """v2: every method on every held-out conditioning and seed, scored with `score_futures` against the
    conditioning's possible futures (and `--references` true draws per conditioning); returns the real clips
    [R, N, F, H, W, 3] and the rows."""
    from PIL import Image
    from tqdm import tqdm

    from sfv.metrics.toy import score_futures
    from sfv.teachers.svd import SVDTeacher
    from sfv.toy.teacher import FPS, NOISE_AUG, load_world
    from sfv.toy.world import read_world, scene_from_json

    frames, buckets = load_world(out / "world-eval")  # conditioning-major: clip i·R + r
    rows_json = read_world(out / "world-eval")[1]
    scenes = [scene_from_json(r) for r in rows_json if r["sample"] == 0]
    n, refs = len(scenes), args.references
    real = (frames.float().permute(0, 1, 3, 4, 2).numpy() * 255).round().astype(np.uint8)
    real = real.reshape(n, refs, *real.shape[1:]).swapaxes(0, 1)  # [R, N, F, H, W, 3]
    buckets = buckets.reshape(n, refs)[:, 0]
    num_frames, size = real.shape[2], real.shape[3]
    images = [Image.fromarray(real[0, i, 0]) for i in range(n)]
    models: dict[str, SVDTeacher] = {}
    videos: dict[str, np.ndarray] = {}
    rows = []
    bar = tqdm(total=len(methods) * args.seeds * n, desc="generate", unit="video")
    for m in methods:
        svd = models.setdefault(m["model"], SVDTeacher.from_pretrained(m["model"], torch_dtype=torch.float32))
        gen, times = np.empty((args.seeds, n, *real.shape[2:]), np.uint8), []
        for seed in range(args.seeds):
            secs = []
            for i in range(n):
                gen[seed, i], took = _timed_video(svd, images[i], buckets[i], m, size, num_frames, 1000 * seed + i)
                secs.append(took)
                bar.update()
            times.append(statistics.median(secs))
        videos[m["name"]] = gen
        s = score_futures(gen, scenes, real)
        rows.append({**m, "toy_error": s["toy_error"], "toy_error_std": 0.0, "parts": _v2_parts(s),
                     "seconds_per_video": statistics.median(times), "seconds_per_video_per_seed": times})
    bar.close()
    vae = models[methods[0]["model"]]  # the ceiling: the real draws through the teacher's VAE
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


V2_COLUMNS = ("precision", "motion", "diversity", "coverage", "position", "shape", "clutter", "speed", "jitter",
              "conditioning", "frechet")


def _v2_parts(s: dict) -> dict:
    return {k: s[k] for k in V2_COLUMNS}


def _targets(rows: list[dict]) -> dict:
    by = {r["name"]: r for r in rows}
    t = {}

    def ratio(a, b):
        return by[a]["toy_error"] / max(by[b]["toy_error"], 1e-9)

    if "real" in by and "coverage" in by["real"].get("parts", {}):  # v2: the branching
        for k in ("teacher-25", "teacher-25-nocfg", "teacher-1-nocfg", "student-1", "student-full-1"):
            if k in by:
                t[f"{k.replace('-', '_')}_coverage_over_real"] = round(by[k]["parts"]["coverage"] / by["real"]["parts"]["coverage"], 3)
                t[f"{k.replace('-', '_')}_precision_over_vae"] = round(by[k]["parts"]["precision"] / max(by["real→VAE"]["parts"]["precision"], 1e-9), 3)
    if "student-1" in by and "teacher-1" in by:
        t["student_better_than_teacher_1"] = by["student-1"]["toy_error"] < by["teacher-1"]["toy_error"]
        t["teacher_1_over_student"] = round(ratio("teacher-1", "student-1"), 3)
    if "student-1" in by and "teacher-1-nocfg" in by:  # what distillation added to its starting point
        t["teacher_1_nocfg_over_student"] = round(ratio("teacher-1-nocfg", "student-1"), 3)
    if "student-1" in by and "teacher-25" in by:
        t["speedup_student_vs_teacher_25_cfg"] = round(by["teacher-25"]["seconds_per_video"] / by["student-1"]["seconds_per_video"], 2)
        t["student_over_teacher_25"] = round(ratio("student-1", "teacher-25"), 3)
    if "student-full-1" in by:
        full = by["student-full-1"]["toy_error"]
        if "teacher-25" in by:
            t["full_within_25pct_of_teacher_25"] = full <= 1.25 * by["teacher-25"]["toy_error"]
            t["full_over_teacher_25"] = round(ratio("student-full-1", "teacher-25"), 3)
        for k in ("teacher-4", "teacher-1"):
            if k in by:
                t[f"{k.replace('-', '_')}_over_full"] = round(ratio(k, "student-full-1"), 3)
    return t


# ----------------------------------------------------------------------------------------------------
# Report files


def summary_table(report: dict) -> str:
    lines = [f"{'method':<16} {'UNet evals':>10} {'toy_error ↓':>16} {'s/video':>9}", "-" * 54]
    for r in report["rows"]:
        lines.append(f"{r['name']:<16} {r['unet_evals']:>10} {r['toy_error']:>9.3f} ± {r['toy_error_std']:<5.3f} {r['seconds_per_video']:>9.3f}")
    for k, v in report["targets"].items():
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    from sfv.metrics.toy import PARTS, SCALES, SCALES_V2

    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    e = report["eval"]
    v2 = report.get("world", {}).get("preset") == "v2"
    cols = V2_COLUMNS if v2 else PARTS
    lines = [
        f"# sfv toy demo — SF-V end to end on the toy world {report.get('world', {}).get('preset', 'v1')}",
        "",
        f"{e['conditionings']} held-out conditionings × {e['seeds']} seeds, {e['frames']} frames {e['size']}×{e['size']}; "
        f"teacher `{report['teacher']}`, recipe `{report['recipe']}` ({report['distill']['g_steps']} G steps at batch "
        f"{report['distill']['batch_size']}). Wall time {report['wall_s'] / 60:.1f} min (world {report['phases_s']['world']:.0f} s, "
        f"distillation {report['phases_s']['distill']:.0f} s, evaluation {report['phases_s']['evaluate']:.0f} s); "
        f"torch {report['environment']['torch']}, {report['environment']['threads']} threads, {report['environment']['date']}.",
        "",
        ("toy_error v2 (lower = better; `sfv.metrics.toy.score_futures`: every sample against its nearest possible "
         f"future, diversity over the {e['seeds']} seeds of each conditioning, {e.get('references')} true draws per "
         "conditioning as the reference)" if v2 else "toy_error (lower = better; mean ± std over seeds)")
        + " and its parts; time = median end-to-end seconds per video "
        "(CLIP + VAE encode + sampling + VAE decode), all measured in this run. `real→VAE`: the real clips encoded and "
        "decoded by the teacher's VAE — the best any generator in this latent space can score.",
        "",
        "| method | UNet evals | toy_error ↓ | " + " | ".join(cols) + " | s/video | speed-up vs teacher-25 |",
        "|---|---|---|" + "---|" * len(cols) + "---|---|",
    ]
    base = next((r["seconds_per_video"] for r in report["rows"] if r["name"] == "teacher-25"), None)
    for r in report["rows"]:
        if r["name"] == "real" and not v2:
            continue
        parts = " | ".join(f"{r['parts'][k]:.3f}" for k in cols)
        up = f"{base / r['seconds_per_video']:.1f}×" if base else "—"
        lines.append(f"| {r['name']} | {r['unet_evals']} | **{r['toy_error']:.3f}** ± {r['toy_error_std']:.3f} | {parts} | "
                     f"{r['seconds_per_video']:.3f} | {up} |")
    if v2:
        lines += ["", "`real`: the true draws scored as samples (their own reference). Part scales in toy_error (mean of the "
                  "precision, motion, diversity, conditioning and frechet groups): "
                  + ", ".join(f"{k} /{v:g}" for k, v in SCALES_V2.items()) + ".", "", "Targets:", ""]
    else:
        lines += ["", "Real clips score 0 (the metric compares each video to the true clip of its conditioning). Part scales in "
                  "toy_error: " + ", ".join(f"{k} /{v:g}" for k, v in SCALES.items()) + ".", "", "Targets:", ""]
    lines += [f"- {k}: {v}" for k, v in report["targets"].items()]
    if v2:
        lines += ["", "Grid: `grid-branching.gif` (+ its frames in `grid-branching-frames.png`): rows = 2 conditionings × "
                  "seeds, columns: " + " | ".join(["real (a true draw)", *BRANCH_GRID]) + ", where present; "
                  "plot: `quality-vs-time.png`.", ""]
    else:
        lines += ["", "Grids: `grid-seed*.gif` (columns: " + " | ".join(["real", *[m for m in GRID_METHODS]]) + ", where present); "
                  "plot: `quality-vs-time.png`.", ""]
    (out / "report.md").write_text("\n".join(lines))
    plot(report, out / "quality-vs-time.png")


def write_grids(out: Path, real: np.ndarray, videos: dict[str, list[np.ndarray]], rows: int = 4, zoom: int = 3) -> None:
    """Animated GIF per seed: rows = conditionings, columns = real | each method of GRID_METHODS present."""
    cols = [m for m in GRID_METHODS if m in videos]
    for seed in range(len(next(iter(videos.values())))):
        clips = [real[:rows], *[videos[m][seed][:rows] for m in cols]]  # each [R, F, H, W, 3]
        save_grid_gif(out / f"grid-seed{seed}.gif", clips, zoom)


def save_grid_gif(path: Path, clips: list[np.ndarray], zoom: int = 3, duration_ms: int = 250) -> None:
    """Animated GIF of videos side by side: one column per entry of `clips`, each [R, F, H, W, 3] uint8 (R rows)."""
    from PIL import Image

    pad = 2
    r_, f_, h, w = clips[0].shape[:4]
    grid = np.full((f_, r_ * (h + pad) + pad, len(clips) * (w + pad) + pad, 3), 255, np.uint8)
    for c, clip in enumerate(clips):
        for r in range(r_):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y : y + h, x : x + w] = clip[r]
    images = [Image.fromarray(g).resize((g.shape[1] * zoom, g.shape[0] * zoom), Image.NEAREST) for g in grid]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, optimize=False, disposal=1)


def write_branch_grid(out: Path, real: np.ndarray, videos: dict[str, np.ndarray], conditionings: int = 2,
                      zoom: int = 3) -> None:
    """v2: one GIF (and a PNG film strip of its frames) whose rows are conditionings × seeds and whose columns
    are real (a true draw) | each method of BRANCH_GRID present: the same conditioning down S rows shows whether
    a method takes different futures for different seeds, and whether each is sharp."""
    from PIL import Image

    cols = [m for m in BRANCH_GRID if m in videos]
    seeds = min(len(real), *(len(videos[m]) for m in cols))
    rows = [[real[s, i], *[videos[m][s, i] for m in cols]] for i in range(conditionings) for s in range(seeds)]
    pad = 2
    f_, h, w = rows[0][0].shape[:3]
    grid = np.full((f_, len(rows) * (h + pad) + pad, (len(cols) + 1) * (w + pad) + pad, 3), 255, np.uint8)
    for r, clips in enumerate(rows):
        for c, clip in enumerate(clips):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y : y + h, x : x + w] = clip
    images = [Image.fromarray(g).resize((g.shape[1] * zoom, g.shape[0] * zoom), Image.NEAREST) for g in grid]
    images[0].save(out / "grid-branching.gif", save_all=True, append_images=images[1:], duration=250, loop=0,
                   optimize=False, disposal=1)
    strip = np.concatenate([np.pad(g, ((0, 0), (0, 6), (0, 0)), constant_values=128) for g in grid], axis=1)  # frames 0…F−1
    Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(out / "grid-branching-frames.png")


def plot(report: dict, path: Path) -> None:
    """Quality (toy_error) against seconds per video, log-x, one labelled point per method (Pillow)."""
    from PIL import Image, ImageDraw

    rows = [r for r in report["rows"] if r["name"] != "real" and r["seconds_per_video"] > 0]
    W, H, m = 640, 420, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xs = np.log10([r["seconds_per_video"] for r in rows])
    ys = np.array([r["toy_error"] for r in rows])
    x0, x1 = xs.min() - 0.2, xs.max() + 0.2
    y1 = max(ys.max() * 1.15, 1e-3)

    def px(x, y):
        return m + (x - x0) / (x1 - x0) * (W - 2 * m), H - m - y / y1 * (H - 2 * m)

    d.line([(m, H - m), (W - m, H - m)], fill="black")
    d.line([(m, m), (m, H - m)], fill="black")
    for e in range(int(np.floor(x0)), int(np.ceil(x1)) + 1):
        for k in (1, 2, 5):
            v = np.log10(k * 10.0**e)
            if x0 <= v <= x1:
                X, _ = px(v, 0)
                d.line([(X, H - m), (X, H - m + 4)], fill="black")
                d.text((X - 10, H - m + 6), f"{k * 10.0**e:g}", fill="black")
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        _, Y = px(x0, frac * y1)
        d.text((8, Y - 6), f"{frac * y1:.2f}", fill="black")
    d.text((W / 2 - 80, H - 22), "seconds per video (end to end, log)", fill="black")
    d.text((m, 12), "toy_error (lower = better) vs time, " + report["environment"]["date"], fill="black")  # ASCII: PIL's default font
    for r, x, y in zip(rows, xs, ys):
        X, Y = px(x, y)
        colour = (200, 60, 40) if r["name"].startswith("student") else (40, 90, 200)
        d.ellipse([X - 5, Y - 5, X + 5, Y + 5], fill=colour)
        d.text((X + 7, Y - 7), r["name"].replace("→", "->"), fill=colour)
    img.save(path)


def _timed_video(svd, image, bucket, m: dict, size: int, num_frames: int, seed: int) -> tuple[np.ndarray, float]:
    """One video of method `m` (steps, CFG) from frame 0 and its motion bucket: uint8 [F, H, W, 3], end-to-end seconds."""
    from sfv.toy.teacher import FPS, NOISE_AUG

    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    video = svd.generate(image, size, size, num_frames, fps=FPS, motion_bucket_id=int(bucket), noise_aug_strength=NOISE_AUG,
                         generator=g, num_inference_steps=m["steps"], max_guidance_scale=m["cfg"], output_type="np")[0]
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8), time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
