"""`sfv sample` (sfv/cli.py builds its parser): everything cheap checked before anything loads, the size, frames and
fps the model records (or the first frame's size), then one video through SFVPipeline as a student or a teacher."""

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
