"""`sfv` command line: thin — parse, call the library, turn user errors into one line and exit code 2.

    sfv sample --model DIR --image PATH --out out.mp4|out.gif [options]     (a student export, or a teacher)
    sfv export --generator PATH --teacher DIR --out DIR      (or --checkpoint DIR [--weights ema|raw] [--lora]) [--decoder DIR] [--comfyui]
    sfv distill --recipe recipes/NAME.yaml [section.key=value ...] [--resume latest|DIR]
    sfv distill-decoder --recipe recipes/decoder_toy.yaml [section.key=value ...] [--resume latest|DIR]
    sfv cache --teacher DIR --videos DIR --out DIR [--frames F --height H --width W --fps N]
    sfv bench  --teacher DIR --student DIR | --arch svd|svd-xt|wan2.1-i2v-14b|wan2.2-ti2v-5b --random-weights  [--steps ...]
    sfv eval   --videos DIR --reference DIR [--i3d PATH] [--psnr-ssim] [--lpips] [--out FILE]
    sfv serve  [--model DIR] [--host 127.0.0.1] [--port 7860] [--device cpu] [--decoder vae|tiny|DIR]   (a local web page)

Sizes follow the model: without --height/--width/--frames/--fps, sample, cache and bench use what the model folder
records it was trained at (video.json; sfv.model_dir), and sample otherwise the first frame's size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sfv.console import ArgParser, check_positive, parse_device, run_command
from sfv.errors import DataError, InputError

DECODER_HELP = ("vae (the model's own VAE decoder), tiny (the fast decoder an export ships in fast_decoder/) or a fast "
                "decoder folder, e.g. models/toy-decoder-v2")


# `sfv bench --arch`: sfv.arch.ARCH_FRAMES (SVD) and sfv.teachers.wan_bench.ARCHES (Wan), named here so that
# `sfv --help` imports no torch (tests/test_bench.py checks the two lists agree)
BENCH_ARCHES = ["svd", "svd-xt", "wan2.1-i2v-14b", "wan2.2-ti2v-5b", "tiny-wan21", "tiny-wan22"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="sfv", description="SF-V: one-step image-to-video from Stable Video Diffusion.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgParser)

    s = sub.add_parser("sample", help="generate a video from an image with an SVD or Wan model folder")
    s.add_argument("--model", required=True, help="diffusers folder: an `sfv export` output (a student), or any SVD or "
                   "Wan image-to-video folder (a teacher, sampled on its stock schedule)")
    s.add_argument("--image", required=True, help="conditioning image (frame 0): png/jpg/...")
    s.add_argument("--out", required=True, help="output video, .mp4 or .gif")
    s.add_argument("--frames", type=int, default=None, help="number of frames (default: the model's)")
    s.add_argument("--height", type=int, default=None, help="default: the size the model was trained at (video.json), "
                   "else the first frame's, rounded to the VAE's scale factor")
    s.add_argument("--width", type=int, default=None, help="default: as --height")
    s.add_argument("--fps", type=int, default=None, help="conditioning fps and output frame rate (default: the model's, else 7)")
    s.add_argument("--prompt", default=None, help="Wan: the text prompt (default: empty); SVD has no text input")
    s.add_argument("--negative-prompt", default=None, help="Wan: the prompt CFG steers away from (default: empty)")
    s.add_argument("--motion-bucket-id", type=int, default=None, help="SVD: the motion label (default 127)")
    s.add_argument("--noise-aug-strength", type=float, default=None, help="SVD: frame-0 noise augmentation (default 0.02)")
    s.add_argument("--steps", type=int, default=None, help="a student: steps on its own σ levels, 1 (SF-V, the default) "
                   "up to T_g − 1; a teacher: Euler steps of its stock schedule (default: its own, 25 for SVD)")
    s.add_argument("--max-guidance-scale", type=float, default=None, help=">1 turns on SVD's per-frame CFG ramp (default: "
                   "1 for a student, the teacher's own for a teacher: 3 for SVD)")
    s.add_argument("--min-guidance-scale", type=float, default=None, help="SVD: the first frame's CFG scale (default 1)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--decode-chunk-size", type=int, default=None, help="frames per VAE decode call (default: all)")
    s.add_argument("--decoder", default="vae", help=DECODER_HELP + " (default vae)")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    s.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16")
    s.add_argument("--long", default=None, help="--frames beyond the model's window: chain or multidiffusion")
    s.add_argument("--window", type=int, default=None, help="with --long: frames per window (default: the model's)")
    s.add_argument("--overlap", type=int, default=None,
                   help="with --long: frames shared by neighbouring windows (default: 1 chain, window/2 multidiffusion)")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("export", help="write a one-step student as a drop-in diffusers folder")
    e.add_argument("--generator", help="student UNet: a UNet folder or a .safetensors state dict")
    e.add_argument("--checkpoint", help="or a training checkpoint folder (runs/NAME/checkpoints/videos-…)")
    e.add_argument("--weights", default="ema", choices=["ema", "raw"], help="with --checkpoint: EMA (default) or raw G weights")
    e.add_argument("--teacher", help="the teacher's diffusers folder (default with --checkpoint: the run's model.teacher)")
    e.add_argument("--t-g", type=int, default=None, help="the student's T_g, recorded for few-step sampling (default: "
                   "with --checkpoint the run's model.t_g, with --generator the recipes' default model.t_g)")
    e.add_argument("--decoder", help="a fast decoder folder (`sfv distill-decoder` output) to ship as fast_decoder/")
    e.add_argument("--comfyui", action="store_true", help="also write the student as ComfyUI files, in the original key "
                   "names, under OUT/comfyui/ (SVD: checkpoints/NAME.safetensors; Wan: diffusion_models/NAME.safetensors)")
    e.add_argument("--lora", action="store_true", help="with --checkpoint of a LoRA student (model.lora): also write its "
                   "adapter into the folder's lora/ (Wan: diffusers' load_lora_weights layout and ComfyUI's; SVD: a peft adapter)")
    e.add_argument("--out", required=True, help="new folder to write")
    e.set_defaults(func=cmd_export)

    from sfv.config import add_train_arguments

    d = sub.add_parser("distill", help="SF-V training (same as `accelerate launch -m sfv.train`)")
    add_train_arguments(d)
    d.set_defaults(func=cmd_distill)

    dd = sub.add_parser("distill-decoder", help="train the fast tiny decoder on the teacher VAE's latents of real clips")
    add_train_arguments(dd)
    dd.set_defaults(func=cmd_distill_decoder)

    c = sub.add_parser("cache", help="precompute VAE latents + conditioning of a video folder into safetensors shards")
    c.add_argument("--teacher", required=True, help="the SVD folder whose VAE and image encoder training will use")
    c.add_argument("--videos", required=True, help="folder of videos (recursive)")
    c.add_argument("--out", required=True, help="new cache folder")
    c.add_argument("--frames", type=int, default=None, help="default: the teacher's (video.json, else its UNet's)")
    c.add_argument("--height", type=int, default=None, help="default: the size the teacher records (video.json)")
    c.add_argument("--width", type=int, default=None, help="default: as --height")
    c.add_argument("--fps", type=int, default=None, help="the rate clips are read at (default: the teacher's, else 7)")
    c.add_argument("--noise-aug-strength", type=float, default=0.02)
    c.add_argument("--metadata", default=None, help=".jsonl/.csv with file, fps, motion_bucket_id")
    c.add_argument("--shard-size", type=int, default=256)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu")
    c.add_argument("--teacher-pairs", type=int, default=0, metavar="K",
                   help="also store K teacher pairs per clip (noise seed -> the teacher's sample from it), for "
                        "generator.rec_target=teacher (default 0: none)")
    c.add_argument("--pair-steps", type=int, default=25, help="teacher steps of each pair (default 25)")
    c.add_argument("--pair-guidance", type=float, default=3.0, help="CFG scale of each pair (default 3.0; 1 = no CFG)")
    c.set_defaults(func=cmd_cache)
    b = sub.add_parser("bench", help="time the one-step student against the multi-step teacher, per component")
    b.add_argument("--teacher", help="the teacher's diffusers folder")
    b.add_argument("--student", help="the student's folder (an `sfv export` output)")
    b.add_argument("--arch", choices=BENCH_ARCHES, help="full-size architecture instead of folders (needs --random-weights); "
                   "the Wan ones time the 1-step student against the 50-step CFG teacher per component (tiny-wan*: CPU size)")
    b.add_argument("--random-weights", action="store_true", help="with --arch: random weights (speed runs; nothing is downloaded)")
    b.add_argument("--steps", default="25,16,8,4,1", help="teacher step counts, comma-separated (each with and without CFG)")
    b.add_argument("--frames", type=int, default=None, help="default: the model's (video.json, else 14 SVD, 25 SVD-XT)")
    b.add_argument("--height", type=int, default=None, help="default: the size the student records (video.json), else 576")
    b.add_argument("--width", type=int, default=None, help="default: as --height, else 1024")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    b.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16")
    b.add_argument("--compile", action="store_true", help="torch.compile the UNets (slow first call, excluded as warm-up)")
    b.add_argument("--fast-paths", action="store_true", help="also time the student under each fast path (SDPA, dtype, ...)")
    b.add_argument("--decode-chunk-size", type=int, default=None, help="frames per VAE decode call (default: all)")
    b.add_argument("--long-frames", type=int, default=0, help="also time the student on a video this long, chain and "
                   "multidiffusion windows (reports frames of output video per second)")
    b.add_argument("--window", type=int, help="with --long-frames: frames per window (default: the model's)")
    b.add_argument("--overlap", type=int, help="with --long-frames: shared frames (default: 1 chain, window/2 multidiffusion)")
    b.add_argument("--decoder", default=None, help="also time the student decoding with a fast decoder: " + DECODER_HELP
                   + ", or random (its layout for this VAE with random weights: speed only); default: tiny if the student ships one")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    b.add_argument("--out", default="runs/bench", help="folder for bench.json, bench.md, bench.png")
    b.set_defaults(func=cmd_bench)

    v = sub.add_parser("eval", help="FVD / PSNR / SSIM / LPIPS of a folder of videos against a reference folder")
    v.add_argument("--videos", required=True, help="folder of generated videos (.mp4, .gif, .webm, or uint8 .npy [F, H, W, 3])")
    v.add_argument("--reference", required=True, help="folder of reference videos (pairs matched by file name)")
    v.add_argument("--i3d", help="FVD: the I3D TorchScript file (i3d_torchscript.pt); torch.jit.load runs its code")
    v.add_argument("--fvd-frames", type=int, default=16, help="FVD protocol: the first N frames of each video")
    v.add_argument("--cache-dir", default=None, help="reference-feature cache (default: ~/.cache/sfv/fvd)")
    v.add_argument("--psnr-ssim", action="store_true", help="PSNR and SSIM per matched pair (torchmetrics)")
    v.add_argument("--lpips", action="store_true", help="LPIPS per matched pair (needs the lpips extra)")
    v.add_argument("--device", default="cpu")
    v.add_argument("--out", default=None, help="JSON file to write (default: print the JSON)")
    v.set_defaults(func=cmd_eval)

    w = sub.add_parser("serve", help="a local web page: upload a first frame, get the video and its generation time")
    w.add_argument("--model", default=None, help="diffusers SVD or Wan image-to-video folder: an `sfv export` output or a "
                   "teacher (default: the committed one-step toy student, models/toy-sfv-v2, with models/toy-decoder-v2)")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=7860)
    w.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    w.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16")
    w.add_argument("--decoder", default=None, help="the fast decoder offered beside the VAE: " + DECODER_HELP
                   + " (default: the export's own, if it ships one)")
    w.add_argument("--max-pixels", type=int, default=None, help="largest first frame taken, in pixels (default 1048576)")
    w.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), lambda args: args.func(args), argv)


# ----------------------------------------------------------------------------------------------------


def cmd_sample(args) -> int:
    from sfv.sample_cli import sample_cli

    return sample_cli(args)


def cmd_export(args) -> int:
    from sfv.export import export_student

    t0 = time.perf_counter()
    out = export_student(args.out, args.generator, args.teacher, args.checkpoint, args.weights, args.t_g, args.decoder,
                         lora=args.lora, comfyui=args.comfyui)
    extra = ((" + fast decoder" if args.decoder else "") + (" + ComfyUI files in comfyui/" if args.comfyui else "")
             + (" + the LoRA adapter in lora/" if args.lora else ""))
    print(f"sfv export: {out} (the student network + the teacher's other components{extra}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_distill(args) -> int:
    from sfv.config import check_header_inputs, load_recipe
    from sfv.train import run

    recipe = load_recipe(args.recipe, args.overrides)
    check_header_inputs(args.recipe, recipe)
    run(recipe, args.resume, cpu=args.cpu, overwrite=args.overwrite)
    return 0


def cmd_distill_decoder(args) -> int:
    from sfv.config import check_header_inputs
    from sfv.decoder_train import load_decoder_recipe, run

    recipe = load_decoder_recipe(args.recipe, args.overrides)
    check_header_inputs(args.recipe, recipe)
    run(recipe, args.resume, cpu=args.cpu, overwrite=args.overwrite)
    return 0


def cmd_cache(args) -> int:
    from sfv.cache import write_cache
    from sfv.data import ClipSpec, VideoFolder
    from sfv.model_dir import check_model_dir, check_video_size

    check_positive(args, "frames", "height", "width", "fps", "shard-size", "pair-steps")
    if args.teacher_pairs < 0 or args.pair_guidance < 1:
        raise InputError(f"--teacher-pairs must be ≥ 0 and --pair-guidance ≥ 1 (got {args.teacher_pairs}, {args.pair_guidance})")
    out = Path(args.out)
    if out.exists():
        raise InputError(f"cache folder '{out}' already exists; pick a new one")
    info = check_model_dir(args.teacher)
    record = info.video  # the teacher's training video (video.json): the defaults of every size flag
    height, width = args.height or (record and record.height), args.width or (record and record.width)
    if not height or not width:
        raise InputError(f"pass --height and --width: '{args.teacher}' records no training size (video.json)")
    frames, fps = args.frames or (record.frames if record else info.num_frames), args.fps or (record.fps if record else 7)
    check_video_size(height, width, frames, info.vae_scale_factor)
    dataset = VideoFolder(args.videos, ClipSpec(frames, height, width, fps), args.seed, args.metadata)
    try:
        dataset[(0, 0)]  # fail fast, before the teacher loads, if no file gives a clip
    except DataError as e:
        raise DataError(f"{e}; --fps sets the rate clips are read at ({fps} fps here) and --frames their length "
                        f"({frames})") from None
    device = parse_device(args.device)

    from tqdm.auto import tqdm

    from sfv.teachers import load_teacher

    teacher = load_teacher(args.teacher, device=device)
    with tqdm(total=len(dataset), unit="video", desc="sfv cache") as bar:
        index = write_cache(teacher, dataset, out, args.noise_aug_strength, args.shard_size, seed=args.seed, progress=bar.update,
                            pairs=args.teacher_pairs, pair_steps=args.pair_steps, pair_guidance=args.pair_guidance)
    pairs = f", {args.teacher_pairs} teacher pair(s) each ({args.pair_steps} steps, CFG {args.pair_guidance:g})" if args.teacher_pairs else ""
    print(f"sfv cache: {index['clips']} clips{pairs} in {len(index['shards'])} shard(s) at {out}; skipped {len(index['skipped'])} file(s)")
    for s in index["skipped"][:10]:
        print(f"  skipped {s}")
    return 0


def cmd_bench(args) -> int:
    from sfv.bench_cli import bench_cli

    return bench_cli(args)


def cmd_eval(args) -> int:
    from sfv.metrics.evaluate import evaluate_cli

    return evaluate_cli(args)


def cmd_serve(args) -> int:
    from sfv.serve_page import serve_cli

    return serve_cli(args)


if __name__ == "__main__":
    sys.exit(main())
