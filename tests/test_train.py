"""The SF-V trainer on the tiny SVD and real mp4 files: phase invariants, exact resume, what a run writes."""

import json

import pytest
import torch

from conftest import tiny_recipe
from sfv import distributed
from sfv.data import collate
from sfv.errors import InputError
from sfv.steps import Round, State, d_step, g_step, prepare, round_generator
from sfv.train import build, build_data, run

CPU = distributed.World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def _rounds(batch, p, recipe):
    """One accumulation round as the loop makes it: (x0, cond, the round's generator)."""
    gen = round_generator(recipe.train.seed, 0, CPU.device)
    return [prepare(batch, p.teacher, recipe, gen)]


@pytest.fixture
def parts_and_batch(tiny_dir, video_dir, tmp_path):
    recipe = tiny_recipe(tiny_dir, video_dir, tmp_path / "run", discriminator__r1_interval=1)
    p = build(recipe, CPU)
    batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
    return p, _rounds(batch, p, recipe)


def test_d_step_changes_only_the_heads(parts_and_batch):
    p, batches = parts_and_batch
    g, heads, teacher, vae = _snapshot(p.G), _snapshot(p.D), _snapshot(p.teacher.unet), _snapshot(p.teacher.vae)
    stats = d_step(p, batches, State())
    changed = _changed(heads, p.D)
    assert changed and all(not k.startswith("backbone.") for k in changed)
    assert {k.split(".")[0] for k in changed} == {"heads", "cond_embed"}
    assert not _changed(g, p.G) and not _changed(teacher, p.teacher.unet) and not _changed(vae, p.teacher.vae)
    assert all(q.grad is None for q in p.teacher.unet.parameters()) and all(q.grad is None for q in p.G.parameters())
    assert stats["loss/d"] > 0 and "loss/r1" in stats and p.D.backbone.training is False


def test_g_step_changes_only_the_generator(parts_and_batch):
    p, batches = parts_and_batch
    g, heads, teacher, ema = _snapshot(p.G), _snapshot(p.D), _snapshot(p.teacher.unet), _snapshot(p.ema)
    g_step(p, batches, State())
    assert len(_changed(g, p.G)) > 0.9 * len(g)  # all of G is fine-tuned
    assert _changed(ema, p.ema)
    assert not _changed(heads, p.D) and not _changed(teacher, p.teacher.unet)
    assert all(q.grad is None for q in p.D.parameters()) and all(q.grad is None for q in p.teacher.unet.parameters())
    assert all(q.requires_grad for q in p.D.trainable_parameters())  # heads trainable again for the next D phase


def test_exact_r1_double_backward_runs_on_cpu(tiny_dir, video_dir, tmp_path):
    recipe = tiny_recipe(tiny_dir, video_dir, tmp_path / "run", discriminator__r1="exact", discriminator__r1_interval=1)
    p = build(recipe, CPU)
    batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
    stats = d_step(p, _rounds(batch, p, recipe), State())
    assert stats["loss/r1"] > 0 and torch.isfinite(torch.tensor(stats["loss/r1"]))


def _weights(run_dir, name=None):
    from safetensors.torch import load_file

    ckpt = run_dir / "checkpoints" / name if name else sorted((run_dir / "checkpoints").iterdir())[-1]
    return {f"{n}/{k}": v for n in ("generator", "generator_ema", "discriminator_heads", "optim_g", "optim_d")
            for k, v in load_file(ckpt / f"{n}.safetensors").items()}


def test_stop_and_resume_is_bitwise_identical_to_an_uninterrupted_run(tiny_dir, video_dir, tmp_path):
    common = dict(train__batch_size=2, train__checkpoint_every=4, discriminator__r1_interval=3)
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "straight", train__total_videos=8, **common))
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "resumed", train__total_videos=4, **common))
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "resumed", train__total_videos=8, **common), resume="latest")
    # checkpoints are written every checkpoint_every videos, not only at the end
    assert sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir()) == ["videos-000000004", "videos-000000008"]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) > 100
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "videos-000000008" / "state.json").read_text())
    assert state["state"]["videos"] == 8 and state["state"]["g_steps"] == 4
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["videos-000000004", "videos-000000008"]
    # the comparison can fail: another seed, same length, gives other weights
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "other", train__total_videos=4, train__seed=1, **common))
    c, d = _weights(tmp_path / "other"), _weights(tmp_path / "resumed", "videos-000000004")
    assert any(not torch.equal(c[k], d[k]) for k in c if k.startswith("generator/"))


