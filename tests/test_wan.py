"""The Wan 2.x family on tiny real folders (sfv.tiny_wan, built offline): the teacher's sampler equals stock
WanImageToVideoPipeline bit for bit, the export runs in stock diffusers in one transformer call, and the unchanged SF-V
loop trains a Wan G. Both sides of every parity check are loaded from the folder: a model built in memory rounds
differently from the same weights loaded from disk (memory alignment, ~1e-6)."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import WanImageToVideoPipeline

import sfv
from conftest import tiny_recipe
from sfv import distributed
from sfv.data import collate
from sfv.errors import InputError, ModelLoadError
from sfv.steps import State, d_step, g_step, prepare, round_generator
from sfv.teachers import load_teacher
from sfv.teachers.wan import WanTeacher
from sfv.tiny_wan import SIZES, build_pipeline, save
from sfv.train import build, build_data

PROMPT = "a red ball moves left"
REPO = Path(__file__).resolve().parents[1]
CPU = distributed.World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def wan_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    out = {}
    for layout in ("wan21", "wan22", "a14b"):
        out[layout] = root / f"tiny-{layout}"
        save(build_pipeline(layout), out[layout])
    return out


def _image(height, width, seed=5):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(height, width, 3, generator=g) * 255).round().to(torch.uint8).numpy())


def _stock(pipe, image, steps, guidance, sizes, seed=0):
    pipe.set_progress_bar_config(disable=True)
    return pipe(image=image, prompt=PROMPT, num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
                generator=torch.Generator().manual_seed(seed), **sizes).frames  # [B, C, F, h, w]


@pytest.mark.parametrize("layout", ["wan21", "wan22", "a14b"])
def test_teacher_sampler_equals_stock_pipeline_bit_for_bit(wan_dirs, layout):
    sizes = SIZES[layout]
    image = _image(sizes["height"], sizes["width"])
    pipe = WanImageToVideoPipeline.from_pretrained(str(wan_dirs[layout]))
    teacher = load_teacher(wan_dirs[layout])  # the family is picked from model_index.json
    assert isinstance(teacher, WanTeacher) and teacher.expand_timesteps == (layout == "wan22")
    cond = teacher.encode_condition(image, PROMPT, "", **sizes)
    for steps, guidance in ((2, 5.0), (3, 1.0), (4, 5.0)):  # A14B at 4 steps: 2 by the high-noise expert, 2 by the low
        ref = _stock(pipe, image, steps, guidance, sizes)
        ours = teacher.sample(cond, num_inference_steps=steps, max_guidance_scale=guidance,
                              generator=torch.Generator().manual_seed(0), **sizes)
        assert torch.equal(ours.permute(0, 2, 1, 3, 4), ref), (steps, guidance)
    # sfv.load_pipeline(teacher folder): the same sampler behind the stock call's arguments
    loaded = sfv.load_pipeline(wan_dirs[layout])
    assert not loaded.is_student and loaded.sampling_defaults() == (50, 5.0)
    ours = loaded(image, PROMPT, num_inference_steps=2, guidance_scale=5.0, output_type="latent",
                  generator=torch.Generator().manual_seed(0), **sizes).frames
    assert torch.equal(ours, _stock(pipe, image, 2, 5.0, sizes)), "load_pipeline"
    # the falsifier: another seed is another video
    other = teacher.sample(cond, num_inference_steps=2, max_guidance_scale=5.0, generator=torch.Generator().manual_seed(1), **sizes)
    assert not torch.equal(other.permute(0, 2, 1, 3, 4), _stock(pipe, image, 2, 5.0, sizes))
    # one step from t = 1 is the teacher's x̂0 = ε − v
    eps = teacher.initial_latents(1, sizes["num_frames"], sizes["height"], sizes["width"], 1.0, torch.Generator().manual_seed(0))
    one = teacher.sample(cond, num_inference_steps=1, max_guidance_scale=1.0, latents=eps, **sizes)
    assert torch.equal(one, teacher.denoise(eps, torch.tensor(1.0), cond))


@pytest.mark.parametrize("layout", ["wan21", "wan22"])
def test_export_runs_in_stock_diffusers_in_one_call_bit_for_bit(wan_dirs, layout, tmp_path):
    sizes = SIZES[layout]
    image = _image(sizes["height"], sizes["width"])
    teacher = WanTeacher.from_pretrained(wan_dirs[layout])
    g = torch.Generator().manual_seed(11)
    student = teacher.student_from_state({k: v + 0.01 * torch.randn(v.shape, generator=g)
                                          for k, v in teacher.transformer.state_dict().items()}, "perturbed")
    out = teacher.export(student, tmp_path / "export", info={"note": "test"}, t_g=4)
    meta = json.loads((out / "sfv.json").read_text())
    assert meta["sampling"]["levels"][0] == 1.0 and len(meta["sampling"]["levels"]) == 3
    stock = WanImageToVideoPipeline.from_pretrained(str(out))
    calls = []
    stock.transformer.register_forward_hook(lambda *a: calls.append(1))
    ref = _stock(stock, image, 1, 1.0, sizes)
    assert len(calls) == 1
    loaded = load_teacher(out)
    cond = loaded.encode_condition(image, PROMPT, "", **sizes)
    ours = loaded.sample(cond, num_inference_steps=1, max_guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **sizes)
    assert torch.equal(ours.permute(0, 2, 1, 3, 4), ref)
    pipe = sfv.load_pipeline(out)  # the export samples as its student by default: 1 step, no CFG
    assert pipe.is_student and pipe.sampling_defaults() == (1, 1.0)
    assert torch.equal(pipe(image, PROMPT, output_type="latent", generator=torch.Generator().manual_seed(0), **sizes).frames, ref)
    two = pipe(image, PROMPT, num_inference_steps=2, output_type="latent", generator=torch.Generator().manual_seed(0), **sizes)
    assert two.frames.shape == ref.shape and not torch.equal(two.frames, ref)  # 2 steps on its levels: another video
    with pytest.raises(InputError, match="1 to 3 steps"):
        pipe(image, PROMPT, num_inference_steps=4, **sizes)
    teacher_one = teacher.sample(teacher.encode_condition(image, PROMPT, "", **sizes), num_inference_steps=1,
                                 max_guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **sizes)
    assert not torch.allclose(teacher_one, ours, atol=1e-3)  # the student's step, not the teacher's


def test_wan_teacher_refuses_bad_sizes_and_folders(wan_dirs, tmp_path):
    teacher = WanTeacher.from_pretrained(wan_dirs["wan21"])
    image = _image(32, 48)
    with pytest.raises(InputError, match="4k\\+1 frames"):
        teacher.encode_condition(image, PROMPT, "", num_frames=8, height=32, width=48)
    with pytest.raises(InputError, match="height 40 is not a multiple of 16"):
        teacher.encode_condition(image, PROMPT, "", num_frames=5, height=40, width=48)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    with pytest.raises(ModelLoadError, match="incomplete: missing transformer/config.json"):
        load_teacher(broken)


def test_captions_condition_wan_and_the_latent_cache_stores_their_text_embeddings(wan_dirs, video_dir, tmp_path):
    import shutil

    from sfv.cache import write_cache
    from sfv.data import ClipSpec, VideoFolder

    videos = tmp_path / "videos"
    shutil.copytree(video_dir, videos)
    first, second = sorted(p.relative_to(videos).as_posix() for p in videos.glob("*.mp4"))[:2]
    (videos / "metadata.jsonl").write_text(json.dumps({"file": first, "caption": "a red ball moves left"}) + "\n")
    teacher = WanTeacher.from_pretrained(wan_dirs["wan21"])
    data = VideoFolder(videos, ClipSpec(5, 32, 48, 8))
    batch = collate([data.load(i) | {"skipped": []} for i in range(2)])
    assert batch["caption"] == ["a red ball moves left", ""]
    _, cond = teacher.encode_batch(batch, 32, 48)
    assert torch.equal(cond.prompt_embeds[0], teacher.encode_prompt(["a red ball moves left"])[0])
    assert torch.equal(cond.prompt_embeds[1], teacher.empty_prompt(1)[0])  # no caption: the empty prompt
    index = write_cache(teacher, data, tmp_path / "cache", 0.0, batch_size=2)
    from safetensors.torch import load_file

    cached = load_file(tmp_path / "cache" / index["shards"][0]["file"])
    assert torch.equal(cached["prompt_embeds"][:2], cond.prompt_embeds.float())
    x0, from_cache = teacher.encode_batch({k: v[:2] for k, v in cached.items()}, 32, 48)
    assert torch.equal(from_cache.prompt_embeds, cond.prompt_embeds)


def test_rec_max_sigma_is_checked_against_the_familys_own_levels(wan_dirs, video_dir, tmp_path):
    from sfv.teachers.svd import SVDTeacher
    from sfv.train import check_options

    sigmas = WanTeacher.folder_generator_sigmas(wan_dirs["wan21"], 4)  # from the configs alone: σ = t / (1 − t)
    levels = WanTeacher.from_pretrained(wan_dirs["wan21"]).generator_levels(4).tolist()  # the loaded teacher's t
    assert sigmas[0] == float("inf") and levels[0] == 1.0
    assert sigmas[1:] == pytest.approx([t / (1 - t) for t in levels[1:]], rel=1e-6) == [6.027027, 1.513514]
    assert SVDTeacher.folder_generator_sigmas(REPO / "models/toy-svd-v2", 4)[-1] > 2.0  # SVD's levels would refuse 2
    for value, ok in ((2.0, True), (0.5, False)):
        recipe = tiny_recipe(wan_dirs["wan21"], video_dir, tmp_path / "run", data__frames=5, data__height=32,
                             data__width=48, generator__rec_max_sigma=value)
        if ok:
            check_options(recipe, None)
        else:
            with pytest.raises(InputError, match="outside G's levels \\(inf, 6.03, 1.51\\)"):
                check_options(recipe, None)


def test_d_labels_are_refused_for_a_family_without_scalar_conditions(wan_dirs, video_dir, tmp_path):
    """discriminator.labels embeds SVD's fps and motion bucket in D; Wan has none: one line, before any model loads."""
    from sfv.train import check_options

    recipe = tiny_recipe(wan_dirs["wan21"], video_dir, tmp_path / "run", data__frames=5, data__height=32, data__width=48,
                         discriminator__labels=True)
    with pytest.raises(InputError, match="is a WanImageToVideoPipeline folder, which has none: set discriminator.labels=false"):
        check_options(recipe, None)
    assert WanTeacher.label_count == 0


