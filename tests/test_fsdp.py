"""FSDP2-sharded training on CPU: 2 gloo processes (`accelerate launch --multi_gpu`) against 1 process.

One set of runs (tiny recipe, global batch 2 = 1 video per process per step, 4 steps) serves every check:
  A  2 processes, 8 videos                      — the reference: sharded parameters, losses, weights, export
  C  1 process (FSDP, a world of one), 8 videos — the same global batch: same losses and weights (tolerance)
  B  2 processes to 4 videos, then resumed on 2 — bitwise the weights of A
  P  1 process without FSDP (parallel.mode=ddp), 8 videos — FSDP computes what plain training does
  B→1  B's 2-process checkpoint resumed on 1 process (2 → 1); C→2  C's checkpoint resumed on 2 (1 → 2)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_recipe
from sfv import checkpoint
from sfv.cli import main
from sfv.train import run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
COMMON = ["parallel.mode=fsdp", "train.batch_size=2", "train.batch_per_device=1", "train.checkpoint_every=4",
          "train.log_every=2", "train.sample_every=0", "discriminator.r1_interval=3",
          "generator.lr=1.0e-3"]  # G moves ~1e-3 per step: well above the tolerances below


def _launch(tiny_dir, video_dir, run_dir, *extra):
    """2 CPU processes (gloo) as a user would start them; OMP_NUM_THREADS=1 keeps them off each other's cores."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sfv.train", "--recipe", str(REPO / "recipes/tiny_cpu.yaml"),
           f"model.teacher={tiny_dir}", f"data.videos={video_dir}", f"train.run_dir={run_dir}", *COMMON, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _alone(tiny_dir, video_dir, run_dir, *extra, resume=None):
    """1 process in this one, on 1 thread like the launched ones: the thread count changes the order of CPU
    reductions, and AdamW turns rounding-level gradient differences into ~lr-sized weight differences."""
    overrides = dict(item.split("=", 1) for item in [*COMMON, *extra])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(tiny_recipe(tiny_dir, video_dir, run_dir, **{k.replace(".", "__"): v for k, v in overrides.items()}), resume=resume)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir, video_dir):
    root = tmp_path_factory.mktemp("fsdp")
    _launch(tiny_dir, video_dir, root / "A", "train.total_videos=8", "train.export=true")
    _alone(tiny_dir, video_dir, root / "C", "train.total_videos=8", "train.export=true")
    _alone(tiny_dir, video_dir, root / "P", "train.total_videos=8", "parallel.mode=ddp")  # plain, unsharded
    _launch(tiny_dir, video_dir, root / "B", "train.total_videos=4")
    _launch(tiny_dir, video_dir, root / "B", "train.total_videos=8", "--resume", "latest")
    _alone(tiny_dir, video_dir, root / "B1", "train.total_videos=8", resume=str(root / "B/checkpoints/videos-000000004"))
    _launch(tiny_dir, video_dir, root / "C2", "train.total_videos=8", "--resume", str(root / "C/checkpoints/videos-000000004"))
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


@pytest.fixture(scope="module")
def weights(runs):
    alone = runs / "C/checkpoints/videos-000000008"
    found = {name: _everything(runs / name / "checkpoints/videos-000000008", alone) for name in ("A", "B", "B1", "C", "C2")}
    found["A@4"] = _everything(runs / "A/checkpoints/videos-000000004", alone)
    return found


def test_parameters_are_sharded_over_two_processes(runs):
    layout = json.loads((runs / "A/report.json").read_text())
    held, full = layout["generator_parameters"]["held_per_process"], layout["generator_parameters"]["full"]
    assert layout["parallel"] == "fsdp" and layout["processes"] == 2 and len(held) == 2
    assert all(h < full for h in held) and sum(held) == full, (held, full)  # each holds its shard, together all
    alone = json.loads((runs / "C/report.json").read_text())["generator_parameters"]
    assert alone["held_per_process"] == [full] and alone["full"] == full
    ckpt = runs / "A/checkpoints/videos-000000008"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["format"] == "sharded" and state["world_size"] == 2
    assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [
        "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]


def test_two_processes_follow_the_one_process_loss_trajectory(runs):
    two, one, plain = _losses(runs / "A"), _losses(runs / "C"), _losses(runs / "P")
    assert len(two) == len(one) == len(plain) == 4 and two[0].keys() == one[0].keys() == plain[0].keys() and "loss/r1" in two[0]
    diff = max(abs(a[k] - b[k]) for a, b in zip(two, one) for k in a)
    unsharded = max(abs(a[k] - b[k]) for a, b in zip(two, plain) for k in a)  # FSDP computes what plain training does
    print(f"max |loss diff| 2-process FSDP vs 1 process without FSDP = {unsharded:.2e}")
    assert unsharded < 1e-4, unsharded
    print(f"max |loss diff| 2 vs 1 process = {diff:.2e} over {len(two)} steps (loss/g {[round(r['loss/g'], 4) for r in two]})")
    assert diff < 1e-4, diff
    assert len({round(r["loss/g"], 6) for r in two}) == len(two)  # the losses do change from step to step


def test_stop_and_resume_on_two_processes_equals_the_uninterrupted_run(weights):
    a, b = weights["A"], weights["B"]
    assert a.keys() == b.keys() and len(a) > 500
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("resumed", ["B1", "C2"])  # 2 -> 1 and 1 -> 2 processes
def test_a_checkpoint_resumes_on_another_number_of_processes(weights, resumed):
    a, r = weights["A"], weights[resumed]
    assert a.keys() == r.keys()
    diff = max((a[k] - r[k]).abs().max().item() for k in a if not k.startswith("optim"))
    # the comparison can fail: the weights moved far more than that since the checkpoint it resumed from
    moved = max((weights["A@4"][k] - r[k]).abs().max().item() for k in r if k.startswith("generator."))
    print(f"max |weight diff| {resumed} vs the uninterrupted 2-process run = {diff:.2e} (moved {moved:.2e} since the checkpoint)")
    assert diff < 1e-4 and diff < 0.01 * moved, (diff, moved)


def test_sharded_checkpoint_exports_to_stock_diffusers(runs, tmp_path):
    from diffusers import StableVideoDiffusionPipeline
    from safetensors.torch import load_file

    from sfv.tiny import example_image

    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(runs / "A/checkpoints/videos-000000008"), "--out", str(out)]) == 0
    exported = load_file(out / "unet/diffusion_pytorch_model.safetensors")
    own = load_file(runs / "A/export/unet/diffusion_pytorch_model.safetensors")  # gathered by FSDP at the end of the run
    alone = load_file(runs / "C/export/unet/diffusion_pytorch_model.safetensors")  # the unsharded 1-process run
    assert exported.keys() == own.keys() and all(torch.equal(exported[k], own[k]) for k in own)
    diff = max((exported[k] - alone[k]).abs().max().item() for k in alone)
    assert diff < 1e-4, diff
    pipe = StableVideoDiffusionPipeline.from_pretrained(out, use_safetensors=True)
    frames = pipe(example_image(32, 32), height=32, width=32, num_frames=4, num_inference_steps=1,
                  max_guidance_scale=1.0, output_type="np").frames
    assert frames.shape == (1, 4, 32, 32, 3)