def test_a_non_finite_loss_skips_the_update_and_is_counted(parts_and_batch):
    p, [(x0, cond, gen, _)] = parts_and_batch
    heads = _snapshot(p.D)
    state = State()
    x0 = x0.clone()
    x0[0, 0, 0, 0, 0] = float("nan")
    d_step(p, [Round(x0, cond, gen)], state)
    assert state.skipped_steps == 1 and state.nonfinite_in_row == 1 and not _changed(heads, p.D)
    assert all(q.grad is None for q in p.D.trainable_parameters())
    d_step(p, parts_and_batch[1], state)  # a finite step updates and resets the run of failures
    assert state.nonfinite_in_row == 0 and _changed(heads, p.D)


def test_activation_checkpointing_gives_the_same_gradients(tiny_dir, video_dir, tmp_path):
    """Recomputing each block in the backward changes no gradient beyond rounding. Gradients, not updated weights,
    are compared: AdamW's first step moves each weight by ≈ lr·sign(g), so a rounding-level difference in a
    near-zero gradient would become an lr-sized weight difference on some CPUs and not on others."""
    grads = []
    for ckpt in ("false", "true"):
        recipe = tiny_recipe(tiny_dir, video_dir, tmp_path / "run", model__gradient_checkpointing=ckpt)
        p = build(recipe, CPU)
        assert p.G.net.is_gradient_checkpointing == (ckpt == "true")
        names = {id(q): n for n, q in p.G.named_parameters()}
        p.opt_g.register_step_pre_hook(lambda opt, args, kwargs: grads.append(
            {names[id(q)]: q.grad.clone() for group in opt.param_groups for q in group["params"] if q.grad is not None}))
        batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
        g_step(p, _rounds(batch, p, recipe), State())
    plain, recomputed = grads
    assert plain.keys() == recomputed.keys() and len(plain) > 100
    scale = max(g.abs().max().item() for g in plain.values())
    worst = max((plain[k] - recomputed[k]).abs().max().item() for k in plain)
    assert worst <= 1e-5 * scale, (worst, scale)


def test_a_full_size_g_on_a_gpu_without_activation_checkpointing_gets_one_line(capsys):
    """The hint is about memory on a GPU at full size: not on a CPU, not for a small G, not with checkpointing on."""
    from sfv.run_setup import LARGE_G, checkpointing_hint

    gpu, cpu, svd = torch.device("cuda"), torch.device("cpu"), 1_524_623_082  # the SVD UNet's parameters
    assert checkpointing_hint(False, svd, gpu)
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "model.gradient_checkpointing=true" in line and "1.5 B parameters" in line
    assert not any(checkpointing_hint(*args) for args in ((True, svd, gpu), (False, svd, cpu), (False, LARGE_G - 1, gpu)))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("adv_weight", [1.0, 0.0])  # SF-V, and the reconstruction-only ablation
def test_g_step_split_at_the_output_gives_the_gradient_of_the_summed_loss(tiny_dir, video_dir, tmp_path, adv_weight):
    """g_step takes each term's gradient at x̂0 apart (to log how hard each pulls) and sends their sum through G:
    by the chain rule that is the gradient of w·L_adv + λ·L_rec, computed here directly as the reference."""
    recipe = tiny_recipe(tiny_dir, video_dir, tmp_path / "run", generator__adv_weight=adv_weight,
                         generator__grad_clip=0)  # the optimiser sees the gradient unclipped
    p = build(recipe, CPU)
    names = {id(q): n for n, q in p.G.named_parameters()}
    seen = []
    p.opt_g.register_step_pre_hook(lambda opt, args, kwargs: seen.append(
        {names[id(q)]: q.grad.clone() for group in opt.param_groups for q in group["params"] if q.grad is not None}))
    batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
    [(x0, cond, gen, _)] = _rounds(batch, p, recipe)
    start = gen.get_state()
    before = _snapshot(p.G)
    stats = g_step(p, [Round(x0, cond, gen)], State())
    assert stats["grad/g_rec"] > 0 and (stats["grad/g_adv"] > 0) == (adv_weight > 0)
    p.G.load_state_dict(before)
    p.opt_g.zero_grad(set_to_none=True)
    gen.set_state(start)  # the reference: the same draws, the summed loss, one backward
    from sfv import losses
    from sfv.steps import noised

    sigma_t, s = p.G.sample_level(2, gen), p.sigma_d(2, gen)
    x0_pred = p.G(noised(p, x0, sigma_t, gen), sigma_t, cond)
    p.D.heads_requires_grad_(False)
    adv = losses.g_hinge_loss(p.D(noised(p, x0_pred, s, gen), s, cond))
    rec = losses.pseudo_huber(x0_pred, x0, losses.default_huber_c(x0[0].numel()))
    (adv_weight * adv + recipe.generator.huber_weight * rec).backward()
    reference = {n: q.grad for n, q in p.G.named_parameters() if q.grad is not None}
    assert reference.keys() == seen[0].keys() and len(reference) > 100
    scale = max(g.abs().max().item() for g in reference.values())
    worst = max((reference[k] - seen[0][k]).abs().max().item() for k in reference)
    assert worst <= 1e-5 * scale, (worst, scale)


