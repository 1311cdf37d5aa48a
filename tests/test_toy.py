"""The toy world, the toy metric's validation, and the demo end to end on a reduced setting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sfv.metrics.toy import PARTS, score
from sfv.toy.teacher import flip_augment, load_world
from sfv.toy.world import (
    DIRECTIONS, SPEED, Obj, Scene, bucket_for_direction, direction_for_bucket, make_scene, render, trajectories, write_world,
)


# ----------------------------------------------------------------------------------------------------
# The world


def test_scenes_are_deterministic_by_seed_and_buckets_encode_the_direction():
    assert make_scene(3) == make_scene(3) and make_scene(3) != make_scene(4)
    assert np.array_equal(render(make_scene(3), 8, 32), render(make_scene(3), 8, 32))
    assert [bucket_for_direction(k) for k in range(DIRECTIONS)] == [16, 48, 80, 112, 144, 176, 208, 240]
    assert all(direction_for_bucket(bucket_for_direction(k)) == k for k in range(DIRECTIONS))


def test_trajectories_move_at_constant_velocity_and_bounce_off_the_walls():
    scene = Scene(0, 0, [Obj("disc", 0, 0.1, 0.8, 0.5)])  # moving +x, wall at x = 0.9
    x = trajectories(scene, 6)[:, 0, 0]
    assert np.allclose(x[:3], [0.8, 0.85, 0.9])  # straight on, at SPEED per frame
    assert np.allclose(x[3:], [0.85, 0.8, 0.75])  # mirrored at the wall
    y = trajectories(scene, 6)[:, 0, 1]
    assert np.allclose(y, 0.5)
    diag = trajectories(Scene(0, 1, [Obj("disc", 0, 0.1, 0.3, 0.3)]), 2)[:, 0]
    assert np.allclose(np.diff(diag, axis=0), SPEED / math.sqrt(2))  # direction 1 = 45°


def test_flip_augmentation_gives_the_rendering_of_the_mirrored_scene():
    scene = make_scene(7)
    video = torch.from_numpy(render(scene, 8, 32)).permute(0, 3, 1, 2)[None].float()
    frames, buckets = flip_augment(video, torch.tensor([float(scene.motion_bucket_id)]))
    for j, dims in enumerate([(), (-1,), (-2,), (-1, -2)]):
        mirrored = Scene(scene.background, direction_for_bucket(buckets[j].item()), [
            Obj(o.kind, o.colour, o.radius, 1 - o.x if -1 in dims else o.x, 1 - o.y if -2 in dims else o.y) for o in scene.objects])
        assert torch.equal(frames[j], torch.from_numpy(render(mirrored, 8, 32)).permute(0, 3, 1, 2).float())


# ----------------------------------------------------------------------------------------------------
# The metric: real clips best; blurred, frozen, shuffled and drifting clips clearly worse.
# These thresholds were fixed before any model was scored.


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """24 held-out scenes: real clips through sfv's video data path (mp4 64×64 -> 32×32) and their truth."""
    folder = write_world(tmp_path_factory.mktemp("world") / "eval", 24, seed=11)
    frames, buckets = load_world(folder)
    assert len(set(buckets.tolist())) > 3
    scenes = [Scene.from_json(json.loads(line)) for line in (folder / "scenes.jsonl").read_text().splitlines()]
    return frames.float().permute(0, 1, 3, 4, 2).numpy(), scenes  # [N, F, H, W, 3] in [0, 1]


def _blur(v: np.ndarray, sigma: float) -> np.ndarray:
    x = torch.from_numpy(v).permute(0, 1, 4, 2, 3).flatten(0, 1)
    k = torch.exp(-torch.arange(-2, 3).float() ** 2 / (2 * sigma**2))
    k = (k / k.sum()).repeat(3, 1)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(3, 1, 1, 5), groups=3)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(3, 1, 5, 1), groups=3)
    return x.view(*v.shape[:2], 3, *v.shape[2:4]).permute(0, 1, 3, 4, 2).numpy()


