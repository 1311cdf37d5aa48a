"""A checkpoint damaged after it was written (a full disk, a broken copy) stops `--resume` with one line and
exit 2 that names the file and the checkpoint to fall back to — and leaves the run folder exactly as it was.
Both layouts: plain (one safetensors file per model) and sharded (FSDP, torch.distributed.checkpoint shards)."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from sfv.cli import main

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {"plain": "parallel.mode=ddp", "sharded": "parallel.mode=fsdp"}


def _args(tiny_dir, video_dir, run_dir, layout, *extra):
    return ["distill", "--recipe", str(REPO / "recipes/tiny_cpu.yaml"), f"model.teacher={tiny_dir}", f"data.videos={video_dir}",
            f"train.run_dir={run_dir}", LAYOUTS[layout], "train.batch_size=2", "train.checkpoint_every=2",
            "train.sample_every=0", "train.export=false", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir, video_dir):
    """One short run per layout, with checkpoints at 2 and 4 videos."""
    root = tmp_path_factory.mktemp("damage")
    for layout in LAYOUTS:
        assert main(_args(tiny_dir, video_dir, root / layout, layout, "train.total_videos=4")) == 0
        names = sorted(p.name for p in (root / layout / "checkpoints").iterdir())
        assert names == ["videos-000000002", "videos-000000004"], names
    return root


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under folder: content hash and modification time (ns)."""
    return {str(f.relative_to(folder)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for f in sorted(folder.rglob("*")) if f.is_file()}


def _shard(layout: str) -> str:
    return {"plain": "generator.safetensors", "sharded": "sharded/shard-00001-model-00001-of-00001.safetensors"}[layout]


CASES = [  # (layout, file of the newest checkpoint, damage)
    ("plain", "generator.safetensors", "truncate"),
    ("plain", "generator.safetensors", "delete"),
    ("plain", "optim_d.json", "truncate"),
    ("plain", "rng-rank0.safetensors", "delete"),
    ("sharded", _shard("sharded"), "truncate"),
    ("sharded", _shard("sharded"), "delete"),
    ("sharded", "optim_g.json", "delete"),
]


def _damage(file: Path, how: str) -> None:
    if how == "truncate":
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    else:
        file.unlink()


@pytest.mark.parametrize("layout, name, how", CASES, ids=[f"{c[0]}-{c[2]}-{c[1].split('/')[-1]}" for c in CASES])
def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_previous_checkpoint(
        runs, tmp_path, tiny_dir, video_dir, capsys, layout, name, how):
    run_dir = shutil.copytree(runs / layout, tmp_path / "run")
    newest, previous = run_dir / "checkpoints/videos-000000004", run_dir / "checkpoints/videos-000000002"
    _damage(newest / name, how)
    before = _snapshot(run_dir)
    rc = main(_args(tiny_dir, video_dir, run_dir, layout, "train.total_videos=6", "--resume", "latest"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"checkpoint '{newest}' is damaged: {name} is" in err, err
    assert ("missing" if how == "delete" else "truncated") in err, err
    assert f"--resume {previous}" in err, err
    assert _snapshot(run_dir) == before  # nothing written, moved or deleted


def test_the_suggested_previous_checkpoint_resumes(runs, tmp_path, tiny_dir, video_dir, capsys):
    run_dir = shutil.copytree(runs / "plain", tmp_path / "run")
    _damage(run_dir / "checkpoints/videos-000000004/generator.safetensors", "truncate")
    assert main(_args(tiny_dir, video_dir, run_dir, "plain", "train.total_videos=6", "--resume", "latest")) == 2
    suggested = capsys.readouterr().err.strip().split("--resume ")[-1]
    assert main(_args(tiny_dir, video_dir, run_dir, "plain", "train.total_videos=6", "--resume", suggested)) == 0
    state = json.loads((run_dir / "checkpoints/videos-000000006/state.json").read_text())
    assert state["state"]["videos"] == 6 and state["state"]["g_steps"] == 3


def test_the_oldest_checkpoint_damaged_says_to_start_again(runs, tmp_path, tiny_dir, video_dir, capsys):
    run_dir = shutil.copytree(runs / "sharded", tmp_path / "run")
    oldest = run_dir / "checkpoints/videos-000000002"
    _damage(oldest / _shard("sharded"), "truncate")
    before = _snapshot(run_dir)
    rc = main(_args(tiny_dir, video_dir, run_dir, "sharded", "train.total_videos=6", "--resume", str(oldest)))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"checkpoint '{oldest}' is damaged" in err, err
    assert "no earlier checkpoint to resume from; start the run again without --resume" in err, err
    assert _snapshot(run_dir) == before


def test_a_checkpoint_written_before_files_were_listed_is_still_checked(runs, tmp_path, tiny_dir, video_dir, capsys):
    run_dir = shutil.copytree(runs / "plain", tmp_path / "run")
    newest = run_dir / "checkpoints/videos-000000004"
    state = json.loads((newest / "state.json").read_text())
    assert set(state.pop("files")) >= {"generator.safetensors", "optim_g.json", "rng-rank0.safetensors"}
    (newest / "state.json").write_text(json.dumps(state))
    _damage(newest / "generator_ema.safetensors", "truncate")
    rc = main(_args(tiny_dir, video_dir, run_dir, "plain", "train.total_videos=6", "--resume", "latest"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "generator_ema.safetensors is unreadable" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_from_a_damaged_checkpoint_is_one_line(runs, tmp_path, capsys, layout):
    run_dir = shutil.copytree(runs / layout, tmp_path / "run")
    newest = run_dir / "checkpoints/videos-000000004"
    _damage(newest / _shard(layout), "truncate")
    rc = main(["export", "--checkpoint", str(newest), "--out", str(tmp_path / "export")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"is damaged: {_shard(layout)} is" in err, err
    assert not (tmp_path / "export").exists()
