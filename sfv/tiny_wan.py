"""Tiny, architecturally faithful Wan 2.x image-to-video folders (`WanImageToVideoPipeline`), built offline from
configs: what the tests and `tools/make_tiny_wan.py` run the Wan family on (the Wan analogue of sfv.tiny).

  wan21  Wan 2.1 I2V (14B layout): transformer in_channels = 16 noise + 4 mask + 16 image latent = 36, CLIP image
         tokens (penultimate hidden state) through every cross-attention's add_k_proj / add_v_proj
         (`added_kv_proj_dim` = the inner width, as in the 14B), VAE 2.1 (z 16, 4× time, 8× space).
  wan22  Wan 2.2 TI2V-5B layout: no CLIP; frame 0's latent replaced by the image latent and timestep 0 on its
         tokens (`expand_timesteps=True`); VAE 2.2 (residual, pixel patchify 2, z 48, 4× time, 16× space).
  a14b   Wan 2.2 I2V-A14B layout: the 2.1 concatenation without CLIP, a high-noise `transformer` (t ≥ 0.9) and a
         low-noise `transformer_2`.

All: a UMT5 encoder from a config, a `tokenizers` WordLevel tokenizer in `PreTrainedTokenizerFast`, and
`FlowMatchEulerDiscreteScheduler` (shift 3.0 for 2.1-480P, 5.0 for 2.2, the hub folders' flow_shift) instead of the
hub's UniPC, whose one step disagrees with itself (timestep 999, σ 0.999999). Every module built from a config is put
in eval mode: UMT5's dropout would otherwise randomise the prompt embeddings. Diffusers' own Wan 2.1 test config
leaves out `added_kv_proj_dim`; then the image tokens are read as text, so the 2.1 layout here sets it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

LAYOUTS = ("wan21", "wan22", "a14b")

# Small, deterministic vocabulary for the WordLevel tokenizer (ids 0, 1, 2 are UMT5's pad, eos, unk).
WORDS = (
    "a the an of and to in on with from up down left right moves move slowly fast quickly turns red green blue "
    "yellow white black ball square circle disc bar shape camera pans zooms scene background light dark small "
    "large two one bounces falls rises spins stops"
).split()

# Shapes the tests run at (frames are 4k+1; sides ×16 for 2.1, ×32 for TI2V-5B).
SIZES = {"wan21": dict(num_frames=9, height=32, width=48), "wan22": dict(num_frames=9, height=64, width=64),
         "a14b": dict(num_frames=9, height=32, width=48)}


def _seeded(seed: int):
    torch.manual_seed(seed)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer (whitespace split, lower-cased) that appends </s> like UMT5's."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    from tokenizers import normalizers

    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def build_text_encoder(vocab_size: int, seed: int = 0) -> UMT5EncoderModel:
    """UMT5 encoder (umt5-xxl's structure: gated-GELU FFN, relative position buckets, 4096 wide at full size)."""
    _seeded(seed)
    config = UMT5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
        dropout_rate=0.1,  # left at UMT5's value on purpose: eval() must be what turns it off
    )
    return UMT5EncoderModel(config).eval()


def build_clip(seed: int = 1) -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """CLIP ViT (ViT-H/14 at full size: 257 tokens of 1280); here 28 px / 14 -> 4 + 1 tokens of 32."""
    _seeded(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                              image_size=28, patch_size=14, projection_dim=32)
    processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    return CLIPVisionModel(config).eval(), processor


def _stats(z_dim: int, seed: int) -> tuple[list[float], list[float]]:
    """Non-trivial per-channel latents_mean / latents_std (4 decimals, as the hub configs list them)."""
    g = torch.Generator().manual_seed(seed)
    mean = (torch.randn(z_dim, generator=g) * 0.5).tolist()
    std = (0.8 + torch.rand(z_dim, generator=g) * 1.5).tolist()
    return [round(v, 4) for v in mean], [round(v, 4) for v in std]


def build_vae(layout: str, seed: int = 2) -> AutoencoderKLWan:
    _seeded(seed)
    if layout in ("wan21", "a14b"):  # Wan2.1_VAE: base_dim 96, z_dim 16, (4, 8, 8)
        mean, std = _stats(16, seed)
        vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                               temperal_downsample=[False, True, True], latents_mean=mean, latents_std=std)
    else:  # Wan2.2_VAE: base_dim 160, decoder_base_dim 256, z_dim 48, residual, patchify 2 -> (4, 16, 16)
        mean, std = _stats(48, seed)
        vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=12, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                               attn_scales=[], temperal_downsample=[False, True, True], is_residual=True,
                               in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                               scale_factor_temporal=4, latents_mean=mean, latents_std=std)
    return vae.eval()


