"""SVD in ComfyUI's original (Stability) key names, both ways (sfv.comfyui writes the files and cites the check).
SVD — one checkpoint (`models/checkpoints/`, ImageOnlyCheckpointLoader), three prefixes:

    model.diffusion_model.*                              UNet (UNetSpatioTemporalConditionModel)  <- the student
    first_stage_model.*                                  VAE (AutoencoderKLTemporalDecoder)       <- the teacher's
    conditioner.embedders.0.open_clip.model.visual.*     image tower (CLIPVisionModelWithProjection) <- the teacher's

  UNet   diffusers                                    original
         conv_in / conv_norm_out / conv_out           input_blocks.0.0 / out.0 / out.2
         time_embedding.linear_{1,2}                  time_embed.{0,2}
         add_embedding.linear_{1,2}                   label_emb.0.{0,2}
         down_blocks.b.resnets.i                      input_blocks.n.0        n = 1 + Σ_{b'<b}(L_b' + 1) + i
         down_blocks.b.attentions.i                   input_blocks.n.1
         down_blocks.b.downsamplers.0.conv            input_blocks.(n after b's last resnet).0.op
         mid_block.resnets.0 / attentions.0 / resnets.1   middle_block.0 / .1 / .2
         up_blocks.b.resnets.i / attentions.i         output_blocks.m.0 / .1  m = Σ_{b'<b}(L_b' + 2) + i (L + 1 per up level)
         up_blocks.b.upsamplers.0.conv                output_blocks.(b's last m).{1, or 2 with attention}.conv
    inside a resnet: spatial_res_block.{norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut} ->
         {in_layers.0, in_layers.2, emb_layers.1, out_layers.0, out_layers.3, skip_connection}; temporal_res_block.X ->
         time_stack.(the same); time_mixer.mix_factor unchanged.
    inside an attention: temporal_transformer_blocks -> time_stack, time_pos_embed.linear_{1,2} -> time_pos_embed.{0,2},
         everything else (norm, proj_in, proj_out, transformer_blocks.*, time_mixer) unchanged.

  VAE    encoder.down_blocks.i.resnets.j -> encoder.down.i.block.j (conv_shortcut -> nin_shortcut),
         *.downsamplers.0 -> *.downsample, mid_block.resnets.k -> mid.block_(k+1), conv_norm_out -> norm_out,
         mid_block.attentions.0.{group_norm, to_q, to_k, to_v, to_out.0} -> mid.attn_1.{norm, q, k, v, proj_out}
         (weights [C, C] -> [C, C, 1, 1]); the decoder's up_blocks.i -> up.(levels − 1 − i) (numbered bottom-up), its
         resnets are VideoResBlocks: spatial_res_block.X -> X (conv_shortcut -> nin_shortcut), temporal_res_block.
         {norm1, conv1, norm2, conv2} -> time_stack.{in_layers.0, in_layers.2, out_layers.0, out_layers.3},
         time_mixer.mix_factor -> mix_factor; time_conv_out -> conv_out.time_mix_conv.
         quant_conv has no counterpart (the original autoencoder has none): dropped when it is the identity, else
         folded into encoder.conv_out (a 1×1 convolution after a convolution is one convolution).

  CLIP   vision_model.embeddings.{class_embedding, patch_embedding, position_embedding} -> class_embedding, conv1,
         positional_embedding; pre_layrnorm / post_layernorm -> ln_pre / ln_post; encoder.layers.N.{layer_norm1,
         layer_norm2, self_attn.out_proj, mlp.fc1, mlp.fc2} -> transformer.resblocks.N.{ln_1, ln_2, attn.out_proj,
         mlp.c_fc, mlp.c_proj}; self_attn.{q,k,v}_proj -> attn.in_proj_{weight,bias} (concatenated, rows [q; k; v]);
         visual_projection.weight [E, W] -> proj [W, E].
"""

from __future__ import annotations

import re

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."

# ----------------------------------------------------------------------------------------------------
# SVD UNet

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_RESNET_BACK = {v: k for k, v in _RESNET.items()}
_UNET_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0",
             "conv_out": "out.2"}
