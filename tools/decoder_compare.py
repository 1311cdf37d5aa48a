"""The fast tiny decoder against the teacher's stock VAE decoder on the same latents of real clips.

    python tools/decoder_compare.py --teacher models/toy-svd-v2 --decoder runs/decoder/toy/decoder \
        --videos runs/decoder/heldout [--frames 8 --height 32 --width 32 --fps 8] [--count 32 --repeats 20]

Latents z = the teacher VAE's encoding of `count` clips; both decoders decode the same z. Reported:
  * speed: median (and min–max) seconds per decode of the whole batch over `repeats` timed calls (one warm-up),
    on the current torch thread count, and the ratio stock / tiny;
  * PSNR of the tiny decoder's frames against the stock decoder's (frames in [0, 1]), and of each against the
    real frames;
  * flicker: mean |x_{t+1} − x_t| over frames, for each decoder and for the real clips, and tiny / stock − 1.
Writes the figures as JSON (--out).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from sfv.console import ArgParser, check_positive, run_command


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of frames in [0, 1] (over the whole batch)."""
    return float(10 * torch.log10(1 / (a - b).square().mean()))


def flicker(frames: torch.Tensor) -> float:
    """Mean absolute frame-to-frame change of [B, 3, F, H, W] frames in [0, 1]."""
    return float((frames[:, :, 1:] - frames[:, :, :-1]).abs().mean())


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def compare(args) -> dict:
    from sfv.data import ClipSpec, VideoFolder, collate
    from sfv.decoders import build_decoder
    from sfv.teachers import load_teacher

    teacher = load_teacher(args.teacher)
    tiny = build_decoder("tiny", teacher.vae, args.decoder)
    data = VideoFolder(args.videos, ClipSpec(args.frames, args.height, args.width, args.fps), seed=args.seed)
    batch = collate([data[(i, 0)] for i in range(min(args.count, len(data)))])
    real = batch["frames"].transpose(1, 2)  # [B, 3, F, H, W] in [0, 1]
    z = teacher.encode_video(batch["frames"])  # [B, F, C, h, w]
    stock_frames = (teacher.decode(z) / 2 + 0.5).clamp(0, 1)
    tiny_frames = (tiny(z) / 2 + 0.5).clamp(0, 1)
    t_stock = timed(lambda: teacher.decode(z), args.repeats)
    t_tiny = timed(lambda: tiny(z), args.repeats)
    f_stock, f_tiny = flicker(stock_frames), flicker(tiny_frames)
    return {
        "clips": len(z), "latents": list(z.shape[1:]), "threads": torch.get_num_threads(), "repeats": args.repeats,
        "seconds": {"stock": {"median": statistics.median(t_stock), "min": min(t_stock), "max": max(t_stock)},
                    "tiny": {"median": statistics.median(t_tiny), "min": min(t_tiny), "max": max(t_tiny)}},
        "speedup": statistics.median(t_stock) / statistics.median(t_tiny),
        "psnr_db": {"tiny_vs_stock": psnr(tiny_frames, stock_frames), "stock_vs_real": psnr(stock_frames, real),
                    "tiny_vs_real": psnr(tiny_frames, real)},
        "flicker": {"real": flicker(real), "stock": f_stock, "tiny": f_tiny, "tiny_over_stock_minus_1": f_tiny / f_stock - 1},
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgParser(prog="decoder_compare", description="tiny decoder vs the stock VAE decoder: speed, PSNR, flicker")
    p.add_argument("--teacher", required=True)
    p.add_argument("--decoder", required=True, help="a tiny decoder folder (sfv distill-decoder's run_dir/decoder)")
    p.add_argument("--videos", required=True, help="clips to encode (ideally ones the decoder was not trained on)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--count", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/decoder/compare.json")

    def command(args):
        check_positive(args, "frames", "height", "width", "fps", "count", "repeats")
        r = compare(args)
        s = r["seconds"]
        print(f"{r['clips']} clips, latents {r['latents']}, {r['threads']} thread(s), median of {r['repeats']}:")
        print(f"{'decoder':<10}{'s/decode':>10}{'min':>9}{'max':>9}{'flicker':>9}{'PSNR vs real':>14}")
        for name in ("stock", "tiny"):
            print(f"{name:<10}{s[name]['median']:>10.4f}{s[name]['min']:>9.4f}{s[name]['max']:>9.4f}"
                  f"{r['flicker'][name]:>9.4f}{r['psnr_db'][f'{name}_vs_real']:>14.2f}")
        print(f"speed-up {r['speedup']:.1f}x; PSNR tiny vs stock {r['psnr_db']['tiny_vs_stock']:.2f} dB; flicker tiny/stock "
              f"{r['flicker']['tiny_over_stock_minus_1']:+.1%} (real clips {r['flicker']['real']:.4f})")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {out}")

    return run_command(p, command, argv)


if __name__ == "__main__":
    sys.exit(main())
