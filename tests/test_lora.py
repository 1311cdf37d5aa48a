"""A LoRA student (recipe model.lora, sfv/lora.py) on the tiny SVD and the tiny Wan 2.1: G starts as the teacher, only
its adapters train, D's backbone is G's base with the adapters off, the base is held once, the checkpoint holds the
adapters and resumes bit for bit, and the exported adapter loads where each family loads one (SVD: peft; Wan: stock
diffusers' load_lora_weights)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_recipe
from sfv import distributed, lora
from sfv.cli import main
from sfv.config import LoraConfig
from sfv.data import collate
from sfv.errors import InputError
from sfv.steps import State, d_step, g_step, prepare, round_generator
from sfv.teachers import load_teacher
from sfv.train import build, build_data, run

REPO = Path(__file__).resolve().parents[1]
CPU = distributed.World(rank=0, size=1, local_rank=0, device=torch.device("cpu"))
SVD_LORA = dict(model__lora="{rank: 4, alpha: 8, targets: linear}")  # alpha ≠ r: a wrong scale would show
WAN_LORA = dict(model__lora="{rank: 4, alpha: 8, targets: attn_ffn}", data__frames=5, data__height=32, data__width=48)


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _rounds(p, recipe):
    batch = collate([build_data(recipe)[(i, 0)] for i in range(2)])
    return [prepare(batch, p.teacher, recipe, round_generator(recipe.train.seed, 0, CPU.device))]


@pytest.fixture(scope="module")
def wan21(tmp_path_factory):
    from sfv.tiny_wan import build_pipeline, save

    out = tmp_path_factory.mktemp("wan") / "tiny-wan21"
    save(build_pipeline("wan21"), out)
    return out


# -- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("model.lora.rank=0", "model.lora.rank must be a positive integer"),
    ("model.lora.alpha=-1", "model.lora.alpha must be positive"),
    ("model.lora.targets=to_qq", "'to_qq' matches no Linear layer of the SVD network"),
])
def test_bad_lora_recipes_are_one_line_exit_2_and_write_nothing(override, message, tiny_dir, video_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = _cli(["distill", "--recipe", REPO / "recipes/tiny_cpu.yaml", f"model.teacher={tiny_dir}",
                         f"data.videos={video_dir}", f"train.run_dir={run_dir}", override], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not run_dir.exists()


def test_targets_that_match_nothing_are_refused_before_peft_runs(tiny_dir):
    teacher = load_teacher(tiny_dir)
    with pytest.raises(InputError, match="regular expression 'attn9' matches no Linear layer .* 453 modules searched"):
        lora.add_adapters(teacher.net, LoraConfig(targets="attn9"))
    assert not lora.is_adapted(teacher.net)


# -- G, D and the shared base ----------------------------------------------------------------------------------


def _shared_base_checks(p, recipe, fresh):
    """G starts as the teacher; a D step and a G step change only what they own; D's backbone is the plain base
    (adapters off) bit for bit; the base is in memory once."""
    rounds = _rounds(p, recipe)
    x0, cond = rounds[0].x0, rounds[0].cond
    level = p.G.levels[0]
    x_t = p.teacher.precond.add_noise(x0, level, torch.randn(x0.shape, generator=torch.Generator().manual_seed(3)))
    fresh.net.requires_grad_(False)  # frozen, as G's base (CPU matmul paths depend on requires_grad)
    with torch.no_grad():
        assert torch.equal(p.G(x_t, level, cond), fresh.denoise_with(fresh.net, x_t, level, cond))  # B = 0: G is the teacher
    adapters = lora.adapter_parameters(p.G.net)
    base = [q.detach().clone() for q in lora.base_parameters(p.G.net)]
    assert adapters and {n for n, q in p.G.named_parameters() if q.requires_grad} == {f"net.{n}" for n in adapters}
    before = {n: q.detach().clone() for n, q in adapters.items()}
    d_step(p, rounds, State())
    assert all(torch.equal(before[n], q) for n, q in adapters.items())
    g_step(p, rounds, State())
    changed = [n for n, q in adapters.items() if not torch.equal(before[n], q)]
    assert changed and all(".lora_B." in n for n in changed)  # B moves first (A's gradient is B·… = 0 at the start)
    assert all(torch.equal(a, b) for a, b in zip(base, lora.base_parameters(p.G.net)))
    assert all(q.requires_grad for q in adapters.values())  # D's adapters-off toggles left the flags as they were
    assert not p.ema.tensors.keys() - adapters.keys() and p.ema.n_averaged == 1
    # D judges with the teacher's own weights: its features equal a plain teacher's encoder bit for bit
    sigma = torch.full((x0.shape[0],), 0.5)
    x = p.teacher.precond.add_noise(x0, sigma.reshape(-1, 1, 1, 1, 1), torch.randn(x0.shape, generator=torch.Generator().manual_seed(4)))
    with torch.no_grad(), lora.adapters_off(p.D.backbone):
        ours = p.D.backbone(x, sigma, cond)
    with torch.no_grad():
        theirs = fresh.encoder()(x, sigma, cond)
        assert not torch.equal(p.G(x_t, level, cond), fresh.denoise_with(fresh.net, x_t, level, cond))  # G moved
    assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    # one base in memory: the storage of G ∪ D ∪ the teacher's network is base + adapters + D's heads, each once
    storage = {}
    for module in (p.G, p.D, p.teacher.net):
        for q in module.parameters():
            storage[q.untyped_storage().data_ptr()] = q.untyped_storage().nbytes()
    n_base = sum(q.numel() for q in lora.base_parameters(p.G.net))
    n_adapters = sum(q.numel() for q in adapters.values())
    n_heads = sum(q.numel() for q in p.D.trainable_parameters()) + sum(q.numel() for n, q in p.D.named_parameters()
                                                                       if n.startswith("backbone.reduce."))
    assert sum(storage.values()) == 4 * (n_base + n_adapters + n_heads)
    return n_base, n_adapters, n_heads


def test_svd_lora_g_trains_only_adapters_and_shares_its_base_with_d(tiny_dir, video_dir, tmp_path):
    recipe = tiny_recipe(tiny_dir, video_dir, tmp_path / "run", discriminator__r1_interval=1, **SVD_LORA)
    p = build(recipe, CPU)
    n_base, n_adapters, _ = _shared_base_checks(p, recipe, load_teacher(tiny_dir))
    assert n_base == sum(q.numel() for q in load_teacher(tiny_dir).net.parameters()) and 0 < n_adapters < n_base / 10


def test_wan_lora_g_trains_only_adapters_and_shares_its_base_with_d(wan21, video_dir, tmp_path):
    recipe = tiny_recipe(wan21, video_dir, tmp_path / "run", discriminator__r1_interval=1, **WAN_LORA)
    p = build(recipe, CPU)
    adapted = {n.split(".lora_")[0] for n in lora.adapter_parameters(p.G.net)}
    assert any(n.endswith("attn2.add_k_proj") for n in adapted) and any(n.endswith("ffn.net.2") for n in adapted)
    _shared_base_checks(p, recipe, load_teacher(wan21))


# -- checkpoints, resume, export ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def svd_runs(tiny_dir, video_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_runs")
    common = dict(train__batch_size=2, train__checkpoint_every=2, discriminator__r1_interval=1, generator__lr=1e-2, **SVD_LORA)
    run(tiny_recipe(tiny_dir, video_dir, root / "straight", train__total_videos=4, train__export="true", **common))
    run(tiny_recipe(tiny_dir, video_dir, root / "resumed", train__total_videos=4, **common),
        resume=str(root / "straight" / "checkpoints" / "videos-000000002"))
    return root


def _checkpoint(run_dir, name="videos-000000004"):
    folder = run_dir / "checkpoints" / name
    return {f"{f.stem}/{k}": v for f in sorted(folder.glob("*.safetensors")) if not f.stem.startswith("rng")
            for k, v in load_file(f).items()}


def test_a_lora_checkpoint_holds_the_adapters_and_resumes_bit_for_bit(svd_runs, tiny_dir):
    a, b = _checkpoint(svd_runs / "straight"), _checkpoint(svd_runs / "resumed")
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    adapters = [k for k in a if k.startswith("generator/")]
    for name in ("generator", "generator_ema"):
        keys = [k for k in a if k.startswith(f"{name}/")]
        assert keys and all(".lora_A.default." in k or ".lora_B.default." in k for k in keys), name
    assert len({k.split("/")[2] for k in a if k.startswith("optim_g/")}) == len(adapters)  # AdamW state: adapters only
    n_adapters = sum(v.numel() for k, v in a.items() if k.startswith("generator/"))
    n_base = sum(q.numel() for q in load_teacher(tiny_dir).net.parameters())
    assert n_adapters < n_base / 10 and any(v.abs().max() > 0 for k, v in a.items() if ".lora_B." in k and k.startswith("generator_ema/"))


def test_svd_lora_export_is_a_merged_unet_and_a_peft_adapter_equal_to_the_student(svd_runs, tiny_dir, tmp_path, capsys):
    from diffusers import UNetSpatioTemporalConditionModel
    from peft import PeftModel

    from sfv.teachers.svd_unet import svd_denoise

    ckpt = svd_runs / "straight" / "checkpoints" / "videos-000000004"
    code, out, err = _cli(["export", "--checkpoint", ckpt, "--lora", "--out", tmp_path / "export"], capsys)
    assert code == 0 and "lora/" in out, err
    adapter = tmp_path / "export" / "lora"
    assert sorted(f.name for f in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((tmp_path / "export" / "sfv.json").read_text())["lora"]["rank"] == 4
    # the student: the teacher's UNet with the checkpoint's EMA adapters, as training ran it
    cfg = LoraConfig(rank=4, alpha=8, targets="linear")
    student = load_teacher(tiny_dir)
    lora.AdapterState(lora.add_adapters(student.net, cfg)).load_state_dict(
        {k.split("/", 1)[1]: v for k, v in _checkpoint(svd_runs / "straight").items() if k.startswith("generator_ema/")})
    student.net.requires_grad_(False)  # as peft loads an adapter for inference
    peft_unet = PeftModel.from_pretrained(load_teacher(tiny_dir).net.requires_grad_(False), str(adapter))
    merged = UNetSpatioTemporalConditionModel.from_pretrained(tmp_path / "export" / "unet").requires_grad_(False)
    plain = load_teacher(tiny_dir)
    plain.net.requires_grad_(False)
    cond = plain.encode_condition(_image(), height=32, width=32)
    x = torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * plain.sigma_max
    with torch.no_grad():
        ours = svd_denoise(student.net, x, plain.sigma_max, cond)
        by_peft = svd_denoise(peft_unet, x, plain.sigma_max, cond)
        by_merged = svd_denoise(merged, x, plain.sigma_max, cond)
        teacher = svd_denoise(plain.net, x, plain.sigma_max, cond)
    print(f"SVD peft parity: max |x̂0 diff| {(ours - by_peft).abs().max():.3g}; merged {(ours - by_merged).abs().max():.3g}; "
          f"student vs teacher {(ours - teacher).abs().max():.3g}")
    assert (ours - by_peft).abs().max() <= 1e-5 and (ours - by_merged).abs().max() <= 1e-5
    assert (ours - teacher).abs().max() > 1e-3  # the adapter changed the network
    # the run's own export merged the same EMA adapters and wrote the same adapter
    assert load_file(tmp_path / "export" / "unet" / "diffusion_pytorch_model.safetensors").keys() == \
        load_file(svd_runs / "straight" / "export" / "unet" / "diffusion_pytorch_model.safetensors").keys()
    a = load_file(adapter / "adapter_model.safetensors")
    b = load_file(svd_runs / "straight" / "export" / "lora" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_export_of_a_checkpoint_without_adapters_is_one_line_exit_2(svd_runs, tmp_path, capsys):
    full = tmp_path / "videos-000000004"
    shutil.copytree(svd_runs / "straight" / "checkpoints" / "videos-000000004", full)
    state = json.loads((full / "state.json").read_text())
    state["recipe"]["model"]["lora"] = None  # the recipe of a full student
    (full / "state.json").write_text(json.dumps(state))
    code, _, err = _cli(["export", "--checkpoint", full, "--lora", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "holds no LoRA adapters" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def _image(height=32, width=32, seed=5):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(height, width, 3, generator=g) * 255).round().to(torch.uint8).numpy())


def test_wan_lora_adapter_loads_in_stock_diffusers_and_gives_the_students_step(wan21, video_dir, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    common = dict(train__batch_size=2, train__checkpoint_every=2, generator__lr=1e-2, **WAN_LORA)
    run(tiny_recipe(wan21, video_dir, tmp_path / "run", train__total_videos=2, train__export="true", **common))
    export = tmp_path / "run" / "export"
    assert (export / "lora" / "pytorch_lora_weights.safetensors").is_file()
    sizes = dict(num_frames=5, height=32, width=48)
    image, prompt = _image(32, 48), "a red ball moves left"
    # stock diffusers: the teacher's folder + the adapter + the export's scheduler, one step
    pipe = WanImageToVideoPipeline.from_pretrained(str(wan21))
    pipe.load_lora_weights(str(export / "lora"))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(export / "scheduler"))
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(image=image, prompt=prompt, num_inference_steps=1, guidance_scale=1.0, output_type="latent",
                 generator=torch.Generator().manual_seed(0), **sizes).frames
    # the student: the teacher with the run's EMA adapters, sfv's one step
    teacher = load_teacher(wan21)
    values = {k.split("/", 1)[1]: v for k, v in _checkpoint(tmp_path / "run", "videos-000000002").items()
              if k.startswith("generator_ema/")}
    lora.AdapterState(lora.add_adapters(teacher.net, LoraConfig(rank=4, alpha=8, targets="attn_ffn"))).load_state_dict(values)
    teacher.net.requires_grad_(False)
    cond = teacher.encode_condition(image, prompt, "", **sizes)
    ours = teacher.sample(cond, num_inference_steps=1, max_guidance_scale=1.0, generator=torch.Generator().manual_seed(0),
                          **sizes).permute(0, 2, 1, 3, 4)
    with lora.adapters_off(teacher.net):
        base = teacher.sample(cond, num_inference_steps=1, max_guidance_scale=1.0, generator=torch.Generator().manual_seed(0),
                              **sizes).permute(0, 2, 1, 3, 4)
    print(f"Wan stock load_lora_weights parity: max |diff| {(ours - stock).abs().max():.3g} "
          f"(student vs teacher {(ours - base).abs().max():.3g})")
    assert (ours - stock).abs().max() <= 1e-4
    assert (ours - base).abs().max() > 1e-3
    # the same adapter in ComfyUI's LoRA layout (lora/comfyui_lora.safetensors, models/loras/ in ComfyUI), read back
    # through diffusers' converter of that layout
    comfy = WanImageToVideoPipeline.from_pretrained(str(wan21))
    comfy.load_lora_weights(str(export / "lora"), weight_name="comfyui_lora.safetensors")
    comfy.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(export / "scheduler"))
    comfy.set_progress_bar_config(disable=True)
    from_comfy = comfy(image=image, prompt=prompt, num_inference_steps=1, guidance_scale=1.0, output_type="latent",
                       generator=torch.Generator().manual_seed(0), **sizes).frames
    print(f"Wan ComfyUI-layout LoRA through load_lora_weights: max |diff| {(ours - from_comfy).abs().max():.3g}")
    assert (ours - from_comfy).abs().max() <= 1e-4
    # the run's export (the adapters merged into the transformer) runs in stock diffusers as the same student
    merged = WanImageToVideoPipeline.from_pretrained(str(export))
    merged.set_progress_bar_config(disable=True)
    one = merged(image=image, prompt=prompt, num_inference_steps=1, guidance_scale=1.0, output_type="latent",
                 generator=torch.Generator().manual_seed(0), **sizes).frames
    print(f"Wan merged export in stock diffusers: max |diff| {(ours - one).abs().max():.3g}")
    assert (ours - one).abs().max() <= 1e-4


# -- FSDP: two processes -------------------------------------------------------------------------------------


def _sharded(ckpt: Path, like_ckpt: Path | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded checkpoint, whole, read on this process alone."""
    from safetensors import safe_open

    from sfv import checkpoint

    like: dict = {}
    for file in sorted((like_ckpt or ckpt).glob("sharded/*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                name, rest = key.split(".", 1)
                like.setdefault(name, {})[rest] = f.get_tensor(key)
    full = checkpoint.read_full(ckpt, {n: {k: torch.empty(v.shape if v.ndim else (), dtype=v.dtype) for k, v in t.items()}
                                       for n, t in like.items()})
    return {f"{n}.{k}": v for n, t in full.items() for k, v in t.items()}


@pytest.mark.slow
def test_a_two_process_fsdp_lora_run_checkpoints_adapters_and_resumes_exactly_on_one(tiny_dir, video_dir, tmp_path):
    """2 processes (accelerate launch) to 4 videos, checkpointing at 2 and 4; its checkpoint at 2 resumed on 1 process
    (2 → 1, resharded) ends where the 2-process run ends, in every checkpoint tensor bit for bit. The checkpoints hold
    the adapters, their EMA and their AdamW state, not the base; `sfv export --lora` consolidates them."""
    from conftest import launch_two

    lora_ = "{rank: 4, alpha: 8, targets: linear}"
    proc = launch_two("-m", "sfv.train", "--recipe", REPO / "recipes/tiny_cpu.yaml", f"model.teacher={tiny_dir}",
                      f"data.videos={video_dir}", f"train.run_dir={tmp_path / 'A'}", "parallel.mode=fsdp", "train.batch_size=2",
                      "train.batch_per_device=1", "train.checkpoint_every=2", "train.total_videos=4", "train.sample_every=0",
                      "train.export=false", "generator.lr=1.0e-2", "discriminator.r1_interval=1", f"model.lora={lora_}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    at2, at4 = "checkpoints/videos-000000002", "checkpoints/videos-000000004"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes
    try:
        run(tiny_recipe(tiny_dir, video_dir, tmp_path / "C1", parallel__mode="fsdp", train__batch_size=2, train__batch_per_device=1,
                        train__checkpoint_every=2, train__total_videos=4, generator__lr=1e-2, discriminator__r1_interval=1,
                        model__lora=lora_), resume=str(tmp_path / "A" / at2))
    finally:
        torch.set_num_threads(threads)
    like = tmp_path / "C1" / at4  # written by one process: whole shapes
    a, c, a2 = _sharded(tmp_path / "A" / at4, like), _sharded(like), _sharded(tmp_path / "A" / at2, like)
    state = json.loads((tmp_path / "A" / at4 / "state.json").read_text())
    assert state["world_size"] == 2 and state["format"] == "sharded"
    for name in ("generator", "generator_ema", "optim_g"):
        keys = [k for k in a if k.startswith(f"{name}.")]
        assert keys and all(".lora_A.default." in k or ".lora_B.default." in k for k in keys), name
    n_adapters = sum(v.numel() for k, v in a.items() if k.startswith("generator."))
    assert n_adapters < sum(q.numel() for q in load_teacher(tiny_dir).net.parameters()) / 10
    moved = max((a[k] - a2[k]).abs().max().item() for k in a if k.startswith("generator."))
    off = max((a[k] - c[k]).abs().max().item() for k in a)
    print(f"2 → 1 process resume: {len(a)} checkpoint tensors, max |diff| {off:.3g} from the 2-process run "
          f"(the adapters moved {moved:.3g} in those 2 steps)")
    assert moved > 1e-3 and a.keys() == c.keys() and [k for k in a if not torch.equal(a[k], c[k])] == []
    # the sharded checkpoint consolidated by `sfv export --lora`: its adapter file holds the EMA adapters, whole
    assert main(["export", "--checkpoint", str(tmp_path / "A" / at4), "--lora", "--out", str(tmp_path / "export")]) == 0
    exported = load_file(tmp_path / "export" / "lora" / "adapter_model.safetensors")
    ema = {k.removeprefix("generator_ema.").replace(".default.", "."): v for k, v in a.items() if k.startswith("generator_ema.")}
    assert {k.removeprefix("base_model.model.") for k in exported} == ema.keys()
    assert all(torch.equal(v, ema[k.removeprefix("base_model.model.")]) for k, v in exported.items())
