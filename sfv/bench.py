"""`sfv bench`: one step vs multi-step, per component, on the same inputs — SF-V's speed claim, measured whole.

Variants (same conditioning image, same seed, same size for all):
    teacher-{n}-cfg  the teacher's own sampling (Teacher.sample on its stock schedule; SVD: n Euler steps, per-frame
                     CFG ramp 1 → 3, UNet batch 2 per step)
    teacher-{n}      n steps without CFG (UNet batch 1)
    student-1        the one-step student through SFVPipeline (1 UNet call, batch 1)

Per run, components are timed with forward pre/post hooks on the modules that do the work — CLIP image
encoder, VAE encoder (+ quant conv), UNet (every call), VAE temporal decoder (sfv/bench_timing.py) — so the
teacher's code runs unchanged. On CUDA the hooks record CUDA events (no extra synchronisation inside the run) and the run
synchronises once at the end; on CPU they read perf_counter. `other` = end-to-end − components: Python
glue, preprocessing, scheduler arithmetic, postprocessing to numpy. Warm-up runs are excluded; variants run
round-robin over the repeats (so drift on a shared machine spreads evenly); medians, min and max are
reported. Peak memory: CUDA max_memory_allocated (reset per run), or the process's peak RSS on CPU
(reset per run through /proc/self/clear_refs where Linux allows it, else the monotonic high-water mark —
the JSON says which).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from sfv.bench_timing import ComponentTimer, component_groups, is_out_of_memory, summarise, timed_run

OVERHEAD_GOAL = 0.05  # SFVPipeline's end to end over its bare components, at full size on a GPU (information)


@dataclass
class BenchConfig:
    steps: tuple[int, ...] = (25, 16, 8, 4, 1)
    frames: int = 14
    height: int = 576
    width: int = 1024
    device: str = "cpu"
    dtype: str = "float32"
    compile: bool = False
    repeats: int = 5
    warmup: int = 1
    seed: int = 0
    decode_chunk_size: int | None = None  # None: all frames in one decoder call (the pipelines' default)
    decoder: str = "vae"  # the decoding slot (sfv.decoders) of teacher and student
    fast_paths: bool = False
    teacher: str | None = None  # folder, or None with arch
    student: str | None = None
    arch: str | None = None  # "svd" / "svd-xt": random full-size weights
    long_frames: int = 0  # > 0: also the one-step student on a video this long (chain and multidiffusion windows)
    window: int | None = None  # long video: frames per window (None: the model's)
    overlap: int | None = None  # long video: shared frames (None: 1 chain, window // 2 multidiffusion)
    fast_decoder: str | None = None  # also the student decoding with a fast decoder: its folder, or "random" (speed only)


@dataclass
class Variant:
    name: str
    model: str  # "teacher" or "student"
    steps: int
    cfg: bool
    decode_chunk_size: int | None = None
    long: str | None = None  # long-video mode (sfv.sampling): "chain" | "multidiffusion"
    runs: list[dict] = field(default_factory=list)
    status: str = "ok"
    reason: str | None = None

    @property
    def unet_batch(self) -> int:
        return 2 if self.cfg else 1  # CFG doubles the batch (unconditional ‖ conditional)


def main_variants(steps, long_frames: int = 0, fast_decoder: bool = False) -> list[Variant]:
    teacher = [Variant(f"teacher-{n}{'-cfg' if cfg else ''}", "teacher", n, cfg) for n in steps for cfg in (True, False)]
    long = [Variant(f"student-1-{mode}-{long_frames}f", "student", 1, False, long=mode) for mode in ("chain", "multidiffusion")]
    fast = [Variant("student-1-fast-decoder", "student_fast", 1, False)] if fast_decoder else []
    return teacher + [Variant("student-1", "student", 1, False)] + fast + (long if long_frames else [])


# ----------------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    """Holds the loaded models and inputs; runs variants; computes speed-ups and overheads."""

    def __init__(self, config: BenchConfig, teacher, student_pipe, image):
        self.config, self.teacher, self.student, self.image = config, teacher, student_pipe, image
        self.device = torch.device(config.device)
        from sfv.teachers.svd import SVDTeacher

        self.student_svd = SVDTeacher.from_pipeline(student_pipe, decoder=student_pipe.decoder)
        self.timers = {"teacher": ComponentTimer(component_groups(teacher), self.device),
                       "student": ComponentTimer(component_groups(self.student_svd), self.device)}
        self.pipes = {"student": student_pipe}
        if config.fast_decoder:  # the same student modules, decoding with the fast decoder
            self.pipes["student_fast"] = fast = fast_decoder_pipeline(student_pipe, config.fast_decoder)
            self.timers["student_fast"] = ComponentTimer(component_groups(SVDTeacher.from_pipeline(fast, decoder=fast.decoder)),
                                                         self.device)

    def _generator(self):
        return torch.Generator("cpu").manual_seed(self.config.seed)  # the same seed for every variant and run

    def call(self, variant: Variant):
        c = self.config
        chunk = variant.decode_chunk_size or c.decode_chunk_size
        if variant.model in self.pipes:  # the product: SFVPipeline, 1 step, no CFG
            long = {"num_frames": c.long_frames, "long_video": variant.long, "window": c.window, "overlap": c.overlap} \
                if variant.long else {"num_frames": c.frames}
            return lambda: self.pipes[variant.model](
                self.image, height=c.height, width=c.width, num_inference_steps=variant.steps, max_guidance_scale=1.0,
                decode_chunk_size=chunk, generator=self._generator(), output_type="np", **long,
            )
        return lambda: self.teacher.generate(
            self.image, c.height, c.width, c.frames, decode_chunk_size=chunk, generator=self._generator(),
            output_type="np", num_inference_steps=variant.steps,
            max_guidance_scale=self.teacher.default_guidance if variant.cfg else 1.0,
        )

    def run_variants(self, variants: list[Variant], log=print) -> list[Variant]:
        """Warm-up, then `repeats` round-robin passes; an out-of-memory variant is marked failed and dropped."""
        c = self.config
        for phase, count in (("warm-up", c.warmup), ("repeat", c.repeats)):
            for i in range(count):
                for v in variants:
                    if v.status != "ok":
                        continue
                    try:
                        run = timed_run(self.call(v), self.timers[v.model], self.device)
                    except Exception as e:
                        if not is_out_of_memory(e):
                            raise
                        v.status, v.reason = "failed", f"out of memory: {' '.join(str(e).split())[:200]}"
                        v.runs.clear()
                        log(f"sfv bench: {v.name} failed ({v.reason}); continuing with the rest")
                        self._free()
                        continue
                    if phase == "repeat":
                        v.runs.append(run)
                        log(f"sfv bench: {phase} {i + 1}/{count} {v.name}: {run['total']:.3f} s "
                            f"(UNet {run['unet_total']:.3f} s in {run['unet_calls']} calls)")
        return variants

    def _free(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def fast_path_settings(self) -> list[tuple[str, dict]]:
        """(label, setting) rows: each switches one thing on relative to the baseline (then all together)."""
        c = self.config
        half = "bfloat16" if c.dtype == "float32" else None
        chunk = 8 if c.frames > 8 else max(1, c.frames // 2)
        rows = [("baseline", {}), ("attention=classic (no SDPA)", {"attention": "classic"}),
                ("channels_last", {"channels_last": True}), (f"decode_chunk_size={chunk}", {"decode_chunk_size": chunk})]
        if half:
            rows.append((f"dtype={half}", {"dtype": half}))
        if c.dtype == "float32" and self.device.type == "cuda":
            rows.append(("dtype=float16", {"dtype": "float16"}))
        if c.compile:
            rows.append(("torch.compile (UNet)", {"compile": True}))
        combined = {"channels_last": True, **({"dtype": half} if half else {}), **({"compile": True} if c.compile else {})}
        rows.append(("combined: " + ", ".join(f"{k}={v}" for k, v in combined.items()), combined))
        return rows

    def run_fast_paths(self, log=print) -> list[dict]:
        """The student (SFVPipeline) under each fast-path setting; each row is applied, timed and undone."""
        from sfv.pipeline import set_fast_paths

        pipe, base_dtype = self.student, getattr(torch, self.config.dtype)
        rows = []
        for label, setting in self.fast_path_settings():
            dtype = getattr(torch, setting.get("dtype", self.config.dtype))
            pipe.to(dtype=dtype)
            set_fast_paths(pipe.unet, pipe.vae, pipe.image_encoder, setting.get("attention", "sdpa"),
                           setting.get("channels_last", False), setting.get("compile", False))
            variant = Variant(f"student-1 [{label}]", "student", 1, False, setting.get("decode_chunk_size"))
            try:
                self.run_variants([variant], log)
            finally:
                set_fast_paths(pipe.unet, pipe.vae, pipe.image_encoder)  # back to the baseline
                pipe.to(dtype=base_dtype)
            rows.append({"label": label, "setting": setting, **variant_record(variant, self.config)})
        base = rows[0].get("summary")
        for row in rows:
            if base and row.get("summary"):
                row["speedup_end_to_end"] = base["total"]["median_s"] / row["summary"]["total"]["median_s"]
                row["speedup_unet"] = base["unet_total"]["median_s"] / row["summary"]["unet_total"]["median_s"]
        return rows


def variant_record(v: Variant, config: BenchConfig) -> dict:
    frames = config.long_frames if v.long else config.frames
    record = {"name": v.name, "model": v.model, "steps": v.steps, "cfg": v.cfg, "unet_batch": v.unet_batch,
              "decode_chunk_size": v.decode_chunk_size, "long_video": v.long, "frames": frames, "status": v.status}
    if v.status == "ok":
        record["summary"] = summarise(v.runs)
        record["frames_per_s"] = frames / record["summary"]["total"]["median_s"]  # frames of output video per second
    else:
        record["reason"] = v.reason
    return record


def speedups(records: list[dict]) -> list[dict]:
    """Student vs each teacher setting, end to end and UNet only (ratios of medians, this run's numbers)."""
    student = next((r for r in records if r["model"] == "student" and r["status"] == "ok"), None)
    if student is None:
        return []
    s = student["summary"]
    return [{"teacher": r["name"], "steps": r["steps"], "cfg": r["cfg"],
             "end_to_end": r["summary"]["total"]["median_s"] / s["total"]["median_s"],
             "unet_only": r["summary"]["unet_total"]["median_s"] / s["unet_total"]["median_s"]}
            for r in records if r["model"] == "teacher" and r["status"] == "ok"]


def fast_decoder_speedups(records: list[dict]) -> dict | None:
    """The student decoding with the fast decoder against the same student with the stock decoder, and against
    each teacher setting (ratios of medians, this run's numbers)."""
    by = {r["name"]: r for r in records if r["status"] == "ok"}
    if "student-1-fast-decoder" not in by or "student-1" not in by:
        return None
    stock, fast = by["student-1"]["summary"], by["student-1-fast-decoder"]["summary"]
    return {"decode": stock["vae_decode"]["median_s"] / fast["vae_decode"]["median_s"],
            "end_to_end": stock["total"]["median_s"] / fast["total"]["median_s"],
            "decode_share_stock": stock["vae_decode"]["median_s"] / stock["total"]["median_s"],
            "decode_share_fast": fast["vae_decode"]["median_s"] / fast["total"]["median_s"],
            "vs_teacher": [{"teacher": r["name"], "end_to_end": r["summary"]["total"]["median_s"] / fast["total"]["median_s"]}
                           for r in by.values() if r["model"] == "teacher"]}


def pipeline_overhead(records: list[dict], goal: float = OVERHEAD_GOAL) -> dict | None:
    """SFVPipeline's end-to-end median over the median of its bare components' sum (same calls), with the goal it is
    measured against at full size on a GPU (where the components dominate); on a CPU or a tiny model it is information."""
    student = next((r for r in records if r["model"] == "student" and r["status"] == "ok"), None)
    if student is None:
        return None
    total, parts = student["summary"]["total"]["median_s"], student["summary"]["components_sum"]["median_s"]
    overhead = total / parts - 1
    return {"pipeline_median_s": total, "components_sum_median_s": parts, "overhead": overhead,
            "target": goal, "met": overhead <= goal,
            "decode_share_of_total": student["summary"]["vae_decode"]["median_s"] / total}


def environment(device: torch.device) -> dict:
    import diffusers

    from sfv.version import __version__

    env = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sfv": __version__,
           "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def run_bench(config: BenchConfig, teacher, student_pipe, image, out_dir: str | Path, log=print,
              notes: list[str] | None = None) -> dict:
    """Run every variant (and the fast paths if asked), write bench.json / bench.md / bench.png; return the report."""
    from sfv.bench_report import write_markdown, write_plot
    from sfv.pipeline import set_fast_paths

    out = Path(out_dir)
    student_pipe.set_progress_bar_config(disable=True)
    if config.compile:  # the main comparison with compiled UNets (teacher and student alike)
        for svd in (teacher, student_pipe):
            set_fast_paths(svd.unet, svd.vae, svd.image_encoder, compile=True)
    bench = Bench(config, teacher, student_pipe, image)
    t0 = time.perf_counter()
    variants = main_variants(config.steps, config.long_frames, bool(config.fast_decoder))
    records = [variant_record(v, config) for v in bench.run_variants(variants, log)]
    fast = None
    if config.fast_paths:
        if config.compile:
            set_fast_paths(student_pipe.unet, student_pipe.vae, student_pipe.image_encoder)  # uncompiled baseline
        fast = bench.run_fast_paths(log)
    report = {
        "config": asdict(config),
        "environment": environment(bench.device),
        "inputs": {"image": f"sfv.tiny.example_image({config.height}, {config.width}, seed={config.seed})",
                   "seed": config.seed, "note": "same image and seed for every variant and repeat"},
        "method": {"timing": "CUDA events, one synchronize per run" if bench.device.type == "cuda" else "time.perf_counter",
                   "components": "forward pre/post hooks: image_encoder; vae.encoder + vae.quant_conv; unet; vae.decoder",
                   "other": "end-to-end minus the components (Python glue, preprocessing, scheduler, postprocessing)",
                   "warmup_excluded": config.warmup, "repeats": config.repeats, "order": "round-robin over variants"},
        "variants": records,
        "speedups": speedups(records),
        "pipeline_overhead": pipeline_overhead(records),
        "fast_decoder": fast_decoder_speedups(records),
        "fast_paths": fast,
        "notes": notes or [],
        "wall_time_s": time.perf_counter() - t0,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    write_markdown(report, out / "bench.md")
    write_plot(report, out / "bench.png")
    return report


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


# ----------------------------------------------------------------------------------------------------
# The student with a fast decoder


def fast_decoder_pipeline(student_pipe, fast_decoder: str):
    """An SFVPipeline over the student's modules that decodes with a fast decoder: a decoder folder (checked against
    the VAE), or "random" (sfv.decoders.tiny's default layout for this VAE, random weights: speed only)."""
    from sfv.decoders.tiny import TinyDecoder, TinyDecoderConfig, TinyTemporalDecoder
    from sfv.pipeline import SFVPipeline

    pipe = SFVPipeline(**student_pipe.components)
    pipe.set_progress_bar_config(disable=True)
    pipe.t_g, pipe.sigma_levels = student_pipe.t_g, student_pipe.sigma_levels
    if fast_decoder == "random":
        net = TinyTemporalDecoder(TinyDecoderConfig.for_vae(student_pipe.vae)).eval().requires_grad_(False)
        pipe.decoder = TinyDecoder(net.to(student_pipe.vae.device, student_pipe.vae.dtype))
    else:
        pipe.set_decoder("tiny", fast_decoder)
        pipe.decoder.net.to(student_pipe.vae.device, student_pipe.vae.dtype)
    return pipe
