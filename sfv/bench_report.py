"""`sfv bench` outputs besides bench.json: a markdown table (bench.md) and a stacked-bar plot (bench.png, Pillow)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PARTS = (  # (key in the summary, label, colour) — stacked left to right
    ("clip_encode", "CLIP encode", (90, 140, 220)),
    ("vae_encode", "VAE encode", (120, 190, 120)),
    ("unet_total", "UNet", (230, 120, 60)),
    ("vae_decode", "decode", (170, 110, 200)),
    ("other", "other", (170, 170, 170)),
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def markdown(report: dict) -> str:
    c, env = report["config"], report["environment"]
    what = f"--arch {c['arch']} (random weights)" if c["arch"] else f"teacher {c['teacher']}, student {c['student']}"
    device = env.get("gpu", f"CPU, {env['cpu_threads']} threads")
    lines = [
        f"# sfv bench — {c['frames']} frames {c['width']}×{c['height']}, {c['dtype']}, {c['device']}",
        "",
        f"{what}; {device}; torch {env['torch']}, diffusers {env['diffusers']}; {env['date']}.",
        f"Medians of {c['repeats']} repeats after {c['warmup']} warm-up run(s) (min–max in bench.json); times in ms.",
        "",
        "| variant | UNet calls × batch | CLIP | VAE enc | UNet total | UNet/call | VAE dec | other | **total** | "
        "peak mem (MiB) | speed-up e2e | speed-up UNet |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ups = {s["teacher"]: s for s in report["speedups"]}
    for r in report["variants"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | failed: {r['reason']} |" + " |" * 10)
            continue
        s = r["summary"]
        up = ups.get(r["name"])
        up_e2e, up_unet = (f"{up['end_to_end']:.1f}×", f"{up['unet_only']:.1f}×") if up else ("—", "—")
        lines.append(
            f"| {r['name']} | {s['unet_calls']} × {r['unet_batch']} | {_ms(s['clip_encode']['median_s'])} | "
            f"{_ms(s['vae_encode']['median_s'])} | {_ms(s['unet_total']['median_s'])} | {_ms(s['unet_per_call']['median_s'])} | "
            f"{_ms(s['vae_decode']['median_s'])} | {_ms(s['other']['median_s'])} | **{_ms(s['total']['median_s'])}** | "
            f"{_mib(s['peak_memory']['bytes'])} | {up_e2e} | {up_unet} |"
        )
    kinds = {r["summary"]["peak_memory"]["kind"] for r in report["variants"] if r["status"] == "ok"}
    lines += ["", f"Peak memory: {', '.join(sorted(kinds))}. Speed-ups: teacher median / student median, this run."]
    o = report["pipeline_overhead"]
    if o:
        lines += ["", f"SFVPipeline overhead over the bare sum of its components: **{o['overhead'] * 100:+.1f}%** "
                      f"({_ms(o['pipeline_median_s'])} ms end to end vs {_ms(o['components_sum_median_s'])} ms in CLIP + VAE "
                      f"encode + UNet + VAE decode; the goal, ≤ {o['target'] * 100:.0f}%, is for full-size models on a GPU: "
                      f"here it is information). "
                      f"VAE decode is {o['decode_share_of_total'] * 100:.0f}% of the student's end-to-end time."]
    f = report.get("fast_decoder")
    if f:
        lines += ["", "## Fast decoder (student, 1 step)", "",
                  f"`student-1-fast-decoder` decodes with {c.get('fast_decoder')}: decode **{f['decode']:.1f}×** faster than "
                  f"the stock VAE decoder, the student **{f['end_to_end']:.2f}×** faster end to end; decode is "
                  f"{f['decode_share_stock'] * 100:.0f}% of the student's time with the stock decoder, "
                  f"{f['decode_share_fast'] * 100:.0f}% with the fast one.", "",
                  "| against | student-1 (stock decoder) | student-1-fast-decoder |", "|---|---|---|"]
        for t in f["vs_teacher"]:
            stock = ups.get(t["teacher"])
            lines.append(f"| {t['teacher']} | {stock['end_to_end']:.1f}× | **{t['end_to_end']:.1f}×** |" if stock else
                         f"| {t['teacher']} | — | **{t['end_to_end']:.1f}×** |")
    long = [r for r in report["variants"] if r.get("long_video") and r["status"] == "ok"]
    if long:
        short = next((r for r in report["variants"] if r["name"] == "student-1" and r["status"] == "ok"), None)
        lines += ["", f"## Long video (student, 1 step, window {c.get('window') or c['frames']}, overlap "
                      f"{c.get('overlap') or 'the mode default'})", "",
                  "| variant | frames | UNet calls | **total** (ms) | frames of output video / s |", "|---|---|---|---|---|"]
        for r in ([short] if short else []) + long:
            lines.append(f"| {r['name']} | {r['frames']} | {r['summary']['unet_calls']} | **{_ms(r['summary']['total']['median_s'])}** | "
                         f"{r['frames_per_s']:.1f} |")
    if report.get("fast_paths"):
        lines += ["", "## Fast paths (student, SFVPipeline)", "",
                  "| setting | UNet | VAE dec | **total** | peak mem (MiB) | speed-up e2e | speed-up UNet |", "|---|---|---|---|---|---|---|"]
        for row in report["fast_paths"]:
            if row["status"] != "ok":
                lines.append(f"| {row['label']} | failed: {row['reason']} | | | | | |")
                continue
            s = row["summary"]
            lines.append(f"| {row['label']} | {_ms(s['unet_total']['median_s'])} | {_ms(s['vae_decode']['median_s'])} | "
                         f"**{_ms(s['total']['median_s'])}** | {_mib(s['peak_memory']['bytes'])} | "
                         f"{row.get('speedup_end_to_end', float('nan')):.2f}× | {row.get('speedup_unet', float('nan')):.2f}× |")
    if report.get("notes"):
        lines += ["", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: Path) -> None:
    path.write_text(markdown(report))


def write_plot(report: dict, path: Path, width: int = 900, bar_height: int = 26) -> None:
    """Horizontal stacked bars (median seconds per component) for each variant that ran; linear scale."""
    rows = [r for r in report["variants"] if r["status"] == "ok"]
    rows += [{**f, "name": f"fast: {f['label']}"} for f in report.get("fast_paths") or [] if f["status"] == "ok"]
    font = ImageFont.load_default()
    label_w, margin, top = 260, 20, 60
    height = top + len(rows) * (bar_height + 10) + 70
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    c = report["config"]
    draw.text((margin, 12), f"sfv bench: median time per component - {c['frames']} frames {c['width']}x{c['height']}, "
                            f"{c['dtype']}, {c['device']}", fill="black", font=font)
    longest = max((r["summary"]["total"]["median_s"] for r in rows), default=1.0) or 1.0
    plot_w = width - label_w - margin - 80
    for i, r in enumerate(rows):
        y = top + i * (bar_height + 10)
        draw.text((margin, y + bar_height // 3), r["name"][:40], fill="black", font=font)
        x = label_w
        for key, _, colour in PARTS:
            w = max(0.0, r["summary"][key]["median_s"]) / longest * plot_w
            draw.rectangle([x, y, x + w, y + bar_height], fill=colour)
            x += w
        draw.text((x + 6, y + bar_height // 3), f"{r['summary']['total']['median_s']:.3g} s", fill="black", font=font)
    legend_y = height - 40
    x = margin
    for _, label, colour in PARTS:
        draw.rectangle([x, legend_y, x + 14, legend_y + 14], fill=colour)
        draw.text((x + 20, legend_y + 2), label, fill="black", font=font)
        x += 130
    img.save(path)