@pytest.mark.parametrize("fake_sigma", ["levels", "max"])
def test_d_sees_fakes_from_the_chosen_sigma_levels(tiny_dir, video_dir, tmp_path, fake_sigma):
    recipe = tiny_recipe(tiny_dir, video_dir, tmp_path / "run", discriminator__fake_sigma=fake_sigma)
    p = build(recipe, CPU)
    seen = []
    p.G.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
    d_step(p, _rounds(batch, p, recipe), State())
    sigmas = torch.cat(seen)
    levels = p.G.levels
    assert len(sigmas) == 2 and all(torch.isclose(levels, s).any() for s in sigmas)
    assert (sigmas == p.G.top_level).all() == (fake_sigma == "max")  # the paper's levels include the lower ones


def test_held_out_pairs_are_judged_on_cadence_and_leave_training_untouched(tiny_dir, video_dir, tmp_path):
    common = dict(train__batch_size=2, train__total_videos=6, train__checkpoint_every=6, discriminator__r1_interval=3)
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "plain", **common))
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "judged", train__d_eval_every=4, train__d_eval_count=3,
                    data__eval_videos=video_dir, **common))  # (a held-out folder; here the same clips)
    rows = [json.loads(line) for line in (tmp_path / "judged" / "heldout.jsonl").read_text().splitlines()]
    assert [r["videos"] for r in rows] == [0, 4, 6]  # where D starts, each crossing, the end
    assert {"heldout/pair_win", "heldout/video_accuracy", "heldout/gap_over_spread", "heldout/sign_accuracy"} <= rows[0].keys()
    assert all(min(abs(r["heldout/pair_win"] - k / 3) for k in range(4)) < 1e-6 for r in rows)  # 3 pairs
    assert rows[0]["heldout/gap"] != rows[-1]["heldout/gap"]  # D (and G) moved in between
    assert not (tmp_path / "plain" / "heldout.jsonl").exists()
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "judged")  # judging draws nothing from training's RNG
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    with pytest.raises(InputError, match="data.eval_videos .* does not exist"):  # before any model is loaded
        run(tiny_recipe(tiny_dir, video_dir, tmp_path / "missing", train__d_eval_every=4, data__eval_videos=str(tmp_path / "nope"), **common))


def test_the_held_out_pair_tool_rejudges_the_logged_pairs_and_more(tiny_dir, video_dir, tmp_path, capsys):
    """tools/heldout_pairs.py: from a run's config and checkpoint, the first d_eval_count pairs are the log's own (same
    pair-win as its line at that checkpoint); --count judges more, each with its σ′; a bad run folder is one line."""
    import importlib.util
    from pathlib import Path

    from sfv.data import find_videos

    spec = importlib.util.spec_from_file_location("heldout_pairs", Path(__file__).resolve().parents[1] / "tools" / "heldout_pairs.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    run(tiny_recipe(tiny_dir, video_dir, tmp_path / "r", train__batch_size=2, train__total_videos=4, train__checkpoint_every=4,
                    train__d_eval_every=4, train__d_eval_count=2, data__eval_videos=video_dir))
    logged = [json.loads(line) for line in (tmp_path / "r" / "heldout.jsonl").read_text().splitlines()][-1]
    assert tool.main(["--run", str(tmp_path / "r"), "--count", "6", "--cpu", "--out", str(tmp_path / "p.json")]) == 0
    result = json.loads((tmp_path / "p.json").read_text())
    assert result["pairs"] == 6 and sum(b["pairs"] for b in result["bands"]) == 6
    assert result["logged"] == {"pairs": 2, "pair_win": logged["heldout/pair_win"], "same_pairs_now": logged["heldout/pair_win"]}
    assert len(result["wrong_sigma"]) == len(result["wrong"]) == round(6 * (1 - result["pair_win"]))
    videos = [p.name for p in find_videos(Path(video_dir))]
    assert all(w["video"] == videos[w["pair"]] for w in result["wrong"])  # pair i is the i-th held-out video
    capsys.readouterr()
    assert tool.main(["--run", str(tmp_path / "nope")]) == 2
    assert tool.main(["--run", str(tmp_path / "r"), "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("sfv: error: ") for line in err), err
