"""Fréchet Video Distance with a user-supplied I3D TorchScript detector (the `i3d_torchscript.pt` of StyleGAN-V,
common_metrics_on_video_quality and FastVideo: Kinetics-400 I3D, 400-d logits before the softmax as features).

Protocol, written into every result: the first `frames` frames of each video; shorter side resized to 224
(bilinear), centre crop 224×224; values in [-1, 1]; a batch [N, 3, T, 224, 224] is passed as
`detector(videos, rescale=False, resize=False, return_features=True)`. FVD = Fréchet distance between Gaussians
fitted to the features of the two sets (sfv.metrics.frechet).

Loading the detector is `torch.jit.load` of the file you pass: TorchScript is code, and loading it runs it —
only pass a file you trust (the usual one has a published checksum).
Reference statistics are cached as safetensors, keyed by the reference folder (path, file names, sizes and
modification times), the detector's SHA-256 and the protocol, so a changed detector or folder is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfv.errors import InputError, first_line
from sfv.files import atomic_path
from sfv.metrics.frechet import frechet_distance, gaussian_stats
from sfv.metrics.videos import load_video

CACHE_VERSION = 1


@dataclass(frozen=True)
class FVDProtocol:
    frames: int = 16
    resolution: int = 224

    def describe(self) -> dict:
        return {**asdict(self), "preprocess": f"first {self.frames} frames; shorter side resized to {self.resolution} "
                f"(bilinear), centre crop {self.resolution}x{self.resolution}; values in [-1, 1]",
                "call": "detector(videos [N, 3, T, H, W], rescale=False, resize=False, return_features=True)"}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_detector_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"I3D detector '{path}' does not exist; pass the TorchScript file i3d_torchscript.pt with --i3d")
    return path


def load_detector(path: str | os.PathLike, device: torch.device):
    """(TorchScript module, SHA-256 of the file). Executes the file's TorchScript code: pass trusted files only."""
    path = check_detector_file(path)
    try:
        detector = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as e:
        raise InputError(f"cannot load I3D detector '{path}' as TorchScript: {first_line(e)}") from None
    return detector, file_sha256(path)


def preprocess(frames: np.ndarray, protocol: FVDProtocol, name: str = "video") -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float [3, T, R, R] in [-1, 1] (T = protocol.frames, R = protocol.resolution)."""
    if frames.shape[0] < protocol.frames:
        raise InputError(f"{name} has {frames.shape[0]} frames; the FVD protocol takes the first {protocol.frames} — "
                         f"pass --fvd-frames {frames.shape[0]} (it is written into the output)")
    x = torch.from_numpy(np.ascontiguousarray(frames[: protocol.frames])).permute(0, 3, 1, 2).float() / 255  # [T, 3, H, W]
    h, w = x.shape[-2:]
    scale = protocol.resolution / min(h, w)
    size = (max(protocol.resolution, round(h * scale)), max(protocol.resolution, round(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - protocol.resolution) // 2, (size[1] - protocol.resolution) // 2
    x = x[:, :, top : top + protocol.resolution, left : left + protocol.resolution]
    return (x * 2 - 1).permute(1, 0, 2, 3).contiguous()  # [3, T, R, R]


@torch.no_grad()
def detector_features(detector, paths: list[Path], protocol: FVDProtocol, device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """Features [N, D] (float64, CPU) of the videos at `paths`."""
    feats = []
    for i in range(0, len(paths), batch_size):
        batch = torch.stack([preprocess(load_video(p), protocol, f"video '{p}'") for p in paths[i : i + batch_size]])
        try:
            out = detector(batch.to(device), rescale=False, resize=False, return_features=True)
        except RuntimeError as e:
            raise InputError(f"the I3D detector failed on a batch of shape {tuple(batch.shape)}: {first_line(e)}") from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(batch):
            raise InputError("the I3D detector must return features [N, D] for videos [N, 3, T, H, W]; "
                             "is this the i3d_torchscript.pt detector?")
        feats.append(out.double().cpu())
    return torch.cat(feats)


def _cache_key(reference: dict[str, Path], detector_sha256: str, protocol: FVDProtocol) -> dict:
    folder = next(iter(reference.values())).parent.resolve()
    files = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in reference.values()]
    return {"version": CACHE_VERSION, "reference": str(folder), "files": files, "detector_sha256": detector_sha256,
            "protocol": asdict(protocol)}


def reference_stats(detector, detector_sha256: str, reference: dict[str, Path], protocol: FVDProtocol,
                    device: torch.device, cache_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(μ, Σ, cache info) of the reference set: loaded from the cache when its key matches, else computed and saved."""
    from safetensors.torch import load_file, safe_open, save_file

    key = json.dumps(_cache_key(reference, detector_sha256, protocol), sort_keys=True)
    info = {"status": "disabled"}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"fvd-reference-{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"
        info = {"file": str(path)}
        if path.is_file():
            try:
                with safe_open(str(path), "pt") as f:
                    stored_key = (f.metadata() or {}).get("key")
                if stored_key == key:
                    stats = load_file(str(path))
                    return stats["mu"], stats["sigma"], {**info, "status": "hit"}
            except (OSError, RuntimeError, ValueError):
                pass  # unreadable cache: recompute and overwrite
    mu, sigma = gaussian_stats(detector_features(detector, list(reference.values()), protocol, device))
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file({"mu": mu.contiguous(), "sigma": sigma.contiguous()}, str(tmp), metadata={"key": key})
            info["status"] = "miss (computed and saved)"
        except OSError as e:
            info["status"] = f"miss (not saved: {first_line(e)})"
    return mu, sigma, info


def fvd(detector, detector_sha256: str, videos: dict[str, Path], reference: dict[str, Path], protocol: FVDProtocol,
        device: torch.device, cache_dir: Path | None = None) -> dict:
    """FVD of `videos` against `reference` (both ≥ 2 videos) with the protocol and cache info."""
    for role, found in (("videos", videos), ("reference", reference)):
        if len(found) < 2:
            raise InputError(f"FVD needs at least 2 {role} (a covariance); found {len(found)}")
    mu_r, sigma_r, cache = reference_stats(detector, detector_sha256, reference, protocol, device, cache_dir)
    mu_v, sigma_v = gaussian_stats(detector_features(detector, list(videos.values()), protocol, device))
    if mu_v.shape != mu_r.shape:
        raise InputError(f"detector features have {mu_v.shape[0]} dims but the cached reference has {mu_r.shape[0]}")
    return {"value": frechet_distance(mu_v, sigma_v, mu_r, sigma_r),
            "protocol": {**protocol.describe(), "count_videos": len(videos), "count_reference": len(reference)},
            "feature_dim": int(mu_v.shape[0]), "detector_sha256": detector_sha256, "reference_cache": cache}
