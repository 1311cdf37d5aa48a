"""The Wan DiT under sfv: the velocity model in sfv's latent layout (teacher, G and DMD's fake score), frame-0
replacement for Wan 2.2 TI2V, the first transformer blocks as D's frozen backbone, and student weights loaded into
the teacher's architecture. sfv's layout is [B, F, C, h, w]; Wan's own is [B, C, F, h, w]; the permutations are exact.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel

from sfv.errors import InputError, ModelLoadError, first_line
from sfv.noise import FlowPrecond
from sfv.teachers.wan_condition import WanCondition

# transformer config entries a student shares with the teacher's VAE, text and image encoders
_INTERFACE = ("in_channels", "out_channels", "text_dim", "image_dim", "added_kv_proj_dim", "patch_size")


# LoRA target presets (sfv.lora; regular expressions matched in full against the transformer's module names):
#   attn      self- and cross-attention projections, including the image branch's add_k_proj / add_v_proj (without them
#             diffusers' Wan LoRA loader fills those with zeros and warns)
#   attn_ffn  + the feed-forward (ffn.net.0.proj, ffn.net.2)
_LORA_ATTN = r"blocks\.\d+\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0|add_k_proj|add_v_proj)"
LORA_TARGETS = {
    "attn": _LORA_ATTN,
    "attn_ffn": rf"{_LORA_ATTN}|blocks\.\d+\.ffn\.net\.(?:0\.proj|2)",
}


def wan_velocity(net: WanTransformer3DModel, x: torch.Tensor, t, cond: WanCondition, guidance=None,
                 expand_timesteps: bool = False, timescale: float = 1000.0, batched_cfg: bool = False) -> torch.Tensor:
    """v = F(x_t, T·t, cond) for latents x [B, F, C, h, w] at level t (scalar or [B]); float32, [B, F, C, h, w].

    As WanImageToVideoPipeline's loop body: 2.1 concatenates [x ‖ mask ‖ image latent] on channels; 2.2
    (expand_timesteps) replaces frame 0 by the image latent and gives its tokens timestep 0. With `guidance`
    (a scale g > 1) the unconditional branch runs with the negative text and v = v_u + g·(v_c − v_u). The stock
    pipeline makes two calls; `batched_cfg` makes one call on 2B (1e-6 from it: not bit-identical).
    """
    dtype = net.dtype
    x_cf = x.to(torch.float32).permute(0, 2, 1, 3, 4)  # Wan's [B, C, F, h, w]
    t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
    t_net = t * timescale  # = the scheduler's timesteps (sigmas * 1000 in float32)
    batch, _, frames, height, width = x_cf.shape
    condition = cond.image_latents.to(device=x.device, dtype=torch.float32).permute(0, 2, 1, 3, 4)
    if expand_timesteps:
        mask = torch.ones(1, 1, frames, height, width, dtype=torch.float32, device=x.device)
        mask[:, :, 0] = 0
        hidden = ((1 - mask) * condition + mask * x_cf).to(dtype)
        _, p_h, p_w = net.config.patch_size  # the stock pipeline hard-codes [:, ::2, ::2]
        token_mask = mask[0][0][:, ::p_h, ::p_w]
        if t_net.ndim:  # one level per video (training)
            timestep = token_mask.flatten()[None] * t_net[:, None]
        else:
            timestep = (token_mask * t_net).flatten().unsqueeze(0).expand(batch, -1)
    else:
        hidden = torch.cat([x_cf, condition], dim=1).to(dtype)
        timestep = t_net.expand(batch)
    image = cond.image_embeds.to(dtype) if cond.image_embeds is not None else None

    def call(h, ts, text, img):
        return net(hidden_states=h, timestep=ts, encoder_hidden_states=text.to(dtype), encoder_hidden_states_image=img,
                   return_dict=False)[0]

    if guidance is None:
        v = call(hidden, timestep, cond.prompt_embeds, image)
    elif batched_cfg:
        v_c, v_u = call(torch.cat([hidden, hidden]), torch.cat([timestep, timestep]),
                        torch.cat([cond.prompt_embeds, cond.negative_prompt_embeds]),
                        None if image is None else torch.cat([image, image])).chunk(2)
        v = v_u + guidance * (v_c - v_u)
    else:
        v_c = call(hidden, timestep, cond.prompt_embeds, image)
        v_u = call(hidden, timestep, cond.negative_prompt_embeds, image)
        v = v_u + guidance * (v_c - v_u)
    return v.float().permute(0, 2, 1, 3, 4)


def replace_first_frame(x: torch.Tensor, cond: WanCondition) -> torch.Tensor:
    """TI2V: (1 − m)·image latent + m·x with m = 0 on frame 0, 1 elsewhere (the stock pipeline's final step)."""
    mask = torch.ones(1, x.shape[1], 1, 1, 1, dtype=torch.float32, device=x.device)
    mask[:, 0] = 0
    return (1 - mask) * cond.image_latents.to(x.device, torch.float32) + mask * x


# ----------------------------------------------------------------------------------------------------
# D's backbone


class WanEncoder(torch.nn.Module):
    """The first N transformer blocks of a Wan DiT, weights shared, frozen: SF-V's discriminator backbone.

    forward(x_t, t, cond) runs the transformer's own computation (patch embedding, RoPE, time/text/image
    embeddings, blocks 0..N−1) on the conditional input and returns, after each block, its tokens put back on
    the token grid: [B, F', D, h', w'] (F' = F, h' = h/2, w' = w/2 for Wan's 1×2×2 patches), flattened to
    [(B·F'), D, h', w'] as sfv's heads read it. Widths above `reduce_to` go through a fixed 1×1 projection
    (seeded orthogonal, frozen) to `reduce_to` channels first (5120 wide at 14B).
    """

    def __init__(self, net: WanTransformer3DModel, blocks: int, expand_timesteps: bool, precond: FlowPrecond,
                 reduce_to: int | None = 256, seed: int = 0):
        super().__init__()
        if not 1 <= blocks <= len(net.blocks):
            raise InputError(f"the discriminator backbone needs 1..{len(net.blocks)} transformer blocks, not {blocks}")
        self.precond, self.expand_timesteps = precond, expand_timesteps
        self.patch_size = tuple(net.config.patch_size)
        self.rope, self.patch_embedding, self.condition_embedder = net.rope, net.patch_embedding, net.condition_embedder
        self.blocks = torch.nn.ModuleList(net.blocks[:blocks])
        width = net.config.num_attention_heads * net.config.attention_head_dim
        self.reduce = None
        if reduce_to is not None and width > reduce_to:
            self.reduce = torch.nn.Linear(width, reduce_to, bias=False)
            with torch.no_grad():
                g = torch.Generator().manual_seed(seed)
                q, _ = torch.linalg.qr(torch.randn(width, reduce_to, generator=g))
                self.reduce.weight.copy_(q.T * (width / reduce_to) ** 0.5)
        self.block_channels = [reduce_to if self.reduce is not None else width] * blocks
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "WanEncoder":
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: WanCondition) -> list[torch.Tensor]:
        batch, frames, _, height, width = x.shape
        dtype = self.dtype
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(batch)
        t_net = self.precond.c_noise(t).to(x.device)
        x_cf = x.float().permute(0, 2, 1, 3, 4)
        condition = cond.image_latents.to(x.device, torch.float32).permute(0, 2, 1, 3, 4)
        p_t, p_h, p_w = self.patch_size
        if self.expand_timesteps:
            mask = torch.ones(1, 1, frames, height, width, dtype=torch.float32, device=x.device)
            mask[:, :, 0] = 0
            hidden = ((1 - mask) * condition + mask * x_cf).to(dtype)
            timestep = mask[0][0][:, ::p_h, ::p_w].flatten()[None] * t_net[:, None]
        else:
            hidden = torch.cat([x_cf, condition], dim=1).to(dtype)
            timestep = t_net
        grid = (frames // p_t, height // p_h, width // p_w)
        rotary = self.rope(hidden)
        tokens = self.patch_embedding(hidden).flatten(2).transpose(1, 2).contiguous()  # [B, S, D]
        seq = timestep.shape[1] if timestep.ndim == 2 else None
        temb, proj, text, image = self.condition_embedder(
            timestep.flatten() if seq else timestep, cond.prompt_embeds.to(dtype),
            cond.image_embeds.to(dtype) if cond.image_embeds is not None else None, timestep_seq_len=seq)
        proj = proj.unflatten(2, (6, -1)) if seq else proj.unflatten(1, (6, -1))
        if image is not None:
            text = torch.cat([image, text], dim=1)
        features = []
        for block in self.blocks:
            tokens = block(tokens, text, proj, rotary)
            features.append(self.to_grid(tokens, batch, grid))
        return features

    def to_grid(self, tokens: torch.Tensor, batch: int, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, S, D] tokens in (f, h, w) order -> [(B·F'), D', h', w'] (D' = reduce_to when reduced)."""
        if self.reduce is not None:
            tokens = self.reduce(tokens)
        f, h, w = grid
        return tokens.reshape(batch, f, h, w, -1).permute(0, 1, 4, 2, 3).flatten(0, 1)


def load_student(source: Path, teacher_net: WanTransformer3DModel, path=None) -> WanTransformer3DModel:
    """A student transformer: a diffusers folder (transformer/ or the model folder itself) or a .safetensors
    state dict (keys optionally prefixed `transformer.`), in this teacher's architecture."""
    path = path if path is not None else source
    source = Path(source)
    if source.is_dir():
        folder = source / "transformer" if (source / "transformer" / "config.json").is_file() else source
        try:
            net = WanTransformer3DModel.from_pretrained(folder, use_safetensors=True)
        except Exception as e:
            raise ModelLoadError(f"cannot read generator weights '{path}': {first_line(e)}") from None
        bad = [k for k in _INTERFACE if _norm(net.config.get(k)) != _norm(teacher_net.config.get(k))]
        if bad:
            raise ModelLoadError(f"generator transformer '{path}' does not fit the teacher: " + ", ".join(
                f"{k}={net.config.get(k)} (teacher {teacher_net.config.get(k)})" for k in bad))
        return net.eval()
    from safetensors.torch import load_file

    try:
        state = {k.removeprefix("transformer."): v for k, v in load_file(source).items()}
    except Exception as e:
        raise ModelLoadError(f"cannot read generator weights '{path}': {first_line(e)}") from None
    return student_from_state(state, teacher_net, path)

def student_from_state(state: dict, teacher_net: WanTransformer3DModel, path) -> WanTransformer3DModel:
    net = copy.deepcopy(teacher_net)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ModelLoadError(f"generator weights '{path}' do not fit the teacher's transformer: {' '.join(str(e).split())[:300]}") from None
    if missing or unexpected:
        raise ModelLoadError(f"generator weights '{path}' do not fit the teacher's transformer: {len(missing)} missing "
                             f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    return net


def _norm(value):
    return list(value) if isinstance(value, (tuple, list)) else value
