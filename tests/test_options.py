"""The recipe options beyond SF-V (sfv/train.py's docstring): each term against its reference formula, each phase's
invariants (what it may change), the teacher pairs of the latent cache, and exact resume with every option on.
Tiny real components (tests/conftest.py); each option is off by default (tests/test_config.py)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_recipe

from sfv import distributed, losses
from sfv.cache import LatentCache, pair_noise
from sfv.cli import main
from sfv.data import collate
from sfv.steps import (
    State,
    d_step,
    fake_step,
    g_inputs,
    g_step,
    prepare,
    round_generator,
    set_learning_rates,
)
from sfv.train import build, build_data, run

CPU = distributed.World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))
EVERY_OPTION = dict(discriminator__loss="relativistic", discriminator__r2_gamma=0.1, discriminator__r1_interval=1,
                    generator__rec_max_sigma=3.0, generator__rec_target="teacher", dmd__weight=1.0, dmd__fake_steps_per_g=2,
                    dmd__fake_lr=1e-3, train__lr_decay="cosine", train__lr_decay_from=0.25, discriminator__labels=True)


@pytest.fixture(scope="module")
def pair_cache(tmp_path_factory, tiny_dir, video_dir):
    """A latent cache of the test videos with 2 teacher pairs per clip (3 teacher steps, CFG 3)."""
    out = tmp_path_factory.mktemp("cache") / "pairs"
    assert main(["cache", "--teacher", str(tiny_dir), "--videos", str(video_dir), "--out", str(out), "--frames", "4",
                 "--height", "32", "--width", "32", "--fps", "8", "--teacher-pairs", "2", "--pair-steps", "3"]) == 0
    return out


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def _parts(tiny_dir, video_dir, tmp_path, pair_cache, **options):
    recipe = tiny_recipe(tiny_dir, video_dir, tmp_path / "run", data__cache=str(pair_cache), **options)
    p = build(recipe, CPU)
    batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
    return p, recipe, [prepare(batch, p.teacher, recipe, round_generator(recipe.train.seed, 0, CPU.device))]


# -- the terms -----------------------------------------------------------------------------------------------


def test_relativistic_losses_and_masked_reconstruction_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    real = {"a": torch.randn(3, 4, 5, generator=g), "b": torch.randn(3, 6, generator=g)}
    fake = {k: torch.randn(v.shape, generator=g) for k, v in real.items()}
    # L_D = mean over heads of the mean over positions of ln(1 + e^(f − r)), written out element by element
    per_head = [torch.tensor([math.log1p(math.exp(f - r)) for r, f in zip(real[k].flatten().tolist(), fake[k].flatten().tolist())]).mean()
                for k in real]
    torch.testing.assert_close(losses.d_relativistic_loss(real, fake), torch.stack(per_head).mean())
    per_head = [F.softplus(real[k] - fake[k]).mean() for k in real]  # L_G: the same pairs, roles swapped
    torch.testing.assert_close(losses.g_relativistic_loss(real, fake), torch.stack(per_head).mean())
    x, y = torch.randn(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    c, mask = 0.03, torch.tensor([1.0, 0.0, 1.0, 0.0])
    d = ((x - y).square().flatten(1).sum(1) + c * c).sqrt() - c  # √(‖·‖² + c²) − c per video
    torch.testing.assert_close(losses.pseudo_huber(x, y, c, mask), (d * mask).mean())
    torch.testing.assert_close(losses.pseudo_huber(x, y, c), d.mean())


def test_dmd_direction_loss_gradient_and_denoising_weight():
    g = torch.Generator().manual_seed(1)
    x, real, fake = (torch.randn(2, 3, 4, generator=g) for _ in range(3))
    direction = losses.dmd_direction(x, real, fake)
    scale = (x - real).abs().flatten(1).mean(1)[:, None, None]  # DMD2: mean |x̂0 − f_real| per video
    torch.testing.assert_close(direction, (fake - real) / scale)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(losses.dmd_loss(leaf, direction), leaf)
    torch.testing.assert_close(grad, direction / x.numel())  # G is pushed along −direction
    sigma = torch.tensor([0.5, 7.0])
    from sfv.teachers.svd_unet import PRECOND

    weight = PRECOND.loss_weight(sigma)
    c_out = -sigma / (sigma**2 + 1).sqrt()  # SVD's c_out (EDM Tab. 1, σ_data = 1, v-sign)
    torch.testing.assert_close(weight, 1 / c_out**2)  # EDM: λ(σ) = 1/c_out²
    torch.testing.assert_close(losses.denoising_loss(x, real, weight), (weight[:, None, None] * (x - real).square()).mean((1, 2)).mean())


# -- the teacher pairs ---------------------------------------------------------------------------------------


def test_cached_teacher_pairs_are_the_teachers_samples_from_their_seeds(pair_cache, tiny_dir):
    from sfv.teachers import load_teacher
    from sfv.teachers.svd_condition import SVDCondition

    cache = LatentCache(pair_cache)
    assert cache.teacher_pairs == {"count": 2, "steps": 3, "guidance": 3.0}
    teacher = load_teacher(tiny_dir)
    for epoch in (0, 1, 2):  # epoch e reads pair e mod 2; recomputed as written: the cache's first batch of 4 clips
        rows = collate([cache[(i, epoch)] for i in range(4)])
        cond = SVDCondition(rows["image_embeds"], rows["image_latents"], teacher.time_ids(rows["fps"], rows["motion_bucket_id"], 0.02, 4))
        noise = pair_noise(teacher, rows["pair_seed"], 4, 32, 32)
        again = teacher.sample(cond, 4, 32, 32, num_inference_steps=3, max_guidance_scale=3.0, latents=noise)
        assert torch.equal(again, rows["pair_latents"]), epoch
    assert cache[(1, 0)]["pair_seed"] != cache[(1, 1)]["pair_seed"] == cache[(1, 3)]["pair_seed"]
    assert not torch.equal(cache[(1, 0)]["pair_latents"], cache[(2, 0)]["pair_latents"])


def test_g_inputs_gate_the_reconstruction_and_put_the_teacher_pair_at_sigma_max(tiny_dir, video_dir, tmp_path, pair_cache):
    p, recipe, [rnd] = _parts(tiny_dir, video_dir, tmp_path, pair_cache, generator__rec_max_sigma=3.0,
                              generator__rec_target="teacher")
    levels = p.G.levels  # [700, 70.5, 2.27]
    sigma = torch.stack([levels[0], levels[2]])
    x_in, target, on = g_inputs(p, rnd, sigma)
    noise, teacher_x0 = rnd.pair
    assert torch.equal(x_in[0], noise[0] * p.init_sigma) and torch.equal(target[0], teacher_x0[0])  # σ_max: the pair
    assert torch.equal(target[1], rnd.x0[1]) and not torch.equal(x_in[1], noise[1] * p.init_sigma)  # 2.27: the real clip
    assert on.tolist() == [1.0, 1.0]
    recipe.generator.rec_target = "real"
    _, target, on = g_inputs(p, rnd, torch.stack([levels[0], levels[1]]))
    assert on.tolist() == [0.0, 0.0] and torch.equal(target, rnd.x0)  # gated: neither level is ≤ 3
    recipe.generator.rec_target, recipe.generator.rec_max_sigma = "teacher", None  # not gated: every level reconstructs
    x_in, target, on = g_inputs(p, rnd, torch.stack([levels[0], levels[1]]))
    assert on is None and torch.equal(target[0], teacher_x0[0]) and torch.equal(target[1], rnd.x0[1])


def test_dmd_noise_levels_follow_dmd2():
    """DMD2 draws its timesteps uniformly from 0.02 T to 0.98 T; on SVD's Karras grid that is a median σ near 16."""
    from sfv.noise import UniformLevelSampler, karras_sigmas

    sampler = UniformLevelSampler(karras_sigmas(1000, 0.002, 700.0))
    sigma = sampler(20_000, torch.Generator().manual_seed(0))
    assert sampler.probs.count_nonzero() == 961 and 10 < sigma.median() < 25 and (sigma > 10).float().mean() > 0.5
    assert sigma.min() >= sampler.levels[980] and sigma.max() <= sampler.levels[20]


