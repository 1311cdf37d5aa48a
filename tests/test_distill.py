"""`sfv distill` / `accelerate launch -m sfv.train` end to end on the tiny SVD and real mp4 files."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import launch_two
from sfv.cli import main

REPO = Path(__file__).resolve().parents[1]


def _args(tiny_dir, videos, run_dir, *extra):
    return ["distill", "--recipe", str(REPO / "recipes/tiny_cpu.yaml"), f"model.teacher={tiny_dir}", f"data.videos={videos}",
            f"train.run_dir={run_dir}", *extra]


def _scalars(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {"scalars": set(acc.Tags()["scalars"]), "images": set(acc.Tags()["images"])}


def test_tiny_run_logs_samples_exports_and_skips_a_corrupt_video(tmp_path, tiny_dir, video_dir, capsys):
    videos = tmp_path / "videos"
    shutil.copytree(video_dir, videos)
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    run_dir = tmp_path / "run"
    rc = main(_args(tiny_dir, videos, run_dir, "train.total_videos=12", "train.batch_size=2", "train.log_every=4",
                    "train.sample_every=8", "train.checkpoint_every=8"))
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["videos"] == 12 and len(report["skipped_files"]) == 1 and "corrupt.mp4" in report["skipped_files"][0]
    assert "skipped 1 unusable video file(s)" in out
    tags = _scalars(run_dir)
    assert {"loss/d", "loss/g", "loss/g_adv", "loss/g_rec", "loss/r1", "logits/real_mean", "logits/fake_mean",
            "logits/sign_accuracy", "grad_norm/d", "grad_norm/g", "speed/videos_per_s", "train/skipped_steps",
            "time/d_share"} <= tags["scalars"]
    assert "samples/ema_one_step" in tags["images"]
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert "videos-000000008.gif" in samples and "videos-000000008.mp4" in samples
    assert (run_dir / "config.yaml").is_file() and (run_dir / "log.jsonl").is_file()
    # the exported student loads in stock diffusers and generates in one step
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline.from_pretrained(run_dir / "export", use_safetensors=True)
    from sfv.tiny import example_image

    frames = pipe(example_image(32, 32), height=32, width=32, num_frames=4, num_inference_steps=1,
                  max_guidance_scale=1.0, output_type="np").frames
    assert frames.shape == (1, 4, 32, 32, 3)
    # `sfv export` from the checkpoint gives the same student weights as the run's own export
    assert main(["export", "--checkpoint", str(run_dir / "checkpoints" / "videos-000000012"), "--out", str(tmp_path / "exp")]) == 0
    from safetensors.torch import load_file

    a = load_file(run_dir / "export/unet/diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "exp/unet/diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("extra, message", [
    (["train.totl_videos=5"], "unknown recipe key 'train.totl_videos'; valid keys in train:"),
    (["train.total_videos=many"], "recipe key 'train.total_videos' must be int, got str 'many'"),
    (["parallel.mode=zero3"], "recipe key 'parallel.mode' must be one of ddp, fsdp, not 'zero3'"),
    (["data.videos=/nonexistent/videos"], "data folder '/nonexistent/videos' does not exist"),
    (["--resume", "latest"], "no complete checkpoint"),
    (["discriminator.loss=wasserstein"], "recipe key 'discriminator.loss' must be one of hinge, relativistic"),
    (["generator.rec_target=teacher"], "generator.rec_target=teacher needs teacher pairs, but data.videos are read as files"),
    (["generator.rec_max_sigma=1000"], "generator.rec_max_sigma 1000 is outside G's levels (700, 70.5, 2.27)"),
    (["generator.rec_max_sigma=1.5"], "generator.rec_max_sigma 1.5 is outside G's levels"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_dir, video_dir, capsys, extra, message):
    rc = main(_args(tiny_dir, video_dir, tmp_path / "run", *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()  # no partial output


def test_options_that_need_pairs_or_a_multi_step_teacher_are_one_line_before_any_model_loads(tmp_path, tiny_dir, video_dir, capsys):
    """DMD reads the teacher's multi-step score: a one-step student folder (sfv.json) as model.teacher is refused; the
    teacher-pair target needs a latent cache written with --teacher-pairs."""
    student = tmp_path / "student"
    shutil.copytree(tiny_dir, student)
    (student / "sfv.json").write_text("{}")
    cache = tmp_path / "cache"
    assert main(["cache", "--teacher", str(tiny_dir), "--videos", str(video_dir), "--out", str(cache), "--frames", "4",
                 "--height", "32", "--width", "32", "--fps", "8"]) == 0
    capsys.readouterr()
    for extra, message in ((["dmd.weight=1", f"model.teacher={student}"], "is an sfv one-step student (sfv.json)"),
                           ([f"data.cache={cache}", "generator.rec_target=teacher"], f"the latent cache '{cache}' has none")):
        rc = main(_args(tiny_dir, video_dir, tmp_path / "run", *extra))
        err = capsys.readouterr().err.strip()
        assert rc == 2 and message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "run").exists()


def snapshot(folder: Path) -> dict:
    """Every file under `folder`: its content hash and its modification time."""
    return {p.relative_to(folder): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_folder_is_never_overwritten_without_asking(tmp_path, tiny_dir, video_dir, capsys):
    """A second run into a folder that holds one, without --resume, is one line and exit 2 and touches nothing; the
    line offers the three ways on. --overwrite starts clean: one copy of the log, the new run's tensorboard file only."""
    run_dir = tmp_path / "run"
    args = _args(tiny_dir, video_dir, run_dir, "train.total_videos=4", "train.batch_size=2", "train.log_every=2",
                 "train.checkpoint_every=4", "train.export=false")
    assert main(args) == 0
    before = snapshot(run_dir)
    assert {"log.jsonl", "config.yaml", "report.json"} <= {p.name for p in before} and len(before) > 5
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(way in err for way in ("--resume latest", "train.run_dir=", "--overwrite")), err
    assert snapshot(run_dir) == before
    assert main([*args, "--resume", "latest", "--overwrite"]) == 2 and snapshot(run_dir) == before

    assert main([*args, "--overwrite"]) == 0
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2  # 4 videos logged every 2: not doubled
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    assert {p: h for p, (h, _) in snapshot(run_dir).items() if p.parts[0] == "checkpoints"} == \
        {p: h for p, (h, _) in before.items() if p.parts[0] == "checkpoints"}  # the same run again, bit for bit


