"""Training data: real video files -> clips of F frames at the target fps and size (sfv/cache.py: a latent cache of them).

    VideoFolder      mp4 / webm / mkv / mov / avi / gif files and folders of frames, found recursively;
                     optional metadata (.jsonl or .csv: file, fps, motion_bucket_id, caption; other columns
                     ignored; a missing caption is the empty prompt, which SVD never reads).
                     A clip: F frames resampled from the file's real fps to the target fps, resized to cover
                     H×W and centre-cropped -> frames [F, 3, H, W] in [0, 1].
    ResumableSampler the order of samples, a pure function of (seed, position): resuming at a position
                     continues the exact stream, on any number of processes.

A corrupt, unreadable or too-short file never stops a run: the item falls through to the next file, and
the skipped paths travel with the batch (so DataLoader workers report them too) for the end-of-run report.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfv.errors import DataError, first_line

VIDEO_EXTS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
EPOCH_SEED_STRIDE = 1_000_003  # a prime above any epoch count: epoch e of seed s is seeded s·stride + e, no two (s, e) alike


@dataclass
class ClipSpec:
    frames: int
    height: int
    width: int
    fps: int
    motion_bucket_id: int = 127  # per-video label for videos whose metadata has none (the teacher reads it)

    @classmethod
    def of(cls, recipe) -> "ClipSpec":
        """From a recipe (its data section, and the svd section's default motion label)."""
        d, svd = recipe.data, getattr(recipe, "svd", None)
        return cls(d.frames, d.height, d.width, d.fps, svd.motion_bucket_id if svd is not None else 127)


def find_videos(root: Path) -> list[Path]:
    """Video files and frame folders under root, sorted (a frame folder: a folder holding images only)."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in VIDEO_EXTS:
            found.append(path)
        elif path.is_dir():
            children = list(path.iterdir())
            if children and all(c.is_file() and c.suffix.lower() in IMAGE_EXTS for c in children):
                found.append(path)
    return found


def read_metadata(path: Path) -> dict[str, dict]:
    """{relative file: {fps, motion_bucket_id, caption}} from a .jsonl or .csv file with a `file` column."""
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            raise DataError(f"metadata '{path}' must be .jsonl or .csv")
        out = {}
        for row in rows:
            entry = {k: float(row[k]) for k in ("fps", "motion_bucket_id") if row.get(k) not in (None, "")}
            if row.get("caption") not in (None, ""):
                if not isinstance(row["caption"], str):
                    raise TypeError(f"caption of '{row['file']}' is {type(row['caption']).__name__}, not text")
                entry["caption"] = row["caption"]
            out[str(row["file"])] = entry
        return out
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise DataError(f"metadata '{path}' is malformed ({type(e).__name__}: {e}); each row needs `file` and "
                        "optionally numeric `fps` and `motion_bucket_id` and a text `caption`") from None


def read_clip(path: Path, spec: "ClipSpec", fps: float | None, rng: np.random.Generator) -> np.ndarray:
    """The F frames (uint8 [F, h, w, 3]) of one clip of a video file or frame folder, decoding no more than needed:
    the frame count and rate come from the container, `clip_indices` picks the frames, and decoding stops after
    the last one (a long video never sits in memory whole). `fps` overrides the file's rate (metadata)."""
    from PIL import Image

    if path.is_dir():
        files = sorted(path.iterdir())
        idx = clip_indices(len(files), fps or spec.fps, spec, rng)
        return np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in idx])
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            count = getattr(im, "n_frames", 1)
            if fps is None:
                durations = []
                for i in range(count):
                    im.seek(i)
                    durations.append(im.info.get("duration") or 100)
                fps = 1000.0 / float(np.mean(durations))
            frames = []
            for i in clip_indices(count, fps, spec, rng):
                im.seek(i)
                frames.append(np.asarray(im.convert("RGB")))
        return np.stack(frames)
    return _decode_clip(path, spec, fps, rng)


