"""The toy metric: scores generated toy-world videos with the world's known structure (`sfv.toy.world`).

Each generated video is paired with the real clip of the same conditioning (frame 0 + motion bucket). In the
toy world that conditioning determines the future, so the real clip is the right answer, not just an example.
Objects are found by colour: a pixel belongs to palette colour k with weight 1 − d/TOL (d its RGB distance to
the colour, [0, 1] scale), 0 beyond TOL; areas and centroids are weighted.
Parts (all lower = better, 0 for the real clip itself):

- position:  mean distance (px) between each object's centroid and its true centroid over frames 1…F−1,
             capped at CAP px; an object that vanished counts CAP.
- shape:     mean |area / true area − 1| per object and frame (capped at 1; vanished = 1): objects present,
             right size, right colour, not blurred away.
- clutter:   fraction of pixels that are neither the background nor an object colour of frame 0, in excess of
             the real clip's (blur, smears, new colours, flicker).
- motion:    mean |Δ²c − Δ²c_true| (px/frame², capped at CAP): acceleration error of the trajectories —
             jitter, reversals and shuffled frames; constant velocity and bounces cost nothing.
- conditioning: RMSE of generated frame 0 against the conditioning image.
- frechet:   Fréchet distance between per-video descriptor sets (speed mean/std, acceleration, clutter,
             area change, colour change) of generated and real clips — distribution-level realism.

Headline `toy_error` = mean over parts of part / SCALES[part]: each scale is roughly what a clearly broken
video scores on that part, so 1.0 is "broken on average". The scales were fixed with the validation tests
(tests/test_toy_metric.py: real clips score 0; blurred, frozen, frame-shuffled and drifting clips clearly
worse) before any model was scored.
"""

from __future__ import annotations

import warnings

import numpy as np

from sfv.metrics.frechet import frechet_distance, gaussian_stats
from sfv.toy.world import BACKGROUNDS, COLOURS

TOL = 0.3
CAP = 8.0  # px
MIN_AREA = 2.0  # px: smaller is "not there"
SCALES = {"position": 4.0, "shape": 0.5, "clutter": 0.1, "motion": 2.0, "conditioning": 0.1, "frechet": 2.0}
PARTS = tuple(SCALES)


def _as_float(videos) -> np.ndarray:
    v = np.asarray(videos)
    if v.dtype == np.uint8:
        v = v.astype(np.float32) / 255
    if v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"videos must be [N, F, H, W, 3], got {v.shape}")
    return v.astype(np.float32)


def _masks(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft object-colour masks [N, F, K, H, W] and background masks [N, F, B, H, W] in [0, 1]: 1 at the
    colour, falling linearly to 0 at distance TOL (so antialiased and compressed edges count partly)."""
    obj = np.linalg.norm(v[..., None, :] - COLOURS[None, None, None, None].astype(np.float32), axis=-1)
    bg = np.linalg.norm(v[..., None, :] - BACKGROUNDS[None, None, None, None].astype(np.float32), axis=-1)
    return np.moveaxis(np.clip(1 - obj / TOL, 0, 1), -1, 2), np.moveaxis(np.clip(1 - bg / TOL, 0, 1), -1, 2)


def _tracks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas [N, F, K] and centroids [N, F, K, 2] (x, y in px; NaN where the area is under MIN_AREA)."""
    h, w = masks.shape[-2:]
    area = masks.sum(axis=(-1, -2)).astype(np.float64)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks * xs).sum(axis=(-1, -2)) / area
        cy = (masks * ys).sum(axis=(-1, -2)) / area
    c = np.stack([cx, cy], axis=-1)
    c[area < MIN_AREA] = np.nan
    return area, c


def describe(videos) -> dict[str, np.ndarray]:
    """Per-video structure read from pixels: areas, centroids, the objects and background of frame 0."""
    v = _as_float(videos)
    obj, bg = _masks(v)
    area, centre = _tracks(obj)
    present = area[:, 0] >= 4 * MIN_AREA  # [N, K] objects of frame 0
    background = bg[:, 0].sum(axis=(-1, -2)).argmax(axis=-1)  # [N]
    n = np.arange(len(v))
    known = (obj * present[:, None, :, None, None]).sum(axis=2)
    other = np.clip(1 - known - bg[n, :, background], 0, 1)  # [N, F, H, W] neither bg nor a frame-0 object colour
    clutter = other.mean(axis=(-1, -2))  # [N, F]
    return {"videos": v, "area": area, "centre": centre, "present": present, "clutter": clutter}


