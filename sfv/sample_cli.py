"""`sfv sample` (sfv/cli.py builds its parser): everything cheap checked before anything loads, the size, frames and
fps the model records (or the first frame's size), then one video through the family's pipeline (sfv.load_pipeline:
SFVPipeline for SVD, WanSFVPipeline for Wan) as a student or a teacher."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sfv.console import STARTED, check_positive, parse_device, parse_dtype
from sfv.errors import InputError, first_line


def _check_out_file(path: str) -> Path:
    from sfv.video import VIDEO_SUFFIXES

    out = Path(path)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"output '{path}' must end in .mp4 or .gif")
    if not out.parent.is_dir():
        raise InputError(f"output folder '{out.parent}' does not exist; create it first")
    if out.is_dir():
        raise InputError(f"output '{path}' is a folder; give a file name ending in .mp4 or .gif")
    if not os.access(out.parent, os.W_OK):
        raise InputError(f"output folder '{out.parent}' is not writable")
    return out


def _check_long_video(args, num_frames: int, model_window: int) -> tuple[int | None, int | None]:
    """(window, overlap) of --long, checked before anything loads."""
    if args.long is None:
        if args.window is not None or args.overlap is not None:
            raise InputError("--window and --overlap go with --long chain|multidiffusion")
        return None, None
    from sfv.sampling import long_video_windows

    return long_video_windows(args.long, num_frames, args.window, args.overlap, model_window)


# flags only SVD's conditioning or sampler reads: given for another family, they are an error, not silently ignored
SVD_ONLY = {"motion_bucket_id": "--motion-bucket-id", "noise_aug_strength": "--noise-aug-strength",
            "min_guidance_scale": "--min-guidance-scale", "decode_chunk_size": "--decode-chunk-size", "long": "--long",
            "window": "--window", "overlap": "--overlap"}
TEXT_ONLY = {"prompt": "--prompt", "negative_prompt": "--negative-prompt"}


def _check_family_flags(args, family: str) -> None:
    """A flag of another family's conditioning: one line naming it, before anything loads."""
    from sfv.teachers import SVD

    if family == SVD:
        given = [flag for name, flag in TEXT_ONLY.items() if getattr(args, name) is not None]
        if given:
            raise InputError(f"{given[0]}: SVD is conditioned on the image only (it has no text encoder); drop {given[0]}, "
                             "or pass a Wan folder as --model")
        return
    given = [flag for name, flag in SVD_ONLY.items() if getattr(args, name) is not None]
    if args.decoder not in ("vae", None):
        given.append(f"--decoder {args.decoder}")
    if given:
        raise InputError(f"{given[0]} is an SVD-only option; '{args.model}' is a {family} folder: drop it")


def _sample_video(args, info, image) -> tuple[int, int, int, int, str]:
    """(height, width, frames, fps, where the size came from) of `sfv sample`: the flags, else what the model records
    it was trained at (video.json), else the first frame's size in whole VAE cells and the model's window."""
    from sfv.images import fit_size

    record = info.video
    if args.height and args.width:
        height, width, source = args.height, args.width, "as asked"
    elif record is not None:
        height, width, source = args.height or record.height, args.width or record.width, \
            f"what {args.model} was trained at, from its video.json"
    else:
        fit_w, fit_h = fit_size(*image.size, info.vae_scale_factor)
        rounded = f", rounded to multiples of {info.vae_scale_factor}" if (fit_w, fit_h) != image.size else ""
        height, width, source = args.height or fit_h, args.width or fit_w, f"the first frame's size{rounded}"
    frames = args.frames or (record.frames if record else info.num_frames)
    fps = args.fps or (record.fps if record else 7)  # 7: the stock pipeline's
    return height, width, frames, fps, source


