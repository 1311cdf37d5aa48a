"""The SVD teacher wrapper: preconditioning vs diffusers' scheduler, bit-level parity with the stock pipeline,
image input types, and loading errors."""

import shutil

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from conftest import max_abs_diff
from sfv.errors import InputError, ModelLoadError
from sfv.teacher import SVDTeacher, precondition, svd_denoise
from sfv.tiny import SVD_SCHEDULER_CONFIG, TinySVDConfig, build_tiny_svd, example_image


# ---------------------------------------------------------------------------------------------------
# Preconditioning


def test_precondition_equals_diffusers_scheduler_formula():
    """c_in, c_skip/c_out and c_noise against EulerDiscreteScheduler's own scale/step/timesteps."""
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(25)
    g = torch.Generator().manual_seed(0)
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        x, v = torch.randn(1, 2, 4, 4, 4, generator=g) * (sigma**2 + 1) ** 0.5, torch.randn(1, 2, 4, 4, 4, generator=g)
        c_skip, c_out, c_in, c_noise = precondition(sigma)
        scheduler._step_index = i
        torch.testing.assert_close(c_in * x, scheduler.scale_model_input(x, t))
        scheduler._step_index = i
        x0_sched = scheduler.step(v, t, x).pred_original_sample
        torch.testing.assert_close(c_skip * x + c_out * v, x0_sched, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c_noise, t)


