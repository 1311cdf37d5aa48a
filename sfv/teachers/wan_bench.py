"""`sfv bench --arch wan2.1-i2v-14b|wan2.2-ti2v-5b --random-weights`: the Wan family's speed, per component — the
one-step student (one transformer call at t = 1, no CFG) against the stock 50-step CFG teacher.

Full-size models are built from the hub folders' configs (written out in FULL: nothing is downloaded) with random
weights in the bench's dtype, on its device; speed does not depend on the weights' values. The tiny layouts of
sfv.tiny_wan (`--arch tiny-wan21`, `tiny-wan22`) run the same steps on a CPU (the gpu-check dry run).

Each component is timed on its own (CUDA synchronised, medians of `repeats` after `warmup`): the text encoder
(UMT5; the teacher encodes the negative prompt too), CLIP (2.1), the VAE encoding frame 0, one transformer call, one
CFG step (two calls, as the stock pipeline makes them), the VAE decode. The student's end-to-end time is measured
in one piece through sfv's Wan pipeline (sfv.load_pipeline's sampler). The teacher's 50-step time is *composed* from
its measured parts (50 CFG steps + encoders + decode): at full size one run takes minutes, and every part of it is a
measured component.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

COMMON = dict(patch_size=(1, 2, 2), attention_head_dim=128, text_dim=4096, freq_dim=256, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
# the hub folders' transformer/config.json and vae/config.json (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers,
# Wan-AI/Wan2.2-TI2V-5B-Diffusers) and their stock sizes
FULL = {
    "wan2.1-i2v-14b": {"size": (81, 480, 832), "shift": 3.0,
                       "transformer": dict(num_attention_heads=40, in_channels=36, out_channels=16, ffn_dim=13824,
                                           num_layers=40, image_dim=1280, added_kv_proj_dim=5120, **COMMON),
                       "vae": dict(base_dim=96, z_dim=16), "clip": True},
    "wan2.2-ti2v-5b": {"size": (121, 704, 1280), "shift": 5.0,
                       "transformer": dict(num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336,
                                           num_layers=30, **COMMON),
                       "vae": dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12,
                                   out_channels=12, patch_size=2, scale_factor_spatial=16), "clip": False},
}
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu")
VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=1024)
TINY = {"tiny-wan21": "wan21", "tiny-wan22": "wan22"}
ARCHES = (*FULL, *TINY)
TEACHER_STEPS = 50
PROMPT = "a red ball moves left"


def vae_config(arch: str) -> dict:
    """The full-size VAE's config, with one latents_mean / latents_std entry per latent channel (the class defaults list
    Wan 2.1's 16; the values do not change the speed)."""
    z = FULL[arch]["vae"]["z_dim"]
    return dict(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True],
                latents_mean=[0.0] * z, latents_std=[1.0] * z, **FULL[arch]["vae"])


def build_random_wan(arch: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A WanImageToVideoPipeline of `arch` (full size: random weights made on `device` in `dtype`)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from sfv import tiny_wan

    if arch in TINY:
        return tiny_wan.build_pipeline(TINY[arch]).to(device, dtype)
    spec = FULL[arch]
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are made in the bench dtype: a 14B model never exists in fp32
    try:
        with torch.device(device):
            transformer = WanTransformer3DModel(**spec["transformer"]).eval()
            vae = AutoencoderKLWan(**vae_config(arch)).eval()
            text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL)).eval()
            clip = CLIPVisionModel(CLIPVisionConfig(**VIT_H)).eval() if spec["clip"] else None
    finally:
        torch.set_default_dtype(default)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}) if clip else None
    return WanImageToVideoPipeline(
        tokenizer=tiny_wan.build_tokenizer(), text_encoder=text_encoder, vae=vae, image_encoder=clip,
        image_processor=processor, transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=spec["shift"]),
        expand_timesteps=not spec["clip"])


def default_size(arch: str) -> tuple[int, int, int]:
    """(frames, height, width): the stock size at full size, sfv.tiny_wan's at tiny size."""
    if arch in TINY:
        from sfv.tiny_wan import SIZES

        s = SIZES[TINY[arch]]
        return s["num_frames"], s["height"], s["width"]
    return FULL[arch]["size"]