_UNET_TOP_BACK = {v: k for k, v in _UNET_TOP.items()}
_TIME_POS = {"time_pos_embed.linear_1": "time_pos_embed.0", "time_pos_embed.linear_2": "time_pos_embed.2"}
_TIME_POS_BACK = {v: k for k, v in _TIME_POS.items()}


class _UNetLayout:
    """Block numbering of an SVD UNet config: diffusers' (level, index) <-> the original input/output block number."""

    def __init__(self, config):
        lpb = config["layers_per_block"]
        levels = len(config["block_out_channels"])
        layers = list(lpb) if isinstance(lpb, (list, tuple)) else [int(lpb)] * levels
        self.down, self.down_op, n = {}, {}, 1
        for b in range(levels):
            for i in range(layers[b]):
                self.down[(b, i)] = n
                n += 1
            if b < levels - 1:
                self.down_op[b] = n
                n += 1
        self.up, self.up_op, m = {}, {}, 0
        for b, count in enumerate(reversed(layers)):
            for i in range(count + 1):
                self.up[(b, i)] = m
                m += 1
            if b < levels - 1:  # the upsampler follows the resnet (slot 0) and the attention (slot 1), if any
                self.up_op[b] = (m - 1, 2 if "CrossAttn" in config["up_block_types"][b] else 1)
        self.down_back = {v: k for k, v in self.down.items()}
        self.down_op_back = {v: k for k, v in self.down_op.items()}
        self.up_back = {v: k for k, v in self.up.items()}
        self.up_op_back = {v: k for k, v in self.up_op.items()}


def _resnet_to_original(rest: str) -> str:
    if rest.startswith("time_mixer."):
        return rest
    part, layer, leaf = rest.split(".", 2)
    stack = "" if part == "spatial_res_block" else "time_stack."
    return f"{stack}{_RESNET[layer]}.{leaf}"


def _resnet_to_diffusers(rest: str) -> str:
    if rest.startswith("time_mixer."):
        return rest
    part = "temporal_res_block" if rest.startswith("time_stack.") else "spatial_res_block"
    rest = rest.removeprefix("time_stack.")
    head, leaf = rest.rsplit(".", 1)
    return f"{part}.{_RESNET_BACK[head]}.{leaf}"


def _attention_to_original(rest: str) -> str:
    if rest.startswith("temporal_transformer_blocks."):
        return "time_stack." + rest.removeprefix("temporal_transformer_blocks.")
    head, leaf = rest.rsplit(".", 1)
    return f"{_TIME_POS.get(head, head)}.{leaf}"


def _attention_to_diffusers(rest: str) -> str:
    if rest.startswith("time_stack."):
        return "temporal_transformer_blocks." + rest.removeprefix("time_stack.")
    head, leaf = rest.rsplit(".", 1)
    return f"{_TIME_POS_BACK.get(head, head)}.{leaf}"


def svd_unet_key(key: str, layout: _UNetLayout) -> str:
    """A diffusers SVD UNet key -> its original name (without the model.diffusion_model. prefix)."""
    head, leaf = key.rsplit(".", 1)
    if head in _UNET_TOP:
        return f"{_UNET_TOP[head]}.{leaf}"
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        side, b, kind, i, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        blocks, n = ("input_blocks", layout.down[(b, i)]) if side == "down" else ("output_blocks", layout.up[(b, i)])
        return f"{blocks}.{n}.0.{_resnet_to_original(rest)}" if kind == "resnets" else f"{blocks}.{n}.1.{_attention_to_original(rest)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"input_blocks.{layout.down_op[int(m.group(1))]}.0.op.{m.group(2)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        n, slot = layout.up_op[int(m.group(1))]
        return f"output_blocks.{n}.{slot}.conv.{m.group(2)}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", key):
        return f"middle_block.{2 * int(m.group(1))}.{_resnet_to_original(m.group(2))}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{_attention_to_original(m.group(1))}"
    raise KeyError(f"no original name for SVD UNet key '{key}'")


