"""Video-folder data, clip resampling, skipping bad files, resumable order, latent cache — on real files."""

import json
import shutil

import numpy as np
import pytest
import torch

from sfv.cache import LatentCache, write_cache
from sfv.data import ClipSpec, ResumableSampler, VideoFolder, clip_indices, collate, resize_crop
from sfv.errors import DataError
from sfv.teachers.svd import SVDTeacher
from sfv.tiny import write_moving_squares
from sfv.video import write_video

SPEC = ClipSpec(frames=4, height=32, width=32, fps=4)


def test_clip_indices_resample_to_the_target_fps():
    rng = np.random.default_rng(0)
    idx = clip_indices(30, 12.0, ClipSpec(4, 8, 8, fps=4), rng)  # 3 source frames per target frame
    assert np.diff(idx).tolist() == [3, 3, 3] and 0 <= idx[0] and idx[-1] <= 29
    assert clip_indices(4, 4.0, ClipSpec(4, 8, 8, fps=4), rng) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="too short"):
        clip_indices(9, 12.0, ClipSpec(4, 8, 8, fps=4), rng)  # needs 10 frames


def test_resize_crop_covers_and_centres():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle
    out = resize_crop(frames, 32, 32)
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert out[0, :, :, 16].mean() > 0.9 and out[0, :, :, 0].mean() < 0.1


def test_folder_reads_mp4_gif_and_frame_folders_recursively(tmp_path):
    write_moving_squares(tmp_path / "a", count=1, frames=12, size=40, fps=8)
    write_moving_squares(tmp_path / "b" / "c", count=1, frames=12, size=40, fps=8, suffix=".gif", seed=1)
    frames_dir = tmp_path / "d" / "clip"
    frames_dir.mkdir(parents=True)
    from PIL import Image

    for i in range(6):
        Image.fromarray(np.full((40, 40, 3), i * 40, np.uint8)).save(frames_dir / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file": "d/clip", "fps": 4, "motion_bucket_id": 30,
                                                                 "caption": "a disc fades in"}) + "\n")
    ds = VideoFolder(tmp_path, SPEC)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == ["a/video000.mp4", "b/c/video000.gif", "d/clip"]
    for i in range(3):
        item = ds.load(i)
        assert item["frames"].shape == (4, 3, 32, 32)
    clip = ds.load(2)  # frame folder at 4 fps (metadata) sampled at 4 fps: consecutive frames
    levels = (clip["frames"].mean((1, 2, 3)) * 255 / 40).round().tolist()
    assert np.diff(levels).tolist() == [1, 1, 1]
    assert clip["motion_bucket_id"].item() == 30 and ds.load(0)["motion_bucket_id"].item() == 127
    assert clip["caption"] == "a disc fades in" and ds.load(0)["caption"] == ""  # no caption: the empty prompt
    assert collate([{**clip, "skipped": []}, {**ds.load(0), "skipped": []}])["caption"] == ["a disc fades in", ""]


def test_bad_files_are_skipped_and_reported_and_an_all_bad_folder_is_an_error(tmp_path):
    write_moving_squares(tmp_path, count=2, frames=12, size=40, fps=8)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom garbage")
    write_video(tmp_path / "short.mp4", np.zeros((2, 40, 40, 3), np.uint8), fps=8)
    ds = VideoFolder(tmp_path, SPEC)
    names = [p.name for p in ds.files]
    item = ds[(names.index("broken.mp4"), 0)]
    assert item["frames"].shape == (4, 3, 32, 32)
    assert len(item["skipped"]) == 2 and "broken.mp4" in item["skipped"][0] and "short.mp4" in item["skipped"][1]
    for p in tmp_path.glob("video*"):
        p.unlink()
    with pytest.raises(DataError, match="no usable videos"):
        VideoFolder(tmp_path, SPEC)[(0, 0)]


def test_missing_or_empty_folders_are_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        VideoFolder(tmp_path / "nope", SPEC)
    with pytest.raises(DataError, match="no videos"):
        VideoFolder(tmp_path, SPEC)


def test_sampler_resumes_the_exact_stream_and_splits_processes():
    full = [next(it) for it in [iter(ResumableSampler(5, seed=3))] for _ in range(12)]
    it = iter(ResumableSampler(5, seed=3, start=7))
    assert [next(it) for _ in range(5)] == full[7:12]
    assert sorted(i for i, e in full[:5]) == list(range(5)) and {e for _, e in full[5:10]} == {1}
    r0, r1 = iter(ResumableSampler(5, 3, rank=0, world_size=2)), iter(ResumableSampler(5, 3, rank=1, world_size=2))
    interleaved = [x for pair in zip(*[[next(r) for _ in range(6)] for r in (r0, r1)]) for x in pair]
    assert interleaved == full


def test_latent_cache_equals_encoding_on_the_fly(tmp_path, tiny_dir, video_dir):
    teacher = SVDTeacher.from_pretrained(tiny_dir)
    ds = VideoFolder(video_dir, SPEC)
    index = write_cache(teacher, ds, tmp_path / "cache", noise_aug_strength=0.02, shard_size=4, batch_size=3)
    assert index["clips"] == len(ds) and [s["count"] for s in index["shards"]] == [6]
    cache = LatentCache(tmp_path / "cache", SPEC, 0.02)
    batch = collate([cache[(i, 0)] for i in range(len(cache))])
    frames = collate([ds.load(i) for i in range(len(ds))])["frames"]
    torch.testing.assert_close(batch["latents"], teacher.encode_video(frames))
    cond = teacher.encode_condition(frames[:, 0], 32, 32, 4, 127, 0.02, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(batch["image_embeds"], cond.image_embeds)
    assert batch["image_latents"].shape == cond.image_latents.shape
    with pytest.raises(DataError, match="re-run `sfv cache`"):
        LatentCache(tmp_path / "cache", ClipSpec(8, 32, 32, 4))
    with pytest.raises(DataError, match="already exists"):
        write_cache(teacher, ds, tmp_path / "cache", 0.02)
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(DataError, match="not a latent cache"):
        LatentCache(tmp_path / "cache")


def test_in_process_decoding_gives_the_frames_ffmpeg_gives(tmp_path):
    """Clips are decoded by PyAV in this process; the frames are those of the ffmpeg program (imageio-ffmpeg) reading
    the same file, up to the last bit of a colour conversion whose SIMD path may differ from one CPU to another."""
    import imageio.v2 as imageio

    from sfv.data import read_clip

    rng = np.random.default_rng(0)
    frames = (rng.uniform(size=(12, 48, 64, 3)) ** 3 * 255).astype(np.uint8)  # textured: chroma subsampling shows
    path = write_video(tmp_path / "clip.mp4", frames, fps=8)
    with imageio.get_reader(path, format="FFMPEG") as reader:
        reference = np.stack([np.asarray(f) for f in reader])
    clip = read_clip(path, ClipSpec(frames=12, height=48, width=64, fps=8), None, np.random.default_rng(0))
    assert clip.shape == reference.shape == (12, 48, 64, 3)
    diff = np.abs(clip.astype(int) - reference.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.1, (diff.max(), diff.mean())
    assert np.abs(clip.astype(int) - frames.astype(int)).mean() > 1  # the comparison can fail: H.264 is lossy