@dataclass
class WanBenchConfig:
    arch: str
    frames: int
    height: int
    width: int
    device: str = "cuda"
    dtype: str = "bfloat16"
    repeats: int = 3
    warmup: int = 1
    seed: int = 0


def _timer(device: torch.device):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def measure(fn, repeats: int, warmup: int) -> dict:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(times), "runs_s": times}

    return measure


@torch.no_grad()
def run_wan_bench(config: WanBenchConfig, out_dir: str | Path, log=print) -> dict:
    """Time the components and the student end to end (module doc); write wan-bench.json and wan-bench.md."""
    from PIL import Image

    from sfv.teachers.wan import WanTeacher
    from sfv.teachers.wan_pipeline import WanSFVPipeline

    device, dtype = torch.device(config.device), getattr(torch, config.dtype)
    pipe = build_random_wan(config.arch, device, dtype, config.seed)
    teacher = WanTeacher.from_pipeline(pipe, execution_device=device)
    f, h, w = config.frames, config.height, config.width
    teacher.check_video_size(f, h, w)
    image = Image.new("RGB", (w, h), (120, 60, 30))
    measure, r = _timer(device), dict(repeats=config.repeats, warmup=config.warmup)
    cond = teacher.encode_condition(image, PROMPT, "", h, w, f)
    pixels = teacher.video_processor.preprocess(image, height=h, width=w).to(device, torch.float32)
    x = teacher.initial_latents(1, f, h, w, 1.0, torch.Generator(device).manual_seed(config.seed))
    t = torch.tensor(1.0, device=device)
    cfg = teacher.guidance(f, 5.0)
    parts = {"text_encoder": measure(lambda: teacher.encode_prompt([PROMPT]), **r),
             "vae_encode": measure(lambda: teacher.encode_image_latents(pixels, f), **r),
             "transformer_call": measure(lambda: teacher.velocity(x, t, cond), **r),
             "cfg_step": measure(lambda: teacher.velocity(x, t, cond, cfg), **r),
             "vae_decode": measure(lambda: teacher.decode(x), **r)}
    if teacher.image_encoder is not None:
        parts["clip"] = measure(lambda: teacher.encode_clip(image), **r)
    log(f"sfv bench (Wan): components of {config.arch} measured")
    student = WanSFVPipeline(teacher, {"sampling": {"levels": [1.0]}})
    end_to_end = measure(lambda: student(image, PROMPT, num_frames=f, height=h, width=w, output_type="np",
                                         generator=torch.Generator(device).manual_seed(config.seed)), **r)
    m = {k: v["median_s"] for k, v in parts.items()}
    encoders = m["text_encoder"] + m["vae_encode"] + m.get("clip", 0.0)
    teacher_s = TEACHER_STEPS * m["cfg_step"] + encoders + m["text_encoder"] + m["vae_decode"]  # + the negative prompt
    report = {"config": config.__dict__, "environment": _environment(device), "components": parts,
              "student_end_to_end": end_to_end,
              "student_from_parts_s": encoders + m["transformer_call"] + m["vae_decode"],
              "teacher_50_steps_cfg_composed_s": teacher_s,
              "speedup_end_to_end": teacher_s / end_to_end["median_s"],
              "speedup_transformer": TEACHER_STEPS * m["cfg_step"] / m["transformer_call"]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "wan-bench.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "wan-bench.md").write_text(wan_table(report) + "\n")
    return report


def _environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def wan_table(report: dict) -> str:
    c, m = report["config"], {k: v["median_s"] for k, v in report["components"].items()}
    rows = [f"{c['arch']}, {c['frames']}×{c['height']}×{c['width']}, {c['dtype']} on "
            f"{report['environment'].get('gpu', report['environment']['device'])} (medians of {c['repeats']}):", "",
            "| component | seconds |", "|---|---|"]
    rows += [f"| {name.replace('_', ' ')} | {s:.3f} |" for name, s in m.items()]
    rows += [f"| **student, 1 step, end to end (measured)** | **{report['student_end_to_end']['median_s']:.3f}** |",
             f"| teacher, 50 steps with CFG (composed from the parts) | {report['teacher_50_steps_cfg_composed_s']:.3f} |",
             "", f"Speed-up: {report['speedup_end_to_end']:.1f}× end to end, {report['speedup_transformer']:.0f}× in the "
                 "transformer (100 calls against 1)."]
    return "\n".join(rows)
