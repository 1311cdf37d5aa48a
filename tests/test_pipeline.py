"""SFVPipeline as a drop-in for StableVideoDiffusionPipeline, and the exported folder in stock diffusers."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import StableVideoDiffusionPipeline

from conftest import max_abs_diff
from sfv.errors import InputError
from sfv.generator import SFVGenerator
from sfv.pipeline import SFVPipeline, export_pipeline
from sfv.model_dir import check_model_dir
from sfv.teachers.svd import SVDTeacher
from sfv.tiny import example_image


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_dir):
    """A 'student': the teacher-initialised generator with perturbed weights, exported."""
    teacher = SVDTeacher.from_pretrained(tiny_dir)
    g = SFVGenerator.from_teacher(teacher)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    out = export_pipeline(g.net, teacher, tmp_path_factory.mktemp("export") / "student", info={"note": "test"})
    return out


def test_a_folder_without_sfv_json_is_a_teacher_sampled_as_the_stock_pipeline(tiny_dir):
    """No sfv.json: SFVPipeline's defaults are the stock pipeline's (25 Euler steps on the teacher's schedule, CFG ramp
    1 → 3, a doubled UNet batch), frame for frame; an export of the same weights is a student (one pass, batch 1)."""
    image = example_image(32, 32, seed=4)
    kw = dict(height=32, width=32, num_frames=2, output_type="np")
    stock = StableVideoDiffusionPipeline.from_pretrained(tiny_dir, use_safetensors=True)
    stock.set_progress_bar_config(disable=True)
    ref = stock(image, generator=torch.Generator().manual_seed(3), **kw).frames  # the stock defaults
    pipe = SFVPipeline.from_pretrained(tiny_dir, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    calls = _count_unet_calls(pipe)
    ours = pipe(image, generator=torch.Generator().manual_seed(3), **kw).frames
    assert not pipe.is_student and max_abs_diff(ours, ref) == 0
    assert calls == [(2, 2, 8, 16, 16)] * 25
    few = pipe(image, num_inference_steps=4, generator=torch.Generator().manual_seed(3), **kw).frames  # any step count
    stock_few = stock(image, num_inference_steps=4, generator=torch.Generator().manual_seed(3), **kw).frames
    assert max_abs_diff(few, stock_few) == 0


def _count_unet_calls(pipe):
    calls = []
    pipe.unet.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    return calls


def test_exported_folder_in_stock_diffusers_equals_sfv_pipeline(exported, tiny_dir):
    image = example_image(48, 48, seed=3)
    kw = dict(height=32, width=48, num_frames=4, output_type="np")
    stock = StableVideoDiffusionPipeline.from_pretrained(exported, use_safetensors=True)
    stock.set_progress_bar_config(disable=True)
    ref = stock(image, num_inference_steps=1, max_guidance_scale=1.0, generator=torch.Generator().manual_seed(7), **kw).frames

    pipe = SFVPipeline.from_pretrained(exported, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    calls = _count_unet_calls(pipe)
    ours = pipe(image, generator=torch.Generator().manual_seed(7), **kw).frames  # defaults: 1 step, no CFG
    diff = max_abs_diff(ours, ref)
    print(f"max |SFVPipeline - stock(exported)| = {diff:.3g}")
    assert ours.shape == (1, 4, 32, 48, 3) and diff <= 1e-5
    assert calls == [(1, 4, 8, 16, 24)]  # exactly one UNet call, batch 1: no unconditional branch

    # the export really carries the student: the teacher's own 1-step output is different
    teacher_pipe = StableVideoDiffusionPipeline.from_pretrained(tiny_dir, use_safetensors=True)
    teacher_pipe.set_progress_bar_config(disable=True)
    teacher_out = teacher_pipe(image, num_inference_steps=1, max_guidance_scale=1.0, generator=torch.Generator().manual_seed(7), **kw).frames
    assert max_abs_diff(teacher_out, ref) > 1e-3


def test_export_contents(exported):
    check_model_dir(exported)
    index = json.loads((exported / "model_index.json").read_text())
    assert index["_class_name"] == "StableVideoDiffusionPipeline"
    info = json.loads((exported / "sfv.json").read_text())
    levels = SFVGenerator.from_teacher(SVDTeacher.from_pretrained(exported)).levels.tolist()  # G's, T_g = 4
    assert info["sampling"] == {"num_inference_steps": 1, "max_guidance_scale": 1.0, "sigma": 700.0, "t_g": 4,
                                "sigma_levels": levels} and info["note"] == "test"
    assert not list(exported.rglob("*.bin")) and list(exported.rglob("*.safetensors"))


def test_export_refuses_a_non_empty_folder(exported, tiny_dir):
    teacher = SVDTeacher.from_pretrained(tiny_dir)
    with pytest.raises(InputError, match="not empty"):
        export_pipeline(teacher.unet, teacher, exported)


def test_output_types_and_batching(exported):
    pipe = SFVPipeline.from_pretrained(exported, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    calls = _count_unet_calls(pipe)
    image = example_image(32, 32)
    pil = pipe(image, height=32, width=32, num_frames=3).frames  # default output_type 'pil', like the stock pipeline
    assert len(pil) == 1 and len(pil[0]) == 3 and isinstance(pil[0][0], PIL.Image.Image) and pil[0][0].size == (32, 32)
    pt = pipe([image, image], height=32, width=32, num_frames=3, num_videos_per_prompt=2, output_type="pt",
              generator=torch.Generator().manual_seed(0)).frames
    assert pt.shape == (4, 3, 3, 32, 32) and 0 <= pt.min() and pt.max() <= 1
    latents = pipe(image, height=32, width=32, num_frames=3, output_type="latent", return_dict=False)
    assert latents.shape == (1, 3, 4, 16, 16)
    assert [c[0] for c in calls] == [1, 4, 1]  # one call per generation; batch = number of videos


def test_decode_chunk_size_runs_and_steps_callback(exported):
    pipe = SFVPipeline.from_pretrained(exported, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    seen = []

    def on_step(p, i, t, kwargs):
        seen.append((i, float(t), kwargs["latents"].shape))
        return kwargs

    out = pipe(example_image(32, 32), height=32, width=32, num_frames=4, decode_chunk_size=2, output_type="np",
               callback_on_step_end=on_step, generator=torch.Generator().manual_seed(0)).frames
    assert out.shape == (1, 4, 32, 32, 3) and np.isfinite(out).all()
    assert len(seen) == 1 and seen[0][0] == 0 and abs(seen[0][1] - 0.25 * np.log(700.0)) < 1e-5


def test_step_callbacks_see_what_the_stock_pipeline_exposes(exported):
    """Inside a step callback `pipe.guidance_scale` is the per-frame ramp [B, F, 1, 1, 1], as in the stock pipeline."""
    seen = {}

    def on_step(p, i, t, kwargs):
        seen[type(p).__name__] = (p.guidance_scale.clone(), p.do_classifier_free_guidance)
        return kwargs

    kw = dict(height=32, width=32, num_frames=3, num_inference_steps=1, min_guidance_scale=1.0, max_guidance_scale=2.0,
              output_type="latent", callback_on_step_end=on_step, num_videos_per_prompt=2)
    for cls in (StableVideoDiffusionPipeline, SFVPipeline):
        pipe = cls.from_pretrained(exported, use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        pipe(example_image(32, 32), generator=torch.Generator().manual_seed(0), **kw)
    stock, ours = seen["StableVideoDiffusionPipeline"], seen["SFVPipeline"]
    assert ours[0].shape == stock[0].shape == (2, 3, 1, 1, 1) and torch.equal(ours[0], stock[0])
    assert ours[1] is True and bool(stock[1])  # CFG on: max > 1


def test_bad_input_is_a_value_error_as_in_the_stock_pipeline(exported):
    pipe = SFVPipeline.from_pretrained(exported, use_safetensors=True)
    with pytest.raises(ValueError):  # what code written against the stock pipeline catches
        pipe(example_image(32, 32), height=33, width=32, num_frames=3)  # not a multiple of the VAE factor
    with pytest.raises(InputError):
        pipe(example_image(32, 32), height=32, width=32, num_frames=3, output_type="gif")
