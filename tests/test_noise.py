"""σ levels: Karras discretisation against diffusers' scheduler and SF-V's generator levels."""

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from sfv.noise import generator_sigma_levels, karras_sigmas
from sfv.arch import SVD_SCHEDULER_CONFIG


@pytest.mark.parametrize("steps", [1, 4, 8, 16, 25])
def test_karras_levels_equal_svd_scheduler_bit_for_bit(steps):
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    ours = torch.cat([karras_sigmas(steps, 0.002, 700.0), torch.zeros(1)])
    assert torch.equal(ours, scheduler.sigmas)


def test_karras_matches_closed_form():
    n, lo, hi, rho = 10, 0.002, 700.0, 7.0
    i = torch.arange(n, dtype=torch.float64)
    ref = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho  # EDM eq. 5
    torch.testing.assert_close(karras_sigmas(n, lo, hi, rho).double(), ref, rtol=1e-6, atol=0)


def test_generator_levels_for_tg4_on_svd_range():
    levels = generator_sigma_levels(4, 0.002, 700.0)
    # docs/method.md: ≈ {2.27, 70.5, 700} (the lowest Karras level, σ_min, is not trained on)
    torch.testing.assert_close(levels, torch.tensor([700.0, 70.5408, 2.2691]), rtol=1e-4, atol=0)
    assert levels[0] == 700.0


def test_generator_levels_reject_tg_below_2():
    with pytest.raises(ValueError, match="T_g"):
        generator_sigma_levels(1, 0.002, 700.0)