def test_the_sfv_loop_trains_a_wan_generator(wan_dirs, video_dir, tmp_path):
    recipe = tiny_recipe(wan_dirs["wan21"], video_dir, tmp_path / "run", data__frames=5, data__height=32, data__width=48,
                         discriminator__r1_interval=1)
    p = build(recipe, CPU)
    assert isinstance(p.teacher, WanTeacher) and p.G.top_level == 1.0 and p.init_sigma == 1.0
    batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
    rounds = [prepare(batch, p.teacher, recipe, round_generator(recipe.train.seed, 0, CPU.device))]
    assert rounds[0].x0.shape == (2, 2, 16, 4, 6)  # 5 frames → 2 latent frames (4× in time), 32×48 → 4×6
    heads = {k: v.clone() for k, v in p.D.state_dict().items()}
    g_before = {k: v.clone() for k, v in p.G.state_dict().items()}
    d_stats = d_step(p, rounds, State())
    assert torch.isfinite(torch.tensor(d_stats["loss/d"]))
    assert any(not torch.equal(heads[k], v) for k, v in p.D.state_dict().items())
    g_stats = g_step(p, rounds, State())
    assert torch.isfinite(torch.tensor(g_stats["loss/g"])) and g_stats["grad/g_adv"] > 0
    assert sum(not torch.equal(g_before[k], v) for k, v in p.G.state_dict().items()) > 0.9 * len(g_before)
    assert all(torch.equal(a, b) for a, b in zip(p.teacher.transformer.state_dict().values(),
                                                 WanTeacher.from_pretrained(wan_dirs["wan21"]).transformer.state_dict().values()))


