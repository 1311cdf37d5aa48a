"""`sfv export --comfyui` and sfv.comfyui's key maps: the files round-trip on tiny real models (Wan through diffusers'
own `from_single_file`, SVD through sfv's inverse map), the full-size key tables give what ComfyUI's detection reads
(restated from Comfy-Org/ComfyUI a125cd84b054a57729b5eecab930ca9408719832, comfy/model_detection.py and
comfy/supported_models.py; ComfyUI is not needed), and a Wan LoRA in ComfyUI's layout loads through stock
`load_lora_weights` to the adapter's own one-step output."""

import json
import re

import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from safetensors.torch import load_file, save_file

from sfv import comfyui
from sfv.cli import main as sfv
from sfv.errors import InputError
from sfv.tiny_wan import SIZES, build_pipeline, save

PROMPT = "a red ball moves left"


def _nudged(module, seed=0):
    """The module with every floating tensor moved a little: a student that is not its teacher."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 1e-2)
    return module


def _equal(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def wan21(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan") / "tiny-wan21"
    save(build_pipeline("wan21"), folder)
    return folder


# -- full-size key tables against what ComfyUI's detection reads ------------------------------------------------


def _count(keys, prefix):  # comfy/model_detection.py::count_blocks: consecutive '{prefix}{n}.' present
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in keys):
        n += 1
    return n


def test_full_size_key_tables_give_what_comfyui_detects_svd_xt_and_wan_i2v_14b():
    from sfv.arch import build_modules

    unet, vae, clip = build_modules("svd-xt", "meta")
    state, note = comfyui.svd_checkpoint(unet.state_dict(), unet.config, vae.state_dict(), vae.config, clip.state_dict())
    sd = {k.removeprefix(comfyui.UNET_PREFIX): v for k, v in state.items() if k.startswith(comfyui.UNET_PREFIX)}
    assert len(sd) == 1428 and sum(k.startswith(comfyui.VAE_PREFIX) for k in state) == 372
    # detect_unet_config's sgm branch, restated: the fields SVD_img2vid.unet_config must match
    n_in = _count(sd, "input_blocks.")
    # transformer_depth: per resnet of the input blocks, the number of transformer blocks beside it
    depth = [len({k.split(".")[3] for k in sd if k.startswith(f"input_blocks.{n}.1.transformer_blocks.")})
             for n in range(1, n_in) if f"input_blocks.{n}.0.in_layers.0.weight" in sd]
    detected = {"model_channels": sd["input_blocks.0.0.weight"].shape[0], "in_channels": sd["input_blocks.0.0.weight"].shape[1],
                "use_linear_in_transformer": sd["input_blocks.1.1.proj_in.weight"].dim() == 2,
                "transformer_depth": depth,
                "context_dim": sd["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
                "adm_in_channels": sd["label_emb.0.0.weight"].shape[1],
                "use_temporal_attention": "input_blocks.1.1.time_stack.0.attn1.to_q.weight" in sd,
                "use_temporal_resblock": "input_blocks.1.1.time_stack.0.attn1.to_q.weight" in sd}
    assert detected == {"model_channels": 320, "in_channels": 8, "use_linear_in_transformer": True,
                        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "context_dim": 1024, "adm_in_channels": 768,
                        "use_temporal_attention": True, "use_temporal_resblock": True}
    assert "input_blocks.1.1.time_stack.0.attn2.to_q.weight" in sd and sd["out.2.weight"].shape[0] == 4
    assert "middle_block.1.proj_in.weight" in sd and _count(sd, "output_blocks.") == 12
    # the VAE ComfyUI picks on decoder.mid.block_1.mix_factor; the ViT-H tower on layer 30; proj transposed
    assert "first_stage_model.decoder.mid.block_1.mix_factor" in state
    assert tuple(state[comfyui.CLIP_PREFIX + "transformer.resblocks.30.attn.in_proj_weight"].shape) == (3840, 1280)
    assert tuple(state[comfyui.CLIP_PREFIX + "proj"].shape) == (1280, 1024) and note == "meta device, dropped"
    # the inverse map gives back exactly diffusers' keys and shapes
    back = comfyui.svd_from_checkpoint(state, unet.config, vae.config)
    for ours, theirs in zip(back, (unet.state_dict(), vae.state_dict(), clip.state_dict())):
        assert sorted(ours) == sorted(theirs) and all(ours[k].shape == theirs[k].shape for k in theirs)

    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    config = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, out_channels=16,
                  text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
                  qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120)
    with torch.device("meta"):
        net = WanTransformer3DModel(**config)
    wan = comfyui.wan_transformer(net.state_dict())
    w = {k.removeprefix(comfyui.WAN_PREFIX): v for k, v in wan.items()}
    # the Wan branch of detect_unet_config (keyed on head.modulation) -> WAN21_I2V (i2v, in_dim 36)
    assert w["head.modulation"].shape[-1] == 5120 and w["head.head.weight"].shape[0] // 4 == 16
    assert w["blocks.0.ffn.0.weight"].shape[0] == 13824 and _count(w, "blocks.") == 40
    assert w["patch_embedding.weight"].shape[1] == 36 and "img_emb.proj.0.bias" in w
    assert {"blocks.0.cross_attn.k_img.weight", "blocks.0.cross_attn.norm_k_img.weight", "blocks.0.norm3.weight"} <= set(w)
    # and diffusers' own forward converter takes every key back to its place
    assert sorted(convert_wan_transformer_to_diffusers(dict(wan))) == sorted(net.state_dict())


# -- the exports, round-tripped -------------------------------------------------------------------------------


def test_svd_export_writes_one_checkpoint_that_maps_back_to_the_student_and_the_teacher(tiny_dir, tmp_path):
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    from sfv.teachers.svd import SVDTeacher

    teacher = SVDTeacher.from_pretrained(tiny_dir)
    _nudged(UNetSpatioTemporalConditionModel.from_pretrained(tiny_dir, subfolder="unet")).save_pretrained(tmp_path / "g")
    out = tmp_path / "svd-student"
    assert sfv(["export", "--generator", str(tmp_path / "g"), "--teacher", str(tiny_dir), "--out", str(out), "--comfyui"]) == 0
    assert json.loads((out / "sfv.json").read_text())["comfyui"] == ["comfyui/checkpoints/svd-student.safetensors"]
    state = load_file(out / "comfyui" / "checkpoints" / "svd-student.safetensors")
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"model", "first_stage_model", "conditioner"} and len(state) == 615
    unet, vae, clip = comfyui.svd_from_checkpoint(state, teacher.unet.config, teacher.vae.config)
    student = UNetSpatioTemporalConditionModel.from_pretrained(out / "unet").state_dict()
    assert _equal(unet, student) and not _equal(unet, teacher.unet.state_dict())  # the student's UNet, spliced in
    assert _equal(clip, teacher.image_encoder.state_dict())  # the teacher's image tower, unchanged
    # the teacher's VAE: every tensor, but for quant_conv (random in the tiny VAE), folded into encoder.conv_out
    teacher_vae = teacher.vae.state_dict()
    folded = {"encoder.conv_out.weight", "encoder.conv_out.bias", "quant_conv.weight", "quant_conv.bias"}
    assert sorted(vae) == sorted(teacher_vae) and all(torch.equal(vae[k], teacher_vae[k]) for k in set(vae) - folded)
    loaded = AutoencoderKLTemporalDecoder.from_config(teacher.vae.config)
    loaded.load_state_dict(vae)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x).latent_dist.mean, teacher.vae.encode(x).latent_dist.mean, rtol=0, atol=1e-5)
    # with an identity quant_conv (nothing to fold) every VAE tensor comes back equal
    identity = {**teacher_vae, "quant_conv.weight": torch.eye(8)[:, :, None, None], "quant_conv.bias": torch.zeros(8)}
    original, note = comfyui.svd_vae_to_original(identity, 2)
    assert note == "identity, dropped" and _equal(comfyui.svd_vae_from_original(original, 2), identity)


def test_wan_export_writes_a_diffusion_model_that_from_single_file_loads_tensor_for_tensor(wan21, tmp_path):
    teacher = WanTransformer3DModel.from_pretrained(wan21, subfolder="transformer")
    _nudged(teacher).save_pretrained(tmp_path / "g")
    out = tmp_path / "wan-student"
    assert sfv(["export", "--generator", str(tmp_path / "g"), "--teacher", str(wan21), "--out", str(out), "--comfyui"]) == 0
    path = out / "comfyui" / "diffusion_models" / "wan-student.safetensors"
    assert sorted(p.name for p in (out / "comfyui").rglob("*") if p.is_file()) == ["wan-student.safetensors"]
    keys = load_file(path)
    assert all(k.startswith("model.diffusion_model.") for k in keys) and "model.diffusion_model.head.modulation" in keys
    loaded = WanTransformer3DModel.from_single_file(str(path), config=str(out / "transformer"), local_files_only=True)
    student = WanTransformer3DModel.from_pretrained(out / "transformer")
    assert _equal(loaded.state_dict(), student.state_dict())
    assert _equal(student.state_dict(), teacher.state_dict())  # the exported student is the generator given


def test_comfyui_export_refuses_a_family_without_a_key_map_before_writing(tiny_dir, tmp_path, monkeypatch, capsys):
    from sfv import teachers

    # the tiny flow-matching test family (tests/flow_teacher.py) loaded for SVD's folders: no ComfyUI key map
    monkeypatch.setitem(teachers.FAMILIES, "StableVideoDiffusionPipeline", "flow_teacher:TinyFlowTeacher")
    code = sfv(["export", "--generator", str(tiny_dir / "unet"), "--teacher", str(tiny_dir), "--out", str(tmp_path / "e"),
                "--comfyui"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "TinyFlowTeacher family has no ComfyUI key map" in err[0], err
    assert not (tmp_path / "e").exists()
    with pytest.raises(InputError, match="has no ComfyUI key map"):
        comfyui.check_family("flow_teacher:TinyFlowTeacher")


# -- a Wan LoRA in ComfyUI's layout ---------------------------------------------------------------------------


def _one_step(pipe):
    pipe.set_progress_bar_config(disable=True)
    pipe.transformer.requires_grad_(False)
    from PIL import Image

    sizes = SIZES["wan21"]
    image = Image.new("RGB", (sizes["width"], sizes["height"]), (200, 40, 40))
    return pipe(image=image, prompt=PROMPT, num_inference_steps=1, guidance_scale=1.0, output_type="latent",
                generator=torch.Generator().manual_seed(0), **sizes).frames


def test_wan_lora_in_comfyui_layout_loads_through_stock_load_lora_weights_to_the_adapters_output(wan21, tmp_path):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    rank, alpha = 4, 8  # alpha / rank = 2: diffusers' converter splits the scale in powers of two, exactly
    pipe = WanImageToVideoPipeline.from_pretrained(wan21)
    base = _one_step(pipe)
    pipe.transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=[
        "to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj", "ffn.net.0.proj", "ffn.net.2"]))
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:  # a trained adapter, not peft's zero initialisation
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    adapted = _one_step(pipe)
    lora = {f"transformer.{k}": v for k, v in get_peft_model_state_dict(pipe.transformer).items()}
    layout = comfyui.wan_lora_to_comfyui(lora, alpha=alpha, rank=rank)
    assert len(layout) == 3 * len(lora) // 2
    assert {"diffusion_model.blocks.0.self_attn.q.lora_down.weight", "diffusion_model.blocks.0.self_attn.q.lora_up.weight",
            "diffusion_model.blocks.0.self_attn.q.alpha", "diffusion_model.blocks.2.cross_attn.k_img.alpha",
            "diffusion_model.blocks.1.ffn.2.lora_up.weight"} <= set(layout)
    assert all(re.fullmatch(r"diffusion_model\.blocks\.\d\.(self_attn|cross_attn|ffn)\.\w+\.(lora_(down|up)\.weight|alpha)", k)
               for k in layout)
    save_file(layout, tmp_path / "lora.safetensors")
    stock = WanImageToVideoPipeline.from_pretrained(wan21)
    stock.load_lora_weights(str(tmp_path / "lora.safetensors"))
    loaded = _one_step(stock)
    assert (adapted - base).abs().max() > 1e-3  # the adapter does something
    assert torch.equal(loaded, adapted), float((loaded - adapted).abs().max())
    with pytest.raises(InputError, match="rank 8 needs"):
        comfyui.wan_lora_to_comfyui(lora, alpha=alpha, rank=8)
    with pytest.raises(InputError, match="not a module of a Wan transformer"):
        comfyui.wan_lora_to_comfyui({"transformer.blocks.0.attn9.to_q.lora_A.weight": torch.zeros(4, 24)}, alpha, rank)
