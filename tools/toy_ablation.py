"""The ablation on the v2 toy world (the analogue of SF-V's Tab. 3, and of the options beyond it): every row distilled
with the unchanged trainer from the same world, the same recipe and the same number of G steps, over several training
seeds, then scored with metric v2 on the demo's held-out conditionings, beside the teacher measured in the same run.

    python -m sfv.toy.world --preset v2 --count 1000 --seed 1 --out runs/ablation/world-train
    python tools/toy_ablation.py --world runs/ablation/world-train --out runs/ablation --seeds 0,1,2 train.total_videos=2000

Every row trains from a latent cache of the world written once in --out (`sfv cache`'s format): cache/, and for the
rows that read teacher pairs cache-pairs/, the same clips and conditioning with --pairs pairs per clip (the teacher's
--pair-steps-step sample with CFG 3 from a seeded noise). Rows (recipe overrides on top of --recipe, SF-V as the paper gives it):
    sfv        both terms (SF-V)
    recon      reconstruction only (generator.adv_weight=0)
    adv        adversarial only (generator.huber_weight=0)
    spatial    spatial heads only (discriminator.heads=spatial)
    temporal   temporal heads only (discriminator.heads=temporal)
    paper-d    SF-V with D's σ′ and fakes as in the paper (discriminator.p_mean=-1, fake_sigma=levels), against
               the toy recipe's P_mean −3 and fakes from σ_max
    lambda-0.03  SF-V with λ = 0.03
    rel        relativistic pairing + R1 + R2 (discriminator.loss=relativistic, r2_gamma = r1_gamma)
    gated      the real clip reconstructed only from G's lowest level (generator.rec_max_sigma=3)
    pair       gated, and at σ_max the teacher's sample from the same noise as the target (generator.rec_target=teacher)
    dmd        distribution matching alone (dmd.weight, no adversarial or reconstruction term)
    dmd-gan    distribution matching + the adversarial term (DMD2's pair), no reconstruction
    gated-rel  gated and relativistic together (a combination)
    gated-d2   gated, with two D steps (two batches) per G step: the same G steps, twice the D steps (a stronger D)
    gated-d2-cos  gated-d2, every learning rate decayed to 0 over the run's second half (train.lr_decay=cosine,
               lr_decay_from=0.5)
    gated-d2-warm  gated-d2 after a D-only warm-up of a tenth of the run (discriminator.warmup_videos), the run
               longer by as much, so G takes the same number of steps
    gated-d2-warm-cos  the two rows above together
    gated-d2-labels  gated-d2, D's projection heads also embedding the motion bucket, fps and noise augmentation
               (discriminator.labels=true)
    gated-ema  gated, with G's EMA decay 0.99 per G step (a ~100-step average) against the paper's 0.95 (~20 steps):
               training is unchanged (the raw G's steps are the gated row's), only the exported average differs
    gated-dwide  gated, with D's heads 128 channels wide (the package default) against the toy recipes' 32
    lora       gated, with G a LoRA adapter (rank 16 on the linear layers) over the frozen teacher UNet
    best       the combination chosen from the rows above (recipes/toy.yaml)

Finished runs are kept and skipped on a rerun (a run folder with an export), and an interrupted one continues from its
newest checkpoint, so the tool can be stopped and started again. Writes ablation.json and ablation.md in --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# DMD on the toy: weight 10 brings its pull at x̂0 (grad/g_dmd, ≈ 0.006 per unit weight here) to the adversarial
# term's (≈ 0.06); two fake-score updates per G step (DMD2 uses 5) keep a DMD row at ~3× an SF-V step on the CPU
DMD = ["dmd.weight=10.0", "dmd.fake_lr=1.0e-4", "dmd.fake_steps_per_g=2", "dmd.guidance=3.0"]
ROWS = {
    "sfv": [],
    "recon": ["generator.adv_weight=0"],
    "adv": ["generator.huber_weight=0"],
    "spatial": ["discriminator.heads=spatial"],
    "temporal": ["discriminator.heads=temporal"],
    "paper-d": ["discriminator.p_mean=-1", "discriminator.fake_sigma=levels"],
    "lambda-0.03": ["generator.huber_weight=0.03"],  # the reconstruction weight between SF-V's 0.1 and adversarial only
    "rel": ["discriminator.loss=relativistic"],  # R2 at R1's γ (the default with this loss)
    "gated": ["generator.rec_max_sigma=3.0"],
    "pair": ["generator.rec_max_sigma=3.0", "generator.rec_target=teacher"],
    "dmd": [*DMD, "generator.adv_weight=0", "generator.huber_weight=0"],
    "dmd-gan": [*DMD, "generator.huber_weight=0"],
    "gated-rel": ["generator.rec_max_sigma=3.0", "discriminator.loss=relativistic"],  # a candidate combination
    "gated-d2": ["generator.rec_max_sigma=3.0", "discriminator.steps_per_g=2"],
    "gated-d2-cos": ["generator.rec_max_sigma=3.0", "discriminator.steps_per_g=2", "train.lr_decay=cosine", "train.lr_decay_from=0.5"],
    "gated-d2-warm": ["generator.rec_max_sigma=3.0", "discriminator.steps_per_g=2"],  # + the warm-up (WARM_ROWS)
    "gated-d2-warm-cos": ["generator.rec_max_sigma=3.0", "discriminator.steps_per_g=2", "train.lr_decay=cosine", "train.lr_decay_from=0.5"],
    "gated-d2-labels": ["generator.rec_max_sigma=3.0", "discriminator.steps_per_g=2", "discriminator.labels=true"],
    "gated-ema": ["generator.rec_max_sigma=3.0", "generator.ema=0.99"],
    "gated-dwide": ["generator.rec_max_sigma=3.0", "discriminator.head_channels=128"],
    "lora": ["generator.rec_max_sigma=3.0", "model.lora={rank: 16, alpha: 16, targets: linear}"],  # gated, G a LoRA
    "best": [],  # filled from recipes/toy.yaml by --best-recipe (see main)
}
LABELS = {"sfv": "SF-V (both terms)", "recon": "reconstruction only", "adv": "adversarial only",
          "spatial": "spatial heads only", "temporal": "temporal heads only",
          "paper-d": "SF-V with the paper's D noise (P_mean −1, fakes at G's levels)", "lambda-0.03": "SF-V, λ = 0.03",
          "rel": "relativistic + R1 + R2", "gated": "gated reconstruction (lowest level only)",
          "pair": "gated + teacher-pair regression at σ_max", "dmd": "DMD alone", "dmd-gan": "DMD + GAN",
          "gated-rel": "gated + relativistic + R1 + R2", "gated-d2": "gated, 2 D steps per G step",
          "gated-d2-cos": "gated, 2 D steps per G step, cosine decay over the second half",
          "gated-d2-warm": "gated, 2 D steps per G step, after a D-only warm-up",
          "gated-d2-warm-cos": "gated, 2 D steps per G step, D-only warm-up and cosine decay",
          "gated-d2-labels": "gated, 2 D steps per G step, D's heads see the motion bucket",
          "gated-ema": "gated, G's EMA decay 0.99",
          "gated-dwide": "gated, D's heads 128 wide", "lora": "gated, G a LoRA (rank 16, linear layers; recipes/toy_lora.yaml)",
          "best": "the new default (recipes/toy.yaml)"}
WARM_ROWS = {"gated-d2-warm", "gated-d2-warm-cos"}  # D alone for the first tenth of the budget, the budget longer by as much
PAIR_ROWS = {r for r, o in ROWS.items() if "generator.rec_target=teacher" in o}
KEYS = ("toy_error", "precision", "motion", "diversity", "coverage", "frechet", "energy", "kl", "edge")


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="python tools/toy_ablation.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--world", required=True, help="a v2 toy-world folder to distil on (python -m sfv.toy.world --preset v2)")
    p.add_argument("--out", required=True, help="output folder (runs are kept: a rerun skips finished ones)")
    p.add_argument("--recipe", default="recipes/toy_sfv_paper.yaml", help="every row's base (default: SF-V as the paper gives it)")
    p.add_argument("--best-recipe", default="recipes/toy.yaml", help="the `best` row: this recipe's options (default: the new default)")
    p.add_argument("--pairs", type=int, default=1, help="teacher pairs per clip in the cache (rows that read them)")
    p.add_argument("--pair-steps", type=int, default=25, help="teacher steps of each pair (CFG 3)")
    p.add_argument("--student-steps", default="", help="also score the `best` row's students at these step counts (e.g. 2,3)")
    p.add_argument("--teacher", default="models/toy-svd-v2")
    p.add_argument("--rows", default="sfv,adv,rel,gated,pair,dmd,dmd-gan,best", help="comma-separated: " + ", ".join(ROWS))
    p.add_argument("--seeds", default="0,1,2", help="training seeds (train.seed)")
    p.add_argument("--teacher-steps", default="25,8,4,2,1", help="teacher rows scored in the same run ('' = none)")
    p.add_argument("--eval", type=int, default=12, help="held-out conditionings")
    p.add_argument("--samples", type=int, default=4, help="sampling seeds per conditioning (diversity needs ≥ 2)")
    p.add_argument("--score-only", action="store_true", help="train nothing: score the finished runs among rows × seeds")
    p.add_argument("overrides", nargs="*", help="recipe overrides for every row, section.key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sfv.console import ArgParser, run_command

    return run_command(build_parser(ArgParser), ablation, argv)


def ablation(args) -> int:
    from sfv.config import load_recipe
    from sfv.errors import InputError
    from sfv.toy.evaluate import evaluate_v2
    from sfv.toy.world import read_world, write_world

    rows = [r for r in args.rows.split(",") if r]
    if not rows or any(r not in ROWS for r in rows):
        raise InputError(f"--rows '{args.rows}': choose from {', '.join(ROWS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
        steps = [int(s) for s in args.teacher_steps.split(",") if s]
        student_steps = [int(s) for s in args.student_steps.split(",") if s]
    except ValueError:
        raise InputError(f"--seeds '{args.seeds}' / --teacher-steps '{args.teacher_steps}' / --student-steps "
                         f"'{args.student_steps}': give comma-separated integers") from None
    if not Path(args.world, "scenes.jsonl").is_file() or read_world(args.world)[0].get("preset") != "v2":
        raise InputError(f"--world '{args.world}' is not a v2 toy world (write one with python -m sfv.toy.world --preset v2)")
    if args.samples < 2:
        raise InputError(f"--samples {args.samples}: diversity is scored over ≥ 2 samples per conditioning")
    if args.pairs < 1 or args.pair_steps < 1:
        raise InputError(f"--pairs {args.pairs} / --pair-steps {args.pair_steps}: each must be at least 1")
    out = Path(args.out)
    eval_dir = out / "eval"  # the demo's held-out conditionings: D's held-out pairs in training, the scoring after
    # The training world encoded once: cache/ for the rows that read clips only, cache-pairs/ (the same clips and
    # conditioning, drawn alike, plus the teacher pairs) for the rows that read pairs too.
    caches = {False: out / "cache", True: out / "cache-pairs"}
    common = [f"model.teacher={args.teacher}", f"data.videos={args.world}", f"data.eval_videos={eval_dir / 'world-eval'}"]

    def recipe_of(r, s):
        base, extra = (args.best_recipe, []) if r == "best" else (args.recipe, ROWS[r])
        recipe = load_recipe(base, [*common, f"train.run_dir={out / f'{r}-s{s}'}", f"train.seed={s}", *args.overrides, *extra])
        recipe.data.cache = str(caches[recipe.generator.rec_target == "teacher"])
        # each D step reads its own batch: k D steps per G step see k× the videos for the same G steps (the rows' budget)
        recipe.train.total_videos *= recipe.discriminator.steps_per_g
        if r in WARM_ROWS:  # G's steps are the other rows' (D-only iterations read videos too)
            step = recipe.train.batch_size * recipe.discriminator.steps_per_g
            recipe.discriminator.warmup_videos = recipe.train.total_videos // 10 // step * step
            recipe.train.total_videos += recipe.discriminator.warmup_videos
        return recipe

    recipes = {(r, s): recipe_of(r, s) for r in rows for s in seeds}  # every recipe is checked before anything is written
    if not (eval_dir / "world-eval").is_dir():
        write_world(eval_dir / "world-eval", args.eval, seed=2, samples=4, preset="v2")
    for pairs, cache in caches.items():
        if not (cache / "index.json").is_file() and any(r.data.cache == str(cache) for r in recipes.values()):
            _write_cache(args.teacher, next(iter(recipes.values())), cache, args.pairs if pairs else 0, args.pair_steps)

    from sfv.train import run

    trained = {}
    for (r, s), recipe in recipes.items():
        run_dir = Path(recipe.train.run_dir)
        if args.score_only and not (run_dir / "export" / "model_index.json").is_file():
            print(f"[ablation] {r} seed {s}: no finished run in {run_dir}, left out", flush=True)
            continue
        if not (run_dir / "export" / "model_index.json").is_file():
            # an interrupted run continues from its newest checkpoint; one that left no checkpoint starts again
            latest = sorted((run_dir / "checkpoints").glob("videos-*")) if (run_dir / "checkpoints").is_dir() else []
            print(f"[ablation] {r} seed {s}: sfv distill → {run_dir}" + (" (resumed)" if latest else ""), flush=True)
            t = time.perf_counter()
            run(recipe, resume="latest" if latest else None, overwrite=not latest and run_dir.is_dir())
            (run_dir / "wall_s.txt").write_text(f"{time.perf_counter() - t:.1f}\n")
        trained[(r, s)] = run_dir

    methods = [{"name": f"teacher-{k}", "model": args.teacher, "steps": k, "cfg": 3.0, "unet_evals": 2 * k} for k in steps]
    methods += [{"name": f"{r}-s{s}", "model": str(d / "export"), "steps": 1, "cfg": 1.0, "unet_evals": 1} for (r, s), d in trained.items()]
    methods += [{"name": f"{r}-{k}step-s{s}", "model": str(d / "export"), "steps": k, "cfg": 1.0, "unet_evals": k, "student_levels": True}
                for k in student_steps for (r, s), d in trained.items() if r == "best"]
    print(f"[ablation] scoring {len(methods)} generators on {args.eval} conditionings × {args.samples} samples", flush=True)
    _, scored = evaluate_v2(argparse.Namespace(seeds=args.samples, references=4), methods, eval_dir)
    by_name = {m["name"]: m for m in scored}

    table = []
    for k in steps:
        m = by_name[f"teacher-{k}"]
        table.append({"row": f"teacher-{k} (CFG)", "runs": 1, **{key: [_value(m, key)] for key in KEYS}})
    for r, suffix in [(r, "") for r in rows] + [("best", f"-{k}step") for k in student_steps if "best" in rows]:
        done = [s for s in seeds if (r, s) in trained]
        if not done:
            continue
        runs = [by_name[f"{r}{suffix}-s{s}"] for s in done]
        heldout = [_last_heldout(trained[(r, s)]) for s in done]
        table.append({"row": LABELS[r] + (f", {suffix[1:].replace('step', ' steps')}" if suffix else ""), "runs": len(done), "seeds": done, **{key: [_value(m, key) for m in runs] for key in KEYS},
                      "pair_win": [h.get("heldout/pair_win") for h in heldout],
                      "pair_win_min": [_heldout_min(trained[(r, s)]) for s in done],
                      "video_accuracy": [h.get("heldout/video_accuracy") for h in heldout],
                      # with the reconstruction weight at 0 the ratio divides by a rounding residue: not shown
                      "g_adv_over_rec": [None if recipes[(r, s)].generator.huber_weight == 0 else
                                         _median_ratio(trained[(r, s)]) for s in done]})
    for name in ("real→VAE", "real"):
        table.append({"row": name, "runs": 1, **{key: [_value(by_name[name], key)] for key in KEYS}})
    report = {"world": str(args.world), "recipe": args.recipe, "overrides": args.overrides, "seeds": seeds,
              "eval": {"conditionings": args.eval, "samples": args.samples}, "table": table, "generators": scored}
    (out / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (out / "ablation.md").write_text(md)
    print(md)
    return 0


def _write_cache(teacher: str, recipe, out: Path, pairs: int, pair_steps: int) -> None:
    """The training world encoded once by the teacher (sfv cache), with `pairs` teacher pairs per clip if > 0."""
    from tqdm.auto import tqdm

    from sfv.cache import write_cache
    from sfv.data import ClipSpec, VideoFolder
    from sfv.teachers import load_teacher

    d = recipe.data
    dataset = VideoFolder(d.videos, ClipSpec.of(recipe), seed=0, metadata=d.metadata)
    print(f"[ablation] latent cache of {len(dataset)} clips ({pairs} teacher pair(s) each, {pair_steps} steps) → {out}", flush=True)
    t = time.perf_counter()
    with tqdm(total=len(dataset), unit="clip", desc="cache") as bar:
        write_cache(load_teacher(teacher), dataset, out, recipe.svd.noise_aug_strength, batch_size=16, progress=bar.update,
                    pairs=pairs, pair_steps=pair_steps)
    (out / "wall_s.txt").write_text(f"{time.perf_counter() - t:.1f}\n")


def _value(m: dict, key: str) -> float:
    return m["toy_error"] if key == "toy_error" else m["parts"][key]


def _last_heldout(run_dir: Path) -> dict:
    f = run_dir / "heldout.jsonl"
    lines = f.read_text().splitlines() if f.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def _heldout_min(run_dir: Path) -> float | None:
    """D's lowest held-out pair-win over every judgement of the run (its target: ≥ 0.95 at each)."""
    f = run_dir / "heldout.jsonl"
    wins = [json.loads(line)["heldout/pair_win"] for line in f.read_text().splitlines()] if f.is_file() else []
    return min(wins[1:] or wins) if wins else None  # the judgement before training (D at chance) left out


def _median_ratio(run_dir: Path) -> float | None:
    """The median over the run's logs of ‖∇adv‖/‖∇rec‖ at x̂0, over the logs where the reconstruction pulled at all (a
    gated reconstruction is 0 in a log whose videos all sat above the gate)."""
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    ratios = [e["grad/g_adv"] / e["grad/g_rec"] for e in lines if e.get("grad/g_rec", 0) > 1e-9 and "grad/g_adv" in e]
    return statistics.median(ratios) if ratios else None


def _fmt(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def markdown(report: dict) -> str:
    head = ["row", "runs", *KEYS, "D pair-win", "D pair-win, lowest", "D video acc.", "‖∇adv‖/‖∇rec‖"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in report["table"]:
        lines.append("| " + " | ".join([t["row"], str(t["runs"]), *[_fmt(t[k]) for k in KEYS],
                                        *[_fmt(t.get(k, [])) for k in ("pair_win", "pair_win_min", "video_accuracy", "g_adv_over_rec")]]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
