"""Wan 2.x in ComfyUI's original (Wan-AI) key names (sfv.comfyui writes the files; see its doc for what was checked
against ComfyUI's code).

Wan 2.x — the transformer alone (`models/diffusion_models/`, UNETLoader), under `model.diffusion_model.`. The map is
the inverse of diffusers' own `convert_wan_transformer_to_diffusers` (diffusers 0.42.1,
loaders/single_file_utils.py), an ordered str.replace table; it is inverted here per key position (anchored
patterns), because its plain replaces are ambiguous backwards (`scale_shift_table` is both head.modulation and
blocks.N.modulation; `proj_out` both head.head and VACE's after_proj; norm2 and norm3 are swapped):

    condition_embedder.time_embedder.linear_{1,2} / text_embedder.linear_{1,2}   time_embedding.{0,2} / text_embedding.{0,2}
    condition_embedder.time_proj                                                 time_projection.1
    condition_embedder.image_embedder.{norm1, ff.net.0.proj, ff.net.2, norm2}    img_emb.proj.{0, 1, 3, 4}
    scale_shift_table / proj_out                                                 head.modulation / head.head
    blocks.N.scale_shift_table                                                   blocks.N.modulation
    blocks.N.norm2 / blocks.N.norm3                                              blocks.N.norm3 / blocks.N.norm2
    blocks.N.ffn.net.0.proj / ffn.net.2                                          blocks.N.ffn.0 / ffn.2
    blocks.N.attn1.{to_q, to_k, to_v, to_out.0, norm_q, norm_k}                  blocks.N.self_attn.{q, k, v, o, norm_q, norm_k}
    blocks.N.attn2.{the same, add_k_proj, add_v_proj, norm_added_k}              blocks.N.cross_attn.{…, k_img, v_img, norm_k_img}
    vace_blocks.N.proj_in / proj_out                                             vace_blocks.N.before_proj / after_proj
    patch_embedding                                                              patch_embedding

A Wan LoRA in ComfyUI's layout (`models/loras/`, LoraLoaderModelOnly): per adapted module
`diffusion_model.<original module>.lora_down.weight` [r, in], `.lora_up.weight` [out, r] and `.alpha` (a scalar;
ComfyUI scales by alpha / rank, and by 1 without it, so it is always written). diffusers' WanLoraLoaderMixin reads the
same file through its converter for non-diffusers Wan LoRAs (lora_conversion_utils.py).
"""

from __future__ import annotations

import re

import torch

from sfv.errors import InputError

WAN_PREFIX = "model.diffusion_model."
LORA_PREFIX = "diffusion_model."

# ----------------------------------------------------------------------------------------------------
# Wan 2.x transformer

_WAN_ATTN = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o", "norm_q": "norm_q", "norm_k": "norm_k",
             "add_k_proj": "k_img", "add_v_proj": "v_img", "norm_added_k": "norm_k_img"}
# (diffusers pattern, original replacement) on the whole key (re.fullmatch), first match wins
WAN_TO_ORIGINAL: list[tuple[str, str]] = [
    (r"condition_embedder\.time_embedder\.linear_1\.(\w+)", r"time_embedding.0.\1"),
    (r"condition_embedder\.time_embedder\.linear_2\.(\w+)", r"time_embedding.2.\1"),
    (r"condition_embedder\.text_embedder\.linear_1\.(\w+)", r"text_embedding.0.\1"),
    (r"condition_embedder\.text_embedder\.linear_2\.(\w+)", r"text_embedding.2.\1"),
    (r"condition_embedder\.time_proj\.(\w+)", r"time_projection.1.\1"),
    (r"condition_embedder\.image_embedder\.norm1\.(\w+)", r"img_emb.proj.0.\1"),
    (r"condition_embedder\.image_embedder\.ff\.net\.0\.proj\.(\w+)", r"img_emb.proj.1.\1"),
    (r"condition_embedder\.image_embedder\.ff\.net\.2\.(\w+)", r"img_emb.proj.3.\1"),
    (r"condition_embedder\.image_embedder\.norm2\.(\w+)", r"img_emb.proj.4.\1"),
    (r"scale_shift_table", r"head.modulation"),
    (r"proj_out\.(\w+)", r"head.head.\1"),
    (r"(blocks\.\d+)\.scale_shift_table", r"\1.modulation"),
    (r"(blocks\.\d+)\.norm2\.(\w+)", r"\1.norm3.\2"),
    (r"(blocks\.\d+)\.norm3\.(\w+)", r"\1.norm2.\2"),
    (r"(blocks\.\d+)\.ffn\.net\.0\.proj\.(\w+)", r"\1.ffn.0.\2"),
    (r"(blocks\.\d+)\.ffn\.net\.2\.(\w+)", r"\1.ffn.2.\2"),
    *[(rf"(blocks\.\d+)\.attn1\.{re.escape(d)}\.(\w+)", rf"\1.self_attn.{o}.\2") for d, o in _WAN_ATTN.items()],
    *[(rf"(blocks\.\d+)\.attn2\.{re.escape(d)}\.(\w+)", rf"\1.cross_attn.{o}.\2") for d, o in _WAN_ATTN.items()],
    (r"(vace_blocks\.\d+)\.proj_in\.(\w+)", r"\1.before_proj.\2"),
    (r"(vace_blocks\.\d+)\.proj_out\.(\w+)", r"\1.after_proj.\2"),
    (r"(patch_embedding\.\w+)", r"\1"),
]
_WAN_COMPILED = [(re.compile(p), r) for p, r in WAN_TO_ORIGINAL]