def test_a_folder_with_no_usable_video_is_an_error(tmp_path, tiny_dir, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"not a video")
    (videos / "b.gif").write_bytes(b"GIF89a broken")
    rc = main(_args(tiny_dir, videos, tmp_path / "run"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "no usable videos" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_accelerate_launch_two_processes_and_resume(tmp_path, tiny_dir, video_dir):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU: two gloo processes, DDP, then resume."""
    launch = ["-m", "sfv.train", "--recipe", REPO / "recipes/tiny_cpu.yaml", f"model.teacher={tiny_dir}", f"data.videos={video_dir}",
              f"train.run_dir={tmp_path / 'run'}", "train.batch_size=2", "train.checkpoint_every=4", "train.sample_every=0",
              "train.export=false"]
    for extra in (["train.total_videos=4"], ["train.total_videos=8", "--resume", "latest"]):
        proc = launch_two(*launch, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["videos-000000004", "videos-000000008"]
    state = json.loads((ckpts / "videos-000000008" / "state.json").read_text())
    assert state["world_size"] == 2 and state["state"]["g_steps"] == 4  # 2 steps, resumed, 2 more
    assert {p.name for p in (ckpts / "videos-000000008").glob("rng-rank*.safetensors")} == {"rng-rank0.safetensors", "rng-rank1.safetensors"}


def test_cache_then_train_from_the_cache(tmp_path, tiny_dir, video_dir, capsys):
    cache = tmp_path / "cache"
    assert main(["cache", "--teacher", str(tiny_dir), "--videos", str(video_dir), "--out", str(cache),
                 "--frames", "4", "--height", "32", "--width", "32", "--fps", "8"]) == 0
    assert "6 clips in 1 shard(s)" in capsys.readouterr().out
    rc = main(_args(tiny_dir, "/nonexistent", tmp_path / "run", f"data.cache={cache}", "train.total_videos=4", "train.export=false"))
    assert rc == 0 and json.loads((tmp_path / "run" / "report.json").read_text())["g_steps"] == 2
    rc = main(_args(tiny_dir, "/nonexistent", tmp_path / "run2", f"data.cache={cache}", "data.frames=8"))
    err = capsys.readouterr().err
    assert rc == 2 and "re-run `sfv cache`" in err


def test_cache_defaults_to_the_teachers_recorded_video_and_names_the_flag_that_fits_a_clip(tmp_path, capsys):
    """The toy teacher records 8 frames of 32×32 at 8 fps (video.json): `sfv cache` on a toy world needs no size flags;
    read at 7 fps, an 8-frame world clip is too short for 8 frames, and the one line says which flag fixes it."""
    from sfv.toy.world import write_world

    world = write_world(tmp_path / "world", 2, seed=1)
    assert main(["cache", "--teacher", "models/toy-svd-v2", "--videos", str(world), "--out", str(tmp_path / "cache")]) == 0
    assert "2 clips in 1 shard(s)" in capsys.readouterr().out
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert (index["frames"], index["height"], index["width"], index["fps"]) == (8, 32, 32, 8)
    rc = main(["cache", "--teacher", "models/toy-svd-v2", "--videos", str(world), "--out", str(tmp_path / "c7"), "--fps", "7"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "a clip needs 9" in err and "--fps sets the rate" in err, err
    assert not (tmp_path / "c7").exists()


def test_export_takes_t_g_from_the_checkpoint_and_refuses_a_disagreeing_one(tmp_path, tiny_dir, video_dir, capsys):
    """A checkpoint's recipe knows the T_g it trained at: `sfv export --checkpoint` records it (and G's σ levels) in
    sfv.json; an --t-g that disagrees is one line and exit 2 with nothing written, not a silent override."""
    run_dir = tmp_path / "run"
    assert main(_args(tiny_dir, video_dir, run_dir, "model.t_g=3", "train.total_videos=2", "train.batch_size=2",
                      "train.checkpoint_every=2", "train.export=false")) == 0
    ckpt = str(run_dir / "checkpoints" / "videos-000000002")
    capsys.readouterr()
    assert main(["export", "--checkpoint", ckpt, "--t-g", "4", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--t-g 4 disagrees with the checkpoint, trained at T_g = 3" in err, err
    assert not (tmp_path / "bad").exists()
    assert main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "ok")]) == 0
    sampling = json.loads((tmp_path / "ok" / "sfv.json").read_text())["sampling"]
    assert sampling["t_g"] == 3 and len(sampling["sigma_levels"]) == 2 and sampling["sigma_levels"][0] == 700.0
    video = json.loads((tmp_path / "ok" / "video.json").read_text())
    assert (video["height"], video["width"], video["frames"], video["fps"]) == (32, 32, 4, 8)  # the recipe's data
