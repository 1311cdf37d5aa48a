"""Full-size SVD / SVD-XT architectures with random weights, built offline — for speed runs only.

Speed does not depend on weight values, so `sfv bench --arch svd|svd-xt --random-weights` times the real
1.5 B-parameter UNet, the temporal VAE and the ViT-H/14 image encoder at 1024×576 without downloading
anything. Nothing built here can generate a meaningful video.

The configs are the published ones of stabilityai/stable-video-diffusion-img2vid (SVD, 14 frames) and
stabilityai/stable-video-diffusion-img2vid-xt (SVD-XT, 25 frames); the two differ only in `num_frames`.
Sources checked (no hub access here):
  * unet/config.json — diffusers' UNetSpatioTemporalConditionModel defaults are SVD-XT's config (its
    docstring); the same dict, with "_repo_id": "stabilityai/stable-video-diffusion-img2vid-xt", is vendored
    in third-party tests (block_out_channels [320, 640, 1280, 1280], num_attention_heads [5, 10, 20, 20],
    cross_attention_dim 1024, addition_time_embed_dim 256, projection 768, layers_per_block 2); sample_size 96
    = 768 / 8.
  * vae/config.json — AutoencoderKLTemporalDecoder with block_out_channels [128, 256, 512, 512],
    4 × DownEncoderBlock2D, layers_per_block 2, latent_channels 4, sample_size 768, scaling_factor 0.18215,
    force_upcast true (as vendored in SVD training configs that build the VAE from "subfolder: vae").
  * image_encoder/config.json — OpenCLIP ViT-H/14 vision tower as CLIPVisionModelWithProjection: hidden 1280,
    32 layers, 16 heads, intermediate 5120, patch 14, image 224, projection 1024, gelu, layer_norm_eps 1e-5
    (the same file IP-Adapter ships as its image_encoder/config.json).
  * feature_extractor/preprocessor_config.json — CLIPImageProcessor, 224 crop / shortest edge, OpenAI CLIP
    mean/std (read from a public mirror of the SVD-XT folder).
  * scheduler/scheduler_config.json — SVD_SCHEDULER_CONFIG below.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

try:  # transformers >= 5 without torchvision: the PIL-backed processor (what CLIPImageProcessor falls back to)
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # transformers 4
    from transformers import CLIPImageProcessor

from sfv.errors import InputError

ARCH_FRAMES = {"svd": 14, "svd-xt": 25}

# The scheduler config SVD ships (stabilityai/stable-video-diffusion-img2vid, scheduler/scheduler_config.json).
SVD_SCHEDULER_CONFIG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    sigma_max=700.0,
    sigma_min=0.002,
    steps_offset=1,
    timestep_spacing="leading",
    timestep_type="continuous",
    trained_betas=None,
    use_karras_sigmas=True,
)

SVD_UNET_CONFIG = dict(
    sample_size=96,
    in_channels=8,  # 4 noisy latent ‖ 4 image latent
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=768,  # 3 added time ids × 256
    layers_per_block=2,
    cross_attention_dim=1024,
    transformer_layers_per_block=1,
    num_attention_heads=(5, 10, 20, 20),
    num_frames=14,
)

SVD_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=768,
    scaling_factor=0.18215,
    force_upcast=True,
)

SVD_IMAGE_ENCODER_CONFIG = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=16,
    num_hidden_layers=32,
    patch_size=14,
    image_size=224,
    projection_dim=1024,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    num_channels=3,
)

SVD_FEATURE_EXTRACTOR_CONFIG = dict(
    crop_size={"height": 224, "width": 224},
    size={"shortest_edge": 224},
    do_center_crop=True,
    do_convert_rgb=True,
    do_normalize=True,
    do_rescale=True,
    do_resize=True,
    image_mean=[0.48145466, 0.4578275, 0.40821073],
    image_std=[0.26862954, 0.26130258, 0.27577711],
    resample=2,
    rescale_factor=1 / 255,
)


def unet_config(arch: str) -> dict:
    if arch not in ARCH_FRAMES:
        raise InputError(f"unknown architecture '{arch}'; choose {' or '.join(ARCH_FRAMES)}")
    return {**SVD_UNET_CONFIG, "num_frames": ARCH_FRAMES[arch]}


def build_modules(arch: str, device: str | torch.device = "meta"):
    """(unet, vae, image_encoder) of the full-size architecture on `device` — parameters not initialised.

    On "meta" nothing is allocated (parameter counting, CI) except AlphaBlender's scalar mix factors, which
    diffusers creates with the legacy torch.Tensor([...]) constructor (one float each); elsewhere use
    `build_random_svd`.
    """
    config = unet_config(arch)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(**config)
        vae = AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SVD_IMAGE_ENCODER_CONFIG))
    return unet, vae, image_encoder


@torch.no_grad()
def random_init_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Cheap, bounded random weights for a module materialised with `to_empty` (timing only).

    Matrices/kernels ~ N(0, 1/fan_in) keep activations O(1) through 32 CLIP layers and the UNet (garbage
    memory could hold NaN/denormals, which run at different speeds); 1-D parameters are biases (0) or norm
    scales (1). Buffers are recomputed where their value matters (CLIP's position ids).
    """
    generators = {}
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            gen = generators.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
            p.normal_(0.0, 1 / math.sqrt(math.prod(p.shape[1:])), generator=gen)  # on the device: no host copy
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)  # norm scales, AlphaBlender mix factors, class/positional scalars
    for name, b in module.named_buffers():
        if name.endswith("position_ids"):  # CLIP: arange over patch positions
            b.copy_(torch.arange(b.shape[-1], device=b.device).expand_as(b))
    return module


def build_random_svd(arch: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """A full-size SVD/SVD-XT StableVideoDiffusionPipeline with random weights, built in seconds.

    Modules are created on the meta device, materialised directly on `device` in `dtype` with `to_empty`,
    and filled by `random_init_` — no default (slow, CPU) initialisation of 2.25 B parameters.
    """
    from diffusers import StableVideoDiffusionPipeline

    modules = build_modules(arch, "meta")
    materialised = []
    for i, module in enumerate(modules):
        # AlphaBlender's scalar mix factors are created with torch.Tensor([...]), which ignores the meta
        # device context: keep their configured values.
        scalars = {n: p.detach().clone() for n, p in module.named_parameters() if not p.is_meta}
        module = random_init_(module.to(dtype=dtype).to_empty(device=device), seed + i).eval()  # cast on meta: free
        params = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in scalars.items():
                params[name].copy_(value)
        materialised.append(module)
    unet, vae, image_encoder = materialised
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG),
        feature_extractor=CLIPImageProcessor(**SVD_FEATURE_EXTRACTOR_CONFIG),
    )


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