# -- what each phase changes ---------------------------------------------------------------------------------


def test_fake_step_changes_only_the_fake_score_and_g_step_leaves_it(tiny_dir, video_dir, tmp_path, pair_cache):
    p, _, batches = _parts(tiny_dir, video_dir, tmp_path, pair_cache, **EVERY_OPTION)
    g, d, teacher, fake = _snapshot(p.G), _snapshot(p.D), _snapshot(p.teacher.unet), _snapshot(p.fake)
    stats = fake_step(p, batches, State())
    assert len(_changed(fake, p.fake)) > 0.9 * len(fake) and stats["loss/fake"] > 0
    assert not _changed(g, p.G) and not _changed(d, p.D) and not _changed(teacher, p.teacher.unet)
    fake = _snapshot(p.fake)
    stats = g_step(p, batches, State())
    assert len(_changed(g, p.G)) > 0.9 * len(g) and not _changed(fake, p.fake) and not _changed(d, p.D)
    assert {"grad/g_adv", "grad/g_rec", "grad/g_dmd", "loss/g_dmd"} <= stats.keys() and stats["grad/g_dmd"] > 0
    assert all(q.grad is None for q in p.fake.parameters()) and all(q.grad is None for q in p.teacher.unet.parameters())


def test_d_step_with_r2_penalises_the_fake_input_too(tiny_dir, video_dir, tmp_path, pair_cache):
    p, _, batches = _parts(tiny_dir, video_dir, tmp_path, pair_cache, **EVERY_OPTION)
    stats = d_step(p, batches, State())
    assert stats["loss/r1"] > 0 and stats["loss/r2"] > 0 and "loss/d_relativistic" in stats


# -- exact resume with every option on -----------------------------------------------------------------------


def _weights(run_dir, name=None):
    from safetensors.torch import load_file

    ckpt = run_dir / "checkpoints" / name if name else sorted((run_dir / "checkpoints").iterdir())[-1]
    return {f"{f.stem}/{k}": v for f in sorted(ckpt.glob("*.safetensors")) if not f.stem.startswith("rng")
            for k, v in load_file(f).items()}


