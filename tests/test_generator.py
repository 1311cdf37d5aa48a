"""The one-step generator: a teacher-initialised, independent UNet behind the same preconditioning."""

import pytest
import torch
from safetensors.torch import save_file

from sfv.errors import ModelLoadError
from sfv.generator import SFVGenerator
from sfv.teachers.svd import PRECOND, SVDTeacher
from sfv.tiny import example_image

@pytest.fixture
def teacher(tiny_pipe):
    return SVDTeacher.from_pipeline(tiny_pipe)


@pytest.fixture
def cond(teacher):
    return teacher.encode_condition(example_image(32, 32), 32, 32, generator=torch.Generator().manual_seed(0))


def test_initialised_as_independent_copy_of_teacher(teacher):
    teacher.requires_grad_(False)
    g = SFVGenerator.from_teacher(teacher)
    t_state, g_state = teacher.unet.state_dict(), g.net.state_dict()
    assert t_state.keys() == g_state.keys() and all(torch.equal(t_state[k], g_state[k]) for k in t_state)
    assert all(p.requires_grad for p in g.parameters()) and not any(p.requires_grad for p in teacher.unet.parameters())
    before = {k: v.clone() for k, v in t_state.items()}
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.unet.state_dict().items())  # teacher untouched


def test_forward_is_the_teachers_denoiser(teacher, cond):
    g = SFVGenerator.from_teacher(teacher).eval()
    x = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * 70
    sigma = torch.tensor([70.54])
    with torch.no_grad():
        torch.testing.assert_close(g(x, sigma, cond), teacher.denoise(x, sigma, cond))


def test_sigma_levels_and_sampling(teacher):
    g = SFVGenerator.from_teacher(teacher)
    levels = g.levels  # values checked in test_noise.py
    assert levels.shape == (3,) and levels[0] == teacher.sigma_max
    draws = g.sample_level(3000, generator=torch.Generator().manual_seed(0))
    counts = torch.stack([(draws == s).sum() for s in levels])
    assert counts.sum() == 3000 and counts.min() > 900  # uniform over the 3 levels


def test_save_and_load_unet_folder_and_state_dict(teacher, tmp_path):
    g = SFVGenerator.from_teacher(teacher)
    with torch.no_grad():
        next(g.net.parameters()).add_(0.5)
    g.net.save_pretrained(tmp_path / "g", safe_serialization=True)
    save_file({f"unet.{k}": v.contiguous() for k, v in g.net.state_dict().items()}, tmp_path / "g.safetensors")
    for source in (tmp_path / "g", tmp_path / "g.safetensors"):
        unet = SFVGenerator.load_unet(source, teacher)
        assert all(torch.equal(a, b) for a, b in zip(unet.state_dict().values(), g.net.state_dict().values()))


def test_load_unet_errors(teacher, tmp_path):
    with pytest.raises(ModelLoadError, match="neither a UNet folder"):
        SFVGenerator.load_unet(tmp_path / "missing.safetensors", teacher)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no UNet"):
        SFVGenerator.load_unet(tmp_path / "empty", teacher)
    save_file({"not.a.unet.weight": torch.zeros(2)}, tmp_path / "wrong.safetensors")
    with pytest.raises(ModelLoadError, match="do not fit the teacher's UNet"):
        SFVGenerator.load_unet(tmp_path / "wrong.safetensors", teacher)


def test_preconditioning_at_sigma_max_makes_x0_mostly_network_output():
    # At σ = 700 c_skip ≈ 2e-6: the one-step prediction is essentially −F (v-sign), as SF-V relies on.
    x, out = torch.full((4,), 700.0), torch.randn(4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(PRECOND.combine(out, x, torch.tensor(700.0)), -out, rtol=0, atol=2e-3)