def _descriptors(d: dict) -> np.ndarray:
    """Per-video descriptor for the Fréchet part (uses only the video itself)."""
    c, present, area = d["centre"], d["present"], d["area"]
    vel = np.diff(c, axis=1)  # [N, F-1, K, 2]
    speed = np.linalg.norm(vel, axis=-1)
    acc = np.linalg.norm(np.diff(vel, axis=1), axis=-1)
    m = present[:, None, :]
    with np.errstate(invalid="ignore"):
        area_change = np.abs(area[:, 1:] / np.maximum(area[:, :1], 1) - 1)
    colour_change = np.abs(np.diff(d["videos"].mean(axis=(2, 3)), axis=1)).mean(axis=(1, 2))

    def masked(x, fill, reduce=np.nanmean):
        x = np.where(m & np.isfinite(x), x, np.nan).reshape(len(x), -1)
        with warnings.catch_warnings():  # a video with no trackable object: all-NaN rows get `fill`
            warnings.simplefilter("ignore", RuntimeWarning)
            out = reduce(x, axis=1) if x.shape[1] else np.full(len(x), np.nan)
        return np.where(np.isfinite(out), out, fill)

    return np.stack([
        masked(np.minimum(speed, CAP), CAP), masked(np.minimum(speed, CAP), CAP, np.nanstd), masked(np.minimum(acc, CAP), CAP),
        d["clutter"].mean(axis=1) * 10, masked(np.minimum(area_change, 1.0), 1.0) * 4, colour_change * 10,
    ], axis=1)


def score(generated, real) -> dict[str, float]:
    """Toy metric of generated videos against the real clips of the same conditioning (paired, same order).

    generated, real: [N, F, H, W, 3] uint8 or float in [0, 1], same shape. Returns the parts, `toy_error`
    (the headline, lower = better) and N."""
    g, r = describe(generated), describe(real)
    if g["videos"].shape != r["videos"].shape:
        raise ValueError(f"generated {g['videos'].shape} and real {r['videos'].shape} videos must have the same shape")
    present = r["present"][:, None, :]  # [N, 1, K]
    ref_ok = (r["area"] >= MIN_AREA) & present  # where the true object is visible
    err = np.linalg.norm(g["centre"] - r["centre"], axis=-1)  # NaN where the generated one vanished
    err = np.where(np.isfinite(err), np.minimum(err, CAP), CAP)
    position = err[:, 1:][ref_ok[:, 1:]].mean()

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(g["area"] / r["area"] - 1)
    ratio = np.where(g["area"] >= MIN_AREA, np.minimum(ratio, 1.0), 1.0)
    shape = ratio[ref_ok].mean()

    clutter = np.maximum(g["clutter"] - r["clutter"], 0).mean()

    acc_g = np.diff(g["centre"], n=2, axis=1)
    acc_r = np.diff(r["centre"], n=2, axis=1)
    acc_ok = ref_ok[:, 2:] & ref_ok[:, 1:-1] & ref_ok[:, :-2]
    acc_err = np.linalg.norm(acc_g - acc_r, axis=-1)
    acc_err = np.where(np.isfinite(acc_err), np.minimum(acc_err, CAP), CAP)
    motion = acc_err[acc_ok].mean() if acc_ok.any() else 0.0

    conditioning = float(np.sqrt(((g["videos"][:, 0] - r["videos"][:, 0]) ** 2).mean()))

    dg, dr = _descriptors(g), _descriptors(r)
    eye = 1e-6 * np.eye(dg.shape[1])
    import torch

    mg, sg = gaussian_stats(torch.from_numpy(dg))
    mr, sr = gaussian_stats(torch.from_numpy(dr))
    frechet = max(0.0, frechet_distance(mg, sg + torch.from_numpy(eye), mr, sr + torch.from_numpy(eye)))

    parts = {"position": float(position), "shape": float(shape), "clutter": float(clutter), "motion": float(motion),
             "conditioning": conditioning, "frechet": float(frechet)}
    parts["toy_error"] = float(np.mean([parts[k] / SCALES[k] for k in PARTS]))
    parts["videos"] = len(g["videos"])
    return parts
