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
(tests/test_toy.py: real clips score 0; blurred, frozen, frame-shuffled and drifting clips clearly
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


# ----------------------------------------------------------------------------------------------------
# v2: several possible futures per conditioning (`sfv.toy.world.BranchScene`)
#
# A conditioning no longer determines its video, so a sample is scored against its *nearest possible future*:
# each object (found by its colour) is assigned the direction k* whose trajectory its centroid track follows
# most closely, and the joint future with those directions is rendered as the reference. Parts (lower = better):
#
# - precision:  position (centroid vs the reference, px, capped at CAP; vanished = CAP), shape (|area / area_ref − 1|,
#               area_ref = the conditioning frame's area × the reference's visible-area ratio, so occlusion is
#               allowed and shrinking is not) and clutter (pixels neither background nor a frame-0 object colour,
#               beyond the real clips' at that frame). A per-pixel average of futures is several faint copies:
#               no copy has the object's colour, so the object vanishes (shape, position) and the copies are clutter.
# - motion:     speed (| |Δc| − |Δc_ref| |, px/frame: the commanded speed class, bounces included) and jitter
#               (|Δ²c − Δ²c_ref|, px/frame²).
# - diversity:  per conditioning and object, the distribution p̂ of k* over the S seeds against the world's
#               uniform 1/K: total variation TV = ½(Σ_k |p̂_k − 1/K| + p̂_vanished), rescaled so that the value
#               expected from S true draws is 0 and one fixed direction for every seed is 1.
# - conditioning: RMSE of generated frame 0 against the conditioning image.
# - frechet:    Fréchet distance of the per-video descriptors (as v1) of generated and real sets.
#
# Headline `toy_error` = mean over the five groups of (mean over the group's parts of part / SCALES_V2[part]).
#
# Reported beside the headline (not part of it, so toy_error stays comparable with every earlier table):
# - energy:     the energy score ES = E‖X − y‖ − ½·E‖X − X′‖ (Gneiting & Raftery 2007) of the S samples X of a
#               conditioning against its R true draws y, ‖·‖ the RMS pixel difference over frames 1…F−1, averaged over
#               conditionings. A proper scoring rule: in expectation it is lowest when the samples are drawn like the
#               world's own futures, so it penalises blur (E‖X − X′‖ falls to 0 and X sits between the futures) and
#               collapse (E‖X − X′‖ = 0 and X is one future) alike. True draws score ½·E‖Y − Y′‖, not 0.
# - kl:         KL(p̂ ‖ uniform) = Σ_k p̂_k·ln(K·p̂_k) of each object's chosen directions over the seeds where it was
#               found (an object found in fewer than 2 seeds counts ln K, the most), averaged over objects; true draws
#               score `kl_expected` > 0 with S samples, one fixed direction ln K.
# - edge:       the edge energy (mean squared spatial gradient, frames 1…F−1) of the samples over that of the true
#               draws: 1 for a world-like sharpness, below 1 for dim or soft objects.

SCALES_V2 = {"position": 4.0, "shape": 0.5, "clutter": 0.1, "speed": 1.0, "jitter": 2.0, "diversity": 1.0,
             "conditioning": 0.1, "frechet": 2.0}
GROUPS_V2 = {"precision": ("position", "shape", "clutter"), "motion": ("speed", "jitter"), "diversity": ("diversity",),
             "conditioning": ("conditioning",), "frechet": ("frechet",)}
PARTS_V2 = tuple(SCALES_V2)


def expected_tv(samples: int, directions: int, draws: int = 200_000) -> float:
    """E[TV(p̂, uniform)] for p̂ the histogram of `samples` uniform draws from `directions` (fixed-seed Monte Carlo,
    ± 0.001): what true sampling scores, the zero of the diversity part."""
    d = np.random.default_rng(0).integers(directions, size=(draws, samples))
    counts = np.stack([(d == k).sum(axis=1) for k in range(directions)], axis=1)
    return float(0.5 * np.abs(counts / samples - 1 / directions).sum(axis=1).mean())


def expected_kl(samples: int, directions: int, draws: int = 200_000) -> float:
    """E[KL(p̂ ‖ uniform)] for p̂ the histogram of `samples` uniform draws from `directions` (fixed-seed Monte Carlo):
    what true sampling scores on the `kl` part."""
    d = np.random.default_rng(0).integers(directions, size=(draws, samples))
    p = np.stack([(d == k).mean(axis=1) for k in range(directions)], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.where(p > 0, p * np.log(directions * p), 0.0).sum(axis=1).mean())


def direction_kl(picks: np.ndarray, directions: int) -> float:
    """KL(p̂ ‖ uniform) of one object's chosen directions `picks` [S] (−1 = not found): p̂ over the seeds where it was
    found; found in fewer than 2 seeds: ln K (nothing to spread over)."""
    found = picks[picks >= 0]
    if len(found) < 2:
        return float(np.log(directions))
    p = np.bincount(found, minlength=directions) / len(found)
    nz = p > 0
    return float((p[nz] * np.log(directions * p[nz])).sum())


def energy_score(generated: np.ndarray, real: np.ndarray) -> float:
    """ES = E‖X − y‖ − ½·E‖X − X′‖ per conditioning, averaged over conditionings. generated [S, N, F, H, W, 3],
    real [R, N, F, H, W, 3] (float in [0, 1]); ‖·‖ = RMS over the pixels of frames 1…F−1; E‖X − X′‖ over the
    S(S − 1) ordered pairs of distinct samples (unbiased)."""
    x = generated[:, :, 1:].reshape(generated.shape[0], generated.shape[1], -1).astype(np.float64)  # [S, N, D]
    y = real[:, :, 1:].reshape(real.shape[0], real.shape[1], -1).astype(np.float64)  # [R, N, D]
    d_xy = np.sqrt(((x[:, None] - y[None]) ** 2).mean(-1))  # [S, R, N]
    d_xx = np.sqrt(((x[:, None] - x[None]) ** 2).mean(-1))  # [S, S, N], 0 on the diagonal
    s = len(x)
    return float((d_xy.mean(axis=(0, 1)) - 0.5 * d_xx.sum(axis=(0, 1)) / (s * (s - 1))).mean())


def edge_energy(videos: np.ndarray) -> float:
    """Mean squared spatial gradient (finite differences, RGB) of frames 1…F−1 of videos [..., F, H, W, 3]."""
    v = videos[..., 1:, :, :, :].astype(np.float64)
    return float(0.5 * ((np.diff(v, axis=-3) ** 2).mean() + (np.diff(v, axis=-2) ** 2).mean()))


def _nearest_future(centre: np.ndarray, futures: np.ndarray) -> int:
    """k* for one object's centroid track [F, 2] (px, NaN = not found) among its futures [K, F, 2] (px); −1 if the
    object is not found after frame 0."""
    if not np.isfinite(centre[1:]).any():
        return -1
    d = np.linalg.norm(centre[None, 1:] - futures[:, 1:], axis=-1)  # [K, F−1]
    return int(np.where(np.isfinite(d), np.minimum(d, CAP), CAP).mean(axis=1).argmin())


def score_futures(generated, scenes, real) -> dict[str, float]:
    """Toy metric v2 of S samples per conditioning.

    generated: [S, N, F, H, W, 3] (S seeds for each of N conditionings), uint8 or float in [0, 1];
    scenes: N `BranchScene`s (their futures are the truth; their own direction draw is not used);
    real: [R, N, F, H, W, 3], R real clips per conditioning (frame 0 = the conditioning image; the clutter baseline
    and the Fréchet reference). Returns the parts, the groups, `toy_error` (the headline), `coverage` (mean fraction
    of the K directions taken per object), `energy`, `kl` and `edge` (reported beside the headline, not scored in
    it) and the counts."""
    from sfv.toy.world import render

    g6, r6 = np.asarray(generated), np.asarray(real)
    if g6.ndim != 6 or r6.ndim != 6 or g6.shape[1:] != r6.shape[1:] or len(scenes) != g6.shape[1]:
        raise ValueError(f"generated [S, N, F, H, W, 3] {g6.shape} and real [R, N, F, H, W, 3] {r6.shape} must share "
                         f"N, F, H, W with N = {len(scenes)} scenes")
    S, N, F, H, W = g6.shape[:5]
    if S < 2:
        raise ValueError("diversity needs at least 2 samples per conditioning")
    if len({sc.directions for sc in scenes}) != 1:
        raise ValueError("all scenes must have the same number of directions K")
    g, r = describe(g6.reshape(S * N, *g6.shape[2:])), describe(r6.reshape(-1, *r6.shape[2:]))
    cond = g["videos"].reshape(S, N, F, H, W, 3)[:, :, 0] - r["videos"].reshape(-1, N, F, H, W, 3)[0, :, 0][None]
    conditioning = float(np.sqrt((cond**2).mean()))
    cond_area = _tracks(_masks(r["videos"].reshape(-1, N, F, H, W, 3)[0, :, :1])[0])[0][:, 0]  # [N, colours] at frame 0
    base_clutter = r["clutter"].reshape(-1, N, F).mean(axis=0)  # [N, F]
    clutter = float(np.maximum(g["clutter"].reshape(S, N, F) - base_clutter[None], 0)[:, :, 1:].mean())

    scale = np.array([W, H], dtype=np.float64)
    pos, shp, spd, jit, tv, cov, kl = [], [], [], [], [], [], []
    for n, scene in enumerate(scenes):
        futures = scene.futures(F) * scale  # [J, K, F, 2] px
        colours = [o.colour for o in scene.objects]
        picks = np.zeros((S, len(colours)), dtype=int)
        for s in range(S):
            i = s * N + n
            picks[s] = [_nearest_future(g["centre"][i, :, c], futures[j]) for j, c in enumerate(colours)]
            ref = scene.with_choice([k if k >= 0 else 0 for k in picks[s]])
            ref_area, ref_centre = _tracks(_masks(_as_float(render(ref, F, W)[None]))[0])
            for j, c in enumerate(colours):
                a_ref = ref_area[0, :, c]
                a_ref = cond_area[n, c] * a_ref / a_ref[0] if a_ref[0] >= MIN_AREA else a_ref
                ok = a_ref >= MIN_AREA  # [F] where the object is visible in the reference
                ok[0] = False  # frame 0 is the conditioning (scored apart)
                c_g, c_r, a_g = g["centre"][i, :, c], ref_centre[0, :, c], g["area"][i, :, c]
                e = np.linalg.norm(c_g - c_r, axis=-1)
                pos.append(np.where(np.isfinite(e), np.minimum(e, CAP), CAP)[ok])
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.where(a_g >= MIN_AREA, np.minimum(np.abs(a_g / a_ref - 1), 1.0), 1.0)
                shp.append(ratio[ok])
                ok1 = ok[1:] & (a_ref[:-1] >= MIN_AREA)  # steps t−1 → t, both visible
                v_g, v_r = np.diff(c_g, axis=0), np.diff(c_r, axis=0)
                e = np.abs(np.linalg.norm(v_g, axis=-1) - np.linalg.norm(v_r, axis=-1))
                spd.append(np.where(np.isfinite(e), np.minimum(e, CAP), CAP)[ok1])
                ok2 = ok1[1:] & ok1[:-1]
                e = np.linalg.norm(np.diff(v_g, axis=0) - np.diff(v_r, axis=0), axis=-1)
                jit.append(np.where(np.isfinite(e), np.minimum(e, CAP), CAP)[ok2])
        K = scene.directions
        for j in range(len(colours)):
            p = np.array([(picks[:, j] == k).mean() for k in range(K)])
            tv.append(0.5 * (np.abs(p - 1 / K).sum() + (picks[:, j] < 0).mean()))
            cov.append((p > 0).sum() / K)
            kl.append(direction_kl(picks[:, j], K))
    e_tv = expected_tv(S, scenes[0].directions)
    top = 1 - 1 / scenes[0].directions  # TV of one fixed direction
    diversity = max(0.0, (float(np.mean(tv)) - e_tv) / (top - e_tv))

    def mean(parts):
        x = np.concatenate(parts)
        return float(x.mean()) if x.size else 0.0

    dg, dr = _descriptors(g), _descriptors(r)
    eye = 1e-6 * np.eye(dg.shape[1])
    import torch

    mg, sg = gaussian_stats(torch.from_numpy(dg))
    mr, sr = gaussian_stats(torch.from_numpy(dr))
    frechet = max(0.0, frechet_distance(mg, sg + torch.from_numpy(eye), mr, sr + torch.from_numpy(eye)))

    parts = {"position": mean(pos), "shape": mean(shp), "clutter": clutter, "speed": mean(spd), "jitter": mean(jit),
             "diversity": diversity, "conditioning": conditioning, "frechet": float(frechet)}
    # group scores: mean of part / scale; the single-part groups (diversity, conditioning, frechet) are reported raw
    # under the part's name, and their scaled value enters the headline
    groups = {name: float(np.mean([parts[k] / SCALES_V2[k] for k in members])) for name, members in GROUPS_V2.items()}
    return {**parts, "precision": groups["precision"], "motion": groups["motion"],
            "toy_error": float(np.mean(list(groups.values()))), "coverage": float(np.mean(cov)), "tv": float(np.mean(tv)),
            "tv_expected": e_tv, "energy": energy_score(g["videos"].reshape(S, N, F, H, W, 3), r["videos"].reshape(-1, N, F, H, W, 3)),
            "kl": float(np.mean(kl)), "kl_expected": expected_kl(S, scenes[0].directions),
            "edge": edge_energy(g["videos"]) / max(edge_energy(r["videos"]), 1e-12),
            "videos": S * N, "seeds": S, "conditionings": N}