def svd_unet_key_to_diffusers(key: str, layout: _UNetLayout) -> str:
    """An original SVD UNet key (without prefix) -> diffusers' name."""
    head, leaf = key.rsplit(".", 1)
    if head in _UNET_TOP_BACK:
        return f"{_UNET_TOP_BACK[head]}.{leaf}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.(\d)\.(.+)", key):
        n, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if n in layout.down_op_back:
            return f"down_blocks.{layout.down_op_back[n]}.downsamplers.0.conv.{rest.removeprefix('op.')}"
        b, i = layout.down_back[n]
        return f"down_blocks.{b}.resnets.{i}.{_resnet_to_diffusers(rest)}" if slot == 0 else \
            f"down_blocks.{b}.attentions.{i}.{_attention_to_diffusers(rest)}"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.(\d)\.(.+)", key):
        n, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if (n, slot) in layout.up_op_back:
            return f"up_blocks.{layout.up_op_back[(n, slot)]}.upsamplers.0.conv.{rest.removeprefix('conv.')}"
        b, i = layout.up_back[n]
        return f"up_blocks.{b}.resnets.{i}.{_resnet_to_diffusers(rest)}" if slot == 0 else \
            f"up_blocks.{b}.attentions.{i}.{_attention_to_diffusers(rest)}"
    if m := re.fullmatch(r"middle_block\.(\d)\.(.+)", key):
        j, rest = int(m.group(1)), m.group(2)
        return f"mid_block.attentions.0.{_attention_to_diffusers(rest)}" if j == 1 else \
            f"mid_block.resnets.{j // 2}.{_resnet_to_diffusers(rest)}"
    raise KeyError(f"no diffusers name for original SVD UNet key '{key}'")


# ----------------------------------------------------------------------------------------------------
# SVD VAE

_VAE_SPATIAL = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_VAE_SPATIAL_BACK = {v: k for k, v in _VAE_SPATIAL.items()}
_VAE_TEMPORAL = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3"}
_VAE_TEMPORAL_BACK = {v: k for k, v in _VAE_TEMPORAL.items()}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_ATTN_BACK = {v: k for k, v in _VAE_ATTN.items()}
_VAE_TOP = {"conv_in": "conv_in", "conv_norm_out": "norm_out", "conv_out": "conv_out", "time_conv_out": "conv_out.time_mix_conv"}
_VAE_TOP_BACK = {v: k for k, v in _VAE_TOP.items()}
_VAE_ATTN_MATRIX = re.compile(r".*mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight")


def svd_vae_key(key: str, levels: int) -> str:
    """A diffusers AutoencoderKLTemporalDecoder key (not quant_conv) -> its original name (without prefix)."""
    side, rest = key.split(".", 1)
    head, leaf = rest.rsplit(".", 1)
    if side not in ("encoder", "decoder"):
        raise KeyError(f"no original name for SVD VAE key '{key}'")
    if head in _VAE_TOP:
        return f"{side}.{_VAE_TOP[head]}.{leaf}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)", head):
        return f"{side}.mid.attn_1.{_VAE_ATTN[m.group(1)]}.{leaf}"
    if m := re.fullmatch(r"(?:mid_block|down_blocks\.(\d+)|up_blocks\.(\d+))\.resnets\.(\d+)\.(.+)", rest):
        down, up, j, sub = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        base = f"{side}.down.{down}.block.{j}" if down is not None else \
            f"{side}.up.{levels - 1 - int(up)}.block.{j}" if up is not None else f"{side}.mid.block_{j + 1}"
        if side == "encoder":  # plain 2D resnets
            layer, leaf = sub.rsplit(".", 1)
            return f"{base}.{_VAE_SPATIAL[layer]}.{leaf}"
        if sub == "time_mixer.mix_factor":
            return f"{base}.mix_factor"
        part, layer, leaf = sub.split(".", 2)
        return f"{base}.{_VAE_SPATIAL[layer]}.{leaf}" if part == "spatial_res_block" else \
            f"{base}.time_stack.{_VAE_TEMPORAL[layer]}.{leaf}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", head):
        return f"{side}.down.{m.group(1)}.downsample.conv.{leaf}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", head):
        return f"{side}.up.{levels - 1 - int(m.group(1))}.upsample.conv.{leaf}"
    raise KeyError(f"no original name for SVD VAE key '{key}'")