def test_cosine_decay_sets_every_optimisers_rate_from_the_videos_read(tiny_dir, video_dir, tmp_path, pair_cache):
    """train.lr_decay=cosine: full rate until lr_decay_from·total, then lr·½(1 + cos(π·progress)), 0 at the end, on G's,
    D's and the fake score's optimiser alike; `none` leaves every rate at the recipe's."""
    p, recipe, _ = _parts(tiny_dir, video_dir, tmp_path, pair_cache, train__total_videos=100, **EVERY_OPTION)
    rates = lambda: [g["lr"] for opt in (p.opt_g, p.opt_d, p.opt_fake) for g in opt.param_groups]  # noqa: E731
    base = [recipe.generator.lr, recipe.discriminator.lr, recipe.dmd.fake_lr]
    for videos, expected in ((0, 1.0), (25, 1.0), (50, 0.5 * (1 + math.cos(math.pi / 3))), (100, 0.0), (120, 0.0)):
        assert set_learning_rates(p, videos) == pytest.approx(expected, abs=1e-12)
        assert rates() == pytest.approx([b * expected for b in base], abs=1e-15)
    p.recipe.train.lr_decay = "none"
    assert set_learning_rates(p, 50) == 1.0 and rates() == base


def test_d_only_warm_up_leaves_g_at_the_teacher_until_its_videos_are_read(tiny_dir, video_dir, tmp_path):
    """discriminator.warmup_videos: D steps alone until that many videos are read, then G steps as usual."""
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "run", train__batch_size=2, train__checkpoint_every=4, train__total_videos=8,
                    discriminator__warmup_videos=4))
    states = {n: json.loads((tmp_path / "run" / "checkpoints" / n / "state.json").read_text())["state"]
              for n in ("videos-000000004", "videos-000000008")}
    assert [(s["d_steps"], s["g_steps"]) for s in states.values()] == [(2, 0), (4, 2)]
    warm, end = _weights(tmp_path / "run", "videos-000000004"), _weights(tmp_path / "run")
    g = [k for k in warm if k.startswith("generator/")]
    assert g and any(not torch.equal(warm[k], end[k]) for k in g)  # G moved after the warm-up...
    from safetensors.torch import load_file

    teacher = load_file(tiny_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(warm[f"generator/{k}"], v) for k, v in teacher.items() if f"generator/{k}" in warm)  # ...not before
    assert sum(f"generator/{k}" in warm for k in teacher) > 100
    assert any(not torch.equal(warm[k], end[k]) for k in warm if k.startswith("discriminator_heads/"))


def test_stop_and_resume_with_every_option_on_is_bitwise_identical(tiny_dir, video_dir, tmp_path, pair_cache):
    """DMD's fake-score network and its optimiser are checkpointed with G, D and theirs; a run resumed from the
    halfway checkpoint (as after a crash there) ends on the same bits as the uninterrupted one (relativistic D with R2,
    gated and teacher-pair reconstruction, and the cosine learning-rate decay, whose curve needs the same total_videos)."""
    common = dict(data__cache=str(pair_cache), train__batch_size=2, train__checkpoint_every=4, train__total_videos=8, **EVERY_OPTION)
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "straight", **common))
    halfway = tmp_path / "straight" / "checkpoints" / "videos-000000004"
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "resumed", **common), resume=str(halfway))
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert {k.split("/")[0] for k in a} == {"generator", "generator_ema", "discriminator_heads", "fake_score", "optim_g",
                                            "optim_d", "optim_fake"}
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    log = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert log and all("loss/fake" in e and "loss/g_dmd" in e for e in log)
    assert 0 < log[-1]["train/lr_scale"] < 1  # the resumed half ran on decayed rates
    # the comparison can fail: the fake score moved between the two checkpoints
    c = _weights(tmp_path / "straight", "videos-000000004")
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("fake_score/"))


def test_memory_report_with_dmd_runs_the_fake_score_step_and_counts_its_state(tmp_path):
    """tools/memory_report.py --dmd at the tiny size: the fake-score network is built, sharded and stepped; --state
    gives the full-size weight/optimiser table with and without it (meta device: nothing is allocated)."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "memory.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "tools/memory_report.py"), "--arch", "tiny", "--device", "cpu", "--frames",
                           "4", "--height", "32", "--width", "32", "--checkpointing", "off", "--dmd", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = json.loads(out.read_text())["runs"]
    assert r["parameters"]["fake_score"] == r["parameters"]["generator"] > 0 and r["fake_step_s"] > 0
    proc = subprocess.run([sys.executable, str(REPO / "tools/memory_report.py"), "--state", "--out", str(tmp_path / "state.json")],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["parameters"]["unet"] > 1.5e9  # the full-size SVD UNet, counted on the meta device
    with_dmd, without = state["total_bytes"]["with_dmd"], state["total_bytes"]["without_dmd"]
    assert with_dmd["ddp"] > without["ddp"] > without["fsdp"] and with_dmd["fsdp"] > without["fsdp"]
    assert "total before activations, with DMD" in proc.stdout
