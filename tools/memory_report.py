#!/usr/bin/env python
"""Peak memory of one SF-V training step (a D step with R1, then a G step) under FSDP2, as the trainer runs it.

    python tools/memory_report.py --arch svd --device cuda --out runs/memory/svd.json     (on a GPU: the table)
    python tools/memory_report.py --arch tiny --device cpu --out runs/memory/tiny.json    (CI: the plumbing)

Builds the full-size SVD architecture with random weights (`sfv.arch`; nothing is downloaded) or the tiny test
SVD, then `sfv.train.build` with parallel.mode=fsdp in a world of one process (FSDP's code path: per-block
all-gathers, bf16 compute with fp32 reduce on GPU), once with activation checkpointing off and once on.
Latents and conditioning are random (memory does not depend on values), 768×448 and 14 frames by default.

Per setting it records the peak (GPU: torch.cuda.max_memory_allocated, reset before the step; CPU: the
process's peak RSS so far, which cannot be reset — the CPU numbers only check the machinery) and an estimate
for 8 GPUs: FSDP splits G's sharded state — fp32 weights, fp32 gradients, two AdamW moments and the EMA copy,
20 bytes per parameter — so each of W processes holds 1/W of it; everything else (the replicated teacher, D's
heads, activations, one gathered block at a time) stays per process:
    estimate(W) = peak(1) − (1 − 1/W) · 20 · N_G
Writes JSON (fields: see `report` below) and prints one line per setting. `--dmd` adds distribution matching (recipe
`dmd`): DMD's fake-score network (a second trained copy of the UNet, sharded like G) and its update in the step.

    python tools/memory_report.py --state --recipe recipes/svd_14f_768x448.yaml     (any machine: no step is run)

`--state` prints the arithmetic of weights and optimiser state per GPU at full size instead (parameter counts of the
architecture built on the meta device; GB = 10⁹ bytes; activations come on top), with and without DMD's fake score,
without sharding (`ddp`) and under FSDP on 8 GPUs: the table docs/benchmarks.md quotes.
"""

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

import torch

SHARDED_BYTES_PER_PARAM = 4 + 4 + 8 + 4  # fp32 weight + fp32 gradient + AdamW exp_avg/exp_avg_sq + fp32 EMA
TRAINED_BYTES_PER_PARAM = 4 + 4 + 8  # the same without an EMA: DMD's fake score, D's heads


def state_table(arch: str, recipe, gpus: int = 8) -> dict:
    """Bytes of weights and optimiser state per GPU at full size, per part, without sharding and under FSDP on `gpus`
    GPUs (the frozen teacher in bf16 there, as sfv.distributed casts it), with and without DMD's fake score."""
    from sfv.arch import build_modules, parameter_count
    from sfv.discriminator import Discriminator
    from sfv.teachers.svd_unet import PRECOND, SVDEncoder

    unet, vae, image_encoder = build_modules(arch, "meta")
    dcfg = recipe.discriminator
    D = Discriminator(SVDEncoder(unet, PRECOND), image_encoder.config.projection_dim, dcfg.heads, dcfg.head_channels, dcfg.blocks)
    n = {"unet": parameter_count(unet), "vae": parameter_count(vae), "image_encoder": parameter_count(image_encoder),
         "heads": sum(q.numel() for q in D.trainable_parameters())}
    rows = [  # (part, parameters, bytes without sharding, bytes per GPU under FSDP)
        ("G: fp32 weights + gradients + AdamW moments + EMA (20 B/param)", n["unet"], SHARDED_BYTES_PER_PARAM * n["unet"],
         SHARDED_BYTES_PER_PARAM * n["unet"] / gpus),
        ("DMD's fake score: fp32 weights + gradients + AdamW moments (16 B/param; only with dmd.weight > 0)", n["unet"],
         TRAINED_BYTES_PER_PARAM * n["unet"], TRAINED_BYTES_PER_PARAM * n["unet"] / gpus),
        ("frozen teacher UNet (D's backbone; DMD's real score)", n["unet"], 4 * n["unet"], 2 * n["unet"]),
        ("VAE (fp32, encodes the data)", n["vae"], 4 * n["vae"], 4 * n["vae"]),
        ("image encoder (fp32)", n["image_encoder"], 4 * n["image_encoder"], 4 * n["image_encoder"]),
        (f"D heads (head_channels {dcfg.head_channels}): weights + gradients + AdamW (16 B/param)", n["heads"],
         TRAINED_BYTES_PER_PARAM * n["heads"], TRAINED_BYTES_PER_PARAM * n["heads"]),
    ]
    total = {dmd: [sum(r[k] for i, r in enumerate(rows) if dmd or i != 1) for k in (2, 3)] for dmd in (False, True)}
    return {"arch": arch, "gpus": gpus, "parameters": n, "rows": [dict(zip(("part", "parameters", "ddp_bytes", "fsdp_bytes"), r)) for r in rows],
            "total_bytes": {"without_dmd": dict(zip(("ddp", "fsdp"), total[False])), "with_dmd": dict(zip(("ddp", "fsdp"), total[True]))}}


