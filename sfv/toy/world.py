"""Synthetic videos of coloured shapes moving at constant velocity and bouncing off the walls, in two presets.

A scene is a flat background and 2–3 objects (disc, square or diamond; each its own palette colour); the
objects move at constant velocity and bounce off the walls (mirror reflection). Coordinates are fractions of
the frame, so any size renders the same scene; everything is deterministic by seed.

- **v1** (`Scene`): every object has the same velocity, speed SPEED in one of eight directions, and the
  direction is what SVD's `motion_bucket_id` encodes (`bucket_for_direction`). Frame 0 plus the motion bucket
  determine the whole video: one possible future.
- **v2** (`BranchScene`): the motion bucket sets the speed class (SPEEDS, `bucket_for_speed`); each object's
  direction is drawn independently from K directions θ_k = 2π(k + ½)/K, which frame 0 does not reveal. A
  conditioning (frame 0 + bucket) therefore has K^N equally likely futures, all enumerable
  (`BranchScene.futures`): a sample can be scored against its nearest future, and the per-pixel average of
  the futures — the answer of one-step regression — is a blur of faint copies, not a video of the world.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
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

PRESETS = ("v1", "v2")
SPEEDS = (0.04, 0.07, 0.10)  # v2 speed classes, of the frame width per frame (1.3, 2.2, 3.2 px at 32 px)
WRITER_THREADS = 4  # write_world: clips rendered and encoded at once
HORIZON = 8  # frames over which v2's futures are kept apart (the world's clip length)
SEPARATION = 0.08  # v2: any two futures of an object differ by ≥ this mean distance over frames 1…HORIZON−1


def bucket_for_direction(k: int) -> int:
    """v1: motion_bucket_id for direction k (k·45°, k = 0 is +x): 16, 48, …, 240 — spread over SVD's 0–255 range."""
    return 16 + 32 * (k % DIRECTIONS)


def direction_for_bucket(bucket: float) -> int:
    return int(round((float(bucket) - 16) / 32)) % DIRECTIONS


def bucket_for_speed(c: int) -> int:
    """v2: motion_bucket_id for speed class c: 32, 128, 224 — a higher bucket is more motion, as in SVD."""
    return 32 + 96 * c


def speed_for_bucket(bucket: float) -> int:
    return int(min(max(round((float(bucket) - 32) / 96), 0), len(SPEEDS) - 1))


