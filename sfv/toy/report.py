"""The toy demo's report: report.json / report.md, the summary table, GIF grids and the quality-vs-time plot.

Written from the rows `sfv.toy.demo` measures; `write_report(json.load(...), out)` rewrites a report from its
report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GRID_METHODS = ("teacher-25", "teacher-4", "teacher-1", "teacher-1-nocfg", "student-1", "student-full-1")
BRANCH_GRID = ("teacher-25", "teacher-4", "teacher-1-nocfg", "recon-full-1", "sfv-paper-full-1", "student-1", "student-full-1")
# each grid column's label, drawn above it (the rows' names in report.md)
COLUMN_LABELS = {"real": "real", "teacher-1-nocfg": "t-1 no CFG", "recon-full-1": "recon only", "sfv-paper-full-1": "SF-V paper",
                 "student-1": "this run", "student-full-1": "default"}
V2_COLUMNS = ("precision", "motion", "diversity", "coverage", "position", "shape", "clutter", "speed", "jitter",
              "conditioning", "frechet", "energy", "kl", "edge")


def _spread(r: dict) -> str:
    """' ± std' over sampling seeds where the row has one (v1 scores each seed apart); '' where it has none (v2 scores
    a method's seeds together: diversity is a property of the set)."""
    std = r.get("toy_error_std")
    return f" ± {std:.3f}" if std is not None and len(r.get("toy_error_per_seed", [])) > 1 else ""


def summary_table(report: dict) -> str:
    width = max(len(r["name"]) for r in report["rows"]) + 2
    lines = [f"{'method':<{width}} {'UNet evals':>10} {'toy_error ↓':>16} {'s/video':>9}", "-" * (width + 38)]
    for r in report["rows"]:
        lines.append(f"{r['name']:<{width}} {r['unet_evals']:>10} {r['toy_error'] :>9.3f}{_spread(r):<7} {r['seconds_per_video']:>9.3f}")
    for t in report["targets"]:
        lines.append(f"  {t['status']:<8} {t['target']}: {t['figure']}")
    return "\n".join(lines)


def targets_table(targets: list[dict]) -> list[str]:
    """The targets as markdown rows: target · figure · met / missed / expected (with why, where it is expected)."""
    lines = ["| target | figure | |", "|---|---|---|"]
    for t in targets:
        status = f"**{t['status']}**" if t["status"] == "missed" else t["status"]
        lines.append(f"| {t['target']} | {t['figure']} | {status}{': ' + t['note'] if t.get('note') else ''} |")
    return lines


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
        ("toy_error v2 (lower = better; `sfv.toy.metric.score_futures`: every sample against its nearest possible "
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
        lines.append(f"| {r['name']} | {r['unet_evals']} | **{r['toy_error']:.3f}**{_spread(r)} | {parts} | "
                     f"{r['seconds_per_video']:.3f} | {up} |")
    if v2:
        lines += ["", "`real`: the true draws scored as samples (their own reference). Part scales in toy_error (mean of the "
                  "precision, motion, diversity, conditioning and frechet groups): "
                  + ", ".join(f"{k} /{v:g}" for k, v in SCALES_V2.items()) + ". Beside it, not in it: `energy` (the energy "
                  "score E‖X − y‖ − ½E‖X − X′‖ in RMS pixels; true draws score ½E‖Y − Y′‖), `kl` (KL of each object's "
                  "directions over the seeds against uniform), `edge` (edge energy over the true draws'). A method's seeds "
                  "are scored together (diversity is a property of the set), so v2 rows carry no spread over seeds.",
                  "", "Targets:", ""]
    else:
        lines += ["", "Real clips score 0 (the metric compares each video to the true clip of its conditioning). Part scales in "
                  "toy_error: " + ", ".join(f"{k} /{v:g}" for k, v in SCALES.items()) + ". ± is the spread over sampling seeds.",
                  "", "Targets:", ""]
    lines += targets_table(report["targets"])
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
        save_grid_gif(out / f"grid-seed{seed}.gif", clips, zoom, labels=["real", *cols])


def _labelled(grid: np.ndarray, zoom: int, labels: list[str], column: int) -> list:
    """Each frame of `grid` [F, H, W, 3] zoomed, under a white band with one label centred over each column."""
    from PIL import Image, ImageDraw

    band = 14 if labels else 0
    images = []
    for g in grid:
        frame = Image.new("RGB", (g.shape[1] * zoom, g.shape[0] * zoom + band), "white")
        frame.paste(Image.fromarray(g).resize((g.shape[1] * zoom, g.shape[0] * zoom), Image.NEAREST), (0, band))
        draw = ImageDraw.Draw(frame)
        for c, text in enumerate(labels):
            x = (2 + c * column + column // 2) * zoom - draw.textlength(text) / 2
            draw.text((x, 2), text, fill="black")
        images.append(frame)
    return images


def save_grid_gif(path: Path, clips: list[np.ndarray], zoom: int = 3, duration_ms: int = 250,
                  labels: list[str] | None = None) -> None:
    """Animated GIF of videos side by side: one column per entry of `clips`, each [R, F, H, W, 3] uint8 (R rows),
    under the `labels` (one per column)."""
    pad = 2
    r_, f_, h, w = clips[0].shape[:4]
    grid = np.full((f_, r_ * (h + pad) + pad, len(clips) * (w + pad) + pad, 3), 255, np.uint8)
    for c, clip in enumerate(clips):
        for r in range(r_):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y : y + h, x : x + w] = clip[r]
    images = _labelled(grid, zoom, [COLUMN_LABELS.get(n, n) for n in (labels or [])], w + pad)
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0, optimize=False, disposal=1)


def write_branch_grid(out: Path, real: np.ndarray, videos: dict[str, np.ndarray], conditionings: int = 2,
                      zoom: int = 3) -> None:
    """v2: one GIF (and a PNG film strip of its frames) whose rows are conditionings × seeds and whose columns
    are real (a true draw) | each method of BRANCH_GRID present: the same conditioning down S rows shows whether
    a method takes different futures for different seeds, and whether each is sharp."""
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
    images = _labelled(grid, zoom, [COLUMN_LABELS.get(n, n) for n in ("real", *cols)], w + pad)
    images[0].save(out / "grid-branching.gif", save_all=True, append_images=images[1:], duration=250, loop=0,
                   optimize=False, disposal=1)
    strip = np.concatenate([np.pad(g, ((0, 0), (0, 6), (0, 0)), constant_values=128) for g in grid], axis=1)  # frames 0…F−1
    # labels over frame 0's columns
    _labelled(strip[None], 2, [COLUMN_LABELS.get(n, n) for n in ("real", *cols)], w + pad)[0].save(out / "grid-branching-frames.png")


def plot(report: dict, path: Path) -> None:
    """Quality (toy_error) against end-to-end seconds per video, log-x: one marker per method, named in the legend
    (students red, teachers blue, the ceiling grey), so no two labels can sit on each other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["name"] != "real" and r["seconds_per_video"] > 0]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    markers = "osD^v<>phX*"
    families = {"teacher": ("tab:blue", 0), "real": ("0.5", 0)}
    for i, r in enumerate(rows):
        kind = r["name"].split("-")[0]
        colour = families.get(kind, ("tab:red", 0))[0]
        ax.scatter(r["seconds_per_video"], r["toy_error"], s=46, color=colour, marker=markers[i % len(markers)],
                   label=f"{r['name']} ({r['unet_evals']} UNet evals)", zorder=3, edgecolors="black", linewidths=0.4)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per video, end to end (CLIP + VAE encode + sampling + decode), log scale")
    ax.set_ylabel("toy_error (lower = better)")
    ax.set_title(f"Quality against time, toy world {report.get('world', {}).get('preset', 'v1')} ({report['environment']['date']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


HELDOUT_CURVES = (("heldout/pair_win", "pair-win"), ("heldout/video_accuracy", "video-level accuracy"),
                  ("heldout/sign_accuracy", "per-position sign accuracy"))


def plot_heldout(runs: dict[str, Path], path: Path) -> bool:
    """D's judgement of the fixed held-out real/fake pairs (heldout.jsonl, `sfv.heldout`) against videos seen:
    one panel per run, pair-win / video-level accuracy / per-position sign accuracy on 0…1, chance at 0.5.
    Returns False (and writes nothing) when no run has a held-out log."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {}
    for label, f in runs.items():
        if Path(f).is_file():
            entries = [json.loads(line) for line in Path(f).read_text().splitlines() if line.strip()]
            if entries:
                logs[label] = entries
    if not logs:
        return False
    fig, axes = plt.subplots(1, len(logs), figsize=(4.6 * len(logs), 3.4), dpi=110, squeeze=False)
    for ax, (label, entries) in zip(axes[0], logs.items()):
        for key, name in HELDOUT_CURVES:
            pts = [(e["videos"], e[key]) for e in entries if key in e]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, label=name)
        ax.axhline(0.5, color="0.6", linewidth=1, linestyle="--", label="chance")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("videos seen")
        ax.set_ylabel("fraction of held-out pairs")
        ax.set_title(f"D on held-out pairs: {label}", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