def _decode_clip(path: Path, spec: "ClipSpec", fps: float | None, rng: np.random.Generator) -> np.ndarray:
    """mp4/webm/mkv/mov/avi decoded in this process by PyAV (FFmpeg's libraries), up to the clip's last frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        file_fps = float(stream.average_rate or 0) or spec.fps
        count = stream.frames
        if count <= 0:  # some containers (webm, mkv) do not store a frame count: use the duration
            seconds = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / av.time_base
            count = int(seconds * file_fps)
        idx = clip_indices(count, fps or file_fps, spec, rng)
        wanted, frames = set(idx), {}
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= idx[-1]:
                break
    if len(frames) < len(wanted):
        raise ValueError(f"too short: the stream ended before frame {idx[-1]} (container said {count} frames)")
    return np.stack([frames[i] for i in idx])


def clip_indices(num_source: int, source_fps: float, spec: ClipSpec, rng: np.random.Generator) -> list[int]:
    """Indices of F source frames spaced 1/target_fps seconds apart, at a random start; ValueError if too short."""
    step = source_fps / spec.fps  # source frames per target frame
    span = (spec.frames - 1) * step
    if num_source < 1 or span > num_source - 1 + 1e-6:
        raise ValueError(f"too short: {num_source} frames at {source_fps:g} fps, a clip needs {math.floor(span) + 1}")
    start = rng.uniform(0, num_source - 1 - span)
    return [min(num_source - 1, round(start + k * step)) for k in range(spec.frames)]


def resize_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 [F, h, w, 3] -> float [F, 3, H, W] in [0, 1]: scale to cover H×W (antialiased), centre-crop."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return x[:, :, top : top + height, left : left + width].contiguous()


class VideoFolder(torch.utils.data.Dataset):
    """Clips from a folder of videos; item (index, epoch) -> dict(frames, fps, motion_bucket_id, skipped)."""

    def __init__(self, root: str | Path, spec: ClipSpec, seed: int = 0, metadata: str | Path | None = None):
        self.root, self.spec, self.seed = Path(root), spec, seed
        if not self.root.is_dir():
            raise DataError(f"data folder '{root}' does not exist (set data.videos to a folder of videos)")
        self.files = find_videos(self.root)
        if not self.files:
            raise DataError(f"no videos in '{root}': looked for {', '.join(sorted(VIDEO_EXTS))} files and folders of frames")
        if metadata is None:
            metadata = next((p for p in (self.root / "metadata.jsonl", self.root / "metadata.csv") if p.is_file()), None)
        elif not Path(metadata).is_file():
            raise DataError(f"metadata file '{metadata}' does not exist")
        self.metadata = read_metadata(Path(metadata)) if metadata else {}

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int, epoch: int = 0) -> dict:
        """One clip of file `index` (its start drawn from (seed, epoch, index)); raises on a bad file."""
        path = self.files[index]
        meta = self.metadata.get(path.relative_to(self.root).as_posix(), {})
        clip = read_clip(path, self.spec, meta.get("fps"), np.random.default_rng([self.seed, epoch, index]))
        return {
            "frames": resize_crop(clip, self.spec.height, self.spec.width),  # [F, 3, H, W] in [0, 1]
            "fps": torch.tensor(self.spec.fps, dtype=torch.float32),
            "motion_bucket_id": torch.tensor(meta.get("motion_bucket_id", self.spec.motion_bucket_id), dtype=torch.float32),
            "caption": meta.get("caption", ""),  # the prompt of text-conditioned families (Wan); "" = none
        }

    def __getitem__(self, item) -> dict:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        skipped = []
        for k in range(len(self.files)):  # a bad file falls through to the next one
            i = (index + k) % len(self.files)
            try:
                return {**self.load(i, epoch), "skipped": skipped}
            except Exception as e:  # corrupt / unreadable / too short: count it, never crash a long run
                skipped.append(f"{self.files[i]}: {first_line(e)[:160]}")
        raise DataError(
            f"no usable videos in '{self.root}': all {len(self.files)} files are unreadable or shorter than "
            f"{self.spec.frames} frames at {self.spec.fps} fps (first: {skipped[0]})"
        )


class ResumableSampler(torch.utils.data.Sampler):
    """Infinite (index, epoch) stream: epoch e is a permutation seeded by (seed, e); process r of W takes
    global positions r, r + W, ...; `start` is the number of samples this process has already consumed."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start

    def __iter__(self):
        k = self.start
        perm, perm_epoch = None, -1
        while True:
            position = k * self.world_size + self.rank
            epoch, i = divmod(position, self.size)
            if epoch != perm_epoch:
                perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * EPOCH_SEED_STRIDE + epoch))
                perm_epoch = epoch
            yield int(perm[i]), epoch
            k += 1


def collate(items: list[dict]) -> dict:
    """Stack tensors, list the captions, concatenate the lists of skipped files."""
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("skipped", "caption")}
    if "caption" in items[0]:
        out["caption"] = [it.get("caption", "") for it in items]
    out["skipped"] = [s for it in items for s in it.get("skipped", [])]
    return out
