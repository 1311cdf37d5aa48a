"""Folders of videos for evaluation: .mp4 / .webm / .gif through sfv.video, or lossless uint8 .npy [F, H, W, 3]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sfv.errors import InputError, first_line

VIDEO_FILES = (".mp4", ".webm", ".gif", ".npy")


def list_videos(folder: str | Path, role: str) -> dict[str, Path]:
    """{name without suffix: path} for the videos in `folder` (not recursive); one-line error if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{role} folder '{folder}' does not exist")
    videos: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in VIDEO_FILES:
            if path.stem in videos:
                raise InputError(f"{role} folder '{folder}' has two videos named '{path.stem}' ({videos[path.stem].name}, {path.name})")
            videos[path.stem] = path
    if not videos:
        raise InputError(f"{role} folder '{folder}' has no videos ({', '.join(VIDEO_FILES)})")
    return videos


def load_video(path: Path) -> np.ndarray:
    """uint8 frames [F, H, W, 3]."""
    try:
        if path.suffix.lower() == ".npy":
            frames = np.load(path, allow_pickle=False)
        else:
            from sfv.video import read_video

            frames, _ = read_video(path)
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot read video '{path}': {first_line(e)}") from None
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise InputError(f"video '{path}' must be uint8 frames [F, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    return frames