def svd_vae_key_to_diffusers(key: str, levels: int) -> str:
    """An original SVD VAE key (without prefix) -> diffusers' name."""
    side, rest = key.split(".", 1)
    head, leaf = rest.rsplit(".", 1)
    if head in _VAE_TOP_BACK:
        return f"{side}.{_VAE_TOP_BACK[head]}.{leaf}"
    if m := re.fullmatch(r"mid\.attn_1\.(norm|q|k|v|proj_out)", head):
        return f"{side}.mid_block.attentions.0.{_VAE_ATTN_BACK[m.group(1)]}.{leaf}"
    if m := re.fullmatch(r"(?:mid\.block_(\d)|down\.(\d+)\.block\.(\d+)|up\.(\d+)\.block\.(\d+))\.(.+)", rest):
        mid, down, dj, up, uj, sub = m.groups()
        base = f"{side}.mid_block.resnets.{int(mid) - 1}" if mid is not None else \
            f"{side}.down_blocks.{down}.resnets.{dj}" if down is not None else \
            f"{side}.up_blocks.{levels - 1 - int(up)}.resnets.{uj}"
        if sub == "mix_factor":
            return f"{base}.time_mixer.mix_factor"
        if sub.startswith("time_stack."):
            layer, leaf = sub.removeprefix("time_stack.").rsplit(".", 1)
            return f"{base}.temporal_res_block.{_VAE_TEMPORAL_BACK[layer]}.{leaf}"
        layer, leaf = sub.rsplit(".", 1)
        return f"{base}.{'' if side == 'encoder' else 'spatial_res_block.'}{_VAE_SPATIAL_BACK[layer]}.{leaf}"
    if m := re.fullmatch(r"down\.(\d+)\.downsample\.conv", head):
        return f"{side}.down_blocks.{m.group(1)}.downsamplers.0.conv.{leaf}"
    if m := re.fullmatch(r"up\.(\d+)\.upsample\.conv", head):
        return f"{side}.up_blocks.{levels - 1 - int(m.group(1))}.upsamplers.0.conv.{leaf}"
    raise KeyError(f"no diffusers name for original SVD VAE key '{key}'")


def svd_vae_to_original(state: dict[str, torch.Tensor], levels: int) -> tuple[dict[str, torch.Tensor], str]:
    """The VAE's state in original names (with prefix), and what became of quant_conv ('absent', 'identity, dropped'
    or 'folded into encoder.conv_out')."""
    state = dict(state)
    qw, qb = state.pop("quant_conv.weight", None), state.pop("quant_conv.bias", None)
    note = "absent"
    if qw is not None:
        q = qw[:, :, 0, 0]
        if q.is_meta:  # no values (a key count on the meta device)
            note = "meta device, dropped"
        elif torch.equal(q, torch.eye(q.shape[0], dtype=q.dtype)) and not qb.any():
            note = "identity, dropped"
        else:  # conv_out then the 1×1 quant_conv = one convolution: W' = Q·W, b' = Q·b + q (in float64)
            w, b = state["encoder.conv_out.weight"], state["encoder.conv_out.bias"]
            state["encoder.conv_out.weight"] = torch.einsum("oc,cikl->oikl", q.double(), w.double()).to(w.dtype)
            state["encoder.conv_out.bias"] = (q.double() @ b.double() + qb.double()).to(b.dtype)
            note = "folded into encoder.conv_out"
    out = {VAE_PREFIX + svd_vae_key(k, levels): v[:, :, None, None] if _VAE_ATTN_MATRIX.fullmatch(k) else v
           for k, v in state.items()}
    return out, note


