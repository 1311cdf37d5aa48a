"""Video files in and out (mp4 through imageio-ffmpeg's bundled ffmpeg, gif through Pillow)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sfv.errors import InputError
from sfv.files import atomic_path

VIDEO_SUFFIXES = (".mp4", ".gif")


def to_uint8_frames(frames) -> np.ndarray:
    """[F, H, W, 3] float in [0, 1] (or uint8, or a list of PIL images) -> uint8 [F, H, W, 3]."""
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    return frames


def write_video(path: str | os.PathLike, frames, fps: float) -> Path:
    """Write frames to .mp4 (H.264, yuv420p, no resizing) or .gif (looping); atomically (temp + rename)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"output '{path}' must end in .mp4 or .gif")
    frames = to_uint8_frames(frames)
    with atomic_path(path, f".{path.stem}.partial{suffix}") as tmp:  # the writers read the suffix
        if suffix == ".mp4":
            import imageio.v2 as imageio

            if frames.shape[1] % 2 or frames.shape[2] % 2:
                raise InputError(f"H.264 mp4 needs even height and width, got {frames.shape[1]}x{frames.shape[2]}; write a .gif instead")
            # macro_block_size=1: keep the exact size (imageio would otherwise resize to multiples of 16).
            with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                    pixelformat="yuv420p", macro_block_size=1) as writer:
                for frame in frames:
                    writer.append_data(frame)
        else:
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """uint8 frames [F, H, W, 3] and frames per second of an .mp4/.webm/.gif file."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() == ".gif":
        frames = iio.imread(path, index=None, plugin="pillow", mode="RGB")
        meta = iio.immeta(path, index=0, plugin="pillow")
        duration_ms = meta.get("duration") or 100
        return np.asarray(frames), 1000.0 / duration_ms
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="FFMPEG") as reader:
        fps = float(reader.get_meta_data().get("fps", 0.0))
        frames = np.stack([np.asarray(f) for f in reader])
    return frames, fps