def wan_key(key: str) -> str:
    """A WanTransformer3DModel key -> the original (Wan-AI, ComfyUI's WanModel) key, without prefix."""
    for pattern, repl in _WAN_COMPILED:
        if pattern.fullmatch(key):
            return pattern.sub(repl, key)
    raise KeyError(f"no original name for Wan transformer key '{key}'")


def wan_transformer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Wan transformer's state in the original names, under model.diffusion_model. (UNETLoader's input)."""
    out = {WAN_PREFIX + wan_key(k): v.contiguous() for k, v in state.items()}
    if len(out) != len(state):
        raise ValueError("the Wan key map is not one-to-one")  # a bug, not bad input
    return out


_LORA_KEY = re.compile(r"(?:transformer\.|base_model\.model\.)?(.+)\.lora_([AB])(?:\.default)?\.weight")


def wan_lora_to_comfyui(state_dict: dict[str, torch.Tensor], alpha: float, rank: int) -> dict[str, torch.Tensor]:
    """A Wan transformer's LoRA in diffusers / peft names -> ComfyUI's LoRA layout (models/loras/).

    state_dict: `transformer.<module>.lora_A.weight` / `.lora_B.weight` (what WanPipeline.save_lora_weights writes;
    peft's get_peft_model_state_dict without the `transformer.` prefix is read too); alpha, rank: the adapter's
    lora_alpha and r. Returns `diffusion_model.<original module>.lora_down.weight` (= lora_A [r, in]),
    `.lora_up.weight` (= lora_B [out, r]) and `.alpha` for every module, alpha always written (ComfyUI scales by
    alpha / rank, by 1 without it). diffusers' loader converts this layout back exactly when alpha / rank is a
    power of two (it splits the scale between down and up in powers of two)."""
    if rank <= 0 or not alpha > 0:
        raise InputError(f"LoRA rank and alpha must be positive, got rank {rank}, alpha {alpha}")
    out, seen = {}, {}
    for key, value in state_dict.items():
        m = _LORA_KEY.fullmatch(key)
        if not m:
            raise InputError(f"'{key}' is not a LoRA weight of a Wan transformer (expected transformer.<module>.lora_A.weight "
                             "or .lora_B.weight)")
        module, which = m.groups()
        try:
            original = wan_key(module + ".weight").removesuffix(".weight")
        except KeyError:
            raise InputError(f"LoRA weight '{key}' adapts '{module}', which is not a module of a Wan transformer") from None
        size = value.shape[0] if which == "A" else value.shape[-1]
        if value.dim() != 2 or size != rank:
            raise InputError(f"LoRA weight '{key}' has shape {tuple(value.shape)}; rank {rank} needs "
                             f"{'[rank, in]' if which == 'A' else '[out, rank]'}")
        out[f"{LORA_PREFIX}{original}.lora_{'down' if which == 'A' else 'up'}.weight"] = value.contiguous()
        out[f"{LORA_PREFIX}{original}.alpha"] = torch.tensor(float(alpha))
        seen.setdefault(module, set()).add(which)
    lonely = [m for m, parts in seen.items() if parts != {"A", "B"}]
    if lonely:
        raise InputError(f"LoRA module '{lonely[0]}' has only lora_{''.join(seen[lonely[0]])}: each needs lora_A and lora_B")
    return out