def test_a_wan_distillation_resumes_exactly_and_its_export_runs_in_stock_diffusers(wan_dirs, video_dir, tmp_path):
    from safetensors.torch import load_file

    from sfv.train import run

    common = dict(data__frames=5, data__height=32, data__width=48, train__batch_size=2, train__checkpoint_every=2,
                  discriminator__r1_interval=3)
    run(tiny_recipe(wan_dirs["wan21"], video_dir, tmp_path / "straight", train__total_videos=4, train__export="true", **common))
    run(tiny_recipe(wan_dirs["wan21"], video_dir, tmp_path / "resumed", train__total_videos=2, **common))
    run(tiny_recipe(wan_dirs["wan21"], video_dir, tmp_path / "resumed", train__total_videos=4, **common), resume="latest")

    def weights(run_dir):
        folder = run_dir / "checkpoints" / "videos-000000004"
        return {f"{f.stem}/{k}": v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}

    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) > 50 and [k for k in a if not torch.equal(a[k], b[k])] == []
    # the run's export: stock diffusers, one step, one transformer call, equal to sfv's own sampler on the folder
    export = tmp_path / "straight" / "export"
    sizes = dict(num_frames=5, height=32, width=48)
    image = _image(32, 48)
    stock = WanImageToVideoPipeline.from_pretrained(str(export))
    ref = _stock(stock, image, 1, 1.0, sizes)
    loaded = load_teacher(export)
    ours = loaded.sample(loaded.encode_condition(image, PROMPT, "", **sizes), num_inference_steps=1, max_guidance_scale=1.0,
                         generator=torch.Generator().manual_seed(0), **sizes)
    assert torch.equal(ours.permute(0, 2, 1, 3, 4), ref)
    assert json.loads((export / "sfv.json").read_text())["g_steps"] == 2