def build_transformer(layout: str, text_dim: int, image_dim: int | None, seed: int = 3) -> WanTransformer3DModel:
    """WanTransformer3DModel in the 14B (2.1 I2V) or 5B (2.2 TI2V) layout, 2 heads of 12 (inner width 24)."""
    _seeded(seed)
    heads, head_dim = 2, 12
    common = dict(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, text_dim=text_dim,
                  freq_dim=32, ffn_dim=48, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                  eps=1e-6, rope_max_seq_len=64)
    if layout == "a14b":  # 2.2 I2V-A14B: in 36 = 16 + 4 + 16, no image embedding
        model = WanTransformer3DModel(in_channels=36, out_channels=16, image_dim=None, added_kv_proj_dim=None, **common)
    elif layout == "wan21":
        # 14B: in 36 = 16 + 4 + 16, image_dim 1280 (CLIP), added_kv_proj_dim 5120 (= inner width).
        # diffusers' own fast-test config omits added_kv_proj_dim: then attn2 has no add_k_proj, the
        # processor never splits off the image tokens and they are attended to as if they were text.
        model = WanTransformer3DModel(in_channels=36, out_channels=16, image_dim=image_dim,
                                      added_kv_proj_dim=heads * head_dim, **common)
    else:  # 5B: in = out = 48, no image embedding
        model = WanTransformer3DModel(in_channels=48, out_channels=48, image_dim=None, added_kv_proj_dim=None, **common)
    return model.eval()


def build_scheduler(layout: str) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0 if layout == "wan21" else 5.0)


A14B_BOUNDARY = 0.9  # Wan2.2-I2V-A14B: the high-noise expert handles t ≥ 0.9 (T2V-A14B: 0.875)


def build_pipeline(layout: str) -> WanImageToVideoPipeline:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(len(tokenizer))
    vae = build_vae(layout)
    if layout == "wan21":
        image_encoder, image_processor = build_clip()
        transformer = build_transformer(layout, text_encoder.config.d_model, image_encoder.config.hidden_size)
        return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                       scheduler=build_scheduler(layout), image_processor=image_processor,
                                       image_encoder=image_encoder, transformer=transformer)
    if layout == "a14b":
        return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                       scheduler=build_scheduler(layout), image_processor=None, image_encoder=None,
                                       transformer=build_transformer(layout, text_encoder.config.d_model, None, seed=3),
                                       transformer_2=build_transformer(layout, text_encoder.config.d_model, None, seed=4),
                                       boundary_ratio=A14B_BOUNDARY)
    transformer = build_transformer(layout, text_encoder.config.d_model, None)
    return WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   scheduler=build_scheduler(layout), image_processor=None, image_encoder=None,
                                   transformer=transformer, expand_timesteps=True)


# transformers 5 writes its new class names; older transformers (and other tools) know only the old ones.
_CLASS_REWRITES = {"TokenizersBackend": "PreTrainedTokenizerFast", "CLIPImageProcessorPil": "CLIPImageProcessor"}


def fix_model_index(folder: str | Path) -> list[str]:
    """Rewrite transformers-5 class names in model_index.json (and tokenizer_config.json's tokenizer_class)
    to the portable ones; returns what was rewritten."""
    folder = Path(folder)
    done = []
    index = folder / "model_index.json"
    data = json.loads(index.read_text())
    for key, value in data.items():
        if isinstance(value, list) and len(value) == 2 and value[1] in _CLASS_REWRITES:
            done.append(f"model_index.json {key}: {value[1]} -> {_CLASS_REWRITES[value[1]]}")
            data[key] = [value[0], _CLASS_REWRITES[value[1]]]
    index.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    for sub, field in (("tokenizer/tokenizer_config.json", "tokenizer_class"),
                       ("image_processor/preprocessor_config.json", "image_processor_type")):
        path = folder / sub
        if path.is_file():
            cfg = json.loads(path.read_text())
            old = cfg.get(field)
            if old in _CLASS_REWRITES:
                cfg[field] = _CLASS_REWRITES[old]
                path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
                done.append(f"{sub} {field}: {old} -> {cfg[field]}")
    return done


def save(pipe: WanImageToVideoPipeline, folder: str | Path, portable: bool = True) -> list[str]:
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return fix_model_index(folder) if portable else []


def load(folder: str | Path) -> WanImageToVideoPipeline:
    pipe = WanImageToVideoPipeline.from_pretrained(str(folder))
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module) and module.training:
            raise RuntimeError(f"{name} loaded in train mode")
    return pipe