def state_markdown(t: dict) -> str:
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    lines = [f"| state per GPU ({t['arch']}) | parameters | without sharding (`ddp`) | `fsdp`, {t['gpus']} GPUs |", "|---|---|---|---|"]
    count = lambda k: f"{k:,}".replace(",", " ")  # noqa: E731
    lines += [f"| {r['part']} | {count(r['parameters'])} | {gb(r['ddp_bytes'])} | {gb(r['fsdp_bytes'])} |" for r in t["rows"]]
    for key, name in (("without_dmd", "SF-V"), ("with_dmd", "with DMD")):
        b = t["total_bytes"][key]
        lines.append(f"| **total before activations, {name}** | | **{gb(b['ddp'])}** | **{gb(b['fsdp'])}** |")
    return "\n".join(lines)


def _teacher(arch: str, device, frames: int):
    from sfv.teachers.svd import SVDTeacher

    if arch == "tiny":
        from sfv.tiny import TinySVDConfig, build_tiny_svd

        pipe = build_tiny_svd(TinySVDConfig(num_frames=frames))
    else:
        from sfv.arch import build_random_svd

        pipe = build_random_svd(arch, device=device)  # fp32 master weights, as training loads them
    return SVDTeacher.from_pipeline(pipe).to(device)


def _peak(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _reset(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measure(args, world, checkpointing: bool) -> dict:
    from sfv.config import load_recipe
    from sfv.teachers.svd import SVDCondition
    from sfv.steps import Round, State, d_step, fake_step, g_step, round_generator
    from sfv.train import build

    device = world.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    recipe = load_recipe(None, ["parallel.mode=fsdp", f"model.gradient_checkpointing={str(checkpointing).lower()}",
                                f"train.precision={precision}", f"data.frames={args.frames}", f"data.height={args.height}",
                                f"data.width={args.width}", f"train.batch_per_device={args.batch}", "discriminator.r1=approx",
                                "discriminator.r1_interval=1", f"dmd.weight={1.0 if args.dmd else 0.0}", "dmd.fake_steps_per_g=1"])
    _reset(device)
    teacher = _teacher(args.arch, device, args.frames)
    p = build(recipe, world, teacher)
    b, f = args.batch, args.frames
    h, w, c = args.height // teacher.vae_scale_factor, args.width // teacher.vae_scale_factor, teacher.latent_channels
    gen = round_generator(0, 0, device)
    x0 = torch.randn(b, f, c, h, w, generator=gen, device=device)  # [B, F, C, h, w]
    embed_dim = teacher.image_encoder.config.projection_dim
    cond = SVDCondition(torch.randn(b, 1, embed_dim, generator=gen, device=device),
                        torch.randn(b, c, h, w, generator=gen, device=device), teacher.time_ids(7, 127, 0.02, b))
    params = {"generator": sum(q.numel() for q in p.G.parameters()),
              "discriminator_heads": sum(q.numel() for q in p.D.trainable_parameters()),
              "fake_score": sum(q.numel() for q in p.fake.parameters()) if p.fake is not None else 0,
              "teacher_unet": sum(q.numel() for q in teacher.unet.parameters()),
              "vae": sum(q.numel() for q in teacher.vae.parameters()),
              "image_encoder": sum(q.numel() for q in teacher.image_encoder.parameters())}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else _peak(device)
    state, times = State(), {}
    steps = [("d_step_s", d_step), *([("fake_step_s", fake_step)] if args.dmd else []), ("g_step_s", g_step)]
    for name, step in steps:  # the optimiser state appears in the first steps
        t0 = time.perf_counter()
        step(p, [Round(x0, cond, gen)], state)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times[name] = time.perf_counter() - t0
    peak = _peak(device)
    sharded = SHARDED_BYTES_PER_PARAM * params["generator"] + TRAINED_BYTES_PER_PARAM * params["fake_score"]
    estimate = {str(n): peak - (1 - 1 / n) * sharded for n in (1, 8)}
    del p, teacher, x0, cond
    _reset(device)
    return {"activation_checkpointing": checkpointing, "peak_bytes": peak, "peak_gib": peak / 2**30,
            "allocated_before_step_bytes": before, "estimate_per_gpu_gib": {k: v / 2**30 for k, v in estimate.items()},
            "parameters": params, **times}


def main(argv=None) -> int:
    from sfv.console import quiet_libraries

    quiet_libraries()  # before the model libraries load: their warnings (e.g. "install torchvision") would bury the report
    from sfv import distributed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="svd", choices=["svd", "svd-xt", "tiny"], help="full-size random SVD / SVD-XT, or the tiny test SVD")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--batch", type=int, default=1, help="videos per GPU per micro-batch (the paper: 1 × 4 accumulation × 8 GPUs)")
    ap.add_argument("--checkpointing", default="both", choices=["off", "on", "both"], help="activation checkpointing")
    ap.add_argument("--dmd", action="store_true", help="with distribution matching: the fake-score network and its update")
    ap.add_argument("--state", action="store_true", help="print the weight/optimiser-state table at full size (no step is run)")
    ap.add_argument("--recipe", default="recipes/svd_14f_768x448.yaml", help="--state: the recipe whose D heads are counted")
    ap.add_argument("--out", type=Path, default=Path("runs/memory/report.json"))
    args = ap.parse_args(argv)
    if args.state:
        from sfv.config import load_recipe

        table = state_table(args.arch if args.arch != "tiny" else "svd", load_recipe(args.recipe))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=1))
        print(state_markdown(table))
        return 0
    world = distributed.init(cpu=args.device == "cpu", group=True)  # FSDP in a world of one
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    runs = [measure(args, world, c) for c in settings]
    report = {"arch": args.arch, "device": str(world.device), "gpu": torch.cuda.get_device_name(world.device) if world.device.type == "cuda" else None,
              "frames": args.frames, "height": args.height, "width": args.width, "batch_per_gpu": args.batch,
              "precision": "bf16 (FSDP MixedPrecisionPolicy, fp32 reduce) + bf16 autocast" if world.device.type == "cuda" else "fp32",
              "parallel": "fsdp", "world_size": world.size, "peak_kind": "cuda_max_memory_allocated" if world.device.type == "cuda" else "cpu_peak_rss",
              "sharded_bytes_per_param": SHARDED_BYTES_PER_PARAM, "dmd": args.dmd,
              "estimate": "peak(1) - (1 - 1/W) * (sharded_bytes_per_param * parameters.generator + 16 * parameters.fake_score)",
              "reference_gib": {"osv_sfv_reimplementation": 73.5, "target_per_gpu": 40}, "torch": torch.__version__, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for r in runs:
        print(f"{args.arch} {args.frames}f {args.width}x{args.height} batch {args.batch}, activation checkpointing "
              f"{'on ' if r['activation_checkpointing'] else 'off'}: peak {r['peak_gib']:.2f} GiB on 1 process, "
              f"estimate {r['estimate_per_gpu_gib']['8']:.2f} GiB per GPU on 8 (D {r['d_step_s']:.2f} s, G {r['g_step_s']:.2f} s"
              + (f", fake score {r['fake_step_s']:.2f} s, with DMD)" if args.dmd else ")"))
    print(f"wrote {args.out}")
    distributed.shutdown(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