def test_the_readme_wan_commands_run_as_written(tmp_path, monkeypatch, capsys):
    import runpy

    from sfv import load_pipeline as sfv_pipeline
    from sfv.cli import main as sfv
    from sfv.tiny import write_moving_squares

    root = tmp_path / "clone"
    root.mkdir()
    (root / "recipes").symlink_to(REPO / "recipes")
    monkeypatch.chdir(root)
    write_moving_squares("runs/tiny-videos")  # the tiny recipe's header command for its videos
    tool = runpy.run_path(str(REPO / "tools/make_tiny_wan.py"), run_name="readme")
    assert tool["main"](["--out", "runs/tiny-wan"]) == 0
    argv = "distill --recipe recipes/tiny_cpu.yaml model.teacher=runs/tiny-wan data.frames=5 data.height=32 data.width=48"
    code, err = sfv(argv.split()), capsys.readouterr().err
    assert code == 0, err
    export = root / "runs/tiny_cpu/export"
    pipe = WanImageToVideoPipeline.from_pretrained(str(export))  # the README's Python lines
    video = pipe(image=_image(32, 48), prompt="", num_inference_steps=1, guidance_scale=1.0, num_frames=5, height=32,
                 width=48, output_type="np").frames
    assert video.shape == (1, 5, 32, 48, 3)
    ours = sfv_pipeline("runs/tiny_cpu/export")(_image(32, 48), prompt="").frames
    assert ours.shape == video.shape  # the export records its size (video.json): no sizes needed
    (root / "docs/img").mkdir(parents=True)
    (root / "docs/img/frame0.png").symlink_to(REPO / "docs/img/frame0.png")
    line = 'sample --model runs/tiny_cpu/export --image docs/img/frame0.png --prompt "a red ball moves left" --out runs/wan.mp4'
    import shlex

    assert sfv(shlex.split(line)) == 0 and (root / "runs/wan.mp4").stat().st_size > 0
    capsys.readouterr()  # the stock pipeline's progress bar
    # the bad sizes the README names: one line, exit 2, nothing written
    for bad, message in (("data.frames=6", "4k+1 frames"), ("data.height=40", "not a multiple of 16"),
                         ("svd.noise_aug_strength=0.1", "svd.noise_aug_strength is an SVD setting"),
                         ("data.motion_bucket_id=40", "moved to 'svd.motion_bucket_id'")):
        code = sfv([*argv.split(), bad, "train.run_dir=runs/bad"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (root / "runs/bad").exists()


def test_a_two_process_fsdp_wan_run_exports_a_folder_stock_diffusers_runs(wan_dirs, video_dir, tmp_path):
    from conftest import launch_two

    run_dir = tmp_path / "fsdp"
    proc = launch_two("-m", "sfv.train", "--recipe", REPO / "recipes/tiny_cpu.yaml", f"model.teacher={wan_dirs['wan22']}",
                      f"data.videos={video_dir}", f"train.run_dir={run_dir}", "data.frames=5", "data.height=64",
                      "data.width=64", "parallel.mode=fsdp", "train.batch_size=2", "train.batch_per_device=1",
                      "train.total_videos=4", "train.checkpoint_every=4", "train.sample_every=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "export" / "sfv.json").read_text())["g_steps"] == 2
    sizes = dict(num_frames=5, height=64, width=64)
    image = _image(64, 64)
    ref = _stock(WanImageToVideoPipeline.from_pretrained(str(run_dir / "export")), image, 1, 1.0, sizes)
    loaded = load_teacher(run_dir / "export")
    ours = loaded.sample(loaded.encode_condition(image, PROMPT, "", **sizes), num_inference_steps=1, max_guidance_scale=1.0,
                         generator=torch.Generator().manual_seed(0), **sizes)
    assert torch.equal(ours.permute(0, 2, 1, 3, 4), ref)
    teacher = load_teacher(wan_dirs["wan22"])
    before = teacher.sample(teacher.encode_condition(image, PROMPT, "", **sizes), num_inference_steps=1,
                            max_guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **sizes)
    assert not torch.equal(before, ours)  # G trained: the export is not the teacher


def test_cli_exports_and_samples_a_wan_generator_and_refuses_the_other_familys_flags(wan_dirs, tmp_path, capsys):
    from sfv.cli import main as sfv

    teacher = WanTeacher.from_pretrained(wan_dirs["wan21"])
    teacher.transformer.save_pretrained(tmp_path / "g", safe_serialization=True)
    assert sfv(["export", "--generator", str(tmp_path / "g"), "--teacher", str(wan_dirs["wan21"]), "--out", str(tmp_path / "e")]) == 0
    exported = load_teacher(tmp_path / "e").transformer
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(), teacher.transformer.state_dict().values()))
    capsys.readouterr()
    frame0 = str(REPO / "docs/img/frame0.png")
    sample = ["sample", "--model", str(tmp_path / "e"), "--image", frame0, "--out", str(tmp_path / "v.mp4"), "--frames",
              "9", "--height", "32", "--width", "48"]
    assert sfv(sample + ["--prompt", "a red ball moves left"]) == 0
    assert "student, 1 step" in capsys.readouterr().out and (tmp_path / "v.mp4").stat().st_size > 0
    (tmp_path / "v.mp4").unlink()
    for argv, says in ((sample + ["--motion-bucket-id", "40"], "--motion-bucket-id is an SVD-only option"),
                       (sample + ["--long", "chain"], "--long is an SVD-only option"),
                       (sample[:-6] + ["--frames", "8", "--height", "32", "--width", "48"], "4k+1"),
                       (sample[:-4] + ["--height", "40", "--width", "48"], "16"),
                       (["sample", "--model", str(REPO / "models/toy-svd-v2"), "--image", frame0, "--out",
                         str(tmp_path / "v.mp4"), "--prompt", "a ball"], "SVD is conditioned on the image only"),
                       (["export", "--generator", str(tmp_path / "g"), "--teacher", str(wan_dirs["wan21"]), "--out",
                         str(tmp_path / "e2"), "--decoder", str(REPO / "models/toy-decoder-v2")], "Wan")):
        code, err = sfv(argv), capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, (argv, err)
        assert not (tmp_path / "v.mp4").exists() and not (tmp_path / "e2").exists()


def test_a14b_distils_its_high_noise_expert_or_says_why_not(wan_dirs):
    teacher = WanTeacher.from_pretrained(wan_dirs["a14b"])
    assert teacher.net is teacher.transformer and teacher.boundary_ratio == 0.9
    levels = teacher.generator_levels(2)  # T_g = 2: G trains at t = 1 only, inside the high-noise expert's range
    assert levels.tolist() == [1.0]
    with pytest.raises(InputError, match="high-noise expert, which handles t ≥ 0.9"):
        teacher.generator_levels(4)  # the shifted 4-step grid reaches below the boundary


def test_the_full_size_flops_tool_counts_both_wan_models(tmp_path):
    import runpy

    tool = runpy.run_path(str(REPO / "tools/wan_flops.py"), run_name="test")
    assert tool["main"](["--out", str(tmp_path / "flops.json")]) == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "flops.json").read_text())}
    assert 16.0e9 < rows["wan2.1-i2v-14b"]["parameters"]["transformer"] < 17.0e9  # 14B plus its image branch
    assert 4.9e9 < rows["wan2.2-ti2v-5b"]["parameters"]["transformer"] < 5.1e9
    for r in rows.values():  # the teacher's 100 transformer calls against one
        t = r["tflops"]
        assert t["teacher_50_steps_cfg"] > 100 * t["transformer_call"] > 0 and 1 < r["ratio"] < 100


