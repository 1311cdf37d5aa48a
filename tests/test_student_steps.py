"""Few-step sampling of the one-step student on its own training levels (x̂0 re-noised to the next level)."""

import pytest
import torch

from conftest import run_sfv_pipe as _run
from sfv.errors import InputError
from sfv.noise import generator_sigma_levels, student_schedule


def test_student_schedule_uses_its_training_levels():
    levels = generator_sigma_levels(4, 0.002, 700.0)
    assert student_schedule(levels, 1).tolist() == [700.0, 0.0]
    assert student_schedule(levels, 2).tolist() == [700.0, levels[2].item(), 0.0]  # σ_max, then the lowest
    assert student_schedule(levels, 3).tolist() == [*levels.tolist(), 0.0]
    for bad in (0, 4, -1):
        with pytest.raises(InputError, match="num_inference_steps must be 1..3"):
            student_schedule(levels, bad)


def test_few_steps_run_the_student_at_its_levels(sfv_pipe):
    seen = []
    hook = sfv_pipe.unet.register_forward_hook(lambda m, args, out: seen.append(float(args[1].reshape(-1)[0])))
    try:
        one, two = _run(sfv_pipe, num_frames=4), _run(sfv_pipe, num_frames=4, num_inference_steps=2)
    finally:
        hook.remove()
    levels = generator_sigma_levels(4, 0.002, 700.0)
    c_noise = [0.25 * torch.log(torch.tensor(s)).item() for s in (700.0, 700.0, float(levels[2]))]
    assert seen == pytest.approx(c_noise, abs=1e-6)  # 1 step: σ_max; 2 steps: σ_max, then re-noised to 2.27
    assert not torch.equal(one, two)
    with pytest.raises(InputError, match="num_inference_steps must be 1..3"):
        _run(sfv_pipe, num_frames=4, num_inference_steps=4)
