"""The teacher protocol: loading picks the family from the folder, SVD implements every member, the decoder slot,
and the one EDM preconditioning in its general form (σ_d ≠ 1) against EDM's formulas."""

import json
import shutil
import typing

import pytest
import torch

from sfv.decoders import build_decoder
from sfv.errors import InputError, ModelLoadError
from sfv.noise import EDMPrecond
from sfv.teachers import Condition, Teacher, family_of, load_teacher
from sfv.teachers.svd import SVDTeacher
from sfv.tiny import example_image


def _members(protocol) -> set[str]:
    """Every attribute and method a protocol declares."""
    names = set(typing.get_type_hints(protocol))
    names |= {n for n, v in vars(protocol).items() if callable(v) or isinstance(v, staticmethod)}
    return {n for n in names if not n.startswith("_")} | ({"__len__"} if "__len__" in vars(protocol) else set())


def test_load_teacher_picks_svd_from_model_index(tiny_dir):
    assert family_of(tiny_dir) == "StableVideoDiffusionPipeline"
    teacher = load_teacher(tiny_dir)
    assert type(teacher) is SVDTeacher


def test_svd_teacher_and_condition_implement_every_protocol_member(tiny_dir):
    teacher = load_teacher(tiny_dir)
    missing = [n for n in _members(Teacher) if not hasattr(teacher, n)]
    assert not missing, missing
    cond = teacher.encode_condition(example_image(32, 32), 32, 32, generator=torch.Generator().manual_seed(0))
    missing = [n for n in _members(Condition) if not hasattr(cond, n)]
    assert not missing, missing
    assert cond.repeat(3).image_embeds.shape[0] == 3 and torch.equal(cond.repeat(3).added_time_ids[2], cond.added_time_ids[0])
    assert cond.pooled().shape == (1, teacher.condition_dim)


def test_another_pipeline_family_is_refused_by_name(tiny_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_dir, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "CogVideoXImageToVideoPipeline"}))
    with pytest.raises(ModelLoadError, match="CogVideoXImageToVideoPipeline"):
        load_teacher(other)


def test_decoder_slot(tiny_dir):
    teacher = load_teacher(tiny_dir)
    latents = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    frames = teacher.decode(latents)
    assert frames.shape == (1, 3, 3, 16, 16) and frames.dtype == torch.float32
    assert torch.equal(build_decoder("vae", teacher.vae)(latents, 2), teacher.decode(latents, 2))
    with pytest.raises(InputError, match="decoder must be one of vae"):
        teacher.set_decoder("fast")


@pytest.mark.parametrize("sigma_data, sign", [(0.5, 1.0), (1.0, -1.0)])
def test_edm_preconditioning_applied_forms_are_edms(sigma_data, sign):
    """scale_input and combine (the floating-point forms the denoiser uses) equal c_in·x and c_skip·x + c_out·F with
    EDM's coefficients (Karras et al. 2022, Tab. 1) and the output sign."""
    precond = EDMPrecond(sigma_data, sign)
    sigma = torch.tensor([0.002, 0.37, 2.27, 70.5, 700.0]).reshape(-1, 1, 1, 1, 1)
    x, out = torch.randn(5, 2, 4, 3, 3), torch.randn(5, 2, 4, 3, 3)
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sign * sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    torch.testing.assert_close(precond.c_noise(sigma), sigma.log() / 4)
    torch.testing.assert_close(precond.scale_input(x, sigma), c_in * x)
    torch.testing.assert_close(precond.combine(out, x, sigma), c_skip * x + c_out * out)
