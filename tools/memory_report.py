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
Writes JSON (fields: see `report` below) and prints one line per setting.
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
    from sfv.steps import Round, State, d_step, g_step, round_generator
    from sfv.train import build

    device = world.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    recipe = load_recipe(None, ["parallel.mode=fsdp", f"model.gradient_checkpointing={str(checkpointing).lower()}",
                                f"train.precision={precision}", f"data.frames={args.frames}", f"data.height={args.height}",
                                f"data.width={args.width}", f"train.batch_per_device={args.batch}", "discriminator.r1=approx",
                                "discriminator.r1_interval=1"])
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
              "teacher_unet": sum(q.numel() for q in teacher.unet.parameters()),
              "vae": sum(q.numel() for q in teacher.vae.parameters()),
              "image_encoder": sum(q.numel() for q in teacher.image_encoder.parameters())}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else _peak(device)
    state, times = State(), {}
    for name, step in (("d_step_s", d_step), ("g_step_s", g_step)):  # the optimiser state appears in the first steps
        t0 = time.perf_counter()
        step(p, [Round(x0, cond, gen)], state)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times[name] = time.perf_counter() - t0
    peak = _peak(device)
    n_g = params["generator"]
    estimate = {str(n): peak - (1 - 1 / n) * SHARDED_BYTES_PER_PARAM * n_g for n in (1, 8)}
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
    ap.add_argument("--out", type=Path, default=Path("runs/memory/report.json"))
    args = ap.parse_args(argv)
    world = distributed.init(cpu=args.device == "cpu", group=True)  # FSDP in a world of one
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    runs = [measure(args, world, c) for c in settings]
    report = {"arch": args.arch, "device": str(world.device), "gpu": torch.cuda.get_device_name(world.device) if world.device.type == "cuda" else None,
              "frames": args.frames, "height": args.height, "width": args.width, "batch_per_gpu": args.batch,
              "precision": "bf16 (FSDP MixedPrecisionPolicy, fp32 reduce) + bf16 autocast" if world.device.type == "cuda" else "fp32",
              "parallel": "fsdp", "world_size": world.size, "peak_kind": "cuda_max_memory_allocated" if world.device.type == "cuda" else "cpu_peak_rss",
              "sharded_bytes_per_param": SHARDED_BYTES_PER_PARAM, "estimate": "peak(1) - (1 - 1/W) * sharded_bytes_per_param * parameters.generator",
              "reference_gib": {"osv_sfv_reimplementation": 73.5, "target_per_gpu": 40}, "torch": torch.__version__, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for r in runs:
        print(f"{args.arch} {args.frames}f {args.width}x{args.height} batch {args.batch}, activation checkpointing "
              f"{'on ' if r['activation_checkpointing'] else 'off'}: peak {r['peak_gib']:.2f} GiB on 1 process, "
              f"estimate {r['estimate_per_gpu_gib']['8']:.2f} GiB per GPU on 8 (D {r['d_step_s']:.2f} s, G {r['g_step_s']:.2f} s)")
    print(f"wrote {args.out}")
    distributed.shutdown(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
