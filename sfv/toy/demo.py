"""The README's main command: SF-V end to end in the toy world, on a CPU.

    python -m sfv.toy.demo            # = make demo: world v2 -> SF-V distillation -> export -> report

1. writes a toy world (real mp4 files + metadata; v2 by default: several possible futures per conditioning)
   for training and a held-out set of conditionings;
2. distils the world's shipped toy teacher (v2: models/toy-svd-v2) into a one-step student with the SF-V trainer
   (v2: recipes/toy.yaml, unchanged trainer: `sfv distill` does the same) and exports it;
3. generates every held-out conditioning with the teacher at 25/8/4/2/1 steps (CFG as SVD: per-frame scale
   1 → 3, a doubled UNet batch), with the new student and with the committed students (the full-length SF-V
   student and the reconstruction-only one, if present) at 1 step, over several seeds, through the
   stock-equivalent pipelines, timing each video end to end;
4. scores them with the toy metric (`sfv.toy.metric`; v2: `score_futures`) and writes report.json, report.md,
   GIF grids (v2: real | teacher-25 | teacher-4 | teacher-1 without CFG | students, 2 conditionings × seeds),
   D's held-out judgement against videos seen (d-heldout.png) and quality-vs-time.png (`sfv.toy.report`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from sfv.console import parse_steps
from sfv.errors import InputError
from sfv.toy.evaluate import evaluate_v1, evaluate_v2
from sfv.toy.report import plot_heldout, summary_table, write_report

# Each world's own defaults: its teacher, recipe, teacher step counts, training videos and committed students
# (full-length SF-V; reconstruction only, the ablation's proof). A committed student that is absent is skipped.
WORLD_DEFAULTS = {
    "v1": {"teacher": "models/toy-svd", "recipe": "recipes/toy_v1.yaml", "steps": "25,16,8,4,1", "train_videos": 1000,
           "full_student": "models/toy-sfv-full", "paper_student": "", "recon_student": "", "decoder": ""},
    "v2": {"teacher": "models/toy-svd-v2", "recipe": "recipes/toy.yaml", "steps": "25,8,4", "train_videos": 500,
           "full_student": "models/toy-sfv-v2", "paper_student": "models/toy-sfv-paper-v2", "recon_student": "models/toy-recon-v2",
           "decoder": "models/toy-decoder-v2"},
}


def _g_steps(student: Path, recipe) -> int:
    """The G steps the scored student trained for: its export's record (sfv.json), else what the recipe implies (each
    G step follows `discriminator.steps_per_g` D steps, each on its own batch; none until `warmup_videos` are read)."""
    meta = student / "sfv.json"
    if meta.is_file() and "g_steps" in (record := json.loads(meta.read_text())):
        return int(record["g_steps"])
    per_iteration = recipe.train.batch_size * recipe.discriminator.steps_per_g
    iterations = recipe.train.total_videos // per_iteration
    return iterations - min(recipe.discriminator.warmup_videos // per_iteration, iterations)


def _default_help(key: str) -> str:
    return "default: the world's own, " + ", ".join(f"{w}: {d[key] or 'none'}" for w, d in WORLD_DEFAULTS.items())


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="python -m sfv.toy.demo", description="SF-V end to end in the toy world (the README's main command)")
    p.add_argument("--out", help="output folder, replaced on a rerun (default: runs/demo; runs/demo-student with --student, "
                   "runs/demo-teacher with --teacher-only, runs/demo-v1 for --world v1: a sub-mode never replaces the "
                   "main demo's report)")
    p.add_argument("--teacher", help="toy teacher folder (" + _default_help("teacher") + ")")
    p.add_argument("--recipe", help="distillation recipe (" + _default_help("recipe") + ")")
    p.add_argument("--full-student", help="a committed fully-distilled student to report too ('' = none; " + _default_help("full_student") + ")")
    p.add_argument("--paper-student", help="a committed student of the paper's SF-V recipe, reported beside the default "
                   "('' = none; " + _default_help("paper_student") + ")")
    p.add_argument("--recon-student", help="a committed reconstruction-only student to report too ('' = none; " + _default_help("recon_student") + ")")
    p.add_argument("--decoder", help="a fast decoder folder (sfv distill-decoder): the committed full student is also "
                   "reported decoded with it ('' = none; " + _default_help("decoder") + ")")
    p.add_argument("--student", help="evaluate this exported student folder instead of distilling one (skips the training world)")
    p.add_argument("--train-videos", type=int, help="toy-world videos written for distillation (" + _default_help("train_videos") + ")")
    p.add_argument("--no-latent-cache", action="store_true", help="train on the world's video files, each clip decoded and "
                   "encoded in the loop, instead of encoding them once into a latent cache (sfv cache) first")
    p.add_argument("--eval", type=int, default=12, help="held-out conditionings (frame 0 + motion bucket)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", help="teacher step counts, CFG as SVD (" + _default_help("steps") + ")")
    p.add_argument("--world", default="v2", help="toy-world preset: v1 (one future per conditioning) or v2 (the bucket "
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


def default_out(args) -> str:
    """Each mode its own folder, so that scoring a student or the teacher alone never deletes `make demo`'s report."""
    mode = "-student" if args.student else "-teacher" if args.teacher_only else ""
    return "runs/demo" + mode + ("-v1" if args.world == "v1" else "")


