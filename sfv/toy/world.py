"""Synthetic videos of coloured shapes moving at constant velocity and bouncing off the walls.

A scene is a flat background and 2–3 objects (disc, square or diamond; each its own palette colour). Every
object starts with the same velocity: speed SPEED (fraction of the frame width per frame) in one of eight
directions, and the direction is what SVD's `motion_bucket_id` encodes (`bucket_for_direction`). So the future
is identifiable from the conditioning — frame 0 gives where the objects are, the motion bucket gives where they
go — and a generated video can be checked against the right answer (`sfv.metrics.toy`), not only for
plausibility. Everything is deterministic by seed; coordinates are fractions of the frame, so any size renders
the same scene.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BACKGROUNDS = np.array([[0.10, 0.10, 0.12], [0.82, 0.82, 0.78]])  # dark, light
COLOURS = np.array([  # object palette: far from each other and from both backgrounds
    [0.90, 0.15, 0.15],  # red
    [0.15, 0.80, 0.20],  # green
    [0.20, 0.35, 0.95],  # blue
    [0.95, 0.80, 0.10],  # yellow
    [0.75, 0.20, 0.85],  # magenta
])
KINDS = ("disc", "square", "diamond")
DIRECTIONS = 8
SPEED = 0.05  # of the frame width per frame (1.6 px at 32 px)
RADIUS = (0.11, 0.15)


def bucket_for_direction(k: int) -> int:
    """motion_bucket_id for direction k (k·45°, k = 0 is +x): 16, 48, …, 240 — spread over SVD's 0–255 range."""
    return 16 + 32 * (k % DIRECTIONS)


def direction_for_bucket(bucket: float) -> int:
    return int(round((float(bucket) - 16) / 32)) % DIRECTIONS


@dataclass
class Obj:
    kind: str
    colour: int  # index into COLOURS
    radius: float
    x: float
    y: float


@dataclass
class Scene:
    background: int  # index into BACKGROUNDS
    direction: int  # 0..7
    objects: list[Obj]

    @property
    def motion_bucket_id(self) -> int:
        return bucket_for_direction(self.direction)

    def to_json(self) -> dict:
        return {"background": self.background, "direction": self.direction, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_json(cls, d: dict) -> "Scene":
        return cls(d["background"], d["direction"], [Obj(**o) for o in d["objects"]])


def make_scene(seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    count = int(rng.integers(2, 4))
    colours = rng.choice(len(COLOURS), size=count, replace=False)
    objects = []
    for c in colours:
        r = float(rng.uniform(*RADIUS))
        x, y = rng.uniform(r, 1 - r, 2)
        objects.append(Obj(KINDS[int(rng.integers(len(KINDS)))], int(c), r, float(x), float(y)))
    return Scene(int(rng.integers(len(BACKGROUNDS))), int(rng.integers(DIRECTIONS)), objects)


def trajectories(scene: Scene, frames: int) -> np.ndarray:
    """Object centres [F, N, 2] (x, y in frame fractions): constant velocity, mirror bounce at the walls."""
    angle = 2 * math.pi * scene.direction / DIRECTIONS
    v = SPEED * np.array([math.cos(angle), math.sin(angle)])
    out = np.zeros((frames, len(scene.objects), 2))
    for n, o in enumerate(scene.objects):
        lo, hi = o.radius, 1 - o.radius
        for t in range(frames):
            p = np.array([o.x, o.y]) + v * t
            span = hi - lo  # unfold the reflections: a triangle wave between lo and hi
            q = np.mod(p - lo, 2 * span)
            out[t, n] = lo + np.where(q > span, 2 * span - q, q)
    return out


def render(scene: Scene, frames: int, size: int, supersample: int = 4) -> np.ndarray:
    """uint8 video [F, size, size, 3]; edges antialiased by supersampling."""
    s = size * supersample
    yy, xx = (np.mgrid[0:s, 0:s] + 0.5) / s
    centres = trajectories(scene, frames)
    video = np.empty((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        img = np.broadcast_to(BACKGROUNDS[scene.background], (s, s, 3)).copy()
        for n, o in enumerate(scene.objects):  # later objects are drawn over earlier ones
            cx, cy = centres[t, n]
            dx, dy = xx - cx, yy - cy
            if o.kind == "disc":
                mask = dx**2 + dy**2 <= o.radius**2
            elif o.kind == "square":
                half = o.radius * 0.886  # same area as the disc
                mask = (np.abs(dx) <= half) & (np.abs(dy) <= half)
            else:
                mask = np.abs(dx) + np.abs(dy) <= o.radius * 1.253
            img[mask] = COLOURS[o.colour]
        video[t] = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return (video * 255).round().astype(np.uint8)


def write_world(out_dir: str | Path, count: int, seed: int = 0, frames: int = 8, size: int = 64, fps: int = 8,
                progress: bool = False) -> Path:
    """Write `count` scenes as real mp4 files + metadata.jsonl (file, fps, motion_bucket_id, the data path's
    format) + scenes.jsonl (the ground truth). Scene i uses seed·1_000_003 + i; files already there are kept
    (an interrupted run resumes)."""
    from sfv.video import write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta, truth = [], []
    items = range(count)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"toy world -> {out}", unit="video")
    for i in items:
        scene = make_scene(seed * 1_000_003 + i)
        name = f"toy{i:05d}.mp4"
        if not (out / name).is_file():
            write_video(out / name, render(scene, frames, size), fps=fps)
        meta.append({"file": name, "fps": fps, "motion_bucket_id": scene.motion_bucket_id})
        truth.append({"file": name, **scene.to_json()})
    (out / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    (out / "scenes.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth))
    return out
