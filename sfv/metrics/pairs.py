"""Per-pair metrics for videos matched by file name (e.g. student vs teacher on the same seed and image).

PSNR: one MSE over all frames and pixels of a video, data range 1 (inf for identical videos).
SSIM: torchmetrics' Gaussian-window SSIM (11×11, σ 1.5), averaged over frames.
LPIPS (optional extra): AlexNet LPIPS averaged over frames, inputs in [-1, 1].
The reported value of each metric is the mean over pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from sfv.errors import InputError, first_line
from sfv.metrics.videos import load_video


def match_pairs(videos: dict[str, Path], reference: dict[str, Path]) -> list[tuple[str, Path, Path]]:
    only_v, only_r = sorted(set(videos) - set(reference)), sorted(set(reference) - set(videos))
    if only_v or only_r:
        def some(names):
            return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        raise InputError("pairwise metrics match videos to references by file name, but "
                         + "; ".join(filter(None, [only_v and f"{len(only_v)} video(s) have no reference ({some(only_v)})",
                                                   only_r and f"{len(only_r)} reference(s) have no video ({some(only_r)})"])))
    return [(name, videos[name], reference[name]) for name in sorted(videos)]


def load_pair(name: str, video_path: Path, reference_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as float [F, 3, H, W] in [0, 1]; shapes must agree."""
    v, r = load_video(video_path), load_video(reference_path)
    if v.shape != r.shape:
        def shown(a):
            return f"{a.shape[0]} frames of {a.shape[2]}×{a.shape[1]}"
        fix = (f"generate at the reference's size (sfv sample --height {r.shape[1]} --width {r.shape[2]}) or write the "
               "references at the videos' size" if v.shape[1:] != r.shape[1:] else
               f"generate as many frames as the reference has (sfv sample --frames {r.shape[0]})")
        raise InputError(f"video '{name}' has {shown(v)} but its reference has {shown(r)}: PSNR/SSIM/LPIPS compare them "
                         f"frame by frame and pixel by pixel; {fix}")
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255 for a in (v, r))


def psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    return float(peak_signal_noise_ratio(video, reference, data_range=1.0))


def ssim(video: torch.Tensor, reference: torch.Tensor) -> float:
    if min(video.shape[-2:]) < 11:
        raise InputError(f"SSIM needs frames of at least 11x11 pixels (its Gaussian window), got {tuple(video.shape[-2:])}")
    return float(structural_similarity_index_measure(video, reference, data_range=1.0))


LPIPS_INSTALL = "pip install 'sfv[lpips]' (brings lpips and torchvision; use the torchvision build that matches your torch)"


def load_lpips(device: torch.device):
    """The `lpips` package's AlexNet LPIPS; one-line InputError saying what to install or provide."""
    try:
        import lpips
    except ImportError:
        raise InputError(f"--lpips needs the optional lpips extra, which is not installed: {LPIPS_INSTALL}") from None
    except Exception as e:  # e.g. a torchvision build that does not match torch
        raise InputError(f"--lpips: the lpips package failed to import ({first_line(e)}): {LPIPS_INSTALL}") from None
    try:
        return lpips.LPIPS(net="alex", verbose=False).eval().to(device)
    except Exception as e:  # offline: torchvision cannot fetch the ImageNet AlexNet weights
        raise InputError(f"--lpips could not load its weights ({first_line(e)}): LPIPS needs torchvision's "
                         "alexnet-owt-7be5be79.pth in $TORCH_HOME/hub/checkpoints (fetched once with network access)") from None


@torch.no_grad()
def lpips_distance(model, video: torch.Tensor, reference: torch.Tensor, device: torch.device) -> float:
    return float(model(video.to(device) * 2 - 1, reference.to(device) * 2 - 1).mean())
