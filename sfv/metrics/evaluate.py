"""`sfv eval`: check every input first, then compute, then write one JSON (so bad input leaves nothing behind)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from sfv.errors import InputError
from sfv.files import atomic_path
from sfv.metrics import pairs
from sfv.metrics.fvd import FVDProtocol, check_detector_file, fvd, load_detector
from sfv.metrics.videos import list_videos


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sfv" / "fvd"


def evaluate(videos_dir, reference_dir, i3d=None, fvd_frames: int = 16, psnr_ssim: bool = False, lpips: bool = False,
             device: str | torch.device = "cpu", cache_dir: Path | None = None) -> dict:
    """Metrics of the videos in `videos_dir` against `reference_dir`; raises InputError before computing anything
    if an input is wrong (missing folder or detector, no videos, unmatched names for pairwise metrics)."""
    device = torch.device(device)
    if not (i3d or psnr_ssim or lpips):
        raise InputError("nothing to compute: pass --i3d PATH (FVD), --psnr-ssim and/or --lpips")
    if fvd_frames < 1:
        raise InputError(f"--fvd-frames must be at least 1 (got {fvd_frames})")
    videos, reference = list_videos(videos_dir, "videos"), list_videos(reference_dir, "reference")
    if i3d:
        check_detector_file(i3d)
    matched = pairs.match_pairs(videos, reference) if (psnr_ssim or lpips) else []
    lpips_model = pairs.load_lpips(device) if lpips else None

    result: dict = {"videos": str(videos_dir), "reference": str(reference_dir),
                    "count": {"videos": len(videos), "reference": len(reference)}}
    if matched:
        per_video: dict[str, dict] = {}
        for name, video_path, reference_path in matched:
            v, r = pairs.load_pair(name, video_path, reference_path)
            row = {"frames": int(v.shape[0]), "height": int(v.shape[2]), "width": int(v.shape[3])}
            if psnr_ssim:
                row.update(psnr=pairs.psnr(v, r), ssim=pairs.ssim(v, r))
            if lpips_model is not None:
                row["lpips"] = pairs.lpips_distance(lpips_model, v, r, device)
            per_video[name] = row
        for metric in ("psnr", "ssim", "lpips"):
            values = [row[metric] for row in per_video.values() if metric in row]
            if values:
                result[metric] = {"mean": sum(values) / len(values), "pairs": len(values)}
        result["per_video"] = per_video
    if i3d:
        detector, sha = load_detector(i3d, device)
        result["fvd"] = {**fvd(detector, sha, videos, reference, FVDProtocol(frames=fvd_frames), device, cache_dir),
                         "detector": str(i3d)}
    return result


def _finite(value):
    """JSON without NaN/Infinity tokens: non-finite floats become strings ("inf" for identical-video PSNR)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def evaluate_cli(args) -> int:
    from sfv.console import parse_device

    device = parse_device(args.device)
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.is_dir():
            raise InputError(f"--out '{out}' is a folder; give a JSON file name")
        if not out.parent.is_dir():
            raise InputError(f"output folder '{out.parent}' does not exist; create it first")
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    result = evaluate(args.videos, args.reference, args.i3d, args.fvd_frames, args.psnr_ssim, args.lpips, device, cache_dir)
    text = json.dumps(_finite(result), indent=2) + "\n"
    if out is None:
        print(text, end="")
        return 0
    with atomic_path(out, f".{out.name}.partial") as tmp:
        tmp.write_text(text)
    summary = [f"{m} {result[m]['mean']:.4g}" for m in ("psnr", "ssim", "lpips") if m in result]
    if "fvd" in result:
        proto = result["fvd"]["protocol"]
        summary.insert(0, f"FVD {result['fvd']['value']:.2f} ({proto['count_videos']} videos vs {proto['count_reference']} "
                          f"references, {proto['frames']} frames at {proto['resolution']}x{proto['resolution']})")
    print(f"sfv eval: {', '.join(summary)} -> {out}")
    return 0
