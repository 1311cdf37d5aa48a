"""The SVD teacher wrapper: preconditioning vs diffusers' scheduler, bit-level parity with the stock pipeline,
image input types, and loading errors."""

import shutil

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from conftest import max_abs_diff
from sfv.errors import InputError, ModelLoadError
from sfv.teachers.svd import PRECOND, SVDTeacher, svd_denoise
from sfv.arch import SVD_SCHEDULER_CONFIG
from sfv.tiny import TinySVDConfig, build_tiny_svd, example_image

def precondition(sigma):
    """SVD's (c_skip, c_out, c_in, c_noise): EDM Tab. 1 with σ_data = 1, c_out's sign flipped (v-prediction)."""
    return 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1).sqrt(), 1 / (sigma**2 + 1).sqrt(), sigma.log() / 4


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
    """The forms the denoiser applies (c_in·x, c_skip·x + c_out·F, c_noise) are EDM's with σ_data = 1 and the v-sign."""
    sigma = torch.tensor([0.002, 0.37, 1.0, 2.27, 70.5, 700.0], dtype=torch.float64).reshape(-1, 1, 1)
    x, out = torch.randn(6, 3, 4, dtype=torch.float64), torch.randn(6, 3, 4, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = precondition(sigma)
    torch.testing.assert_close(PRECOND.scale_input(x, sigma), c_in * x)
    torch.testing.assert_close(PRECOND.combine(out, x, sigma), c_skip * x + c_out * out)
    torch.testing.assert_close(PRECOND.c_noise(sigma), c_noise)


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
    ref_latents = pipe(image, height=h, width=w, num_frames=frames, num_inference_steps=25, max_guidance_scale=3.0,
                       generator=torch.Generator().manual_seed(0), output_type="latent").frames
    ours_latents = teacher.generate(image, h, w, frames, num_inference_steps=25, max_guidance_scale=3.0,
                                    generator=torch.Generator().manual_seed(0), output_type="latent")
    assert torch.equal(ours_latents, ref_latents)  # bit for bit before decoding, too
    # the comparison is not vacuous: another seed gives visibly different frames
    other = teacher.generate(image, h, w, frames, generator=torch.Generator().manual_seed(1), output_type="np")
    assert max_abs_diff(other, ref) > 1e-3


def test_denoise_equals_scheduler_step_at_every_level(tiny_pipe):
    """The production denoiser against the stock loop's own arithmetic, bit for bit, at all 25 σ levels:
    UNet(scale_model_input(x), t) then EulerDiscreteScheduler.step(...).pred_original_sample."""
    teacher = SVDTeacher.from_pipeline(tiny_pipe)
    cond = teacher.encode_condition(example_image(32, 32), 32, 32, generator=torch.Generator().manual_seed(0))
    scheduler = EulerDiscreteScheduler.from_config(tiny_pipe.scheduler.config)
    scheduler.set_timesteps(25)
    g = torch.Generator().manual_seed(3)
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        x = torch.randn(1, 2, 4, 16, 16, generator=g) * (sigma**2 + 1) ** 0.5
        scheduler._step_index = i
        unet_in = torch.cat([scheduler.scale_model_input(x, t), cond.image_latents[:, None].repeat(1, 2, 1, 1, 1)], dim=2)
        with torch.no_grad():
            v = tiny_pipe.unet(unet_in, t, encoder_hidden_states=cond.image_embeds, added_time_ids=cond.added_time_ids).sample
            ours = teacher.denoise(x, sigma, cond)
        scheduler._step_index = i
        assert torch.equal(ours, scheduler.step(v, t, x).pred_original_sample), f"σ = {float(sigma)}"


def test_batch_of_two_images_generator_list_and_decode_chunks_match_stock():
    pipe = build_tiny_svd(TinySVDConfig(num_frames=5, seed=7))
    pipe.set_progress_bar_config(disable=True)
    images = [example_image(36, 44, seed=8), example_image(36, 44, seed=9)]
    kw = dict(height=32, width=40, num_frames=5, num_inference_steps=4, max_guidance_scale=2.5)
    gens = lambda: [torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)]  # noqa: E731
    teacher = SVDTeacher.from_pipeline(pipe)
    ref_lat = pipe(images, generator=gens(), output_type="latent", **kw).frames
    ours_lat = teacher.generate(images, generator=gens(), output_type="latent", **kw)
    assert torch.equal(ours_lat, ref_lat)
    ref = pipe(images, generator=gens(), decode_chunk_size=2, output_type="np", **kw).frames
    ours = teacher.generate(images, generator=gens(), decode_chunk_size=2, output_type="np", **kw)
    assert ours.shape == (2, 5, 32, 40, 3) and max_abs_diff(ours, ref) == 0.0
    assert max_abs_diff(ours[0], ours[1]) > 1e-3  # two different videos


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
    assert teacher.vae_scale_factor == 2
    with pytest.raises(InputError, match="multiple of 2"):
        teacher.generate(example_image(), 31, 32, 2)
    with pytest.raises(InputError, match="output_type"):
        teacher.generate(example_image(), 32, 32, 2, output_type="gif")
    # odd latent sizes are fine for the spatio-temporal UNet (it forwards upsample sizes)
    assert teacher.generate(example_image(), 34, 46, 2, num_inference_steps=1).shape == (1, 2, 34, 46, 3)
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


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    # Offline: the hub lookup fails and must come back as one ModelLoadError naming the id.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="sfv-test/no-such-svd.*no local folder"):
        SVDTeacher.from_pretrained("sfv-test/no-such-svd")


def test_non_svd_scheduler_is_refused(tiny_pipe):
    tiny_pipe.scheduler = EulerDiscreteScheduler.from_config(tiny_pipe.scheduler.config, prediction_type="epsilon")
    with pytest.raises(ModelLoadError, match="v_prediction"):
        SVDTeacher.from_pipeline(tiny_pipe)


def test_bf16_runs_and_stays_close_to_float32(tiny_pipe):
    """Half precision is not bit-exact (by design, see the module docstring) but must stay close."""
    image = example_image(32, 32)
    kw = dict(num_inference_steps=4, max_guidance_scale=2.0, output_type="np")
    ref = SVDTeacher.from_pipeline(tiny_pipe).generate(image, 32, 32, 2, generator=torch.Generator().manual_seed(0), **kw)
    bf16 = SVDTeacher.from_pipeline(tiny_pipe).to(dtype=torch.bfloat16)
    out = bf16.generate(image, 32, 32, 2, generator=torch.Generator().manual_seed(0), **kw)
    assert np.isfinite(out).all() and max_abs_diff(out, ref) < 0.1


def test_videos_per_prompt_keep_image_and_latent_paired(tiny_pipe):
    """With several images and num_videos_per_prompt > 1, every video's CLIP embedding and image latent come
    from the same image (the stock pipeline pairs them differently; see encode_condition's docstring)."""
    teacher = SVDTeacher.from_pipeline(tiny_pipe)
    images = [example_image(32, 32, seed=1), example_image(32, 32, seed=2)]
    cond = teacher.encode_condition(images, 32, 32, num_videos_per_prompt=2, generator=torch.Generator().manual_seed(0))
    assert len(cond) == 4
    for a, b in [(0, 1), (2, 3)]:
        assert torch.equal(cond.image_embeds[a], cond.image_embeds[b]) and torch.equal(cond.image_latents[a], cond.image_latents[b])
    assert not torch.equal(cond.image_embeds[1], cond.image_embeds[2]) and not torch.equal(cond.image_latents[1], cond.image_latents[2])
