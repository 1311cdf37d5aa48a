"""FSDP2-sharded training on CPU: 2 gloo processes (`accelerate launch --multi_gpu`) against 1 process.

What each comparison may expect. Runs that do the same computation (same number of processes, same threads, so
the same reduction order) must agree bit for bit. Runs that do a different computation (1 vs 2 processes) differ
at rounding level in every gradient, and AdamW turns rounding-level gradient differences into ±lr-sized steps
wherever a gradient is near zero (its first steps move each weight by ≈ lr·sign(g)); so two such trajectories
compared after a few steps can differ by ~lr on some CPUs and not on others. Across process counts this module
therefore compares only quantities computed from the same state, before any optimiser step could amplify:
the state a checkpoint loads into (bitwise), the losses of the step that follows it, and one step's gradients.

Runs (tiny recipe, global batch 2 = 1 video per process per step, 1 thread per process):
  A   2 processes, 8 videos                         — the reference: sharded parameters, losses, checkpoints, export
  B   2 processes to 4 videos, then resumed on 2     — the same computation as A: bitwise A's weights
  C   1 process (FSDP, a world of one), 6 videos     — the other process count: its checkpoint at 4 and its step 3
  B1  B's checkpoint at 4 resumed on 1 process (2 → 1), 6 videos; C2  C's checkpoint at 4 resumed on 2 (1 → 2)
  R1, R2  A's checkpoint loaded on 1 process, C's loaded on 2, and saved straight back (tests/fsdp_probe.py reload)
  GF, GP  one step's gradients: 2-process FSDP, and 1 process without FSDP (tests/fsdp_probe.py grads)
Every run has DMD on (recipe `dmd`, one fake-score update per G step), so DMD's fake-score network and its
optimiser state are sharded, checkpointed, resumed and resharded with G's in each of these comparisons.
"""

import json
from pathlib import Path

import pytest
import torch

from conftest import launch_two, tiny_recipe
from sfv import checkpoint
from sfv.cli import main
from sfv.train import run

import fsdp_probe

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
COMMON = ["parallel.mode=fsdp", "train.batch_size=2", "train.batch_per_device=1", "train.checkpoint_every=4",
          "train.log_every=2", "train.sample_every=0", "discriminator.r1_interval=3",
          "generator.lr=1.0e-3",  # G moves ~1e-3 per step: the checkpoints at 4 and 8 videos differ clearly
          "dmd.weight=1.0", "dmd.fake_steps_per_g=1", "dmd.fake_lr=1.0e-3",  # DMD's fake-score network, sharded like G
          "train.export=false"]  # only A exports (its own override)
# Losses computed before any optimiser step of their training step: the D losses, and G's reconstruction term
# (G is not yet updated in the G phase). loss/g and loss/g_adv read D after its update, so they are left out.
BEFORE_UPDATE = ("loss/d", "loss/d_hinge", "loss/r1", "loss/g_rec")
ROUNDING = 1e-5  # relative; float32 rounding of these sums is ~1e-7, a real difference (half a batch, a stale shard) is ~1e-1
# The D lr for the gradient probe: its first update is below float32 resolution, so D's heads stay bitwise the
# same and G's gradient (which reads D) is computed against identical heads in both runs.
FROZEN_D = "discriminator.lr=1.0e-20"
FROZEN_FAKE = "dmd.fake_lr=1.0e-20"  # the same for DMD's fake score, which G's DMD term reads after its first update