def test_the_wan_bench_refuses_svd_options_and_bad_sizes_before_building(tmp_path, capsys):
    from sfv.arch import ARCH_FRAMES
    from sfv.cli import BENCH_ARCHES
    from sfv.cli import main as sfv
    from sfv.teachers.wan_bench import ARCHES

    assert BENCH_ARCHES == [*ARCH_FRAMES, *ARCHES]
    base = ["bench", "--arch", "tiny-wan21", "--random-weights", "--out", str(tmp_path / "b")]
    for extra, says in ((["--decoder", "tiny"], "--decoder is an SVD bench option"), (["--frames", "8"], "4k+1 frames"),
                        (["--height", "40"], "height 40 is not a multiple of 16"), ([], None)):
        argv = base + extra if extra else ["bench", "--arch", "tiny-wan21", "--out", str(tmp_path / "b")]
        code, err = sfv(argv), capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and (says or "--random-weights") in err, err
        assert not (tmp_path / "b").exists()


def test_the_full_size_wan_vaes_have_latent_statistics_for_every_channel():
    """The bench's full-size VAEs (built on the meta device: no weights) normalise every latent channel; the class's
    default statistics list Wan 2.1's 16 channels, which broke the 48-channel TI2V-5B bench on a GPU."""
    from diffusers import AutoencoderKLWan

    from sfv.teachers.wan_bench import FULL, vae_config

    for arch, spec in FULL.items():
        with torch.device("meta"):
            vae = AutoencoderKLWan(**vae_config(arch))
        z = vae.config.z_dim
        assert len(vae.config.latents_mean) == len(vae.config.latents_std) == z, arch
        # the transformer reads the noisy latents (+ the image latents and their mask for 2.1 I2V)
        assert spec["transformer"]["in_channels"] == (2 * z + 4 if spec["clip"] else z), arch


