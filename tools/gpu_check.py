#!/usr/bin/env python
"""`make gpu-check`: the GPU figures in one call (CUDA only; never part of the tests) — about 6 minutes on one
H200 (2026-12-04: SVD bench 2 min, memory 1 min, each Wan bench 1 to 1.5 min).

    python tools/gpu_check.py                 # on a CUDA machine: measure, write runs/gpu-check/gpu-check.json,
                                              # fill docs/benchmarks.md's GPU section (GPU name and date)
    python tools/gpu_check.py --dry-run       # the same steps on the CPU at tiny size (checks the plumbing;
                                              # the figures mean nothing and the docs are left alone)

Steps, each a subprocess (so one step's GPU memory never counts in the next):
1. `sfv bench` on the full-size SVD architecture with random weights (speed does not depend on values), 14 frames
   at 1024×576, fp16: teacher 25 steps with CFG and 16 steps, the one-step student, and the student decoding with
   the fast decoder (`--decoder random`: sfv.decoders.tiny's layout for SVD's VAE) — UNet only and end to end.
2. `tools/memory_report.py`: the peak memory of one FSDP2 training step (768×448, 14 frames, bf16), activation
   checkpointing off and on, and its 8-GPU estimate.
3. `sfv bench --arch wan2.1-i2v-14b` and `wan2.2-ti2v-5b` (random weights, bf16, the stock sizes 81×480×832 and
   121×704×1280): the one-step student end to end against the 50-step CFG teacher composed from its measured
   parts, per component (sfv.teachers.wan_bench). The dry run times the tiny 2.1 layout.
Then one JSON with both, and the GPU section of docs/benchmarks.md rewritten between its gpu-check markers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"  # the docs' GPU section
MEM_BEGIN, MEM_END = "<!-- gpu-check:memory:begin -->", "<!-- gpu-check:memory:end -->"  # its training-memory table
PAPER_UNET_S = {"teacher-25-cfg": 10.79, "teacher-16": 6.89, "student-1": 0.30}  # SF-V Tab. 1, A100, UNet only


def run(cmd: list[str], timeout: int) -> None:
    print("gpu-check:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=timeout)


def measure(out: Path, dry_run: bool) -> dict:
    py = sys.executable
    if dry_run:  # the tiny test SVD on the CPU, exported as its own student
        tiny = out / "tiny-svd"
        if not (tiny / "model_index.json").is_file():
            run([py, "tools/make_tiny_svd.py", "--out", str(tiny), "--frames", "4"], 300)
        if not (out / "tiny-sfv" / "model_index.json").is_file():
            run([py, "-m", "sfv.cli", "export", "--generator", str(tiny / "unet"), "--teacher", str(tiny), "--out", str(out / "tiny-sfv")], 300)
        models = ["--teacher", str(tiny), "--student", str(out / "tiny-sfv"), "--frames", "4", "--height", "32", "--width", "32",
                  "--device", "cpu", "--dtype", "fp32", "--steps", "2", "--repeats", "1", "--warmup", "0"]
        memory = ["--arch", "tiny", "--device", "cpu", "--frames", "4", "--height", "32", "--width", "32"]
    else:
        models = ["--arch", "svd", "--random-weights", "--device", "cuda", "--dtype", "fp16", "--steps", "25,16",
                  "--repeats", "3", "--warmup", "1"]
        memory = ["--arch", "svd", "--device", "cuda", "--frames", "14", "--height", "448", "--width", "768"]
    run([py, "-m", "sfv.cli", "bench", *models, "--decoder", "random", "--out", str(out / "bench")], 300)
    # two D steps per G step, as the real-size recipes (discriminator.steps_per_g: 2)
    run([py, "tools/memory_report.py", *memory, "--d-steps", "2", "--out", str(out / "memory.json")], 240)
    wan = []
    for arch in (["tiny-wan21"] if dry_run else ["wan2.1-i2v-14b", "wan2.2-ti2v-5b"]):
        device = ["--device", "cpu", "--dtype", "fp32"] if dry_run else ["--device", "cuda", "--dtype", "bf16"]
        run([py, "-m", "sfv.cli", "bench", "--arch", arch, "--random-weights", *device, "--repeats", "1", "--warmup", "1",
             "--out", str(out / arch)], 300)
        wan.append(json.loads((out / arch / "wan-bench.json").read_text()))
    bench = json.loads((out / "bench" / "bench.json").read_text())
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "dry_run": dry_run,
            "gpu": bench["environment"].get("gpu", "CPU (dry run)"), "bench": bench,
            "memory": json.loads((out / "memory.json").read_text()), "wan": wan}


def gpu_section(report: dict) -> str:
    """The docs' GPU section from one gpu-check report."""
    bench = report["bench"]
    by = {v["name"]: v["summary"] for v in bench["variants"] if v["status"] == "ok"}
    c = bench["config"]
    lines = [f"## GPU figures: {report['gpu']}, {report['date']} (`make gpu-check`)", "",
             f"`tools/gpu_check.py` ({c['frames']} frames at {c['width']}×{c['height']}, {c['dtype']}, "
             f"{'the tiny test SVD' if report['dry_run'] else 'random full-size weights'}; medians of {c['repeats']} repeats after {c['warmup']} warm-up; raw: runs/gpu-check/gpu-check.json), "
             "next to the A100 UNet times SF-V reports (Tab. 1 of the paper):", "",
             "| variant | SF-V paper, A100, UNet only | sfv: UNet | sfv: decode | sfv: end to end |", "|---|---|---|---|---|"]
    for name, s in by.items():
        paper = f"{PAPER_UNET_S[name]:.2f} s" if name in PAPER_UNET_S else "—"
        lines.append(f"| {name} | {paper} | {s['unet_total']['median_s']:.3f} s | {s['vae_decode']['median_s']:.3f} s | "
                     f"**{s['total']['median_s']:.3f} s** |")
    ups = {u["teacher"]: u for u in bench["speedups"]}
    if "teacher-25-cfg" in ups:
        u = ups["teacher-25-cfg"]
        lines += ["", f"Student vs 25 steps + CFG: **{u['end_to_end']:.1f}×** end to end, {u['unet_only']:.1f}× UNet only "
                      "(SF-V: 36× UNet only)."]
    f = bench.get("fast_decoder")
    if f:
        lines += [f"Fast decoder (random weights, sfv.decoders.tiny's layout): decode {f['decode']:.1f}× faster, the student "
                  f"{f['end_to_end']:.2f}× faster end to end; decode is {f['decode_share_stock'] * 100:.0f}% of the student's "
                  f"time with the stock VAE decoder, {f['decode_share_fast'] * 100:.0f}% with the fast one."]
    if report.get("wan"):
        from sfv.teachers.wan_bench import wan_table

        lines += ["", "Wan 2.x, one step against the stock 50 steps with CFG (`sfv bench --arch wan…`; the teacher's time is "
                      "composed from its measured parts):"]
        for w in report["wan"]:
            lines += ["", wan_table(w)]
    lines += ["", "Training memory: the next section."]
    return "\n".join(lines)