def demo(args) -> int:
    from sfv.config import load_recipe
    from sfv.toy.world import check_world, write_world

    t0 = time.perf_counter()
    check_world(args.world, args.directions)
    for key, value in WORLD_DEFAULTS[args.world].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = default_out(args)
    steps = parse_steps(args.steps)
    if args.world == "v2" and (args.seeds < 2 or args.references < 2):
        raise InputError(f"--seeds {args.seeds} / --references {args.references}: v2 scores diversity over ≥ 2 samples (4 or more advised)")
    if not Path(args.teacher, "model_index.json").is_file():
        raise InputError(f"toy teacher '{args.teacher}' not found (it is committed in models/; regenerate with tools/train_toy_teacher.py)")
    out = Path(args.out)
    held_out = [f"data.eval_videos={out / 'world-eval'}"] if args.world == "v2" else []  # D's held-out pairs
    recipe = load_recipe(args.recipe, [f"model.teacher={args.teacher}", f"data.videos={out / 'world-train'}",
                                       f"train.run_dir={out / 'distill'}", *held_out, *args.overrides])
    if args.decoder and not Path(args.decoder, "config.json").is_file():  # before any minute of work
        raise InputError(f"--decoder '{args.decoder}' is not a fast decoder folder (no config.json); train one with "
                         "`sfv distill-decoder`, or pass --decoder '' for none")
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
        if not args.no_latent_cache:
            recipe.data.cache = str(_latent_cache(args.teacher, recipe, out / "cache"))
        print(f"[2/4] SF-V distillation of {args.teacher} ({args.recipe}: {recipe.train.total_videos} videos, "
              f"batch {recipe.train.batch_size}, {'video files' if args.no_latent_cache else 'latent cache'})", flush=True)
        from sfv.train import run

        run_dir = run(recipe)
        student = run_dir / "export"
    t_distill = time.perf_counter() - t1

    print(f"[3/4] generating {args.eval} held-out videos × {args.seeds} seeds per method", flush=True)
    t2 = time.perf_counter()
    methods = _methods(args, steps, student)
    real, results = (evaluate_v2 if args.world == "v2" else evaluate_v1)(args, methods, out)
    t_eval = time.perf_counter() - t2

    print("[4/4] report", flush=True)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()] if (run_dir / "log.jsonl").is_file() else []
    report = {
        "wall_s": round(time.perf_counter() - t0, 1),
        "phases_s": {"world": round(t_world, 1), "distill": round(t_distill, 1), "evaluate": round(t_eval, 1)},
        "teacher": args.teacher, "recipe": args.recipe, "overrides": list(args.overrides), "world": world,
        "distill": {"total_videos": recipe.train.total_videos, "batch_size": recipe.train.batch_size,
                    "data": "latent cache" if recipe.data.cache else "video files",
                    "g_steps": 0 if student is None else _g_steps(student, recipe),
                    "last_log": log[-1] if log else None},
        "eval": {"conditionings": args.eval, "seeds": args.seeds, "frames": real.shape[-4], "size": real.shape[-3],
                 **({"references": args.references} if args.world == "v2" else {})},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")},
        "rows": results,
    }
    curves = {"this run": run_dir / "heldout.jsonl"}  # D's held-out judgement against videos seen
    if args.full_student:
        curves["full run (committed log)"] = Path(str(Path(args.full_student)) + ".heldout.jsonl")
    report["targets"] = _targets(results, {"this run" if k == "this run" else "the committed full run": v for k, v in curves.items()})
    report["d_heldout_plot"] = plot_heldout(curves, out / "d-heldout.png")
    write_report(report, out)
    print(summary_table(report))
    print(f"demo: {out / 'report.md'} ({report['wall_s'] / 60:.1f} min)")
    return 0