def sample_cli(args) -> int:
    # Validate everything cheap before loading anything, so bad input never leaves partial output.
    out = _check_out_file(args.out)
    dtype = parse_dtype(args.dtype)
    device = parse_device(args.device, dtype)
    check_positive(args, "frames", "height", "width", "steps", "decode-chunk-size", "fps")
    if not 0 <= args.seed < 2**63:
        raise InputError(f"--seed must be in [0, 2**63) (got {args.seed})")

    from sfv.teachers import SVD, family_of

    family = family_of(args.model)
    _check_family_flags(args, family)
    if family != SVD:
        return _sample_family(args, out, dtype, device, family)
    for name, default in (("motion_bucket_id", 127), ("noise_aug_strength", 0.02), ("min_guidance_scale", 1.0)):
        if getattr(args, name) is None:
            setattr(args, name, default)

    from sfv.decoders import build_decoder, resolve_decoder
    from sfv.images import load_image
    from sfv.model_dir import check_model_dir, check_video_size

    info = check_model_dir(args.model)
    image = load_image(args.image)
    height, width, num_frames, fps, source = _sample_video(args, info, image)
    check_video_size(height, width, num_frames, info.vae_scale_factor)
    window, overlap = _check_long_video(args, num_frames, info.num_frames)
    name, folder = resolve_decoder(args.decoder, args.model)
    if folder is not None:
        build_decoder(name, None, folder)  # a missing or damaged folder: one line, before the model loads

    import torch

    from sfv.pipeline import generate_frames, load_pipeline, sampling_defaults, sampling_line
    from sfv.video import write_video

    steps, guidance = sampling_defaults(info.student)
    steps = args.steps or steps
    guidance = guidance if args.max_guidance_scale is None else args.max_guidance_scale
    t0 = time.perf_counter()
    print(f"sfv sample: loading {args.model}: {sampling_line(info.student, steps, guidance, args.min_guidance_scale)}; "
          f"{num_frames} frames of {width}×{height} at {fps} fps ({source}); {name} decoder, {args.dtype} on {device}",
          flush=True)
    pipe = load_pipeline(args.model, device, dtype, decoder=args.decoder)
    pipe.set_progress_bar_config(desc="sfv sample", leave=False)
    t1 = time.perf_counter()
    generator = torch.Generator("cpu").manual_seed(args.seed)
    frames = generate_frames(
        pipe, image, "try fewer frames, a smaller size, --decode-chunk-size 2 or --dtype bf16",
        height=height, width=width, num_frames=num_frames, num_inference_steps=steps,
        min_guidance_scale=args.min_guidance_scale, max_guidance_scale=guidance, fps=fps,
        motion_bucket_id=args.motion_bucket_id, noise_aug_strength=args.noise_aug_strength,
        decode_chunk_size=args.decode_chunk_size, generator=generator, long_video=args.long, window=window, overlap=overlap,
    )
    t2 = time.perf_counter()
    try:
        write_video(out, frames, fps=fps)
    except OSError as e:
        raise InputError(f"cannot write '{out}': {first_line(e)}") from None
    t3 = time.perf_counter()
    print(
        f"sfv sample: {out} — {num_frames} frames {height}x{width}, {steps} step(s)"
        f"{f', {args.long} windows of {window} overlapping by {overlap}' if args.long else ''}, "
        f"generate {t2 - t1:.2f} s (load {t1 - t0:.2f} s, write {t3 - t2:.2f} s; {t3 - STARTED:.2f} s since the command "
        f"started, imports {t0 - STARTED:.2f} s)"
    )
    return 0


def _sample_family(args, out: Path, dtype, device, family: str) -> int:
    """`sfv sample` for a text-and-image family (Wan): the folder and the size checked by the family before any
    weights load, then one video through sfv.load_pipeline(folder)."""
    import torch

    from sfv.images import load_image
    from sfv.model_dir import read_video_record
    from sfv.teachers import check_teacher_folder, load_pipeline
    from sfv.teachers.wan_pipeline import video_defaults
    from sfv.video import write_video

    image = load_image(args.image)
    frames, height, width, fps = video_defaults(read_video_record(args.model))
    num_frames, height, width, fps = args.frames or frames, args.height or height, args.width or width, args.fps or fps
    check_teacher_folder(args.model, num_frames, height, width)
    t0 = time.perf_counter()
    pipe = load_pipeline(args.model, device, dtype)
    steps, guidance = pipe.sampling_defaults()
    steps = args.steps or steps
    guidance = guidance if args.max_guidance_scale is None else args.max_guidance_scale
    what = f"{'student' if pipe.is_student else 'teacher'}, {steps} step{'s' if steps != 1 else ''}" + \
        (f", CFG {guidance:g}" if guidance > 1 else "")
    print(f"sfv sample: {args.model} ({family}): {what}; {num_frames} frames of {width}×{height}, {args.dtype} on {device}",
          flush=True)
    t1 = time.perf_counter()
    try:
        frames = pipe(image, prompt=args.prompt or "", negative_prompt=args.negative_prompt or "", num_frames=num_frames,
                      height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                      generator=torch.Generator("cpu").manual_seed(args.seed)).frames[0]
    except (torch.OutOfMemoryError, MemoryError):
        raise InputError(f"out of memory generating {num_frames} frames at {height}×{width} on {device}: try fewer "
                         "frames, a smaller size or --dtype bf16") from None
    t2 = time.perf_counter()
    try:
        write_video(out, frames, fps=fps)
    except OSError as e:
        raise InputError(f"cannot write '{out}': {first_line(e)}") from None
    print(f"sfv sample: {out} — {num_frames} frames {height}x{width}, {steps} step(s), generate {t2 - t1:.2f} s "
          f"(load {t1 - t0:.2f} s)")
    return 0
