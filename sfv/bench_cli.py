"""`sfv bench` (sfv/cli.py builds its parser): arguments checked before anything loads, then sfv.bench."""

from __future__ import annotations

from pathlib import Path

from sfv.console import check_positive, parse_device, parse_dtype, parse_steps
from sfv.errors import InputError


def bench_cli(args) -> int:
    """`sfv bench`: check the arguments, load, run sfv.bench.run_bench, print the speed-ups."""
    # Validate everything cheap first: bad input never starts a (long) run or leaves partial output.
    if args.arch is not None and args.arch not in ("svd", "svd-xt"):
        return wan_bench_cli(args)
    if args.arch is not None:
        if args.teacher or args.student:
            raise InputError("pass either --teacher and --student, or --arch with --random-weights, not both")
        if not args.random_weights:
            raise InputError("--arch builds the full-size architecture with random weights: add --random-weights")
    elif not (args.teacher and args.student):
        raise InputError("pass --teacher DIR and --student DIR (or --arch svd|svd-xt --random-weights for speed runs)")
    elif args.random_weights:
        raise InputError("--random-weights goes with --arch")
    steps = tuple(parse_steps(args.steps))
    dtype = parse_dtype(args.dtype)
    device = parse_device(args.device, dtype)
    check_positive(args, "frames", "repeats", "decode-chunk-size", "threads")
    if args.warmup < 0:
        raise InputError(f"--warmup must be at least 0 (got {args.warmup})")
    if not args.long_frames and (args.window or args.overlap):
        raise InputError("--window and --overlap go with --long-frames N")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' is a file; give a folder")

    from sfv.model_dir import check_model_dir, check_video_size, shipped_decoders

    height, width = args.height or 576, args.width or 1024  # SVD's size, where the models record none
    if args.arch:
        from sfv.arch import ARCH_FRAMES

        frames, factor = args.frames or ARCH_FRAMES[args.arch], 8
    else:
        info = check_model_dir(args.teacher)
        record = check_model_dir(args.student).video or info.video  # what the student (or its teacher) trained at
        if record is not None:
            height, width = args.height or record.height, args.width or record.width
        frames, factor = args.frames or (record.frames if record else info.num_frames), info.vae_scale_factor
    check_video_size(height, width, frames, factor)
    fast_decoder = args.decoder
    if fast_decoder is None and args.student:  # the export's own fast decoder, if it carries one
        folder = shipped_decoders(args.student).get("tiny")
        fast_decoder = str(folder) if folder else None
    elif fast_decoder == "vae":
        fast_decoder = None
    elif fast_decoder != "random":
        from sfv.decoders import build_decoder, resolve_decoder

        name, folder = resolve_decoder(fast_decoder, args.student)
        build_decoder(name, None, folder)  # a missing or corrupt folder: one line, before any model loads
        fast_decoder = str(folder)
    if args.long_frames:
        from sfv.sampling import long_video_windows

        for mode in ("chain", "multidiffusion"):
            long_video_windows(mode, args.long_frames, args.window, args.overlap, frames)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from sfv.bench import BenchConfig, run_bench
    from sfv.tiny import example_image

    config = BenchConfig(steps=steps, frames=frames, height=height, width=width, device=str(device),
                         dtype=str(dtype).removeprefix("torch."), compile=args.compile, repeats=args.repeats,
                         warmup=args.warmup, seed=args.seed, decode_chunk_size=args.decode_chunk_size,
                         fast_paths=args.fast_paths, teacher=args.teacher, student=args.student, arch=args.arch,
                         long_frames=args.long_frames, window=args.window, overlap=args.overlap,
                         fast_decoder=fast_decoder)
    print(f"sfv bench: loading ({'random ' + args.arch if args.arch else args.teacher + ' / ' + args.student}, "
          f"{args.dtype}, {device})", flush=True)
    try:
        teacher, student = load_models(config)
    except (torch.OutOfMemoryError, MemoryError):
        raise InputError(f"out of memory loading the models on {device}; try --dtype bf16") from None
    notes = ["student = the teacher's modules (same architecture, random weights; speed does not depend on weights)"] if args.arch else []
    report = run_bench(config, teacher, student, example_image(height, width, args.seed), out, notes=notes)
    for s in report["speedups"]:
        print(f"sfv bench: student-1 vs {s['teacher']}: {s['end_to_end']:.1f}x end to end, {s['unet_only']:.1f}x UNet only")
    o = report["pipeline_overhead"]
    if o:
        print(f"sfv bench: SFVPipeline overhead over its components {o['overhead'] * 100:+.1f} % "
              f"(information; the goal, ≤ {o['target'] * 100:.0f} %, is for full-size models on a GPU)")
    f = report["fast_decoder"]
    if f:
        print(f"sfv bench: fast decoder: decode {f['decode']:.1f}x faster, student end to end {f['end_to_end']:.2f}x; "
              + ", ".join(f"{t['end_to_end']:.1f}x vs {t['teacher']}" for t in f["vs_teacher"]))
    print(f"sfv bench: wrote {out / 'bench.json'}, bench.md, bench.png")
    return 0