def _latent_cache(teacher_dir: str, recipe, out: Path) -> Path:
    """The training world encoded once by the teacher's VAE and image encoder (what `sfv cache` writes), so that the
    loop reads latents instead of decoding and encoding every clip again at every epoch."""
    from sfv.cache import write_cache
    from sfv.data import ClipSpec, VideoFolder
    from sfv.teachers import load_teacher

    d = recipe.data
    dataset = VideoFolder(d.videos, ClipSpec.of(recipe), seed=recipe.train.seed, metadata=d.metadata)
    print(f"[2/4] latent cache of {len(dataset)} training videos -> {out}", flush=True)
    write_cache(load_teacher(teacher_dir), dataset, out, recipe.svd.noise_aug_strength, seed=recipe.train.seed)
    return out


def _methods(args, steps: list[int], export: Path) -> list[dict]:
    methods = [{"name": f"teacher-{k}", "model": args.teacher, "steps": k, "cfg": 3.0, "unet_evals": 2 * k} for k in steps]
    # the teacher's one step without CFG is exactly the student before any training (G starts as a copy)
    for k in (steps if args.without_cfg else [1]):
        methods.append({"name": f"teacher-{k}-nocfg", "model": args.teacher, "steps": k, "cfg": 1.0, "unet_evals": k})
    if export is None:
        return methods
    methods.append({"name": "student-1", "model": str(export), "steps": 1, "cfg": 1.0, "unet_evals": 1})
    for name, folder, k in (("student-full-1", args.full_student, 1), ("student-full-2", args.full_student, 2),
                            ("sfv-paper-full-1", args.paper_student, 1), ("recon-full-1", args.recon_student, 1)):
        if folder and Path(folder, "model_index.json").is_file() and (k == 1 or args.world == "v2"):
            methods.append({"name": name, "model": folder, "steps": k, "cfg": 1.0, "unet_evals": k, "student_levels": True})
    if args.decoder and any(m["name"] == "student-full-1" for m in methods):
        methods.append({"name": "student-full-1-tiny-decoder", "model": args.full_student, "decoder": args.decoder,
                        "steps": 1, "cfg": 1.0, "unet_evals": 1})
    return methods


def _target(key: str, target: str, figure: str, ok: bool | None, expected: str | None = None, value: float | None = None) -> dict:
    """One row of the report's targets table: met / missed (or an expected miss, with why) / info (ok None); `value`:
    the row's deciding number (a ratio or a score) for tools and tests."""
    status = "info" if ok is None else "met" if ok else ("expected" if expected else "missed")
    return {"key": key, "target": target, "figure": figure, "status": status, "ok": ok, "value": value,
            "note": expected if status == "expected" else ""}


def _lowest_pair_win(path: Path) -> float | None:
    """D's lowest held-out pair-win over a run's judgements after the first (where D starts at chance)."""
    if not Path(path).is_file():
        return None
    wins = [json.loads(line)["heldout/pair_win"] for line in Path(path).read_text().splitlines() if line.strip()]
    return min(wins[1:] or wins) if wins else None


