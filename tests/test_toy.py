"""The toy world, the toy metric's validation, and the demo end to end on a reduced setting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sfv.toy.metric import PARTS, score, score_futures
from sfv.toy.teacher import flip_augment, load_world
from sfv.toy.world import (
    DIRECTIONS, SEPARATION, SPEED, SPEEDS, BranchScene, Obj, Scene, bucket_for_direction, bucket_for_speed,
    direction_for_bucket, make_branch_scene, make_scene, read_world, render, resample, scene_from_json,
    speed_for_bucket, trajectories, write_world,
)


# ----------------------------------------------------------------------------------------------------
# The world


def test_scenes_are_deterministic_by_seed_and_buckets_encode_the_direction():
    assert make_scene(3) == make_scene(3) and make_scene(3) != make_scene(4)
    assert np.array_equal(render(make_scene(3), 8, 32), render(make_scene(3), 8, 32))
    assert [bucket_for_direction(k) for k in range(DIRECTIONS)] == [16, 48, 80, 112, 144, 176, 208, 240]
    assert all(direction_for_bucket(bucket_for_direction(k)) == k for k in range(DIRECTIONS))


def test_v1_scenes_are_drawn_as_when_v1_was_published():
    # v1's published numbers rest on these draws: a change in make_scene's RNG order would silently change them
    sc = make_scene(3)
    assert (sc.background, sc.direction, [(o.kind, o.colour) for o in sc.objects]) == (1, 1, [("square", 1), ("square", 3), ("square", 0)])
    assert sc.objects[0].radius == 0.1332864814425747 and sc.objects[2].y == 0.44806107784661575


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
    rc = main(["--out", str(out), "--world", "v1", "--teacher", str(TOY_TEACHER), "--full-student", "", "--train-videos", "8",
               "--eval", "3", "--seeds", "2", "--steps", "2,1", "train.total_videos=8", "train.log_every=4", "train.sample_every=8"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["teacher-2", "teacher-1", "teacher-1-nocfg", "student-1", "real→VAE", "real"]
    for r in report["rows"][:-2]:
        assert len(r["toy_error_per_seed"]) == 2 and all(math.isfinite(e) for e in r["toy_error_per_seed"])
        assert r["seconds_per_video"] > 0 and set(r["parts"]) == set(PARTS)
        assert r["unet_evals"] == (2 * r["steps"] if r["cfg"] > 1 else r["steps"])
    assert report["distill"]["g_steps"] == 2 and report["eval"] == {"conditionings": 3, "seeds": 2, "frames": 8, "size": 32}
    keys = {t["key"] for t in report["targets"]}
    assert "this_run_vs_teacher_1" in keys and "speedup_vs_teacher_25" not in keys  # no teacher-25 here: no speed-up row
    assert all(t["status"] in ("met", "missed", "expected", "info") for t in report["targets"])
    md = (out / "report.md").read_text()
    assert "| student-1 | 1 |" in md and "| teacher-2 | 4 |" in md
    from PIL import Image

    with Image.open(out / "grid-seed1.gif") as gif:
        # real, teacher-1 (± CFG), student-1, under a 14-pixel band of column labels (dark text on white)
        assert gif.n_frames == 8 and gif.size == (3 * (4 * 34 + 2), 3 * (3 * 34 + 2) + 14)
        band = np.asarray(gif.convert("L"))[:14]
        assert (band < 100).any() and (band == 255).mean() > 0.7
    with Image.open(out / "quality-vs-time.png") as plot:  # drawn (not a blank canvas)
        assert len(plot.convert("RGB").getcolors(1 << 20)) > 20
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


def test_demo_sub_modes_write_to_their_own_folders():
    """Scoring a student or the teacher alone never replaces `make demo`'s report in runs/demo."""
    from sfv.toy.demo import build_parser, default_out

    def out(*argv):
        return default_out(build_parser().parse_args(list(argv)))

    assert out() == "runs/demo"
    assert out("--student", "models/toy-sfv-v2") == "runs/demo-student"
    assert out("--teacher-only") == "runs/demo-teacher"
    assert out("--world", "v1") == "runs/demo-v1"
    assert len({out(), out("--student", "x"), out("--teacher-only"), out("--world", "v1"), out("--world", "v1", "--teacher-only")}) == 5


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
    from sfv.model_dir import check_model_dir

    info = check_model_dir(out)  # the size it works at, recorded: `sfv sample` and `sfv cache` default to it
    assert (info.video.height, info.video.width, info.video.frames, info.video.fps, info.video.toy_world) == (32, 32, 8, 8, run["preset"])
    assert teacher.unet.config.sample_size * teacher.vae_scale_factor == 32  # diffusers' own default size agrees
    bad = subprocess.run([*cmd[:3], str(tmp_path / "no-world"), "--out", str(tmp_path / "t2")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("sfv: error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t2").exists()


# ----------------------------------------------------------------------------------------------------
# World v2: the bucket sets the speed, each object's direction is one of K that frame 0 does not reveal


def test_v2_buckets_set_the_speed_and_frame_0_does_not_reveal_the_directions():
    assert [bucket_for_speed(c) for c in range(len(SPEEDS))] == [32, 128, 224]
    assert all(speed_for_bucket(bucket_for_speed(c)) == c for c in range(len(SPEEDS)))
    scene = make_branch_scene(5, directions=4)
    assert scene == make_branch_scene(5, directions=4) and scene.motion_bucket_id == bucket_for_speed(scene.speed)
    a, b = render(scene.with_choice([0] * len(scene.objects)), 8, 32), render(scene.with_choice([2] * len(scene.objects)), 8, 32)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[1:], b[1:])
    futures = scene.futures(8)  # [N, K, F, 2]
    assert futures.shape == (len(scene.objects), 4, 8, 2)
    assert np.allclose(trajectories(scene, 8), futures[np.arange(len(scene.objects)), scene.choice].transpose(1, 0, 2))
    step = np.linalg.norm(np.diff(futures, axis=2), axis=-1)  # before any bounce, every future moves at the class speed
    assert np.isclose(step[..., 0], SPEEDS[scene.speed]).all()
    for n in range(len(scene.objects)):  # any two futures of an object stay apart (the nearest one is well defined)
        d = np.linalg.norm(futures[n, :, None, 1:] - futures[n, None, :, 1:], axis=-1).mean(-1)
        assert d[~np.eye(4, dtype=bool)].min() >= SEPARATION


def test_v2_directions_are_drawn_independently_and_uniformly():
    draws = np.array([resample(make_branch_scene(1), [1, r]).choice for r in range(400)])  # [400, N]
    for col in draws.T:
        assert np.bincount(col, minlength=4).min() > 70  # each of K = 4 about 100 times
    assert (draws[:, 0] != draws[:, 1]).mean() > 0.6  # not one shared direction (0.75 if independent)


def test_v2_flip_augmentation_keeps_the_speed_and_maps_directions_to_directions():
    scene = make_branch_scene(9, directions=4)
    video = torch.from_numpy(render(scene, 8, 32)).permute(0, 3, 1, 2)[None].float()
    frames, buckets = flip_augment(video, torch.tensor([float(scene.motion_bucket_id)]), preset="v2")
    assert buckets.tolist() == [scene.motion_bucket_id] * 4
    for j, (fx, fy) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        # θ_k = 2π(k + ½)/K: a mirror in x sends k to K/2 − 1 − k, a mirror in y sends k to K − 1 − k
        choice = [((1 - k) if fx else k) % 4 for k in scene.choice]
        choice = [((3 - k) if fy else k) % 4 for k in choice]
        mirrored = BranchScene(scene.background, scene.speed, 4, [
            Obj(o.kind, o.colour, o.radius, 1 - o.x if fx else o.x, 1 - o.y if fy else o.y) for o in scene.objects], choice)
        assert torch.equal(frames[j], torch.from_numpy(render(mirrored, 8, 32)).permute(0, 3, 1, 2).float())


def test_v2_world_folder_records_every_future_of_every_clip(tmp_path):
    folder = write_world(tmp_path / "w", 2, seed=4, preset="v2", directions=6, samples=3)
    info, rows = read_world(folder)
    assert info["preset"] == "v2" and info["directions"] == 6 and len(rows) == 6
    assert [(r["conditioning"], r["sample"]) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    meta = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    for row, m in zip(rows, meta):
        scene = scene_from_json(row)
        assert m["file"] == row["file"] and m["motion_bucket_id"] == scene.motion_bucket_id
        assert np.allclose(np.array(row["futures"]), scene.futures(8), atol=1e-5)  # [N, K, F, 2], the clip's among them
    assert len({tuple(r["choice"]) for r in rows[:3]}) > 1  # samples of one conditioning take different futures
    assert rows[0]["objects"] == rows[2]["objects"] and rows[0]["speed"] == rows[2]["speed"]


def test_world_bad_preset_or_directions_is_one_line_and_exit_2(tmp_path, capsys):
    from sfv.toy.world import main

    for bad in (["--preset", "v3"], ["--preset", "v2", "--directions", "3"], ["--preset", "v2", "--directions", "2"],
                ["--preset", "v2", "--directions", "x"], ["--preset", "v1", "--samples", "2"]):
        assert main(["--out", str(tmp_path / "w"), "--count", "2", *bad]) == 2, bad
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("sfv: error: ") for line in err), err
    assert "unknown toy-world preset 'v3'" in err[0] and "K must be an even number" in err[1]
    assert not (tmp_path / "w").exists()
    assert main(["--out", str(tmp_path / "w"), "--count", "1", "--preset", "v2", "--size", "32"]) == 0
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["metadata.jsonl", "scenes.jsonl", "toy00000.mp4", "world.json"]


# ----------------------------------------------------------------------------------------------------
# Metric v2: real samples best; the average of the futures, blur, mode collapse, frozen, shuffled and drifting
# samples clearly worse, each in the part meant to catch it. These floors were fixed before any model was scored.

V2_SEEDS = 4


@pytest.fixture(scope="module")
def world_v2(tmp_path_factory):
    """12 held-out conditionings × 8 real clips (each its own direction draw) through sfv's video data path:
    4 play the generated samples, 4 are the reference set."""
    folder = write_world(tmp_path_factory.mktemp("world") / "eval-v2", 12, seed=11, preset="v2", samples=2 * V2_SEEDS)
    frames, _ = load_world(folder)
    clips = frames.float().permute(0, 1, 3, 4, 2).numpy()
    clips = clips.reshape(12, 2 * V2_SEEDS, *clips.shape[1:]).swapaxes(0, 1)  # [samples, N, F, H, W, 3]
    rows = read_world(folder)[1]
    scenes = [scene_from_json(r) for r in rows if r["sample"] == 0]
    direct = np.stack([[render(scene_from_json(r), 8, 32) for r in rows if r["sample"] == s] for s in range(V2_SEEDS)])
    return clips[:V2_SEEDS], clips[V2_SEEDS:], scenes, direct.astype(np.float32) / 255


def _average_of_futures(scenes, seeds: int) -> np.ndarray:
    """The per-pixel mean over all K^N joint futures of each conditioning — what one step of regression predicts."""
    import itertools

    avg = [np.mean([render(sc.with_choice(c), 8, 32).astype(np.float32) / 255
                    for c in itertools.product(range(sc.directions), repeat=len(sc.objects))], axis=0) for sc in scenes]
    return np.repeat(np.stack(avg)[None], seeds, axis=0)


def _degraded_v2(gen: np.ndarray, scenes) -> dict[str, np.ndarray]:
    s, n, f = gen.shape[:3]
    rng = np.random.default_rng(0)
    shuffled = gen.copy()
    for i in np.ndindex(s, n):  # frame 0 stays (the conditioning), the rest in random order
        shuffled[i] = gen[i][np.r_[0, 1 + rng.permutation(f - 1)]]
    t = np.linspace(0, 1, f)[None, None, :, None, None, None]
    return {
        "average of futures": _average_of_futures(scenes, s),
        "blur": _blur(gen.reshape(s * n, *gen.shape[2:]), 1.0).reshape(gen.shape),
        "collapse": np.repeat(gen[:1], s, axis=0),  # one future for every seed (a real one: only diversity is wrong)
        "freeze": np.repeat(gen[:, :, :1], f, axis=2),
        "shuffle": shuffled,
        "drift": np.clip(gen + t * np.array([0.3, -0.2, 0.25]), 0, 1),
    }


V2_COLUMNS = ("toy_error", "precision", "position", "shape", "clutter", "motion", "speed", "jitter", "diversity", "coverage",
              "conditioning", "frechet", "energy", "kl", "edge")


def _dim(v: np.ndarray, keep: float) -> np.ndarray:
    """Objects dimmed toward the background (frames 1…F−1): every pixel at bg + keep·(pixel − bg), bg the frame's
    background colour; the background itself and frame 0 (the conditioning) unchanged."""
    from sfv.toy.world import BACKGROUNDS

    corner = v[:, :, :1, :2, :2].mean(axis=(2, 3, 4))  # [S, N, 3]: a corner of frame 0 is background
    bg = BACKGROUNDS[np.linalg.norm(corner[..., None, :] - BACKGROUNDS, axis=-1).argmin(-1)].astype(np.float32)
    out = bg[:, :, None, None, None] + keep * (v - bg[:, :, None, None, None])
    out[:, :, 0] = v[:, :, 0]
    return out


def test_v2_real_samples_score_best_and_every_degradation_clearly_worse_in_its_own_part(world_v2):
    gen, ref, scenes, direct = world_v2
    results = {"real": score_futures(gen, scenes, ref), "real, direct render": score_futures(direct, scenes, ref)}
    results.update({name: score_futures(v, scenes, ref) for name, v in _degraded_v2(gen, scenes).items()})
    print(f"\n{'':20s}" + " ".join(f"{c[:9]:>9s}" for c in V2_COLUMNS))
    for name, s in results.items():
        print(f"{name:20s}" + " ".join(f"{s[c]:9.3f}" for c in V2_COLUMNS))
    real, noise = results["real"], results["real, direct render"]["toy_error"]
    assert real["toy_error"] < 0.1 and noise < 0.2 and real["diversity"] < 0.3
    floor = {"average of futures": 2.0, "blur": 0.15, "collapse": 0.15, "freeze": 0.5, "shuffle": 1.0, "drift": 1.0}
    for name, at_least in floor.items():
        assert results[name]["toy_error"] > at_least, (name, results[name])
        assert results[name]["toy_error"] > 2 * max(real["toy_error"], noise), (name, results[name])
    r = {name: s for name, s in results.items()}
    # each failure in the part meant to catch it
    assert r["average of futures"]["precision"] > 1.0 and r["average of futures"]["shape"] > 0.6  # faint copies: the object is gone
    assert r["blur"]["precision"] > 4 * real["precision"] and r["blur"]["clutter"] > 0.03
    assert r["collapse"]["diversity"] > 0.8 and r["collapse"]["coverage"] < 0.3 < real["coverage"]
    assert r["collapse"]["precision"] < 2 * real["precision"] + 0.02  # every sample is a real clip: nothing else is wrong
    assert r["freeze"]["speed"] > 1.0  # px/frame: the commanded speed is lost
    assert r["shuffle"]["jitter"] > 3.0  # px/frame²
    assert r["drift"]["clutter"] > 0.3  # colours leave frame 0's palette


def test_v2_energy_score_and_direction_kl_rank_real_draws_best(world_v2):
    """The energy score ES = E‖X − y‖ − ½E‖X − X′‖ (pixels) and the KL of each object's chosen directions against
    uniform, validated before any model was scored: true draws score best on both (their KL near what S true draws
    give in expectation); the average of the futures, a collapse onto one future, a frozen clip, shuffled frames and
    drifting colours score clearly worse on ES; collapse, the average and freezing are the KL's failures. Dim or soft
    objects: precision is clearly worse than real (it does not reward them), and the edge energy says by how much."""
    gen, ref, scenes, _ = world_v2
    degraded = _degraded_v2(gen, scenes)
    degraded["dim"] = _dim(gen, 0.85)  # objects at 85 % of their contrast against the background
    results = {"real": score_futures(gen, scenes, ref), **{name: score_futures(v, scenes, ref) for name, v in degraded.items()}}
    real = results["real"]
    print(f"\n{'':20s}" + " ".join(f"{c:>9s}" for c in ("energy", "kl", "edge", "precision")))
    for name, s in results.items():
        print(f"{name:20s}" + " ".join(f"{s[c]:9.3f}" for c in ("energy", "kl", "edge", "precision")))
    assert abs(real["kl"] - real["kl_expected"]) < 0.1 and real["kl"] < 0.6  # S = 4 true draws: E[KL] = 0.47
    for name in ("average of futures", "collapse", "freeze", "shuffle", "drift"):
        assert results[name]["energy"] > 1.2 * real["energy"], (name, results[name]["energy"], real["energy"])
    assert results["collapse"]["energy"] > results["average of futures"]["energy"] > real["energy"]
    assert results["blur"]["energy"] > real["energy"] and results["dim"]["energy"] > real["energy"]  # small, but worse
    for name in ("average of futures", "collapse", "freeze"):  # one direction for every seed (or none): ln K = 1.386
        assert results[name]["kl"] > 1.2, (name, results[name]["kl"])
    for name in ("blur", "dim"):  # soft or dim objects still pick their directions like the world
        assert results[name]["kl"] < 0.6
    assert 0.95 < real["edge"] < 1.05 and results["blur"]["edge"] < 0.6 and results["dim"]["edge"] < 0.8
    assert results["dim"]["precision"] > 4 * real["precision"] and results["blur"]["precision"] > 4 * real["precision"]


def test_v2_diversity_is_zero_for_true_draws_and_one_for_a_fixed_direction(world_v2):
    gen, ref, scenes, _ = world_v2
    # the reference set scored as samples (other true draws) is as diverse as the world; a generator that picks
    # the same direction for every object and seed is not, though each of its videos is a possible future
    assert score_futures(ref, scenes, gen)["diversity"] < 0.3
    fixed = np.stack([np.stack([render(sc.with_choice([1] * len(sc.objects)), 8, 32) for sc in scenes])] * V2_SEEDS)
    s = score_futures(fixed, scenes, ref)
    assert s["diversity"] > 0.95 and s["coverage"] == 0.25 and s["position"] < 0.3


def test_v2_score_rejects_mismatched_shapes_and_single_seeds(world_v2):
    gen, ref, scenes, _ = world_v2
    with pytest.raises(ValueError, match="share"):
        score_futures(gen[:, :, :4], scenes, ref)
    with pytest.raises(ValueError, match="at least 2 samples"):
        score_futures(gen[:1], scenes, ref)


def test_the_teacher_tool_reads_the_world_preset_and_keeps_it_in_the_clips_cache(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_toy_teacher", TOY_TEACHER.parents[1] / "tools/train_toy_teacher.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    v2 = write_world(tmp_path / "v2", 2, seed=3, preset="v2", size=32)
    cache = tmp_path / "clips.safetensors"
    frames, buckets, preset = tool.load_clips(str(v2), None, str(cache))
    assert preset == "v2" and frames.shape == (2, 8, 3, 32, 32) and set(buckets.tolist()) <= {32.0, 128.0, 224.0}
    again = tool.load_clips(str(tmp_path / "absent"), None, str(cache))  # from the cache alone
    assert again[2] == "v2" and torch.equal(again[0], frames)
    assert tool.load_clips(str(write_world(tmp_path / "v1", 1, size=32)), None, None)[2] == "v1"


def test_demo_distils_and_scores_on_world_v2_by_default(tmp_path):
    """The default demo (world v2, recipes/toy.yaml) on a reduced setting: distillation with D judged on held-out
    pairs of the eval world, metric v2, the branching grid and D's held-out plot."""
    from PIL import Image

    from sfv.toy.demo import main
    from sfv.toy.report import V2_COLUMNS

    out = tmp_path / "demo-v2"
    rc = main(["--out", str(out), "--teacher", str(TOY_TEACHER), "--full-student", "", "--paper-student", "", "--recon-student", "",
               "--train-videos", "8", "--eval", "2", "--seeds", "2", "--references", "2", "--steps", "1",
               "train.total_videos=16", "train.log_every=8", "train.sample_every=16", "train.d_eval_every=8", "train.d_eval_count=2"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["world"] == {"preset": "v2", "directions": 4} and report["recipe"] == "recipes/toy.yaml"
    assert report["distill"]["g_steps"] == 2  # 16 videos: 2 G steps of 2 D steps each (recipes/toy.yaml), batch 4
    assert report["distill"]["data"] == "latent cache" and (out / "cache" / "index.json").is_file()  # encoded once
    assert [r["name"] for r in report["rows"]] == ["teacher-1", "teacher-1-nocfg", "student-1", "real→VAE", "real"]
    for r in report["rows"]:
        assert set(r["parts"]) == set(V2_COLUMNS) and math.isfinite(r["toy_error"])
    assert report["rows"][-1]["toy_error"] < report["rows"][0]["toy_error"]  # true draws beat an untrained-for-v2 teacher
    assert read_world(out / "world-eval")[0] == {"preset": "v2", "count": 2, "seed": 2, "frames": 8, "size": 64, "fps": 8,
                                                 "samples": 2, "directions": 4}
    heldout = [json.loads(line) for line in (out / "distill" / "heldout.jsonl").read_text().splitlines()]
    assert [h["videos"] for h in heldout] == [0, 8, 16] and all(0 <= h["heldout/pair_win"] <= 1 for h in heldout)
    assert report["d_heldout_plot"]
    with Image.open(out / "d-heldout.png") as plot:  # drawn (not a blank canvas)
        assert len(plot.convert("RGB").getcolors(1 << 20)) > 20
    log = [json.loads(line) for line in (out / "distill" / "log.jsonl").read_text().splitlines()]
    assert all(0 < e["time/load_share"] < e["time/data_share"] < 1 for e in log if "time/load_share" in e)
    with Image.open(out / "grid-branching.gif") as gif:  # rows: 2 conditionings × 2 seeds; real | teacher-1 without CFG | student-1, labelled
        assert gif.n_frames == 8 and gif.size == (3 * (3 * 34 + 2), 3 * (4 * 34 + 2) + 14)
    assert "| student-1 | 1 |" in (out / "report.md").read_text()


def test_demo_scores_the_teacher_only(tmp_path):
    from sfv.toy.demo import main

    out = tmp_path / "teacher-v2"
    assert main(["--out", str(out), "--teacher", str(TOY_TEACHER), "--teacher-only", "--eval", "2", "--seeds", "2",
                 "--references", "2", "--steps", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["distill"]["g_steps"] == 0 and not (out / "world-train").exists()
    assert [r["name"] for r in report["rows"]] == ["teacher-1", "teacher-1-nocfg", "real→VAE", "real"]


def test_demo_bad_world_preset_or_directions_is_one_line_and_exit_2(tmp_path, capsys):
    from sfv.toy.demo import main

    assert main(["--out", str(tmp_path / "d"), "--teacher", str(TOY_TEACHER), "--world", "v9"]) == 2
    assert main(["--out", str(tmp_path / "d"), "--teacher", str(TOY_TEACHER), "--world", "v2", "--directions", "5"]) == 2
    assert main(["--out", str(tmp_path / "d"), "--teacher", str(TOY_TEACHER), "--world", "v2", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("sfv: error: ") for line in err), err
    assert not (tmp_path / "d").exists()


def test_the_ablation_tool_distils_each_row_and_tabulates_them(tmp_path, capsys):
    """tools/toy_ablation.py on a reduced setting: two rows × one seed through the unchanged trainer, scored with
    metric v2 on held-out conditionings; a rerun skips finished runs; bad rows or a v1 world are one line, exit 2."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_ablation", Path(__file__).resolve().parents[1] / "tools" / "toy_ablation.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    world = write_world(tmp_path / "world", 4, seed=1, preset="v2")
    args = ["--world", str(world), "--out", str(tmp_path / "abl"), "--teacher", str(TOY_TEACHER), "--rows", "sfv,recon",
            "--seeds", "0", "--teacher-steps", "1", "--eval", "2", "--samples", "2",
            "train.total_videos=4", "train.log_every=4", "train.sample_every=4", "train.d_eval_every=4", "train.d_eval_count=2"]
    assert tool.main(args) == 0
    report = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [t["row"] for t in report["table"]] == ["teacher-1 (CFG)", "SF-V (both terms)", "reconstruction only", "real→VAE", "real"]
    sfv_row, recon_row = report["table"][1], report["table"][2]
    assert recon_row["g_adv_over_rec"] == [0.0] and sfv_row["g_adv_over_rec"][0] > 0  # the switch reached G
    assert all(math.isfinite(v) for t in report["table"] for v in t["toy_error"])
    mtime = (tmp_path / "abl" / "sfv-s0" / "export" / "model_index.json").stat().st_mtime
    assert tool.main(args) == 0 and (tmp_path / "abl" / "sfv-s0" / "export" / "model_index.json").stat().st_mtime == mtime
    score_only = [a if a != "sfv,recon" else "recon,adv" for a in args]  # adv has no finished run: left out
    assert tool.main([*score_only, "--score-only", "--teacher-steps", ""]) == 0 and not (tmp_path / "abl" / "adv-s0").exists()
    assert [t["row"] for t in json.loads((tmp_path / "abl" / "ablation.json").read_text())["table"]] == ["reconstruction only", "real→VAE", "real"]
    capsys.readouterr()
    assert tool.main([*args[:4], "--rows", "sfv,nope"]) == 2
    assert tool.main(["--world", str(write_world(tmp_path / "v1", 1)), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("sfv: error: ") for line in err), err
    assert not (tmp_path / "x").exists()


def test_the_score_tool_repeats_the_demos_score_and_scores_independent_blocks(tmp_path, capsys):
    """tools/score_exports.py: with the demo's settings its first block is evaluate_v2's score of the same model on the
    same held-out world, to the last digit; more blocks draw fresh samples, each scored alone; a run folder stands
    for its export; bad input is one line and exit 2."""
    import importlib.util
    from argparse import Namespace

    from sfv.toy.evaluate import evaluate_v2

    spec = importlib.util.spec_from_file_location("score_exports", Path(__file__).resolve().parents[1] / "tools" / "score_exports.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    teacher, student = (Path(__file__).resolve().parents[1] / "models" / name for name in ("toy-svd-v2", "toy-sfv-v2"))
    world = write_world(tmp_path / "demo" / "world-eval", 3, seed=5, size=32, preset="v2", samples=2)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "export").symlink_to(student)
    assert tool.main(["--world", str(world), "--students", str(tmp_path / "run"), "--student-steps", "1,2", "--teacher",
                      str(teacher), "--teacher-steps", "2", "--samples", "2", "--blocks", "2", "--out", str(tmp_path / "s.json")]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    assert list(rows) == ["teacher-2", "run-1", "run-2"]
    methods = [{"name": "teacher-2", "model": str(teacher), "steps": 2, "cfg": 3.0, "unet_evals": 4},
               {"name": "run-1", "model": str(tmp_path / "run" / "export"), "steps": 1, "cfg": 1.0, "unet_evals": 1, "student_levels": True}]
    _, demo = evaluate_v2(Namespace(seeds=2, references=2), methods, tmp_path / "demo")
    for d in demo[:2]:
        assert rows[d["name"]]["blocks"][0]["toy_error"] == d["toy_error"]
        assert rows[d["name"]]["blocks"][0]["energy"] == d["parts"]["energy"]
    for r in rows.values():
        a, b = (blk["toy_error"] for blk in r["blocks"])
        assert a != b and r["toy_error"] == pytest.approx((a + b) / 2)
    capsys.readouterr()
    assert tool.main(["--world", str(tmp_path / "nope"), "--teacher-steps", "2"]) == 2
    assert tool.main(["--world", str(world), "--students", str(tmp_path)]) == 2
    assert tool.main(["--world", str(world), "--teacher-steps", "0"]) == 2
    assert tool.main(["--world", str(world), "--teacher-steps", "2", "--samples", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("sfv: error: ") for line in err), err


def test_batched_demo_generation_matches_one_video_at_a_time(tmp_path):
    """The demo generates each seed's conditionings in one batch (after TIMED_VIDEOS single timed calls); each video
    draws from its own generator in the single-video order, so it equals the one-at-a-time video up to rounding."""
    from PIL import Image

    from sfv.teachers.svd import SVDTeacher
    from sfv.toy.evaluate import TIMED_VIDEOS, _generate, _timed_video
    from sfv.toy.world import write_world

    svd = SVDTeacher.from_pretrained(TOY_TEACHER, torch_dtype=torch.float32)
    frames, buckets = load_world(write_world(tmp_path / "w", TIMED_VIDEOS + 2, seed=5, preset="v2"))
    images = [Image.fromarray((frames[i, 0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for i in range(len(frames))]
    method = {"steps": 2, "cfg": 3.0}
    videos, times = _generate(svd, images, buckets, method, 64, 8, seeds=2)
    assert videos.shape == (2, len(images), 8, 64, 64, 3) and len(times) == TIMED_VIDEOS
    for seed in range(2):
        for i in range(len(images)):
            single = _timed_video(svd, images[i], buckets[i], method, 64, 8, 1000 * seed + i)[0]
            assert np.abs(videos[seed, i].astype(int) - single.astype(int)).max() <= 1, (seed, i)
    assert np.abs(videos[0].astype(int) - videos[1].astype(int)).mean() > 1  # the seeds really differ


def test_demo_reports_the_committed_student_with_the_fast_decoder(tmp_path):
    """World v2's defaults: the committed SF-V student is also scored decoding with the committed toy decoder
    (models/toy-decoder-v2), beside the same student with the stock VAE decoder, with the targets' ratios."""
    from sfv.toy.demo import main

    out = tmp_path / "demo"
    assert main(["--out", str(out), "--student", "models/toy-sfv-v2", "--paper-student", "", "--recon-student", "", "--eval", "2", "--seeds", "2",
                 "--references", "2", "--steps", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    by = {r["name"]: r for r in report["rows"]}
    assert by["student-full-1-tiny-decoder"]["decoder"] == "models/toy-decoder-v2"
    ratio = next(t["value"] for t in report["targets"] if t["key"] == "tiny_decoder_vs_vae")
    assert ratio == pytest.approx(by["student-full-1-tiny-decoder"]["toy_error"] / by["student-full-1"]["toy_error"], abs=1e-3)
    # the same student's videos, decoded by a decoder trained to match the VAE's frames: per-video precision agrees
    # (the headline's Fréchet and diversity parts over 2 × 2 videos are too few to compare here)
    precision = by["student-full-1-tiny-decoder"]["parts"]["precision"] / by["student-full-1"]["parts"]["precision"]
    assert 0.8 < precision < 1.25
    assert "| student-full-1-tiny-decoder | 1 |" in (out / "report.md").read_text()


def test_demo_missing_fast_decoder_is_one_line_before_any_work(tmp_path, capsys):
    from sfv.toy.demo import main

    assert main(["--out", str(tmp_path / "d"), "--decoder", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a fast decoder folder" in err[0] and not (tmp_path / "d").exists()


def test_the_reports_g_steps_come_from_the_export_else_from_the_recipes_arithmetic(tmp_path):
    """demo report's distill.g_steps: the student's own count (sfv.json); without one, each G step follows
    steps_per_g D steps of a batch each, and none comes before discriminator.warmup_videos are read."""
    from sfv.config import load_recipe
    from sfv.toy.demo import _g_steps

    recipe = load_recipe(None, ["train.total_videos=2640", "train.batch_size=4", "discriminator.steps_per_g=2",
                                "discriminator.warmup_videos=240"])
    assert _g_steps(tmp_path, recipe) == 330 - 30
    recipe.discriminator.warmup_videos = 0
    assert _g_steps(tmp_path, recipe) == 330
    recipe.discriminator.warmup_videos = 10_000  # longer than the run: D alone throughout
    assert _g_steps(tmp_path, recipe) == 0
    (tmp_path / "sfv.json").write_text(json.dumps({"g_steps": 7}))
    assert _g_steps(tmp_path, recipe) == 7
