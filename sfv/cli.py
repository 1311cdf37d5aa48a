"""`sfv` command line: thin — parse, call the library, turn user errors into one line and exit code 2.

    sfv sample --model DIR --image PATH --out out.mp4|out.gif [options]
    sfv export --generator PATH --teacher DIR --out DIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sfv.errors import InputError, ModelLoadError, SFVError

DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


class _Parser(argparse.ArgumentParser):
    """argparse that raises (one line, exit 2 via main) instead of printing usage and exiting."""

    def error(self, message):
        raise InputError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sfv", description="SF-V: one-step image-to-video from Stable Video Diffusion.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("sample", help="generate a video from an image with an SVD-layout model folder")
    s.add_argument("--model", required=True, help="diffusers folder (an `sfv export` output, or any SVD folder)")
    s.add_argument("--image", required=True, help="conditioning image (frame 0): png/jpg/...")
    s.add_argument("--out", required=True, help="output video, .mp4 or .gif")
    s.add_argument("--frames", type=int, default=None, help="number of frames (default: the model's)")
    s.add_argument("--height", type=int, default=576)
    s.add_argument("--width", type=int, default=1024)
    s.add_argument("--fps", type=int, default=7, help="conditioning fps and output frame rate")
    s.add_argument("--motion-bucket-id", type=int, default=127)
    s.add_argument("--noise-aug-strength", type=float, default=0.02)
    s.add_argument("--steps", type=int, default=1, help="Euler steps (1 = SF-V one-step sampling)")
    s.add_argument("--max-guidance-scale", type=float, default=1.0, help=">1 turns on SVD's per-frame CFG ramp")
    s.add_argument("--min-guidance-scale", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--decode-chunk-size", type=int, default=None, help="frames per VAE decode call (default: all)")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    s.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("export", help="write a one-step student as a drop-in diffusers folder")
    e.add_argument("--generator", required=True, help="student UNet: a UNet folder or a .safetensors state dict")
    e.add_argument("--teacher", required=True, help="the teacher's diffusers folder (VAE, image encoder, scheduler)")
    e.add_argument("--out", required=True, help="new folder to write")
    e.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries()
        return args.func(args) or 0
    except SFVError as e:
        print(f"sfv: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sfv: interrupted", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------------------------------


def parse_dtype(name: str):
    import torch

    if name.lower() not in DTYPES:
        raise InputError(f"unknown dtype '{name}'; choose fp32, bf16 or fp16")
    return getattr(torch, DTYPES[name.lower()])


def parse_device(name: str, dtype=None):
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device '{name}'; choose cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{name}' requested but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device '{name}' requested but MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device '{name}'; choose cpu, cuda, cuda:N or mps")
    if device.type == "cpu" and dtype == torch.float16:
        raise InputError("fp16 is not supported on CPU; use --dtype fp32 or bf16 (or a GPU)")
    return device


def _quiet_libraries() -> None:
    # Library chatter (torchvision fallbacks, deprecations, loading bars) would bury sfv's own lines;
    # the sampling progress bar and sfv's summary stay.
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def load_image(path: str):
    import PIL.Image

    p = Path(path)
    if not p.is_file():
        raise InputError(f"image '{path}' does not exist")
    try:
        with PIL.Image.open(p) as im:
            return im.convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as e:
        raise InputError(f"cannot read image '{path}': {e}") from None


def _check_out_file(path: str) -> Path:
    from sfv.video import VIDEO_SUFFIXES

    out = Path(path)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"output '{path}' must end in .mp4 or .gif")
    if not out.parent.is_dir():
        raise InputError(f"output folder '{out.parent}' does not exist; create it first")
    if out.is_dir():
        raise InputError(f"output '{path}' is a folder; give a file name ending in .mp4 or .gif")
    return out


def cmd_sample(args) -> int:
    # Validate everything cheap before loading anything, so bad input never leaves partial output.
    out = _check_out_file(args.out)
    dtype = parse_dtype(args.dtype)
    device = parse_device(args.device, dtype)
    if args.frames is not None and args.frames < 1:
        raise InputError(f"--frames must be at least 1 (got {args.frames})")
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1 (got {args.steps})")
    if args.decode_chunk_size is not None and args.decode_chunk_size < 1:
        raise InputError(f"--decode-chunk-size must be at least 1 (got {args.decode_chunk_size})")
    if args.fps < 1:
        raise InputError(f"--fps must be at least 1 (got {args.fps})")

    from sfv.teacher import check_model_dir, check_video_size, model_size_multiple

    check_model_dir(args.model)
    image = load_image(args.image)
    import json

    num_frames = args.frames or json.loads((Path(args.model) / "unet" / "config.json").read_text()).get("num_frames", 14)
    check_video_size(args.height, args.width, num_frames, model_size_multiple(args.model))

    import torch

    from sfv.pipeline import SFVPipeline
    from sfv.video import write_video

    t0 = time.perf_counter()
    print(f"sfv sample: loading {args.model} ({args.dtype}, {device})", file=sys.stderr)
    try:
        pipe = SFVPipeline.from_pretrained(args.model, dtype=dtype, use_safetensors=True).to(device)
    except Exception as e:  # corrupt weights, mismatched configs: a user problem, reported in one line
        raise ModelLoadError(f"could not load '{args.model}': {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    t1 = time.perf_counter()
    generator = torch.Generator("cpu").manual_seed(args.seed)
    frames = pipe(
        image, height=args.height, width=args.width, num_frames=num_frames, num_inference_steps=args.steps,
        min_guidance_scale=args.min_guidance_scale, max_guidance_scale=args.max_guidance_scale, fps=args.fps,
        motion_bucket_id=args.motion_bucket_id, noise_aug_strength=args.noise_aug_strength,
        decode_chunk_size=args.decode_chunk_size, generator=generator, output_type="np",
    ).frames[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t2 = time.perf_counter()
    write_video(out, frames, fps=args.fps)
    t3 = time.perf_counter()
    print(
        f"sfv sample: {out} — {num_frames} frames {args.height}x{args.width}, {args.steps} step(s), "
        f"generate {t2 - t1:.2f} s (load {t1 - t0:.2f} s, write {t3 - t2:.2f} s, total {t3 - t0:.2f} s)"
    )
    return 0


def cmd_export(args) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"export folder '{out}' already exists and is not empty; choose a new folder or remove it")
    from sfv.generator import SFVGenerator
    from sfv.pipeline import export_pipeline
    from sfv.teacher import SVDTeacher

    t0 = time.perf_counter()
    teacher = SVDTeacher.from_pretrained(args.teacher)
    unet = SFVGenerator.load_unet(args.generator, teacher)
    export_pipeline(unet, teacher, out, info={"generator": str(args.generator), "teacher": str(args.teacher)})
    print(f"sfv export: {out} (student UNet + teacher VAE/CLIP/scheduler) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
