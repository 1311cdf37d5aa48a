#!/usr/bin/env python
"""D's held-out pair-win of a finished (or stopped) distillation run, on more pairs than its log, by D's noise level.

    python tools/heldout_pairs.py --run runs/toy/full --count 48 [--checkpoint latest] [--out pairs.json]

The run logs D's pair-win P[D(real_i) > D(fake_i)] on `train.d_eval_count` held-out pairs (heldout.jsonl; sfv/heldout.py).
With 16 pairs one judgement moves in steps of 1/16 and its standard error is ≈ 0.06 at a true rate of 0.93, so "≥ 0.95"
means 16 of 16. This loads the run's recipe (config.yaml) and a checkpoint (G and D), draws the held-out pairs the
way training does (the first `d_eval_count` of them are the log's own, with the same noise; the tool checks that their
pair-win equals the log's line for that checkpoint when there is one), and judges `--count` of them. It prints the
pair-win over all of them and per band of D's noise level σ′ (each pair's σ′ is drawn from D's training distribution),
with the σ′ and video of every pair that D gets wrong, and writes the same as JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BANDS = (0.0, 0.1, 0.3, 1.0, 3.0, float("inf"))  # σ′ bands (the toy recipes draw ln σ′ ~ N(−3, 1): most pairs < 0.1)


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="python tools/heldout_pairs.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a run folder of sfv distill (its config.yaml and checkpoints/)")
    p.add_argument("--count", type=int, default=48, help="held-out pairs to judge (at most the clips in data.eval_videos)")
    p.add_argument("--checkpoint", default="latest", help="'latest' or a checkpoint folder of the run")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    p.add_argument("--out", help="also write the result as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sfv.console import ArgParser, run_command

    return run_command(build_parser(ArgParser), judge_run, argv)


def judge_run(args) -> int:
    import torch

    from sfv import checkpoint, distributed, heldout, losses
    from sfv.config import load_recipe
    from sfv.data import ClipSpec, VideoFolder
    from sfv.errors import InputError
    from sfv.train import build, checkpointed

    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"--run '{run_dir}' has no config.yaml: give the folder of a `sfv distill` run")
    if args.count < 1:
        raise InputError(f"--count {args.count}: judge at least one pair")
    recipe = load_recipe(str(run_dir / "config.yaml"), [f"train.d_eval_count={args.count}"])
    if not recipe.data.eval_videos or not Path(recipe.data.eval_videos).is_dir():
        raise InputError(f"the run's data.eval_videos '{recipe.data.eval_videos}' is not a folder: the held-out pairs "
                         "come from there (write it as the run's recipe says)")
    try:
        ckpt = checkpoint.resolve(args.checkpoint, run_dir)  # verified intact
    except InputError as e:  # resolve speaks of --resume; here the flag is --checkpoint
        raise InputError(str(e).replace("--resume", "--checkpoint")) from None
    logged = _logged(run_dir, json.loads((ckpt / "state.json").read_text())["state"]["videos"])
    world = distributed.init(cpu=args.cpu, group=recipe.parallel.mode == "fsdp")
    parts = build(recipe, world)
    modules, optimizers = checkpointed(parts)
    checkpoint.load(ckpt, world, modules, optimizers, {})
    pairs = heldout.make_pairs(recipe, recipe.train, None, parts.teacher, parts.sigma_d)  # from data.eval_videos only
    real, fake = heldout.logits(pairs, parts.G, parts.D, parts.amp, parts.teacher.precond.add_noise)
    wins = (losses.video_score(real) > losses.video_score(fake)).tolist()
    sigmas = torch.cat([p.sigma for p in pairs]).tolist()
    n = len(wins)
    files = VideoFolder(recipe.data.eval_videos, ClipSpec.of(recipe), seed=recipe.train.seed).files  # pair i: files[i]
    wrong = [{"pair": i, "video": files[i].name, "sigma": round(s, 4)} for i, (s, w) in enumerate(zip(sigmas, wins)) if not w]
    result = {"run": str(run_dir), "checkpoint": ckpt.name, "pairs": n, "pair_win": sum(wins) / n, "bands": [],
              "wrong_sigma": sorted(w["sigma"] for w in wrong), "wrong": wrong}
    for lo, hi in zip(BANDS, BANDS[1:]):
        band = [w for s, w in zip(sigmas, wins) if lo <= s < hi]
        if band:
            result["bands"].append({"sigma": [lo, hi], "pairs": len(band), "pair_win": sum(band) / len(band)})
    print(f"{run_dir} at {ckpt.name}: D's pair-win {result['pair_win']:.3f} over {n} held-out pairs")
    if logged is not None:
        k = min(logged[0], n)
        result["logged"] = {"pairs": logged[0], "pair_win": logged[1], "same_pairs_now": sum(wins[:k]) / k}
        print(f"  the log at this checkpoint: {logged[1]:.3f} over its {logged[0]} pairs; the same {k} pairs now: "
              f"{sum(wins[:k]) / k:.3f}")
    print("| σ′ | pairs | pair-win |\n|---|---|---|")
    for b in result["bands"]:
        print(f"| {b['sigma'][0]:g} – {b['sigma'][1]:g} | {b['pairs']} | {b['pair_win']:.3f} |")
    print(f"  σ′ of the pairs D gets wrong: {result['wrong_sigma']}")
    print("  the pairs D gets wrong (pair: video, σ′): " + (", ".join(f"{w['pair']}: {w['video']} {w['sigma']:g}" for w in wrong) or "none"))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


def _logged(run_dir: Path, videos: int) -> tuple[int, float] | None:
    """(pairs, pair-win) of the run's held-out judgement at `videos`, from heldout.jsonl and the run's recipe."""
    from sfv.config import load_recipe

    path = run_dir / "heldout.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    row = next((r for r in rows if r["videos"] == videos), None)
    count = load_recipe(str(run_dir / "config.yaml"), []).train.d_eval_count
    return (count, row["heldout/pair_win"]) if row else None


if __name__ == "__main__":
    sys.exit(main())