def _targets(rows: list[dict], heldout: dict[str, Path] | None = None) -> list[dict]:
    """The targets, each met / missed / expected / info with its figure (report.md's table)."""
    by = {r["name"]: r for r in rows}
    t: list[dict] = []

    def err(name):
        return by[name]["toy_error"]

    def part(name, key):
        return by[name]["parts"][key]

    v2 = "real" in by and "coverage" in by["real"].get("parts", {})
    best = "student-full-1" if "student-full-1" in by else "student-1" if "student-1" in by else None
    if v2 and best:
        label = "the committed one-step student" if best == "student-full-1" else "this run's one-step student"
        if "teacher-4" in by:
            t.append(_target("one_step_vs_teacher_4", f"{label}: toy_error ≤ teacher-4's",
                             f"{err(best):.3f} vs {err('teacher-4'):.3f}", err(best) <= err("teacher-4")))
            t.append(_target("energy_vs_teacher_4", f"{label}: energy score ≤ teacher-4's (diverse and committed)",
                             f"{part(best, 'energy'):.4f} vs {part('teacher-4', 'energy'):.4f}",
                             part(best, "energy") <= part("teacher-4", "energy")))
        if "teacher-8" in by:
            t.append(_target("one_step_vs_teacher_8", f"{label}: toy_error ≤ teacher-8's (the aim)",
                             f"{err(best):.3f} vs {err('teacher-8'):.3f}", err(best) <= err("teacher-8")))
        if "teacher-25" in by:
            cov = part(best, "coverage") / max(part("teacher-25", "coverage"), 1e-9)
            t.append(_target("coverage_vs_teacher_25", f"{label}: coverage ≥ 0.9× teacher-25's", f"{cov:.2f}×", cov >= 0.9))
            prec = part(best, "precision") / max(part("teacher-25", "precision"), 1e-9)
            t.append(_target("precision_vs_teacher_25", f"{label}: precision within 15 % of teacher-25's",
                             f"{part(best, 'precision'):.3f} vs {part('teacher-25', 'precision'):.3f} ({prec:.2f}×)", prec <= 1.15))
            if "student-full-2" in by:
                two = err("student-full-2") / err("teacher-25")
                t.append(_target("two_steps_vs_teacher_25", "the committed student at 2 steps: toy_error within 10 % of "
                                 "teacher-25's", f"{err('student-full-2'):.3f} vs {err('teacher-25'):.3f} ({two:.2f}×)", two <= 1.10))
    for run, path in (heldout or {}).items():
        low = _lowest_pair_win(path)
        if low is not None:
            t.append(_target(f"d_pair_win_{run}", f"D's held-out pair-win ≥ 0.95 at every judgement ({run})",
                             f"lowest {low:.3f}", low >= 0.95))
    paper = "sfv-paper-full-1" if "sfv-paper-full-1" in by else "student-full-1" if "student-full-1" in by else None
    if v2 and paper and "recon-full-1" in by:  # the proof: the adversarial term removes the blur
        r = part("recon-full-1", "precision") / max(part(paper, "precision"), 1e-9)
        t.append(_target("recon_precision_vs_sfv", "reconstruction only: precision ≥ 1.5× worse than SF-V's (the adversarial "
                         "term removes the blur)", f"{part('recon-full-1', 'precision'):.3f} vs {part(paper, 'precision'):.3f} "
                         f"({r:.2f}×)", r >= 1.5))
    one = "teacher-1" if "teacher-1" in by else "teacher-1-nocfg"  # v2 measures one step without CFG only: G's start
    if "student-1" in by and one in by:
        r = err(one) / max(err("student-1"), 1e-9)
        what = "teacher-1 (CFG)" if one == "teacher-1" else "teacher-1 without CFG (the student before training)"
        t.append(_target("this_run_vs_teacher_1", f"this run's student: toy_error better than {what}",
                         f"{err('student-1'):.3f} vs {err(one):.3f} ({r:.1f}× better)", r > 1))
    if "student-1" in by and "teacher-25" in by:
        up = by["teacher-25"]["seconds_per_video"] / by["student-1"]["seconds_per_video"]
        t.append(_target("speedup_vs_teacher_25", "this run's student: speed-up end to end over teacher-25 with CFG",
                         f"{up:.1f}× ({by['student-1']['seconds_per_video']:.3f} s vs {by['teacher-25']['seconds_per_video']:.3f} s "
                         "per video; varies ±20 % with the machine's load)", None))
    if "student-full-1-tiny-decoder" in by and "student-full-1" in by:  # the fast decoder: within 5 % of the stock decoder
        r = err("student-full-1-tiny-decoder") / err("student-full-1")
        speed = by["student-full-1"]["seconds_per_video"] / max(by["student-full-1-tiny-decoder"]["seconds_per_video"], 1e-9)
        t.append(_target("tiny_decoder_vs_vae", "the committed student with the fast decoder: toy_error within 5 % of the "
                         "stock decoder's", f"{r:.3f}× the stock decoder's, {speed:.2f}× faster end to end", abs(r - 1) <= 0.05,
                         value=r))
    return t


if __name__ == "__main__":
    sys.exit(main())