def test_precondition_is_edm_with_sigma_data_1_and_v_sign():
    sigma = torch.tensor([0.002, 0.37, 1.0, 2.27, 70.5, 700.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = precondition(sigma)
    sd = 1.0  # EDM Table 1 with σ_data = 1; SVD's v-parameterisation flips the sign of c_out
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, -sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_noise, 0.25 * sigma.log())


def test_denoise_wires_unet_like_the_pipeline(tiny_pipe):
    """svd_denoise = c_skip·x + c_out·UNet([c_in·x ‖ image latents] on dim 2, c_noise, CLIP, time ids)."""
    teacher = SVDTeacher.from_pipeline(tiny_pipe)
    cond = teacher.encode_condition(example_image(32, 32), 32, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 4, 16, 16, generator=g) * 5.0
    sigma = torch.tensor(4.0)
    c_skip, c_out, c_in, c_noise = precondition(sigma)
    unet_in = torch.cat([c_in * x, cond.image_latents[:, None].expand(-1, 3, -1, -1, -1)], dim=2)
    with torch.no_grad():
        F = tiny_pipe.unet(unet_in, c_noise, encoder_hidden_states=cond.image_embeds, added_time_ids=cond.added_time_ids).sample
        ours = svd_denoise(tiny_pipe.unet, x, sigma, cond)
        per_sample = svd_denoise(tiny_pipe.unet, x, sigma.reshape(1), cond)
    torch.testing.assert_close(ours, c_skip * x + c_out * F, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_sample, ours)


# ---------------------------------------------------------------------------------------------------
# Parity with diffusers' StableVideoDiffusionPipeline (25 steps, CFG ramp 1 -> 3, float32 CPU)

PARITY_CASES = {
    # name: (tiny config, frames, height, width, image kind)
    "2f-32x32-pil": (TinySVDConfig(num_frames=2), 2, 32, 32, "pil"),
    "5f-32x48-pil": (TinySVDConfig(num_frames=5, seed=3), 5, 32, 48, "pil"),
    "3f-32x32-tensor": (TinySVDConfig(num_frames=3, clip_image_size=32, clip_patch_size=8, seed=5), 3, 32, 32, "tensor"),
}


def _image(kind, h, w):
    img = example_image(h + 8, w + 8, seed=2)
    if kind == "pil":
        return img
    return torch.from_numpy(np.array(img.resize((w, h)))).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_teacher_sampler_reproduces_stock_pipeline(case):
    config, frames, h, w, kind = PARITY_CASES[case]
    pipe = build_tiny_svd(config)
    pipe.set_progress_bar_config(disable=True)
    image = _image(kind, h, w)
    ref = pipe(image, height=h, width=w, num_frames=frames, num_inference_steps=25, min_guidance_scale=1.0,
               max_guidance_scale=3.0, generator=torch.Generator().manual_seed(0), output_type="np").frames
    teacher = SVDTeacher.from_pipeline(pipe)
    ours = teacher.generate(image, h, w, frames, num_inference_steps=25, min_guidance_scale=1.0, max_guidance_scale=3.0,
                            generator=torch.Generator().manual_seed(0), output_type="np")
    assert ours.shape == (1, frames, h, w, 3)
    diff = max_abs_diff(ours, ref)
    print(f"{case}: max |sfv - diffusers| = {diff:.3g}")
    assert diff <= 1e-4
    # the comparison is not vacuous: another seed gives visibly different frames
    other = teacher.generate(image, h, w, frames, generator=torch.Generator().manual_seed(1), output_type="np")
    assert max_abs_diff(other, ref) > 1e-3


def test_custom_sigmas_match_stock_pipeline(tiny_pipe):
    sigmas = [700.0, 70.54, 2.269, 0.0]  # SF-V's T_g = 4 levels as a 3-step schedule
    image = example_image(32, 32)
    ref = tiny_pipe(image, height=32, width=32, num_frames=3, sigmas=sigmas, max_guidance_scale=2.0,
                    generator=torch.Generator().manual_seed(4), output_type="np").frames
    ours = SVDTeacher.from_pipeline(tiny_pipe).generate(image, 32, 32, 3, sigmas=sigmas, max_guidance_scale=2.0,
                                                         generator=torch.Generator().manual_seed(4))
    assert max_abs_diff(ours, ref) <= 1e-4


# ---------------------------------------------------------------------------------------------------
# Conditioning inputs


def test_encode_condition_accepts_pil_numpy_and_tensor(tiny_pipe):
    teacher = SVDTeacher.from_pipeline(tiny_pipe)
    pil = example_image(40, 40)
    arr = np.asarray(pil)
    conds = {
        "pil": teacher.encode_condition(pil, 32, 32, generator=torch.Generator().manual_seed(0)),
        "numpy-uint8": teacher.encode_condition(arr, 32, 32, generator=torch.Generator().manual_seed(0)),
        "numpy-float": teacher.encode_condition(arr / 255.0, 32, 32, generator=torch.Generator().manual_seed(0)),
        "tensor": teacher.encode_condition(torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255, 32, 32,
                                           generator=torch.Generator().manual_seed(0)),
    }
    ref = conds["pil"]
    assert ref.image_embeds.shape == (1, 1, 32) and ref.image_latents.shape == (1, 4, 16, 16)
    torch.testing.assert_close(ref.added_time_ids, torch.tensor([[6.0, 127.0, 0.02]]))  # fps − 1
    assert torch.equal(conds["numpy-uint8"].image_embeds, ref.image_embeds)
    assert torch.equal(conds["numpy-uint8"].image_latents, ref.image_latents)
    # float inputs skip PIL's 8-bit lanczos resize for the VAE frame: close, not identical
    for name in ("numpy-float", "tensor"):
        torch.testing.assert_close(conds[name].image_embeds, ref.image_embeds, rtol=0, atol=5e-2)
        assert torch.isfinite(conds[name].image_latents).all()


@pytest.mark.parametrize(
    "bad, match",
    [("not an image", "unsupported image type"), (np.zeros((8, 8)), "HWC"), (torch.full((3, 8, 8), 2.0), r"\[0, 1\]")],
)
def test_encode_condition_rejects_bad_images(tiny_pipe, bad, match):
    with pytest.raises(InputError, match=match):
        SVDTeacher.from_pipeline(tiny_pipe).encode_condition(bad, 32, 32)


def test_generate_rejects_sizes_the_unet_cannot_take(tiny_pipe):
    teacher = SVDTeacher.from_pipeline(tiny_pipe)
    assert teacher.size_multiple == 4  # VAE factor 2 × one UNet downsampling
    with pytest.raises(InputError, match="multiple of 4"):
        teacher.generate(example_image(), 30, 32, 2)
    with pytest.raises(InputError, match="frames must be at least 1"):
        teacher.generate(example_image(), 32, 32, 0)


# ---------------------------------------------------------------------------------------------------
# Loading


def test_from_pretrained_loads_a_folder(tiny_dir):
    teacher = SVDTeacher.from_pretrained(tiny_dir)
    assert teacher.sigma_max == 700.0 and teacher.sigma_min == 0.002 and teacher.default_num_frames == 4


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        SVDTeacher.from_pretrained(tmp_path / "nope")


def test_incomplete_folder_names_what_is_missing(tiny_dir, tmp_path):
    broken = shutil.copytree(tiny_dir, tmp_path / "broken")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(ModelLoadError) as err:
        SVDTeacher.from_pretrained(broken)
    msg = str(err.value)
    assert str(broken) in msg and "unet/diffusion_pytorch_model.safetensors" in msg and "scheduler/scheduler_config.json" in msg


def test_pickle_only_weights_are_refused(tiny_dir, tmp_path):
    broken = shutil.copytree(tiny_dir, tmp_path / "pickled")
    (broken / "vae" / "diffusion_pytorch_model.safetensors").rename(broken / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        SVDTeacher.from_pretrained(broken)


def test_unreachable_hub_id_is_a_clear_error():
    # No network here: the hub lookup fails and must come back as one ModelLoadError naming the id.
    with pytest.raises(ModelLoadError, match="sfv-test/no-such-svd"):
        SVDTeacher.from_pretrained("sfv-test/no-such-svd")