def _launch(tiny_dir, video_dir, run_dir, *extra, script=("-m", "sfv.train")):
    """2 CPU processes (gloo) as a user would start them; OMP_NUM_THREADS=1 keeps them off each other's cores."""
    proc = launch_two(*script, "--recipe", REPO / "recipes/tiny_cpu.yaml", f"model.teacher={tiny_dir}", f"data.videos={video_dir}",
                      f"train.run_dir={run_dir}", *COMMON, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _probe(mode, *args):
    """tests/fsdp_probe.py on 2 processes: `mode` and its arguments come before the recipe."""
    return ("tests/fsdp_probe.py", mode, *map(str, args))


def _one_thread(fn):
    """In this process on 1 thread like the launched ones (the thread count changes the order of CPU reductions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def _recipe(tiny_dir, video_dir, run_dir, *extra):
    overrides = dict(item.split("=", 1) for item in [*COMMON, *extra])
    return tiny_recipe(tiny_dir, video_dir, run_dir, **{k.replace(".", "__"): v for k, v in overrides.items()})


def _alone(tiny_dir, video_dir, run_dir, *extra, resume=None):
    _one_thread(lambda: run(_recipe(tiny_dir, video_dir, run_dir, *extra), resume=resume))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir, video_dir):
    root = tmp_path_factory.mktemp("fsdp")
    at4 = "checkpoints/videos-000000004"
    _launch(tiny_dir, video_dir, root / "A", "train.total_videos=8", "train.export=true")
    _alone(tiny_dir, video_dir, root / "C", "train.total_videos=6")
    _launch(tiny_dir, video_dir, root / "B", "train.total_videos=4")
    _launch(tiny_dir, video_dir, root / "B", "train.total_videos=8", "--resume", "latest")
    _alone(tiny_dir, video_dir, root / "B1", "train.total_videos=6", resume=str(root / "B" / at4))
    _launch(tiny_dir, video_dir, root / "C2", "train.total_videos=6", "--resume", str(root / "C" / at4))
    _launch(tiny_dir, video_dir, root / "unused", script=_probe("reload", root / "C" / at4, root / "R2"))
    _one_thread(lambda: fsdp_probe.reload(root / "A" / at4, root / "R1", _recipe(tiny_dir, video_dir, root / "unused")))
    _launch(tiny_dir, video_dir, root / "GF", "train.total_videos=2", FROZEN_D, FROZEN_FAKE,
            script=_probe("grads", root / "GF.safetensors"))
    _one_thread(lambda: fsdp_probe.grads(root / "GP.safetensors", _recipe(
        tiny_dir, video_dir, root / "GP", "train.total_videos=2", FROZEN_D, FROZEN_FAKE, "parallel.mode=ddp")))
    return root


def _losses(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k.startswith("loss/")} for r in rows]


def _everything(ckpt: Path, alone: Path) -> dict[str, torch.Tensor]:
    """Every model and optimiser tensor of a sharded checkpoint, whole (consolidated on this one process);
    `alone`: a checkpoint written by one process, whose single file names every tensor with its full shape."""
    from safetensors import safe_open

    like: dict = {}
    with safe_open(next((alone / "sharded").glob("*.safetensors")), "pt") as f:
        for key in f.keys():
            name, rest = key.split(".", 1)
            like.setdefault(name, {})[rest] = f.get_tensor(key)
    full = checkpoint.read_full(ckpt, like)
    return {f"{name}.{k}": v for name, tensors in full.items() for k, v in tensors.items()}


AT4, AT8 = "checkpoints/videos-000000004", "checkpoints/videos-000000008"


@pytest.fixture(scope="module")
def weights(runs):
    alone = runs / "C" / AT4
    found = {name: _everything(runs / name / AT8, alone) for name in ("A", "B")}
    found.update({f"{name}@4": _everything(runs / name / AT4, alone) for name in ("A", "B", "C")})
    found.update({name: _everything(runs / name / "videos-000000004", alone) for name in ("R1", "R2")})
    return found


def test_parameters_are_sharded_over_two_processes(runs):
    layout = json.loads((runs / "A/report.json").read_text())
    held, full = layout["generator_parameters"]["held_per_process"], layout["generator_parameters"]["full"]
    assert layout["parallel"] == "fsdp" and layout["processes"] == 2 and len(held) == 2
    assert all(h < full for h in held) and sum(held) == full, (held, full)  # each holds its shard, together all
    alone = json.loads((runs / "C/report.json").read_text())["generator_parameters"]
    assert alone["held_per_process"] == [full] and alone["full"] == full
    ckpt = runs / "A" / AT8
    state = json.loads((ckpt / "state.json").read_text())
    assert state["format"] == "sharded" and state["world_size"] == 2
    assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [
        "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]


def _group(name: str) -> str:
    """A parameter's group for the report: the UNet block or D part it belongs to (d/heads.3.…, g/unet.down_blocks.1…)."""
    parts = name.split(".")
    return ".".join(parts[:3] if parts[1] in ("down_blocks", "up_blocks", "heads") else parts[:2])


def test_one_step_gradients_under_two_process_fsdp_equal_the_unsharded_ones(runs):
    """FSDP2 computes what plain training does: the gradients of the first D and G updates, parameter by parameter,
    2-process FSDP (gathered from the shards) against 1 process without FSDP. Both start from the same weights and
    data, so only the order of the sums differs; the tolerance is relative to each group's largest gradient."""
    from safetensors.torch import load_file

    fsdp, plain = load_file(runs / "GF.safetensors"), load_file(runs / "GP.safetensors")
    assert fsdp.keys() == plain.keys() and {k[0] for k in fsdp} == {"d", "f", "g"} and len(fsdp) > 300
    groups: dict[str, list] = {}
    for k in plain:
        assert fsdp[k].shape == plain[k].shape, k
        groups.setdefault(_group(k), []).append(((fsdp[k] - plain[k]).abs().max().item(), plain[k].abs().max().item()))
    print("\nmax |grad diff| 2-process FSDP vs unsharded, per parameter group (max |grad| in the group):")
    for name, rows in groups.items():
        diff, scale = max(d for d, _ in rows), max(s for _, s in rows)
        print(f"  {name:32s} {diff:.2e}  ({scale:.2e})")
        assert diff <= ROUNDING * scale, (name, diff, scale)
    # the comparison can fail: nearly every gradient is non-zero (a dropped reduce or a stale shard would show)
    assert sum(plain[k].abs().max().item() > 0 for k in plain) > 0.9 * len(plain)


def _before_update(row: dict) -> dict:
    return {k: row[k] for k in BEFORE_UPDATE if k in row}


def _agree(a: dict, b: dict) -> float:
    """Largest relative difference of the losses two runs computed from the same state."""
    assert a.keys() == b.keys() and {"loss/d", "loss/g_rec"} <= a.keys(), (a.keys(), b.keys())
    return max(abs(a[k] - b[k]) / max(1.0, abs(a[k])) for k in a)


def test_two_processes_compute_the_one_process_losses_at_the_first_step(runs):
    two, one = _losses(runs / "A"), _losses(runs / "C")
    assert len(two) == 4 and len(one) == 3 and two[0].keys() == one[0].keys() and "loss/r1" in two[0]
    diff = _agree(_before_update(two[0]), _before_update(one[0]))
    print(f"max relative loss diff at step 1, 2 vs 1 process = {diff:.2e} ({_before_update(two[0])})")
    assert diff < ROUNDING, diff
    assert len({round(r["loss/g"], 6) for r in two}) == len(two)  # the losses do change from step to step


def test_stop_and_resume_on_two_processes_equals_the_uninterrupted_run(weights):
    """The same computation (2 processes, 1 thread each) interrupted and resumed: bitwise."""
    for a, b in ((weights["A@4"], weights["B@4"]), (weights["A"], weights["B"])):
        assert a.keys() == b.keys() and len(a) > 500
        assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("reloaded, source", [("R1", "A@4"), ("R2", "C@4")])  # 2 -> 1 and 1 -> 2 processes
def test_a_checkpoint_loads_exactly_on_another_number_of_processes(runs, weights, reloaded, source):
    """What a resume on another number of processes starts from: every model and optimiser tensor of the
    checkpoint, resharded on load and saved straight back, bit for bit; the optimisers' settings too."""
    r, s = weights[reloaded], weights[source]
    assert r.keys() == s.keys() and len(r) > 500 and any(k.startswith("optim_g.") for k in r)
    assert any(k.startswith("fake_score.") for k in r) and any(k.startswith("optim_fake.") for k in r)  # DMD's network
    assert [k for k in r if not torch.equal(r[k], s[k])] == []
    ckpt = runs / {"A@4": "A", "C@4": "C"}[source] / AT4
    for name in ("optim_g.json", "optim_d.json", "optim_fake.json"):
        assert json.loads((runs / reloaded / "videos-000000004" / name).read_text()) == json.loads((ckpt / name).read_text())
    # the comparison can fail: the weights at 8 videos differ from those at 4
    assert any(not torch.equal(weights["A"][k], s[k]) for k in s if k.startswith("generator."))


@pytest.mark.parametrize("resumed, original", [("B1", "A"), ("C2", "C")])  # 2 -> 1 and 1 -> 2 processes
def test_a_run_resumed_on_another_number_of_processes_takes_the_next_step_from_the_same_state(runs, resumed, original):
    """The resumed run's first step (videos 4 -> 6) starts from the checkpoint's state, as the original run's third
    step did: their losses agree at rounding level. Later steps are different trajectories (see the docstring)."""
    after, before = _losses(runs / resumed), _losses(runs / original)
    assert len(after) == 1
    diff = _agree(_before_update(after[0]), _before_update(before[2]))
    print(f"max relative loss diff, first step after resuming {resumed} vs {original}'s step 3 = {diff:.2e}")
    assert diff < ROUNDING, diff
    state = json.loads((runs / resumed / "checkpoints/videos-000000006/state.json").read_text())
    assert state["state"]["videos"] == 6 and state["state"]["g_steps"] == 3
    # the comparison can fail: the step before differs (other weights, other data) by far more than rounding
    assert _agree(_before_update(after[0]), _before_update(before[1])) > 100 * ROUNDING


def test_sharded_checkpoint_exports_to_stock_diffusers(runs, tmp_path):
    from diffusers import StableVideoDiffusionPipeline
    from safetensors.torch import load_file

    from sfv.tiny import example_image

    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(runs / "A" / AT8), "--out", str(out)]) == 0
    exported = load_file(out / "unet/diffusion_pytorch_model.safetensors")
    own = load_file(runs / "A/export/unet/diffusion_pytorch_model.safetensors")  # gathered by FSDP at the end of the run
    assert exported.keys() == own.keys() and all(torch.equal(exported[k], own[k]) for k in own)
    pipe = StableVideoDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    frames = pipe(example_image(32, 32), height=32, width=32, num_frames=4, num_inference_steps=1,
                  max_guidance_scale=1.0, output_type="np").frames
    assert frames.shape == (1, 4, 32, 32, 3)
