#!/usr/bin/env python
"""Time the SF-V training phases on a recipe (default: the tiny CPU recipe): D step with R1 none / approximated /
exact, and the G step. Prints a table of medians over repeats and writes JSON.

    python tools/bench_train_step.py [--recipe recipes/tiny_cpu.yaml] [--repeats 10] [--out runs/bench_train_step.json] [key=value ...]

Every D step here carries its R1 term (r1_interval = 1) so the three settings compare the cost of one
regularised step; in training the lazy interval divides the extra cost. Batches are prepared (VAE/CLIP
encoding) outside the timed region.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    from sfv.console import quiet_libraries

    quiet_libraries()  # before the model libraries load: their warnings (e.g. "install torchvision") would bury the table
    from sfv import distributed
    from sfv.config import load_recipe
    from sfv.data import collate
    from sfv.steps import State, d_step, g_step, prepare, round_generator
    from sfv.train import build, build_data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="recipes/tiny_cpu.yaml")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("runs/bench_train_step.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    world = distributed.World(0, 1, 0, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    results = {}
    for mode in ("none", "approx", "exact"):
        recipe = load_recipe(args.recipe, [*args.overrides, f"discriminator.r1={mode}", "discriminator.r1_interval=1"])
        parts = build(recipe, world)
        data = build_data(recipe)
        micro, rounds = recipe.train.batch_per_device, recipe.train.batch_size // recipe.train.batch_per_device
        gens = [round_generator(recipe.train.seed, r * micro, world.device) for r in range(rounds)]
        batches = [prepare(collate([data[(r * micro + i, 0)] for i in range(micro)]), parts.teacher, recipe, gen)
                   for r, gen in enumerate(gens)]
        phases = {f"d_step_r1_{mode}": lambda: d_step(parts, batches, State())}
        if mode == "none":
            phases["g_step"] = lambda: g_step(parts, batches, State())
        for name, fn in phases.items():
            fn()  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                if world.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            results[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
    base = results["d_step_r1_none"]["median_s"]
    print(f"{'phase':<20} {'median s':>9} {'× D (no R1)':>12}")
    for name, r in results.items():
        print(f"{name:<20} {r['median_s']:>9.3f} {r['median_s'] / base:>12.2f}")
    out = {"recipe": args.recipe, "overrides": args.overrides, "repeats": args.repeats, "device": str(world.device),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "batch_size": recipe.train.batch_size, "phases": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