def test_sfv_serve_runs_a_wan_folder_with_a_prompt(wan_dirs, tmp_path, monkeypatch, capsys):
    """`sfv serve --model WAN_DIR`'s server: a prompt per request, the first frame's size, 4k+1 frames; the frames it
    writes are sfv.load_pipeline(folder)'s for the same settings, bit for bit. SVD's motion bucket and long video are
    not offered, and what Wan cannot take is one line."""
    import numpy as np

    import sfv.video
    from sfv.cli import main as sfv_cli
    from sfv.serve import Request, Server

    sizes = SIZES["wan21"]
    frame = tmp_path / "frame.png"
    _image(sizes["height"], sizes["width"]).save(frame)
    server = Server.load(wan_dirs["wan21"], torch.device("cpu"), torch.float32, tmp_path)
    spec = server.spec
    assert spec.text and not spec.student and (spec.default_steps, spec.default_guidance) == (50, 5.0)
    assert spec.size_multiple == 16 and spec.decoders == ("vae",) and spec.fps == 16
    written, write = [], sfv.video.write_video
    monkeypatch.setattr(sfv.video, "write_video", lambda path, frames, fps: (written.append(frames), write(path, frames, fps=fps)))
    request = Request(prompt=PROMPT, negative_prompt="blurry", steps=2, guidance=3.0, frames=5, seed=4, fps=16)
    out = server.generate(frame, request)
    assert out.path.stat().st_size > 0 and f"prompt “{PROMPT}”" in out.summary() and "CFG 3" in out.summary()
    ref = sfv.load_pipeline(wan_dirs["wan21"])(
        _image(sizes["height"], sizes["width"]), prompt=PROMPT, negative_prompt="blurry", num_frames=5,
        height=sizes["height"], width=sizes["width"], num_inference_steps=2, guidance_scale=3.0,
        generator=torch.Generator().manual_seed(4), output_type="np").frames[0]
    assert written[0].shape == (5, sizes["height"], sizes["width"], 3) and np.array_equal(written[0], ref)

    for bad, says in ((Request(prompt=PROMPT, frames=4), r"4k\+1 frames"), (Request(frames=5, long="chain"), "SVD-only"),
                      (Request(frames=5, decoder="tiny"), "decoder must be one of vae"),
                      (Request(prompt="x" * 2001), "at most 2000")):
        with pytest.raises(InputError, match=says):
            server.generate(frame, bad)
    assert len(written) == 1

    if __import__("importlib").util.find_spec("gradio") is not None:
        from sfv.serve_page import build_page

        page = build_page(server, [])
        ids = {b.elem_id for b in page.blocks.values() if getattr(b, "elem_id", None)}
        assert {"sfv-prompt", "sfv-negative-prompt", "sfv-fps", "sfv-frames"} <= ids and "sfv-bucket" not in ids
    import socket

    with socket.socket() as sock:  # a port free now: the command checks it before the folder
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    capsys.readouterr()
    code = sfv_cli(["serve", "--model", str(wan_dirs["wan21"]), "--decoder", "tiny", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "own VAE only" in err, err
