"""FLOPs of a Wan 2.x teacher against its one-step student at full size, per component, counted on the meta device.

    python tools/wan_flops.py [--out runs/wan-flops.json]

Wan 2.1 I2V-14B at 81×480×832 and Wan 2.2 TI2V-5B at 121×704×1280 (their stock sizes), built from their published
configs on the meta device (nothing allocated, nothing downloaded) and run once under
torch.utils.flop_counter.FlopCounterMode, which counts matrix products, convolutions and attention by shape
(2 FLOPs a multiply-add; norms, activations and RoPE are not counted). The teacher samples 50 steps with CFG
(2 transformer calls a step, the stock pipeline's default); the student makes one call. The text encoder (UMT5-XXL,
512 tokens, twice with CFG's negative prompt) and the VAE's decoder are the same for both and are counted once.
Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sfv.console import ArgParser, run_command

from sfv.teachers.wan_bench import FULL as MODELS  # the hub folders' configs and stock sizes (one home: the Wan bench)
from sfv.teachers.wan_bench import UMT5_XXL

TEACHER_STEPS, CFG_CALLS = 50, 2


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def model_flops(name: str) -> dict:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    spec = MODELS[name]
    frames, height, width = spec["size"]
    with torch.device("meta"):
        net = WanTransformer3DModel(**spec["transformer"]).eval()
        vae = AutoencoderKLWan(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True],
                               **spec["vae"]).eval()
        text = UMT5EncoderModel(UMT5Config(**UMT5_XXL)).eval()
    f_lat, s = (frames - 1) // 4 + 1, vae.config.scale_factor_spatial
    z = vae.config.z_dim
    meta = dict(device="meta")
    hidden = torch.zeros(1, net.config.in_channels, f_lat, height // s, width // s, **meta)
    image = torch.zeros(1, 257, 1280, **meta) if spec["clip"] else None  # CLIP ViT-H/14: 256 patches + class token
    step = count_flops(lambda: net(hidden_states=hidden, timestep=torch.zeros(1, **meta), return_dict=False,
                                   encoder_hidden_states=torch.zeros(1, 512, 4096, **meta), encoder_hidden_states_image=image))
    decode = count_flops(lambda: vae.decode(torch.zeros(1, z, f_lat, height // s, width // s, **meta)))
    prompt = count_flops(lambda: text(torch.zeros(1, 512, dtype=torch.long, **meta)))
    teacher = TEACHER_STEPS * CFG_CALLS * step + 2 * prompt + decode
    student = step + prompt + decode
    return {"model": name, "frames": frames, "height": height, "width": width, "latent": [f_lat, z, height // s, width // s],
            "tokens": f_lat * (height // s // 2) * (width // s // 2),
            "parameters": {"transformer": sum(p.numel() for p in net.parameters()), "vae": sum(p.numel() for p in vae.parameters()),
                           "text_encoder": sum(p.numel() for p in text.parameters())},
            "tflops": {"transformer_call": step / 1e12, "vae_decode": decode / 1e12, "text_encoder": prompt / 1e12,
                       "teacher_50_steps_cfg": teacher / 1e12, "student_1_step": student / 1e12},
            "ratio": teacher / student, "transformer_ratio": TEACHER_STEPS * CFG_CALLS}


def build_parser(parser_class=ArgParser):
    p = parser_class(prog="python tools/wan_flops.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), report, argv)


def report(args) -> int:
    rows = [model_flops(name) for name in MODELS]
    print("| model | size | tokens | transformer call | VAE decode | UMT5 | teacher, 50 steps CFG | student, 1 step | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["tflops"]
        print(f"| {r['model']} | {r['frames']}×{r['height']}×{r['width']} | {r['tokens']} | {t['transformer_call']:.0f} TFLOPs | "
              f"{t['vae_decode']:.0f} | {t['text_encoder']:.1f} | {t['teacher_50_steps_cfg']:.0f} | {t['student_1_step']:.0f} | "
              f"{r['ratio']:.0f}× |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
