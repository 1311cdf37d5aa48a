"""The toy demo's report: report.json / report.md, the summary table, GIF grids and the quality-vs-time plot.

Written from the rows `sfv.toy.demo` measures; `write_report(json.load(...), out)` rewrites a report from its
report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GRID_METHODS = ("teacher-25", "teacher-4", "teacher-1", "teacher-1-nocfg", "student-1", "student-full-1")
BRANCH_GRID = ("teacher-25", "teacher-4", "teacher-1", "teacher-1-nocfg", "recon-full-1", "student-1", "student-full-1")
V2_COLUMNS = ("precision", "motion", "diversity", "coverage", "position", "shape", "clutter", "speed", "jitter",
              "conditioning", "frechet", "energy", "kl", "edge")


def summary_table(report: dict) -> str:
    lines = [f"{'method':<16} {'UNet evals':>10} {'toy_error ↓':>16} {'s/video':>9}", "-" * 54]
    for r in report["rows"]:
        lines.append(f"{r['name']:<16} {r['unet_evals']:>10} {r['toy_error']:>9.3f} ± {r['toy_error_std']:<5.3f} {r['seconds_per_video']:>9.3f}")
    for k, v in report["targets"].items():
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    from sfv.toy.metric import PARTS, SCALES, SCALES_V2

    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    e = report["eval"]
    v2 = report.get("world", {}).get("preset") == "v2"
    cols = V2_COLUMNS if v2 else PARTS
    lines = [
        f"# sfv toy demo — SF-V end to end on the toy world {report.get('world', {}).get('preset', 'v1')}",
        "",
        f"{e['conditionings']} held-out conditionings × {e['seeds']} seeds, {e['frames']} frames {e['size']}×{e['size']}; "
        f"teacher `{report['teacher']}`, recipe `{report['recipe']}` ({report['distill']['g_steps']} G steps at batch "
        f"{report['distill']['batch_size']}). Wall time {report['wall_s'] / 60:.1f} min (world {report['phases_s']['world']:.0f} s, "
        f"distillation {report['phases_s']['distill']:.0f} s, evaluation {report['phases_s']['evaluate']:.0f} s); "
        f"torch {report['environment']['torch']}, {report['environment']['threads']} threads, {report['environment']['date']}.",
        "",
        ("toy_error v2 (lower = better; `sfv.metrics.toy.score_futures`: every sample against its nearest possible "
         f"future, diversity over the {e['seeds']} seeds of each conditioning, {e.get('references')} true draws per "
         "conditioning as the reference)" if v2 else "toy_error (lower = better; mean ± std over seeds)")
        + " and its parts; time = median end-to-end seconds per video "
        "(CLIP + VAE encode + sampling + VAE decode), all measured in this run. `real→VAE`: the real clips encoded and "
        "decoded by the teacher's VAE — the best any generator in this latent space can score.",
        "",
        "| method | UNet evals | toy_error ↓ | " + " | ".join(cols) + " | s/video | speed-up vs teacher-25 |",
        "|---|---|---|" + "---|" * len(cols) + "---|---|",
    ]
    base = next((r["seconds_per_video"] for r in report["rows"] if r["name"] == "teacher-25"), None)
    for r in report["rows"]:
        if r["name"] == "real" and not v2:
            continue
        parts = " | ".join(f"{r['parts'][k]:.3f}" for k in cols)
        up = f"{base / r['seconds_per_video']:.1f}×" if base and r["seconds_per_video"] > 0 else "—"
        lines.append(f"| {r['name']} | {r['unet_evals']} | **{r['toy_error']:.3f}** ± {r['toy_error_std']:.3f} | {parts} | "
                     f"{r['seconds_per_video']:.3f} | {up} |")
    if v2:
        lines += ["", "`real`: the true draws scored as samples (their own reference). Part scales in toy_error (mean of the "
                  "precision, motion, diversity, conditioning and frechet groups): "
                  + ", ".join(f"{k} /{v:g}" for k, v in SCALES_V2.items()) + ".", "", "Targets:", ""]
    else:
        lines += ["", "Real clips score 0 (the metric compares each video to the true clip of its conditioning). Part scales in "
                  "toy_error: " + ", ".join(f"{k} /{v:g}" for k, v in SCALES.items()) + ".", "", "Targets:", ""]
    lines += [f"- {k}: {v}" for k, v in report["targets"].items()]
    if report.get("d_heldout_plot"):
        lines += ["", "D on the fixed held-out real/fake pairs against videos seen (pair-win, video-level accuracy, "
                  "per-position sign accuracy): `d-heldout.png`."]
    if v2:
        lines += ["", "Grid: `grid-branching.gif` (+ its frames in `grid-branching-frames.png`): rows = 2 conditionings × "
                  "seeds, columns: " + " | ".join(["real (a true draw)", *BRANCH_GRID]) + ", where present; "
                  "plot: `quality-vs-time.png`.", ""]
    else:
        lines += ["", "Grids: `grid-seed*.gif` (columns: " + " | ".join(["real", *[m for m in GRID_METHODS]]) + ", where present); "
                  "plot: `quality-vs-time.png`.", ""]
    (out / "report.md").write_text("\n".join(lines))
    plot(report, out / "quality-vs-time.png")


def write_grids(out: Path, real: np.ndarray, videos: dict[str, list[np.ndarray]], rows: int = 4, zoom: int = 3) -> None:
    """Animated GIF per seed: rows = conditionings, columns = real | each method of GRID_METHODS present."""
    cols = [m for m in GRID_METHODS if m in videos]
    for seed in range(len(next(iter(videos.values())))):
        clips = [real[:rows], *[videos[m][seed][:rows] for m in cols]]  # each [R, F, H, W, 3]
        save_grid_gif(out / f"grid-seed{seed}.gif", clips, zoom)


def save_grid_gif(path: Path, clips: list[np.ndarray], zoom: int = 3, duration_ms: int = 250) -> None:
    """Animated GIF of videos side by side: one column per entry of `clips`, each [R, F, H, W, 3] uint8 (R rows)."""
    from PIL import Image

    pad = 2
    r_, f_, h, w = clips[0].shape[:4]
    grid = np.full((f_, r_ * (h + pad) + pad, len(clips) * (w + pad) + pad, 3), 255, np.uint8)
    for c, clip in enumerate(clips):
        for r in range(r_):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y : y + h, x : x + w] = clip[r]
    images = [Image.fromarray(g).resize((g.shape[1] * zoom, g.shape[0] * zoom), Image.NEAREST) for g in grid]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, optimize=False, disposal=1)


def write_branch_grid(out: Path, real: np.ndarray, videos: dict[str, np.ndarray], conditionings: int = 2,
                      zoom: int = 3) -> None:
    """v2: one GIF (and a PNG film strip of its frames) whose rows are conditionings × seeds and whose columns
    are real (a true draw) | each method of BRANCH_GRID present: the same conditioning down S rows shows whether
    a method takes different futures for different seeds, and whether each is sharp."""
    from PIL import Image

    cols = [m for m in BRANCH_GRID if m in videos]
    if not cols:
        return
    seeds = min(len(real), *(len(videos[m]) for m in cols))
    rows = [[real[s, i], *[videos[m][s, i] for m in cols]] for i in range(conditionings) for s in range(seeds)]
    pad = 2
    f_, h, w = rows[0][0].shape[:3]
    grid = np.full((f_, len(rows) * (h + pad) + pad, (len(cols) + 1) * (w + pad) + pad, 3), 255, np.uint8)
    for r, clips in enumerate(rows):
        for c, clip in enumerate(clips):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y : y + h, x : x + w] = clip
    images = [Image.fromarray(g).resize((g.shape[1] * zoom, g.shape[0] * zoom), Image.NEAREST) for g in grid]
    images[0].save(out / "grid-branching.gif", save_all=True, append_images=images[1:], duration=250, loop=0,
                   optimize=False, disposal=1)
    strip = np.concatenate([np.pad(g, ((0, 0), (0, 6), (0, 0)), constant_values=128) for g in grid], axis=1)  # frames 0…F−1
    Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(out / "grid-branching-frames.png")


def plot(report: dict, path: Path) -> None:
    """Quality (toy_error) against seconds per video, log-x, one labelled point per method (Pillow)."""
    from PIL import Image, ImageDraw

    rows = [r for r in report["rows"] if r["name"] != "real" and r["seconds_per_video"] > 0]
    W, H, m = 640, 420, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xs = np.log10([r["seconds_per_video"] for r in rows])
    ys = np.array([r["toy_error"] for r in rows])
    x0, x1 = xs.min() - 0.2, xs.max() + 0.2
    y1 = max(ys.max() * 1.15, 1e-3)

    def px(x, y):
        return m + (x - x0) / (x1 - x0) * (W - 2 * m), H - m - y / y1 * (H - 2 * m)

    d.line([(m, H - m), (W - m, H - m)], fill="black")
    d.line([(m, m), (m, H - m)], fill="black")
    for e in range(int(np.floor(x0)), int(np.ceil(x1)) + 1):
        for k in (1, 2, 5):
            v = np.log10(k * 10.0**e)
            if x0 <= v <= x1:
                X, _ = px(v, 0)
                d.line([(X, H - m), (X, H - m + 4)], fill="black")
                d.text((X - 10, H - m + 6), f"{k * 10.0**e:g}", fill="black")
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        _, Y = px(x0, frac * y1)
        d.text((8, Y - 6), f"{frac * y1:.2f}", fill="black")
    d.text((W / 2 - 80, H - 22), "seconds per video (end to end, log)", fill="black")
    d.text((m, 12), "toy_error (lower = better) vs time, " + report["environment"]["date"], fill="black")  # ASCII: PIL's default font
    for r, x, y in zip(rows, xs, ys):
        X, Y = px(x, y)
        colour = (200, 60, 40) if r["name"].startswith("student") else (40, 90, 200)
        d.ellipse([X - 5, Y - 5, X + 5, Y + 5], fill=colour)
        d.text((X + 7, Y - 7), r["name"].replace("→", "->"), fill=colour)
    img.save(path)


HELDOUT_CURVES = (("heldout/pair_win", "pair-win", (200, 60, 40)), ("heldout/video_accuracy", "video accuracy", (40, 90, 200)),
                  ("heldout/sign_accuracy", "sign accuracy", (60, 150, 60)))


def plot_heldout(runs: dict[str, Path], path: Path) -> bool:
    """D's judgement of the fixed held-out real/fake pairs (heldout.jsonl, `sfv.heldout`) against videos seen:
    one panel per run, pair-win / video-level accuracy / per-position sign accuracy on 0…1, chance at 0.5.
    Returns False (and writes nothing) when no run has a held-out log."""
    import json

    from PIL import Image, ImageDraw

    logs = {}
    for label, f in runs.items():
        if Path(f).is_file():
            entries = [json.loads(line) for line in Path(f).read_text().splitlines() if line.strip()]
            if entries:
                logs[label] = entries
    if not logs:
        return False
    W, H, m = 420, 300, 48
    img = Image.new("RGB", (W * len(logs), H), "white")
    d = ImageDraw.Draw(img)
    for k, (label, entries) in enumerate(logs.items()):
        ox = k * W
        xmax = max(max(e["videos"] for e in entries), 1)

        def px(x, y):
            return ox + m + x / xmax * (W - 2 * m), H - m - y * (H - 2 * m)

        d.line([px(0, 0), px(xmax, 0)], fill="black")
        d.line([px(0, 0), px(0, 1)], fill="black")
        d.line([px(0, 0.5), px(xmax, 0.5)], fill=(190, 190, 190))  # chance
        for y in (0, 0.5, 1.0):
            d.text((ox + 14, px(0, y)[1] - 6), f"{y:.1f}", fill="black")
        d.text((ox + W / 2 - 50, H - 22), f"videos seen (max {xmax})", fill="black")
        d.text((ox + m, 8), "D on held-out pairs: " + label, fill="black")
        for i, (key, name, colour) in enumerate(HELDOUT_CURVES):
            pts = [px(e["videos"], e[key]) for e in entries if key in e]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            for X, Y in pts:
                d.ellipse([X - 2, Y - 2, X + 2, Y + 2], fill=colour)
            d.text((ox + W - m - 110, px(0, 0.32)[1] + 12 * i), name, fill=colour)  # below chance: clear of the curves
    img.save(path)
    return True