def svd_vae_from_original(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers' VAE state from a checkpoint's `first_stage_model.*` keys; quant_conv the identity."""
    out = {}
    for k, v in state.items():
        if k.startswith(VAE_PREFIX):
            name = svd_vae_key_to_diffusers(k.removeprefix(VAE_PREFIX), levels)
            out[name] = v[:, :, 0, 0] if _VAE_ATTN_MATRIX.fullmatch(name) else v
    w = out["encoder.conv_out.weight"]
    out["quant_conv.weight"] = torch.eye(w.shape[0], dtype=w.dtype)[:, :, None, None]
    out["quant_conv.bias"] = torch.zeros(w.shape[0], dtype=w.dtype)
    return out


# ----------------------------------------------------------------------------------------------------
# SVD image tower (HF CLIPVisionModelWithProjection <-> OpenCLIP's visual)

_CLIP_TOP = {"vision_model.embeddings.class_embedding": "class_embedding",
             "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
             "vision_model.embeddings.position_embedding.weight": "positional_embedding",
             "vision_model.pre_layrnorm.weight": "ln_pre.weight", "vision_model.pre_layrnorm.bias": "ln_pre.bias",
             "vision_model.post_layernorm.weight": "ln_post.weight", "vision_model.post_layernorm.bias": "ln_post.bias"}
_CLIP_TOP_BACK = {v: k for k, v in _CLIP_TOP.items()}
_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
               "self_attn.out_proj": "attn.out_proj"}
_CLIP_LAYER_BACK = {v: k for k, v in _CLIP_LAYER.items()}


def clip_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, qkv = {}, {}
    for k, v in state.items():
        if k in _CLIP_TOP:
            out[CLIP_PREFIX + _CLIP_TOP[k]] = v
        elif k == "visual_projection.weight":
            out[CLIP_PREFIX + "proj"] = v.t().contiguous()
        elif m := re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", k):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
        elif m := re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", k):
            out[f"{CLIP_PREFIX}transformer.resblocks.{m.group(1)}.{_CLIP_LAYER[m.group(2)]}.{m.group(3)}"] = v
        else:
            raise KeyError(f"no original name for CLIP key '{k}'")
    for (n, leaf), p in qkv.items():  # nn.MultiheadAttention's one in_proj: rows [q; k; v]
        out[f"{CLIP_PREFIX}transformer.resblocks.{n}.attn.in_proj_{leaf}"] = torch.cat([p["q"], p["k"], p["v"]])
    return out


def clip_from_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if not k.startswith(CLIP_PREFIX):
            continue
        rest = k.removeprefix(CLIP_PREFIX)
        if rest in _CLIP_TOP_BACK:
            out[_CLIP_TOP_BACK[rest]] = v
        elif rest == "proj":
            out["visual_projection.weight"] = v.t().contiguous()
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", rest):
            for name, part in zip("qkv", v.chunk(3, dim=0)):
                out[f"vision_model.encoder.layers.{m.group(1)}.self_attn.{name}_proj.{m.group(2)}"] = part.contiguous()
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", rest):
            out[f"vision_model.encoder.layers.{m.group(1)}.{_CLIP_LAYER_BACK[m.group(2)]}.{m.group(3)}"] = v
        else:
            raise KeyError(f"no diffusers name for original CLIP key '{k}'")
    return out


# ----------------------------------------------------------------------------------------------------
# SVD: the single checkpoint


def svd_checkpoint(unet_state: dict, unet_config, vae_state: dict, vae_config, clip_state: dict) -> tuple[dict, str]:
    """One state dict in the original names (ComfyUI's ImageOnlyCheckpointLoader reads it): the UNet `unet_state`
    (the student), the VAE and the image tower (the teacher's). -> (state, what became of the VAE's quant_conv)."""
    layout = _UNetLayout(unet_config)
    unet = {UNET_PREFIX + svd_unet_key(k, layout): v for k, v in unet_state.items()}
    vae, note = svd_vae_to_original(vae_state, len(vae_config["block_out_channels"]))
    clip = clip_to_original(clip_state)
    state = {**unet, **vae, **clip}
    if len(state) != len(unet) + len(vae) + len(clip) or len(unet) != len(unet_state):
        raise ValueError("the SVD key map is not one-to-one")  # a bug, not bad input
    return {k: v.contiguous() for k, v in state.items()}, note


def svd_from_checkpoint(state: dict, unet_config, vae_config) -> tuple[dict, dict, dict]:
    """A checkpoint in the original names -> (UNet, VAE, image tower) state dicts in diffusers' names."""
    layout = _UNetLayout(unet_config)
    unet = {svd_unet_key_to_diffusers(k.removeprefix(UNET_PREFIX), layout): v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    return unet, svd_vae_from_original(state, len(vae_config["block_out_channels"])), clip_from_original(state)