def load_models(config):
    """(teacher SVDTeacher, student SFVPipeline) from folders, or random full-size ones for --arch (a BenchConfig)."""
    import torch

    from sfv.config import ModelConfig
    from sfv.pipeline import SFVPipeline
    from sfv.teachers import load_teacher
    from sfv.teachers.svd import SVDTeacher

    dtype, device = getattr(torch, config.dtype), torch.device(config.device)
    if config.arch is not None:
        from sfv.arch import build_random_svd

        pipe = build_random_svd(config.arch, device, dtype, seed=config.seed)
        teacher = SVDTeacher.from_pipeline(pipe, decoder=config.decoder)
        # The student shares the teacher's modules: same architecture, and speed does not depend on weights.
        student = SFVPipeline(**pipe.components).as_student(ModelConfig.t_g)
        student.decoder = config.decoder
        return teacher, student
    from sfv.errors import ModelLoadError, first_line

    teacher = load_teacher(config.teacher, torch_dtype=dtype, device=device)
    teacher.set_decoder(config.decoder)
    try:
        student = SFVPipeline.from_pretrained(config.student, dtype=dtype, use_safetensors=True).to(device)
    except Exception as e:
        raise ModelLoadError(f"could not load student '{config.student}': {first_line(e)}") from None
    student.decoder = config.decoder
    for name in ("in_channels", "cross_attention_dim", "addition_time_embed_dim"):
        if student.unet.config.get(name) != teacher.unet.config.get(name):
            raise InputError(f"student and teacher differ in UNet {name} ({student.unet.config.get(name)} vs "
                             f"{teacher.unet.config.get(name)}); benchmark a student exported from this teacher")
    return teacher, student


def wan_bench_cli(args) -> int:
    """`sfv bench --arch wan…|tiny-wan… --random-weights`: sfv.teachers.wan_bench (the 1-step student against the
    50-step CFG teacher, per component)."""
    if args.teacher or args.student:
        raise InputError("pass either --teacher and --student, or --arch with --random-weights, not both")
    if not args.random_weights:
        raise InputError("--arch builds the architecture with random weights: add --random-weights")
    given = [flag for flag, on in (("--decoder", args.decoder), ("--long-frames", args.long_frames), ("--fast-paths",
             args.fast_paths), ("--compile", args.compile), ("--decode-chunk-size", args.decode_chunk_size)) if on]
    if given:
        raise InputError(f"{given[0]} is an SVD bench option; the Wan bench times the stock components only: drop it")
    dtype = parse_dtype(args.dtype)
    device = parse_device(args.device, dtype)
    check_positive(args, "frames", "repeats", "threads")
    if args.warmup < 0:
        raise InputError(f"--warmup must be at least 0 (got {args.warmup})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' is a file; give a folder")
    from sfv.teachers.wan import check_wan_size
    from sfv.teachers.wan_bench import WanBenchConfig, default_size, run_wan_bench

    frames, height, width = default_size(args.arch)
    frames, height, width = args.frames or frames, args.height or height, args.width or width
    ti2v = args.arch in ("wan2.2-ti2v-5b", "tiny-wan22")
    check_wan_size(frames, height, width, 4, 16 if ti2v else 8, 2)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    config = WanBenchConfig(args.arch, frames, height, width, str(device), str(dtype).removeprefix("torch."),
                            args.repeats, args.warmup, args.seed)
    print(f"sfv bench: building {args.arch} with random weights ({args.dtype}, {device}), {frames}×{height}×{width}", flush=True)
    try:
        report = run_wan_bench(config, out)
    except (torch.OutOfMemoryError, MemoryError):
        raise InputError(f"out of memory on {device}; try --dtype bf16 or fewer --frames") from None
    print(f"sfv bench: student-1 {report['student_end_to_end']['median_s']:.3f} s end to end vs the 50-step CFG teacher "
          f"{report['teacher_50_steps_cfg_composed_s']:.3f} s (composed from its parts): {report['speedup_end_to_end']:.1f}x; "
          f"transformer {report['speedup_transformer']:.0f}x")
    print(f"sfv bench: wrote {out / 'wan-bench.json'}, wan-bench.md")
    return 0