def _degraded(real: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shuffled = real.copy()
    for i in range(len(real)):  # frame 0 stays (the conditioning), the rest in random order
        shuffled[i] = real[i, np.r_[0, 1 + rng.permutation(real.shape[1] - 1)]]
    t = np.linspace(0, 1, real.shape[1])[None, :, None, None, None]
    return {
        "blur": _blur(real, 1.0),
        "freeze": np.repeat(real[:, :1], real.shape[1], axis=1),
        "shuffle": shuffled,
        "drift": np.clip(real + t * np.array([0.3, -0.2, 0.25]), 0, 1),  # colours wander away from frame 0
    }


def test_real_clips_score_best_and_every_degradation_clearly_worse(world):
    real_clips, scenes = world
    # the same true videos rendered straight at 32×32 (no H.264, no resize): real clips by another path,
    # which sets the metric's noise floor (edge softness and colour differ slightly from the mp4 data path)
    direct = np.stack([render(sc, real_clips.shape[1], real_clips.shape[2]) for sc in scenes])
    results = {"real": score(real_clips, real_clips), "real, direct render": score(direct, real_clips)}
    results.update({name: score(v, real_clips) for name, v in _degraded(real_clips).items()})
    for name, s in results.items():
        print(f"{name:20s} toy_error {s['toy_error']:.3f}  " + "  ".join(f"{k} {s[k]:.3f}" for k in PARTS))
    floor_noise = results["real, direct render"]["toy_error"]
    assert results["real"]["toy_error"] < 1e-9
    assert floor_noise < 0.2
    floor = {"blur": 0.25, "freeze": 0.4, "shuffle": 1.0, "drift": 1.0}
    for name, at_least in floor.items():
        assert results[name]["toy_error"] > at_least, (name, results[name])
        assert results[name]["toy_error"] > 2 * floor_noise, (name, results[name])
    # each degradation shows up in the part meant to catch it
    assert results["blur"]["clutter"] > 0.03 and results["blur"]["shape"] > 0.3
    assert results["freeze"]["position"] > 3.0  # px: the objects never left their start
    assert results["shuffle"]["motion"] > 3.0  # px/frame²: trajectories jump back and forth
    assert results["drift"]["clutter"] > 0.3  # colours leave the palette of frame 0


def test_score_rejects_mismatched_shapes(world):
    real_clips = world[0]
    with pytest.raises(ValueError, match="same shape"):
        score(real_clips[:, :4], real_clips)


# ----------------------------------------------------------------------------------------------------
# The demo (the README's main command) on a reduced setting


TOY_TEACHER = Path(__file__).resolve().parents[1] / "models" / "toy-svd"


def test_demo_runs_end_to_end_and_writes_a_well_formed_report(tmp_path, capsys):
    from sfv.toy.demo import main

    out = tmp_path / "demo"
    rc = main(["--out", str(out), "--teacher", str(TOY_TEACHER), "--full-student", "", "--train-videos", "8", "--eval", "3",
               "--seeds", "2", "--steps", "2,1", "train.total_videos=8", "train.log_every=4", "train.sample_every=8"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["teacher-2", "teacher-1", "teacher-1-nocfg", "student-1", "real→VAE", "real"]
    for r in report["rows"][:-2]:
        assert len(r["toy_error_per_seed"]) == 2 and all(math.isfinite(e) for e in r["toy_error_per_seed"])
        assert r["seconds_per_video"] > 0 and set(r["parts"]) == set(PARTS)
        assert r["unet_evals"] == (2 * r["steps"] if r["cfg"] > 1 else r["steps"])
    assert report["distill"]["g_steps"] == 2 and report["eval"] == {"conditionings": 3, "seeds": 2, "frames": 8, "size": 32}
    assert "student_better_than_teacher_1" in report["targets"]  # (no teacher-25 here, so no speed-up target)
    md = (out / "report.md").read_text()
    assert "| student-1 | 1 |" in md and "| teacher-2 | 4 |" in md
    from PIL import Image

    with Image.open(out / "grid-seed1.gif") as gif:
        assert gif.n_frames == 8 and gif.size == (3 * (4 * 34 + 2), 3 * (3 * 34 + 2))  # real, teacher-1 (± CFG), student-1
    assert Image.open(out / "quality-vs-time.png").size == (640, 420)
    assert (out / "distill" / "export" / "model_index.json").is_file()
    assert "student-1" in capsys.readouterr().out  # the summary table


def test_demo_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from sfv.toy.demo import main

    assert main(["--out", str(tmp_path / "d"), "--teacher", str(tmp_path / "nope")]) == 2
    assert main(["--out", str(tmp_path / "d"), "--teacher", str(TOY_TEACHER), "--steps", "4,x"]) == 2
    assert main(["--out", str(tmp_path / "d"), "--teacher", str(TOY_TEACHER), "train.totl_videos=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("sfv: error: ") for line in err)
    assert not (tmp_path / "d").exists()


def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path, capsys):
    from sfv.toy.demo import main

    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["--out", str(precious), "--teacher", str(TOY_TEACHER)]) == 2
    assert (precious / "notes.txt").read_text() == "keep me"
    assert "not a previous demo output" in capsys.readouterr().err


def test_the_teacher_tool_trains_and_saves_a_loadable_teacher(tmp_path):
    """tools/train_toy_teacher.py end to end for a few seconds on 6 videos: a diffusers folder that SVDTeacher loads,
    with the VAE's scaling factor calibrated to its latents and the training history recorded."""
    import subprocess
    import sys

    from sfv.teachers.svd import SVDTeacher

    world = write_world(tmp_path / "world", 6, seed=3)
    out = tmp_path / "teacher"
    cmd = [sys.executable, str(TOY_TEACHER.parents[1] / "tools/train_toy_teacher.py"), "--world", str(world), "--out", str(out),
           "--clips-cache", str(tmp_path / "clips.safetensors"), "--vae-minutes", "0.02", "--unet-minutes", "0.02", "--vae-batch", "1", "--unet-batch", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "clips.safetensors").is_file()
    info = json.loads((out / "toy_teacher.json").read_text())
    run = info["history"][-1]
    assert run["clips"] == 24 and run["vae"]["steps"] >= 1  # 6 videos × 4 mirror flips
    teacher = SVDTeacher.from_pretrained(out)
    assert teacher.vae.config.scaling_factor == pytest.approx(run["vae"]["scaling_factor"])
    assert tuple(teacher.unet.config.down_block_types) == ("DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal")
    bad = subprocess.run([*cmd[:3], str(tmp_path / "no-world"), "--out", str(tmp_path / "t2")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("sfv: error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t2").exists()