def memory_section(report: dict) -> str:
    """The docs' training-memory table from one gpu-check report."""
    m = report["memory"]
    d_steps = m["runs"][0].get("d_steps", 1)
    d_text = "a D step with R1" if d_steps == 1 else f"{d_steps} D steps with R1, as discriminator.steps_per_g: {d_steps}"
    lines = [f"Measured by `make gpu-check` ({report['gpu']}, {report['date']}): one SF-V training step ({d_text}, "
             f"then a G step) of the full-size SVD, {m['frames']} frames at {m['width']}×{m['height']}, batch "
             f"{m['batch_per_gpu']} per GPU, {m['precision']}, FSDP2 in a world of one. The 8-GPU column is an estimate from "
             "the 1-GPU peak: FSDP divides G's sharded state (fp32 weights, fp32 gradients, AdamW's two moments and the fp32 "
             "EMA: 20 bytes per parameter) by the number of GPUs, and nothing else. Target ≤ 40 GB per GPU; OSV's SF-V "
             "re-implementation reports 73.5 GB.", "",
             "| activation checkpointing | peak, 1 GPU | per GPU on 8 (estimate) | D step | G step |", "|---|---|---|---|---|"]
    for r in m["runs"]:
        lines.append(f"| {'on' if r['activation_checkpointing'] else 'off'} | {r['peak_gib']:.2f} GiB | "
                     f"{r['estimate_per_gpu_gib']['8']:.2f} GiB | {r['d_step_s']:.2f} s | {r['g_step_s']:.2f} s |")
    return "\n".join(lines)


def fill_docs(docs: Path, report: dict) -> None:
    """Rewrite the GPU section and the training-memory table of `docs` (between their markers) from a report."""
    text = docs.read_text()
    for (begin, end), section in (((BEGIN, END), gpu_section(report)), ((MEM_BEGIN, MEM_END), memory_section(report))):
        if text.count(begin) != 1 or text.count(end) != 1:
            raise SystemExit(f"gpu-check: {docs} needs one {begin} … {end} pair; restore it around its section")
        head, rest = text.split(begin, 1)
        text = f"{head}{begin}\n{section}\n{end}{rest.split(end, 1)[1]}"
    docs.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny size: the plumbing only (docs untouched)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the file whose GPU section is filled")
    args = ap.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu-check: error: no CUDA GPU here; `make gpu-check` measures on a GPU machine "
                  "(on the CPU, `python tools/gpu_check.py --dry-run` checks the steps at tiny size)", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    report = measure(args.out, args.dry_run)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.dry_run:
        section = gpu_section(report) + "\n\n" + memory_section(report)
        (args.out / "gpu-section.md").write_text(section + "\n")
        print(section)
    else:
        fill_docs(args.docs, report)
    print(f"gpu-check: {args.out / 'gpu-check.json'} in {report['wall_s']:.0f} s"
          + ("" if args.dry_run else f"; filled {args.docs}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
