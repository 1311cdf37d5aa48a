#!/usr/bin/env python
"""Peak memory of one SF-V training step (a D step with R1, then a G step; `--d-steps 2`: two D steps first, as the
real-size recipes' discriminator.steps_per_g) under FSDP2, as the trainer runs it.

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

    python tools/memory_report.py --lora [--out runs/memory/lora.json]      (any machine: no step is run)

`--lora` prints the same arithmetic for a LoRA G against a full G at full size, on one GPU: SVD-XT at 25 frames of
1024×576 and Wan 2.1 I2V-14B at 81×480×832 (architectures built on the meta device from their published configs).
A full G is the frozen teacher (bf16; also D's backbone) plus G's 20 B/param of trained state. A LoRA G keeps one
frozen bf16 base that is the teacher, G's base and D's backbone at once (adapters off inside D and for teacher
calls): 2 B/param of base plus 20 B per adapter parameter. The fp8 column stores that base as float8_e4m3fn
(1 B/param, scales not counted), if torch's float8 cast works here. Activations come on top; their floor under
per-block activation checkpointing — the inputs of every checkpointed block, saved in bf16 — is counted by running
the network once on the meta device. All of it is an estimate until a GPU measures a LoRA step.
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
    from sfv.teachers.svd import SVDTeacher
    from sfv.teachers.svd_unet import PRECOND, SVDEncoder

    unet, vae, image_encoder = build_modules(arch, "meta")
    dcfg = recipe.discriminator
    labels = SVDTeacher.label_count if dcfg.labels else 0
    D = Discriminator(SVDEncoder(unet, PRECOND), image_encoder.config.projection_dim, dcfg.heads, dcfg.head_channels, dcfg.blocks, labels)
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


LORA_RANKS = (32, 64)
# (name, size as frames×height×width, adapter presets: the module names adapted, as full-match patterns over the
# network's Linear layers; a rank-r adapter on W [out, in] adds r·(in + out) parameters)
LORA_MODELS = {
    "svd-xt": {"label": "SVD-XT UNet", "size": (25, 576, 1024),
               "presets": {"attn": r".*attn[12]\.(?:to_q|to_k|to_v|to_out\.0)"}},
    "wan2.1-i2v-14b": {"label": "Wan 2.1 I2V-14B transformer", "size": (81, 480, 832),
                       "presets": {"attn": r"blocks\.\d+\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0|add_k_proj|add_v_proj)",
                                   "attn+ffn": r"blocks\.\d+\.(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0|add_k_proj|add_v_proj)"
                                               r"|ffn\.net\.(?:0\.proj|2))"}},
}
CARD_GB = 24


def lora_parameters(net: torch.nn.Module, pattern: str, rank: int) -> int:
    import re

    return sum(rank * (m.in_features + m.out_features) for name, m in net.named_modules()
               if isinstance(m, torch.nn.Linear) and re.fullmatch(pattern, name))


def _checkpointed_inputs(net: torch.nn.Module, units: list, run) -> int:
    """Bytes of every tensor argument of `units` in one forward (`run`, on the meta device), counted in bf16: what
    per-block activation checkpointing keeps for the backward pass."""
    total = [0]

    def hook(module, args, kwargs):
        total[0] += sum(2 * a.numel() for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))

    handles = [u.register_forward_pre_hook(hook, with_kwargs=True) for u in units]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _full_size_network(name: str):
    """(network on the meta device, its checkpointed units, a forward at the model's size)."""
    meta = dict(device="meta")
    frames, height, width = LORA_MODELS[name]["size"]
    if name == "svd-xt":
        from sfv.arch import build_modules
        from sfv.teachers.svd_unet import sharding_units

        net = build_modules("svd-xt", "meta")[0].to("meta")  # .to: AlphaBlender's mix factors are made on the CPU
        x = torch.zeros(1, frames, 2 * 4, height // 8, width // 8, **meta)  # noise ‖ image latent
        return net, sharding_units(net), lambda: net(x, torch.ones(1, **meta), torch.zeros(1, 1, 1024, **meta),
                                                     torch.zeros(1, 3, **meta))
    import importlib.util

    from diffusers import WanTransformer3DModel

    spec = importlib.util.spec_from_file_location("wan_flops", Path(__file__).with_name("wan_flops.py"))
    wan_flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wan_flops)  # the published 14B config, written out once there
    with torch.device("meta"):
        net = WanTransformer3DModel(**wan_flops.MODELS[name]["transformer"])
    x = torch.zeros(1, 36, (frames - 1) // 4 + 1, height // 8, width // 8, **meta)  # noise ‖ mask ‖ image latent
    return net, list(net.blocks), lambda: net(hidden_states=x, timestep=torch.ones(1, **meta), return_dict=False,
                                              encoder_hidden_states=torch.zeros(1, 512, 4096, **meta),
                                              encoder_hidden_states_image=torch.zeros(1, 257, 1280, **meta))


def fp8_storage_works() -> bool:
    """Whether torch casts to float8_e4m3fn and back here (a scaled weight matrix: what storing the base would do)."""
    try:
        w = torch.randn(64, 64)
        scale = w.abs().amax() / torch.finfo(torch.float8_e4m3fn).max
        back = (w / scale).to(torch.float8_e4m3fn).float() * scale
        return back.shape == w.shape and bool(((back - w).norm() / w.norm()) < 0.1)
    except (AttributeError, RuntimeError, TypeError):
        return False


def lora_table() -> dict:
    """Full G against LoRA G sharing one frozen base, at full size on one GPU (bytes; see the module doc)."""
    fp8 = fp8_storage_works()
    models = []
    for name, spec in LORA_MODELS.items():
        net, units, run = _full_size_network(name)
        n = sum(p.numel() for p in net.parameters())
        rows = [{"G": "full", "trained_parameters": n, "base_bytes": 2 * n, "trained_bytes": SHARDED_BYTES_PER_PARAM * n}]
        for preset, pattern in spec["presets"].items():
            for rank in LORA_RANKS:
                a = lora_parameters(net, pattern, rank)
                rows.append({"G": f"LoRA {preset} r{rank}", "trained_parameters": a, "base_bytes": 2 * n,
                             "trained_bytes": SHARDED_BYTES_PER_PARAM * a})
        for r in rows:
            r["total_bytes"] = r["base_bytes"] + r["trained_bytes"]
            r["total_fp8_base_bytes"] = r["total_bytes"] - n if fp8 else None  # 2 -> 1 B per base parameter
        models.append({"model": name, "label": spec["label"], "size": list(spec["size"]), "parameters": n,
                       "checkpointed_inputs_bytes": _checkpointed_inputs(net, units, run), "rows": rows})
    for m in models:
        m["card"] = card_fit(m, fp8)
    return {"card_gb": CARD_GB, "fp8_storage_works": fp8, "trained_bytes_per_param": SHARDED_BYTES_PER_PARAM,
            "models": models, "torch": torch.__version__}


def card_fit(model: dict, fp8: bool) -> dict:
    """The G that fits CARD_GB with the most room — weights + state + activations' floor — first with a bf16 base,
    then an fp8 one, then with the checkpointed block inputs kept in CPU memory instead of on the GPU.
    `left_gb`: what remains for the working set (one block's internals, attention, D's forward)."""
    floor = model["checkpointed_inputs_bytes"]
    tries = [("bf16", "total_bytes", floor, "on the GPU")]
    if fp8:
        tries += [("fp8", "total_fp8_base_bytes", floor, "on the GPU"), ("fp8", "total_fp8_base_bytes", 0, "in CPU memory")]
    for base, key, activations, where in tries:
        fits = [r for r in model["rows"] if r[key] + activations <= CARD_GB * 1e9]
        if fits:
            best = min(fits, key=lambda r: r[key])
            return {"G": best["G"], "base": base, "checkpointed_inputs": where,
                    "left_gb": (CARD_GB * 1e9 - best[key] - activations) / 1e9}
    return {"G": None}


def card_line(m: dict) -> str:
    c = m["card"]
    f, h, w = m["size"]
    if c["G"] is None:
        return f"{m['label']} at {f}×{h}×{w}: no configuration fits {CARD_GB} GB"
    return (f"{m['label']} at {f}×{h}×{w} on a {CARD_GB} GB card: {c['G']} on {'an' if c['base'] == 'fp8' else 'a'} "
            f"{c['base']} base, checkpointed block "
            f"inputs {c['checkpointed_inputs']}, leaves {c['left_gb']:.1f} GB for the working set (an estimate)")


def lora_markdown(t: dict) -> str:
    gb = lambda b: "—" if b is None else f"{b / 1e9:.1f} GB"  # noqa: E731
    fp8 = "frozen base fp8 (estimate)" if t["fp8_storage_works"] else "fp8 base (torch has no float8 here)"
    lines = [f"| model, size | G | trained parameters | frozen base bf16 (teacher = G's base = D's backbone) | "
             f"trained state, 20 B/param | weights + state | same, {fp8} | activations' floor, checkpointed block inputs | "
             f"left of {t['card_gb']} GB after the floor, bf16 / fp8 base |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in t["models"]:
        f, h, w = m["size"]
        for i, r in enumerate(m["rows"]):
            what = f"{m['label']}, {f}×{h}×{w}" if i == 0 else ""
            floor = gb(m["checkpointed_inputs_bytes"]) if i == 0 else ""
            left = [t["card_gb"] - (b + m["checkpointed_inputs_bytes"]) / 1e9 for b in (r["total_bytes"], r["total_fp8_base_bytes"])
                    if b is not None]
            lines.append(f"| {what} | {r['G']} | {r['trained_parameters'] / 1e6:,.1f} M | {gb(r['base_bytes'])} | "
                         f"{gb(r['trained_bytes'])} | {gb(r['total_bytes'])} | {gb(r['total_fp8_base_bytes'])} | {floor} | "
                         f"{' / '.join(f'{v:+.1f} GB' for v in left)} |")
    return "\n".join(lines)


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
    # discriminator.steps_per_g D steps, then the fake-score step (DMD) and the G step; a time is the step's first
    steps = [*[("d_step_s", d_step)] * args.d_steps, *([("fake_step_s", fake_step)] if args.dmd else []), ("g_step_s", g_step)]
    for name, step in steps:  # the optimiser state appears in the first steps
        t0 = time.perf_counter()
        step(p, [Round(x0, cond, gen)], state)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.setdefault(name, time.perf_counter() - t0)
    peak = _peak(device)
    sharded = SHARDED_BYTES_PER_PARAM * params["generator"] + TRAINED_BYTES_PER_PARAM * params["fake_score"]
    estimate = {str(n): peak - (1 - 1 / n) * sharded for n in (1, 8)}
    del p, teacher, x0, cond
    _reset(device)
    return {"activation_checkpointing": checkpointing, "peak_bytes": peak, "peak_gib": peak / 2**30,
            "allocated_before_step_bytes": before, "estimate_per_gpu_gib": {k: v / 2**30 for k, v in estimate.items()},
            "d_steps": args.d_steps, "parameters": params, **times}


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
    ap.add_argument("--d-steps", type=int, default=1, choices=range(1, 9), metavar="N",
                    help="D steps before the G step (discriminator.steps_per_g; the real-size recipes take 2)")
    ap.add_argument("--dmd", action="store_true", help="with distribution matching: the fake-score network and its update")
    ap.add_argument("--state", action="store_true", help="print the weight/optimiser-state table at full size (no step is run)")
    ap.add_argument("--recipe", default="recipes/svd_14f_768x448.yaml", help="--state: the recipe whose D heads are counted")
    ap.add_argument("--lora", action="store_true", help="print full G against LoRA G with a shared frozen base at full size, "
                    "SVD-XT and Wan 2.1 I2V-14B (no step is run)")
    ap.add_argument("--out", type=Path, default=Path("runs/memory/report.json"))
    args = ap.parse_args(argv)
    if args.lora:
        table = lora_table()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=1))
        print(lora_markdown(table))
        for m in table["models"]:
            print(card_line(m))
        return 0
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