def check_world(preset: str, directions: int) -> None:
    """Raise InputError for a preset or a direction count K the world cannot render."""
    from sfv.errors import InputError

    if preset not in PRESETS:
        raise InputError(f"unknown toy-world preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if preset == "v2" and (directions < 4 or directions % 2 or directions > 16):
        # even K: the mirror flips map the direction set onto itself (so flipped clips are world clips too)
        raise InputError(f"--directions {directions}: K must be an even number from 4 to 16")


@dataclass
class Obj:
    kind: str
    colour: int  # index into COLOURS
    radius: float
    x: float
    y: float


@dataclass
class Scene:
    """v1: one velocity for all objects, set by the motion bucket."""

    background: int  # index into BACKGROUNDS
    direction: int  # 0..7
    objects: list[Obj]

    @property
    def motion_bucket_id(self) -> int:
        return bucket_for_direction(self.direction)

    def velocities(self) -> np.ndarray:
        angle = 2 * math.pi * self.direction / DIRECTIONS
        v = SPEED * np.array([math.cos(angle), math.sin(angle)])
        return np.repeat(v[None], len(self.objects), axis=0)

    def to_json(self) -> dict:
        return {"background": self.background, "direction": self.direction, "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_json(cls, d: dict) -> "Scene":
        return cls(d["background"], d["direction"], [Obj(**o) for o in d["objects"]])


@dataclass
class BranchScene:
    """v2: the bucket sets the speed; object n moves in direction θ_{choice[n]} of K — one of K^N futures."""

    background: int
    speed: int  # speed class, index into SPEEDS
    directions: int  # K
    objects: list[Obj]
    choice: list[int]  # each object's direction index, 0..K−1

    @property
    def motion_bucket_id(self) -> int:
        return bucket_for_speed(self.speed)

    def velocity(self, k: int) -> np.ndarray:
        angle = 2 * math.pi * (k + 0.5) / self.directions
        return SPEEDS[self.speed] * np.array([math.cos(angle), math.sin(angle)])

    def velocities(self) -> np.ndarray:
        return np.stack([self.velocity(k) for k in self.choice])

    def with_choice(self, choice) -> "BranchScene":
        return replace(self, choice=[int(k) for k in choice])

    def futures(self, frames: int) -> np.ndarray:
        """Every possible trajectory of every object: centres [N, K, F, 2] (frame fractions)."""
        return np.stack([np.stack([_bounce(o, self.velocity(k), frames) for k in range(self.directions)]) for o in self.objects])

    def to_json(self, frames: int = HORIZON) -> dict:
        return {"preset": "v2", "background": self.background, "speed": self.speed, "directions": self.directions,
                "objects": [asdict(o) for o in self.objects], "choice": self.choice,
                "futures": np.round(self.futures(frames), 5).tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "BranchScene":
        return cls(d["background"], d["speed"], d["directions"], [Obj(**o) for o in d["objects"]], list(d["choice"]))


def scene_from_json(d: dict) -> Scene | BranchScene:
    return BranchScene.from_json(d) if d.get("preset") == "v2" else Scene.from_json(d)


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


def make_branch_scene(seed: int, directions: int = 4) -> BranchScene:
    """v2 scene: layout as v1, a speed class, and each object's direction drawn uniformly from K. Start
    positions are redrawn until the object's K futures stay SEPARATION apart (near a wall two directions would
    fold onto the same path, and "which future" would be undefined)."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(2, 4))
    colours = rng.choice(len(COLOURS), size=count, replace=False)
    background, speed = int(rng.integers(len(BACKGROUNDS))), int(rng.integers(len(SPEEDS)))
    scene = BranchScene(background, speed, directions, [], [])
    for c in colours:
        kind, r = KINDS[int(rng.integers(len(KINDS)))], float(rng.uniform(*RADIUS))
        for _ in range(1000):
            x, y = rng.uniform(r, 1 - r, 2)
            o = Obj(kind, int(c), r, float(x), float(y))
            if _separation(scene, o) >= SEPARATION:
                break
        scene.objects.append(o)
    scene.choice = [int(k) for k in rng.integers(directions, size=count)]
    return scene


def resample(scene: BranchScene, seed) -> BranchScene:
    """The same conditioning with fresh direction draws (another sample of its futures)."""
    return scene.with_choice(np.random.default_rng(seed).integers(scene.directions, size=len(scene.objects)))


def _separation(scene: BranchScene, o: Obj) -> float:
    paths = np.stack([_bounce(o, scene.velocity(k), HORIZON)[1:] for k in range(scene.directions)])  # [K, F−1, 2]
    d = np.linalg.norm(paths[:, None] - paths[None], axis=-1).mean(axis=-1)
    return float(d[~np.eye(len(d), dtype=bool)].min())


def _bounce(o: Obj, v: np.ndarray, frames: int) -> np.ndarray:
    """Centres [F, 2] of an object at constant velocity v with mirror bounces at the walls."""
    lo, hi = o.radius, 1 - o.radius
    out = np.zeros((frames, 2))
    for t in range(frames):
        p = np.array([o.x, o.y]) + v * t
        span = hi - lo  # unfold the reflections: a triangle wave between lo and hi
        q = np.mod(p - lo, 2 * span)
        out[t] = lo + np.where(q > span, 2 * span - q, q)
    return out


def trajectories(scene: Scene | BranchScene, frames: int) -> np.ndarray:
    """Object centres [F, N, 2] (x, y in frame fractions) of the scene's future."""
    v = scene.velocities()
    return np.stack([_bounce(o, v[n], frames) for n, o in enumerate(scene.objects)], axis=1).reshape(frames, len(scene.objects), 2)


def render(scene: Scene | BranchScene, frames: int, size: int, supersample: int = 4) -> np.ndarray:
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
                progress: bool = False, preset: str = "v1", directions: int = 4, samples: int = 1) -> Path:
    """Write `count` conditionings as real mp4 files + metadata.jsonl (file, fps, motion_bucket_id, the data
    path's format) + scenes.jsonl (the ground truth; v2 rows carry every possible future and the conditioning
    index) + world.json (preset, K). v2 writes `samples` clips per conditioning, each with its own direction
    draw. Conditioning i uses seed·1_000_003 + i; files already there are kept (an interrupted run resumes)."""
    from sfv.errors import InputError
    from sfv.video import write_video

    check_world(preset, directions)
    if samples < 1 or (preset == "v1" and samples != 1):
        raise InputError(f"--samples {samples}: v1 has one future per conditioning (1); v2 takes ≥ 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta, truth, todo = [], [], []
    for i in range(count):
        base = seed * 1_000_003 + i
        if preset == "v1":
            clips = [(f"toy{i:05d}.mp4", make_scene(base))]
        else:
            first = make_branch_scene(base, directions)
            clips = [(f"toy{i:05d}.mp4" if samples == 1 else f"toy{i:05d}-{r}.mp4", first if r == 0 else resample(first, [base, r]))
                     for r in range(samples)]
        for r, (name, scene) in enumerate(clips):
            if not (out / name).is_file():
                todo.append((name, scene))
            meta.append({"file": name, "fps": fps, "motion_bucket_id": scene.motion_bucket_id})
            extra = {"conditioning": i, "sample": r, **scene.to_json(frames)} if preset == "v2" else scene.to_json()
            truth.append({"file": name, **extra})

    def write(job):  # each clip depends on its scene only: the files are the same in any order
        write_video(out / job[0], render(job[1], frames, size), fps=fps)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"toy world {preset} -> {out}", unit="clip")
    # rendering (numpy) and encoding (an ffmpeg process per clip) overlap across a few threads
    with ThreadPoolExecutor(WRITER_THREADS) as pool:
        for _ in pool.map(write, todo):
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    (out / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    (out / "scenes.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truth))
    info = {"preset": preset, "count": count, "seed": seed, "frames": frames, "size": size, "fps": fps, "samples": samples}
    if preset == "v2":
        info["directions"] = directions
    (out / "world.json").write_text(json.dumps(info) + "\n")
    return out


def read_world(folder: str | Path) -> tuple[dict, list[dict]]:
    """world.json (v1 when absent: folders written before presets existed) and the scenes.jsonl rows."""
    folder = Path(folder)
    info = json.loads((folder / "world.json").read_text()) if (folder / "world.json").is_file() else {"preset": "v1"}
    rows = [json.loads(line) for line in (folder / "scenes.jsonl").read_text().splitlines()]
    return info, rows


def build_parser(parser_class=argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(prog="python -m sfv.toy.world", description="Write a toy world: mp4 clips + metadata + ground truth")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, required=True, help="conditionings (frame 0 + motion bucket)")
    p.add_argument("--preset", default="v1", help="v1 (the bucket sets the direction: one future) or v2 (the bucket "
                                                   "sets the speed; K directions per object: K^N futures)")
    p.add_argument("--directions", type=int, default=4, help="v2: K, directions per object (even, 4–16)")
    p.add_argument("--samples", type=int, default=1, help="v2: clips per conditioning, each its own direction draw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--fps", type=int, default=8)
    return p


def main(argv: list[str] | None = None) -> int:
    from sfv.console import ArgParser, run_command

    def command(args) -> int:
        from sfv.errors import InputError

        check_world(args.preset, args.directions)  # before anything is written
        if args.count < 1:
            raise InputError(f"--count {args.count}: write at least one conditioning")
        out = write_world(args.out, args.count, args.seed, args.frames, args.size, args.fps, progress=True,
                          preset=args.preset, directions=args.directions, samples=args.samples)
        print(f"wrote {out}")
        return 0

    return run_command(build_parser(ArgParser), command, argv)


if __name__ == "__main__":
    sys.exit(main())
