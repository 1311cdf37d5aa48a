"""The decoding slot with two decoders: the stock VAE and the fast tiny temporal decoder (sfv/decoders/tiny.py),
its folder format, its export beside a stock diffusers folder, and `sfv distill-decoder` (loss goes down, exact
resume, bad input). Tiny real components throughout (sfv.tiny: VAE factor 2), no mocks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableVideoDiffusionPipeline
from safetensors.torch import load_file

from conftest import launch_two
from sfv.cli import main
from sfv.decoder_train import load_decoder_recipe, run
from sfv.decoders.tiny import TinyDecoder, TinyDecoderConfig, TinyTemporalDecoder
from sfv.errors import InputError, ModelLoadError
from sfv.generator import SFVGenerator
from sfv.pipeline import SFVPipeline, export_pipeline
from sfv.teachers.svd import SVDTeacher
from sfv.tiny import example_image

REPO = Path(__file__).resolve().parents[1]
LAYOUT = dict(block_out_channels=[32, 32], num_blocks=[1, 1])  # two stages: ×2, the tiny VAE's factor


def random_decoder(vae, seed=0) -> TinyTemporalDecoder:
    """A tiny decoder with every weight random — the temporal mixes too (they start at zero when trained)."""
    torch.manual_seed(seed)
    net = TinyTemporalDecoder(TinyDecoderConfig.for_vae(vae, **LAYOUT))
    with torch.no_grad():
        for mix in net.mix:
            mix.conv.weight.normal_(0, 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def teacher(tiny_dir):
    return SVDTeacher.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def decoder_dir(teacher, tmp_path_factory):
    return random_decoder(teacher.vae).save_pretrained(tmp_path_factory.mktemp("dec") / "decoder")


def latents(b=2, f=3, h=5, w=6, seed=1):
    return torch.randn(b, f, 4, h, w, generator=torch.Generator().manual_seed(seed))  # [B, F, C, h, w]


def test_shapes_range_and_temporal_mixing(teacher):
    net = random_decoder(teacher.vae)
    z = latents()
    frames = TinyDecoder(net)(z * 20)  # far outside the latent range: output still clamped
    assert frames.shape == (2, 3, 3, 10, 12) and frames.dtype == torch.float32
    assert frames.min() >= -1 and frames.max() <= 1
    z2 = z.clone()
    z2[:, 0] += 1  # change frame 0 only: its neighbour (frame 1) must change
    diff = (TinyDecoder(net)(z2) - TinyDecoder(net)(z)).abs().amax(dim=(0, 1, 3, 4))  # per frame
    assert diff[1] > 0, "frame 1 does not see frame 0: no temporal mixing"
    fresh = TinyTemporalDecoder(TinyDecoderConfig.for_vae(teacher.vae, **LAYOUT))  # zero-initialised mixes
    diff = (fresh(z2) - fresh(z)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[0] > 0 and diff[1:].max() == 0, "a fresh decoder decodes frames independently"


def test_chunks_decode_the_frames_of_each_chunk(teacher):
    net = random_decoder(teacher.vae)
    z = latents(f=4)
    chunked = TinyDecoder(net)(z, 2)
    assert torch.equal(chunked[:, :, :2], TinyDecoder(net)(z[:, :2])) and torch.equal(chunked[:, :, 2:], TinyDecoder(net)(z[:, 2:]))


def test_save_load_round_trip_is_bitwise(teacher, decoder_dir):
    net = random_decoder(teacher.vae)
    loaded = TinyTemporalDecoder.from_pretrained(decoder_dir)
    config = json.loads((decoder_dir / "config.json").read_text())
    assert config["_class_name"] == "TinyTemporalDecoder" and config["block_out_channels"] == [32, 32]
    assert sorted(p.name for p in decoder_dir.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    saved = load_file(decoder_dir / "diffusion_pytorch_model.safetensors")
    assert saved.keys() == net.state_dict().keys() and all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    z = latents()
    assert torch.equal(loaded(z), net(z))


def test_slot_selects_the_decoder_by_name(tiny_dir, decoder_dir):
    teacher = SVDTeacher.from_pretrained(tiny_dir)
    z = latents()
    stock = teacher.decode(z)
    teacher.set_decoder("tiny", decoder_dir)
    assert teacher.decoder_name == "tiny"
    assert torch.equal(teacher.decode(z), TinyDecoder(TinyTemporalDecoder.from_pretrained(decoder_dir))(z))
    teacher.set_decoder("vae")
    assert teacher.decoder_name == "vae" and torch.equal(teacher.decode(z), stock)
    with pytest.raises(InputError, match="needs its folder"):
        teacher.set_decoder("tiny")


@pytest.fixture(scope="module")
def exported(teacher, decoder_dir, tmp_path_factory):
    """A perturbed 'student' exported with the tiny decoder as fast_decoder/."""
    g = SFVGenerator.from_teacher(teacher)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return export_pipeline(g.net, teacher, tmp_path_factory.mktemp("export") / "student", fast_decoder=decoder_dir)


def test_export_with_fast_decoder_stays_a_stock_diffusers_folder(exported, decoder_dir):
    info = json.loads((exported / "sfv.json").read_text())
    assert info["decoder"] == "vae" and info["decoders"] == {"tiny": "fast_decoder"}
    assert "fast_decoder" not in json.loads((exported / "model_index.json").read_text())
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert (exported / "fast_decoder" / name).read_bytes() == (decoder_dir / name).read_bytes()

    image = example_image(48, 48, seed=3)
    kw = dict(height=32, width=48, num_frames=4, output_type="np")
    stock = StableVideoDiffusionPipeline.from_pretrained(exported, use_safetensors=True)
    stock.set_progress_bar_config(disable=True)
    ref = stock(image, num_inference_steps=1, max_guidance_scale=1.0, generator=torch.Generator().manual_seed(7), **kw).frames
    pipe = SFVPipeline.from_pretrained(exported, use_safetensors=True)  # default: the stock VAE decoder
    pipe.set_progress_bar_config(disable=True)
    ours = pipe(image, generator=torch.Generator().manual_seed(7), **kw).frames
    assert ours.shape == (1, 4, 32, 48, 3) and np.array_equal(ours, ref)  # bit for bit: the same computation

    fast = SFVPipeline.from_pretrained(exported, decoder="tiny", use_safetensors=True)
    fast.set_progress_bar_config(disable=True)
    lat = fast(image, generator=torch.Generator().manual_seed(7), **{**kw, "output_type": "latent"}).frames
    frames = fast(image, generator=torch.Generator().manual_seed(7), **{**kw, "output_type": "pt"}).frames  # [B, F, 3, H, W]
    expect = TinyDecoder(TinyTemporalDecoder.from_pretrained(decoder_dir))(lat)  # [B, 3, F, H, W] in [-1, 1]
    assert torch.allclose(frames, (expect.transpose(1, 2) / 2 + 0.5).clamp(0, 1), atol=1e-6)
    assert not np.allclose(fast(image, generator=torch.Generator().manual_seed(7), **kw).frames, ref, atol=1e-3)

    with pytest.raises(InputError, match="carries no 'fast'"):
        SFVPipeline.from_pretrained(exported, decoder="fast", use_safetensors=True)


# -- bad decoder folders ---------------------------------------------------------------------------------------


def _damaged(decoder_dir, tmp_path, case):
    bad = tmp_path / case
    if case == "missing":
        return bad
    bad.mkdir()
    config = json.loads((decoder_dir / "config.json").read_text())
    weights = (decoder_dir / "diffusion_pytorch_model.safetensors").read_bytes()
    if case == "corrupt":
        weights = weights[: len(weights) // 2]
    if case == "channels":
        config["latent_channels"] = 8
        torch.manual_seed(0)
        from safetensors.torch import save_file

        net = TinyTemporalDecoder(TinyDecoderConfig(**{k: v for k, v in config.items() if not k.startswith("_")}))
        save_file(net.state_dict(), bad / "diffusion_pytorch_model.safetensors")
    else:
        (bad / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    (bad / "config.json").write_text(json.dumps(config))
    return bad


@pytest.mark.parametrize("case, message", [("missing", "does not exist"), ("corrupt", "corrupt"),
                                           ("channels", "reads 8 latent channels, the VAE writes 4")])
def test_bad_decoder_folder_is_one_line_exit_2_and_nothing_is_written(case, message, teacher, decoder_dir, tiny_dir, tmp_path, capsys):
    bad = _damaged(decoder_dir, tmp_path, case)
    with pytest.raises(ModelLoadError, match=message):
        teacher.set_decoder("tiny", bad)
    teacher.set_decoder("vae")
    from safetensors.torch import save_file

    save_file(teacher.unet.state_dict(), tmp_path / "g.safetensors")
    code = main(["export", "--generator", str(tmp_path / "g.safetensors"), "--teacher", str(tiny_dir),
                 "--decoder", str(bad), "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and message.split(",")[0] in err
    assert not (tmp_path / "out").exists()


# -- sfv distill-decoder ------------------------------------------------------------------------------------------


def recipe_args(tiny_dir, video_dir, run_dir) -> list[str]:
    return [f"model.teacher={tiny_dir}", f"data.videos={video_dir}", f"train.run_dir={run_dir}",
            "model.block_out_channels=[32, 32]", "model.num_blocks=[1, 1]", "data.frames=4", "data.height=16",
            "data.width=16", "data.fps=8", "train.batch_size=2", "train.lr=0.003", "train.log_every=2",
            "train.checkpoint_every=4"]


def decoder_recipe(tiny_dir, video_dir, run_dir, *extra):
    return load_decoder_recipe(None, [*recipe_args(tiny_dir, video_dir, run_dir), *extra])


def test_distill_decoder_lowers_the_loss(tiny_dir, video_dir, tmp_path):
    # against the real frames only: the random tiny VAE's own decoder output is no target worth learning
    out = run(decoder_recipe(tiny_dir, video_dir, tmp_path / "run", "train.total_videos=80", "loss.teacher_weight=0"), cpu=True)
    log = [json.loads(line)["loss/loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    first, last = np.mean(log[:5]), np.mean(log[-5:])  # 40 steps, one log line per step
    print(f"loss {first:.4f} -> {last:.4f}")
    assert last < 0.7 * first  # measured 0.38-0.51 of the start over train.seed 0-3
    net = TinyTemporalDecoder.from_pretrained(out)
    assert any(m.conv.weight.abs().max() > 0 for m in net.mix)  # the temporal mixes trained too


def test_distill_decoder_resumes_exactly(tiny_dir, video_dir, tmp_path):
    full = run(decoder_recipe(tiny_dir, video_dir, tmp_path / "full", "train.total_videos=12"), cpu=True)
    part = run(decoder_recipe(tiny_dir, video_dir, tmp_path / "part", "train.total_videos=4"), cpu=True)  # stop at step 2
    short = load_file(part / "diffusion_pytorch_model.safetensors")
    resumed = run(decoder_recipe(tiny_dir, video_dir, tmp_path / "part", "train.total_videos=12"), "latest", cpu=True)
    a = load_file(full / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], short[k]) for k in a)  # falsifier: the resumed run really trained on


def test_distill_decoder_also_learns_the_student_latents(tiny_dir, video_dir, exported, tmp_path):
    """model.student: each step also decodes the one-step student's latents for the clips' conditioning against the
    stock decoder's frames of them; resume stays exact (the student's noise is a pure function of the step)."""
    extra = [f"model.student={exported}", "loss.real_weight=0", "loss.generated_weight=1.0"]
    full = run(decoder_recipe(tiny_dir, video_dir, tmp_path / "full", "train.total_videos=8", *extra), cpu=True)
    log = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert all(e["loss/generated"] > 0 and e["loss/loss"] == pytest.approx(e["loss/teacher"] + e["loss/generated"], rel=1e-5)
               for e in log)
    run(decoder_recipe(tiny_dir, video_dir, tmp_path / "part", "train.total_videos=4", *extra), cpu=True)
    resumed = run(decoder_recipe(tiny_dir, video_dir, tmp_path / "part", "train.total_videos=8", *extra), "latest", cpu=True)
    a, b = load_file(full / "diffusion_pytorch_model.safetensors"), load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_accelerate_launch_two_processes_matches_one_process(tiny_dir, video_dir, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m sfv.decoder_train` on CPU (two gloo processes, DDP):
    train.batch_size is the global batch, so the two processes see the same clips per step as one process does, and
    every logged loss and the final weights agree with a one-process run up to the order of float sums. (Resume
    is the one-process code path with the data position divided by the process count, as in the SF-V trainer;
    exact resume is checked above, multi-process resume of that position in tests/test_fsdp.py.)"""
    proc = launch_two("-m", "sfv.decoder_train", "--recipe", "recipes/decoder_toy.yaml", "--cpu",
                      *recipe_args(tiny_dir, video_dir, tmp_path / "two"), "loss.real_weight=0.5", "train.total_videos=12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = load_file(tmp_path / "two" / "decoder" / "diffusion_pytorch_model.safetensors")
    one = run(decoder_recipe(tiny_dir, video_dir, tmp_path / "one", "train.total_videos=12", "loss.real_weight=0.5"), cpu=True)
    short = run(decoder_recipe(tiny_dir, video_dir, tmp_path / "short", "train.total_videos=4", "loss.real_weight=0.5"), cpu=True)
    a, b = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [e["videos"] for e in a] == [e["videos"] for e in b] == list(range(2, 13, 2))
    for x, y in zip(a, b):  # the same global batches: the same losses, up to summation order
        assert y["loss/loss"] == pytest.approx(x["loss/loss"], rel=1e-4) and y["loss/real"] == pytest.approx(x["loss/real"], rel=1e-4)
    ref, part = (load_file(d / "diffusion_pytorch_model.safetensors") for d in (one, short))
    diff = sum((two[k] - ref[k]).square().sum() for k in ref).sqrt()
    moved = sum((part[k] - ref[k]).square().sum() for k in ref).sqrt()  # falsifier: 4 steps fewer
    print(f"|2 processes - 1 process| = {diff:.2e}, |after 2 steps - after 6| = {moved:.2e}")
    assert diff < 1e-3 * moved
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["processes"] == 2 and report["steps"] == 6


def test_distill_decoder_never_overwrites_a_run_without_asking(tiny_dir, video_dir, tmp_path, capsys):
    """As `sfv distill`: a run folder that holds a run is refused (one line, exit 2, every file as it was) unless
    --resume or --overwrite; --overwrite starts clean (the log not doubled)."""
    from test_distill import snapshot

    args = ["distill-decoder", "--recipe", "recipes/decoder_toy.yaml", "--cpu",
            *recipe_args(tiny_dir, video_dir, tmp_path / "run"), "train.total_videos=4"]
    assert main(args) == 0
    before = snapshot(tmp_path / "run")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume latest" in err and "--overwrite" in err
    assert snapshot(tmp_path / "run") == before
    assert main([*args, "--overwrite"]) == 0
    assert len(_log(tmp_path / "run")) == 2  # logged every 2 videos: one copy


def test_distill_decoder_trains_from_a_latent_cache(tiny_dir, video_dir, tmp_path, capsys):
    """data.cache (`sfv cache`): the latents are read, not encoded, so the steps against the stock decoder's frames
    equal those of a run on the videos the cache was written from; the cache holds no frames, so the real term must
    be off (one line and exit 2 otherwise)."""
    cache = tmp_path / "cache"
    assert main(["cache", "--teacher", str(tiny_dir), "--videos", str(video_dir), "--out", str(cache), "--frames", "4",
                 "--height", "16", "--width", "16", "--fps", "8"]) == 0
    capsys.readouterr()
    base = ["train.total_videos=6", "loss.real_weight=0", "data.videos=null"]
    run(decoder_recipe(tiny_dir, video_dir, tmp_path / "cached", f"data.cache={cache}", *base), cpu=True)
    run(decoder_recipe(tiny_dir, video_dir, tmp_path / "files", "train.total_videos=6", "loss.real_weight=0"), cpu=True)
    a, b = _log(tmp_path / "cached"), _log(tmp_path / "files")
    assert len(a) == 3 and all("loss/real" not in e for e in a)
    assert [e["loss/teacher"] for e in a] == pytest.approx([e["loss/teacher"] for e in b], rel=1e-5)
    code = main(["distill-decoder", "--recipe", "recipes/decoder_toy.yaml", "--cpu", f"model.teacher={tiny_dir}",
                 f"data.cache={cache}", f"train.run_dir={tmp_path / 'bad'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "loss.real_weight=0" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("extra, message", [(["data.videos=/nonexistent"], "does not exist"),
                                           (["model.student=/nonexistent"], "not an exported student folder"),
                                           (["loss.kind=l3"], "loss.kind"),
                                           (["model.init=/nonexistent"], "does not exist"),
                                           (["train.bogus=1"], "unknown recipe key 'train.bogus'")])
def test_distill_decoder_bad_input_is_one_line_exit_2_and_writes_nothing(extra, message, tiny_dir, video_dir, tmp_path, capsys):
    args = [f"model.teacher={tiny_dir}", f"data.videos={video_dir}", f"train.run_dir={tmp_path / 'run'}",
            "data.frames=4", "data.height=16", "data.width=16", *extra]
    code = main(["distill-decoder", "--recipe", "recipes/decoder_toy.yaml", "--cpu", *args])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_committed_toy_decoder_fits_the_toy_teacher():
    from diffusers import AutoencoderKLTemporalDecoder

    from sfv.decoders import build_decoder

    vae = AutoencoderKLTemporalDecoder.from_pretrained("models/toy-svd-v2/vae", use_safetensors=True)
    decoder = build_decoder("tiny", vae, "models/toy-decoder-v2")
    frames = decoder(latents(1, 8, 16, 16), 4)
    assert frames.shape == (1, 3, 8, 32, 32) and frames.abs().max() <= 1


def test_cli_exports_the_fast_decoder_and_samples_with_it(tiny_dir, decoder_dir, image_path, tmp_path, capsys):
    from safetensors.torch import save_file

    teacher = SVDTeacher.from_pretrained(tiny_dir)
    save_file(teacher.unet.state_dict(), tmp_path / "g.safetensors")
    export = tmp_path / "student"
    assert main(["export", "--generator", str(tmp_path / "g.safetensors"), "--teacher", str(tiny_dir),
                 "--decoder", str(decoder_dir), "--out", str(export)]) == 0
    sample = ["sample", "--model", str(export), "--image", str(image_path), "--frames", "3", "--height", "32", "--width", "32"]
    assert main([*sample, "--decoder", "tiny", "--out", str(tmp_path / "tiny.gif")]) == 0
    assert (tmp_path / "tiny.gif").is_file()
    capsys.readouterr()
    assert main([*sample, "--decoder", "fast", "--out", str(tmp_path / "fast.gif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "carries no 'fast' decoder" in err and not (tmp_path / "fast.gif").exists()


def test_bench_times_the_export_fast_decoder_beside_the_stock_decoder(tiny_dir, exported, tmp_path, capsys):
    """`sfv bench` picks up the export's fast_decoder/ and times the student with both decoders in one run; the
    decode component is the decoding slot's network (hooks on the fast decoder, not the VAE's)."""
    from sfv.cli import main

    out = tmp_path / "bench"
    assert main(["bench", "--teacher", str(tiny_dir), "--student", str(exported), "--steps", "1", "--frames", "2",
                 "--height", "16", "--width", "16", "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    by = {v["name"]: v["summary"] for v in report["variants"]}
    assert list(by) == ["teacher-1-cfg", "teacher-1", "student-1", "student-1-fast-decoder"]
    assert report["config"]["fast_decoder"] == str(exported / "fast_decoder")
    fast, stock = by["student-1-fast-decoder"], by["student-1"]
    assert 0 < fast["vae_decode"]["median_s"] < stock["vae_decode"]["median_s"]  # timed: the tiny net, not the VAE
    f = report["fast_decoder"]
    assert f["decode"] == pytest.approx(stock["vae_decode"]["median_s"] / fast["vae_decode"]["median_s"])
    assert [t["teacher"] for t in f["vs_teacher"]] == ["teacher-1-cfg", "teacher-1"]
    assert "## Fast decoder" in (out / "bench.md").read_text() and "fast decoder: decode" in capsys.readouterr().out
    bad = main(["bench", "--teacher", str(tiny_dir), "--student", str(exported), "--decoder", str(tmp_path / "nope"),
                "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert bad == 2 and len(err) == 1 and "does not exist" in err[0] and not (tmp_path / "bad").exists()
