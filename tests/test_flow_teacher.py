"""The family boundary: a tiny flow-matching teacher (tests/flow_teacher.py) runs sfv's unchanged loop — build, a D step,
a G step, the export — and its preconditioning matches the reference formulas of rectified flow and of k-diffusion."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from conftest import tiny_recipe
from flow_teacher import FLOW, TinyFlowTeacher
from sfv import distributed
from sfv.data import collate
from sfv.noise import EDMPrecond, LogNormalSigmaSampler
from sfv.steps import Round, State, d_step, g_inputs, g_step, noised, prepare, round_generator
from sfv.train import build, build_data, export

CPU = distributed.World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


def test_flow_preconditioning_is_rectified_flow_and_k_diffusion_scalings():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 5, 5, generator=g), torch.randn(3, 2, 4, 5, 5, generator=g)
    t = torch.tensor([0.9, 0.5, 0.02]).reshape(-1, 1, 1, 1, 1).double()
    x0, eps = x0.double(), eps.double()
    x_t = FLOW.add_noise(x0, t, eps)
    torch.testing.assert_close(x_t, (1 - t) * x0 + t * eps, rtol=0, atol=0)
    v = eps - x0  # what the network predicts
    torch.testing.assert_close(FLOW.combine(v, FLOW.scale_input(x_t, t), t), x0)  # x0 = x_t − t·v
    # the same denoiser in EDM's coordinate σ = t/(1−t), x = x_t·(1+σ): k-diffusion's scalings
    sigma = t / (1 - t)
    x = x_t * (1 + sigma)
    torch.testing.assert_close(x, x0 + sigma * eps)  # EDM's forward process
    c_skip, c_out, c_in = 1 / (1 + sigma), -sigma / (1 + sigma), 1 / (1 + sigma)
    torch.testing.assert_close(c_in * x, x_t)
    torch.testing.assert_close(c_skip * x + c_out * v, x0)
    torch.testing.assert_close(FLOW.c_noise(t), 1000 * t)
    # λ(t)·‖x̂0 − x0‖² = ‖v̂ − v‖² (flow matching's loss), and λ = 1/c_out²
    v_hat = v + 0.1
    err = FLOW.loss_weight(t) * (FLOW.combine(v_hat, x_t, t) - x0) ** 2
    torch.testing.assert_close(err, (v_hat - v) ** 2)
    torch.testing.assert_close(FLOW.loss_weight(t), 1 / c_out**2 * (sigma / (1 + sigma)) ** 2 / t**2)
    # the common coordinate: ln σ = logit t, and back
    torch.testing.assert_close(FLOW.log_sigma(t), sigma.log())
    assert FLOW.level_of_sigma(3.0) == pytest.approx(0.75) and EDMPrecond.level_of_sigma(3.0) == 3.0
    # D's log-normal σ′ on the flow grid is a logit-normal t′ (median t′ = sigmoid(P_mean))
    teacher_grid = TinyFlowTeacher.level_grid(None, 1000)
    draws = LogNormalSigmaSampler(teacher_grid, -1.0, 1.0, FLOW.log_sigma)(20_000, torch.Generator().manual_seed(1))
    assert 0 < draws.min() and draws.max() < 1
    assert draws.median().item() == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item(), abs=0.02)


@pytest.fixture(scope="module")
def flow_teacher():
    return TinyFlowTeacher.build()


def test_flow_teacher_samples_on_its_own_grid_like_the_scheduler(flow_teacher, image_path):
    from PIL import Image

    cond = flow_teacher.encode_condition(Image.open(image_path), 32, 32, 7, 127, 0.02)
    eps = torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    ours = flow_teacher.sample(cond, 4, 32, 32, num_inference_steps=4, max_guidance_scale=1.0, latents=eps)
    # diffusers' own flow-matching Euler step on the velocity of the same network
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    x = eps.clone()
    for t in scheduler.sigmas[:-1]:
        x0 = flow_teacher.denoise(x, t, cond)
        v = (x - x0) / t  # the network's velocity, read back through the preconditioning
        x = scheduler.step(v, t * 1000, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    # one step from t = 1 is the network's x̂0 = ε − v
    one = flow_teacher.sample(cond, 4, 32, 32, num_inference_steps=1, max_guidance_scale=1.0, latents=eps)
    torch.testing.assert_close(one, flow_teacher.denoise(eps, torch.tensor(1.0), cond), rtol=0, atol=1e-6)


def test_flow_teacher_runs_the_loop_build_d_step_g_step_export(flow_teacher, tiny_dir, video_dir, tmp_path):
    recipe = tiny_recipe(tiny_dir, video_dir, tmp_path / "run", discriminator__r1_interval=1, generator__rec_max_sigma=3.0)
    p = build(recipe, CPU, teacher=flow_teacher)
    # G's levels: the top T_g − 1 of the scheduler's 4-step grid, t = 1 first; its one-step input is ε itself
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    assert torch.equal(p.G.levels, scheduler.sigmas[:3].float()) and p.G.top_level == 1.0 and p.init_sigma == 1.0
    x0 = torch.randn(3, 4, 4, 16, 16)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(noised(p, x0, torch.ones(3), torch.Generator().manual_seed(7)), eps)  # the loop's forward process
    assert 0 < float(p.sigma_d.levels.min()) and float(p.sigma_d.levels.max()) < 1
    # the gate in σ (recipe: 3.0) is t = 0.75 here: only G's lowest level (t = 0.6) reconstructs the real clip
    rnd = Round(x0, None, torch.Generator().manual_seed(8), None)
    assert g_inputs(p, rnd, p.G.levels)[2].tolist() == [0.0, 0.0, 1.0]

    batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
    rounds = [prepare(batch, p.teacher, recipe, round_generator(recipe.train.seed, 0, CPU.device))]
    heads = {k: v.clone() for k, v in p.D.state_dict().items()}
    g_before = {k: v.clone() for k, v in p.G.state_dict().items()}
    d_stats = d_step(p, rounds, State())
    assert torch.isfinite(torch.tensor(d_stats["loss/d"]))
    assert any(not torch.equal(heads[k], v) for k, v in p.D.state_dict().items())
    assert all(torch.equal(g_before[k], v) for k, v in p.G.state_dict().items())
    state = State()
    g_stats = g_step(p, rounds, state)
    assert torch.isfinite(torch.tensor(g_stats["loss/g"])) and g_stats["grad/g_adv"] > 0 and g_stats["grad/g_rec"] > 0
    assert sum(not torch.equal(g_before[k], v) for k, v in p.G.state_dict().items()) > 0.9 * len(g_before)

    # the export through the family, and the student sampled back from disk in one step
    out = export(recipe, state, p.ema.module, p.teacher, "ema")
    student = flow_teacher.with_student(out)
    cond = rounds[0].cond
    x = torch.randn(2, 4, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    one = student.sample(cond, 4, 32, 32, num_inference_steps=1, max_guidance_scale=1.0, latents=x)
    with torch.no_grad():
        direct = p.G.denoise_with(p.ema.module.eval(), x, torch.tensor(1.0), cond)
    assert not torch.allclose(one, flow_teacher.denoise(x, torch.tensor(1.0), cond), atol=1e-4)  # G moved
    torch.testing.assert_close(one, direct, rtol=1e-5, atol=1e-5)  # loaded weights round differently (alignment)
