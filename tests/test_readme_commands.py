"""Every command in the README's bash blocks runs as written (at toy size where it names a size or a budget).

`COMMANDS` lists each README command line with how it is checked:
  - ("here", why): run by `test_readme_commands_run_at_toy_size` below, in process, from a clean working folder;
  - ("test", "tests/FILE.py::test_name"): run by that test (the test must exist);
  - ("hardware", why): needs GPUs or several nodes; the note names the CPU test that runs the same code.
`test_every_readme_command_is_listed` fails when the README gains, loses or changes a command, so the table (and the
checks) follow the README.
"""

import ast
import re
import shutil
from pathlib import Path

import pytest

from sfv.cli import main as sfv

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    # block 1: the two commands
    "make demo": ("test", "tests/test_toy.py::test_demo_distils_and_scores_on_world_v2_by_default"),
    "make test": ("test", "tests/test_repo.py::test_ci_runs_exactly_the_readme_test_command"),
    # block 2: using it
    "sfv serve": ("test", "tests/test_serve_browser.py::test_page_generates_reports_a_bad_upload_and_keeps_serving"),
    "sfv sample --model models/toy-sfv-v2 --image docs/img/frame0.png --out video.mp4 --decoder models/toy-decoder-v2":
        ("test", "tests/test_cli.py::test_readme_sample_commands_run_on_the_committed_toy_models"),
    "sfv sample --model models/toy-svd-v2 --image docs/img/frame0.png --out teacher.mp4":
        ("test", "tests/test_cli.py::test_readme_sample_commands_run_on_the_committed_toy_models"),
    "sfv sample --model DIR --image IMG --out video.mp4": ("here", "DIR = models/toy-sfv-v2, IMG = docs/img/frame0.png"),
    "sfv export --generator STUDENT_UNET --teacher SVD_DIR --out DIR": ("here", "the committed student's UNet + the toy teacher"),
    "sfv distill-decoder --recipe recipes/decoder_toy.yaml [section.key=value ...] [--resume latest | --overwrite]":
        ("here", "as written: the missing world is named with its command; then at toy size"),
    "sfv distill-decoder --recipe recipes/decoder_toy_student.yaml": ("here", "as written: the missing world is named"),
    "accelerate launch --multi_gpu --num_processes 8 -m sfv.decoder_train --recipe RECIPE":
        ("hardware", "8 GPUs; 2 CPU processes: tests/test_decoders.py::test_accelerate_launch_two_processes_matches_one_process"),
    "python tools/decoder_flops.py": ("here", "as written (FLOPs are counted, not run)"),
    "python tools/make_tiny_svd.py --out runs/tiny-svd": ("test", "tests/test_repo.py::test_make_tiny_svd_tool"),
    # block 3: training
    "sfv distill --recipe recipes/tiny_cpu.yaml": ("here", "as written: the missing tiny SVD is named with its command"),
    "accelerate launch --multi_gpu --num_processes 8 -m sfv.train --recipe recipes/svd_14f_768x448.yaml data.videos=/data/videos":
        ("hardware", "8 GPUs and SVD's weights; 2 CPU processes: tests/test_distill.py::test_accelerate_launch_two_processes_and_resume"),
    "sfv cache --teacher SVD_DIR --videos /data/videos --out /data/cache --frames 14 --height 448 --width 768":
        ("here", "the toy teacher on a 2-clip world, at its 8 frames of 32×32"),
    "sfv export --checkpoint runs/NAME/checkpoints/videos-000032000 --out DIR [--weights ema|raw]":
        ("test", "tests/test_distill.py::test_export_takes_t_g_from_the_checkpoint_and_refuses_a_disagreeing_one"),
    "tensorboard --logdir runs/NAME/tensorboard": ("test", "tests/test_distill.py::test_tiny_run_logs_samples_exports_and_skips_a_corrupt_video"),
    "sfv distill --recipe ... train.d_eval_every=64 [data.eval_videos=/data/heldout]":
        ("test", "tests/test_train.py::test_held_out_pairs_are_judged_on_cadence_and_leave_training_untouched"),
    # block 4: FSDP
    "accelerate launch --config_file recipes/accelerate/fsdp_8gpu.yaml -m sfv.train --recipe recipes/svd_14f_768x448.yaml data.videos=/data/videos":
        ("hardware", "8 GPUs; 2 CPU processes under FSDP2: tests/test_fsdp.py::test_parameters_are_sharded_over_two_processes"),
    "torchrun --nproc_per_node 8 -m sfv.train --recipe recipes/svd_14f_768x448.yaml data.videos=/data/videos":
        ("hardware", "8 GPUs; the same entry point under accelerate on 2 CPU processes: tests/test_fsdp.py"),
    # block 5: the toy world
    "python -m sfv.toy.world --preset v2 --count 500 --seed 1 --out runs/toy/world-train": ("here", "--count 2"),
    "python -m sfv.toy.world --preset v2 --count 12 --seed 2 --samples 4 --out runs/toy/world-eval": ("here", "--count 2 --samples 2"),
    "sfv distill --recipe recipes/toy.yaml": ("here", "after the two worlds above, train.total_videos=4"),
    "python -m sfv.toy.demo --student runs/toy/distill/export": ("test", "tests/test_toy.py::test_demo_reports_the_committed_student_with_the_fast_decoder"),
    "python -m sfv.toy.demo --teacher-only --steps 25,8,4,2,1 --without-cfg --seeds 4": ("test", "tests/test_toy.py::test_demo_scores_the_teacher_only"),
    "python -m sfv.toy.world --preset v2 --count 1000 --seed 1 --out runs/ablation/world-train": ("here", "--count 2"),
    "python tools/toy_ablation.py --world runs/ablation/world-train --out runs/ablation train.total_videos=2000":
        ("test", "tests/test_toy.py::test_the_ablation_tool_distils_each_row_and_tabulates_them"),
    "python -m sfv.toy.world --preset v2 --count 3000 --seed 1 --out runs/toy/world-v2-train": ("here", "--count 2"),
    "python tools/train_toy_teacher.py --world runs/toy/world-v2-train --init models/toy-svd --vae-minutes 0 --out models/toy-svd-v2":
        ("test", "tests/test_toy.py::test_the_teacher_tool_reads_the_world_preset_and_keeps_it_in_the_clips_cache"),
    "python -m sfv.toy.demo --world v1": ("test", "tests/test_toy.py::test_demo_runs_end_to_end_and_writes_a_well_formed_report"),
    # block 6: the Wan family
    "python tools/make_tiny_wan.py --out runs/tiny-wan": ("test", "tests/test_wan.py::test_the_readme_wan_commands_run_as_written"),
    "sfv distill --recipe recipes/tiny_cpu.yaml model.teacher=runs/tiny-wan data.frames=5 data.height=32 data.width=48":
        ("test", "tests/test_wan.py::test_the_readme_wan_commands_run_as_written"),
    'sfv sample --model runs/tiny_cpu/export --image docs/img/frame0.png --prompt "a red ball moves left" --out runs/wan.mp4':
        ("test", "tests/test_wan.py::test_the_readme_wan_commands_run_as_written"),
    # block 7: ComfyUI files
    "sfv export --generator STUDENT --teacher TEACHER_DIR --out sfv-student --comfyui":
        ("test", "SVD: tests/test_comfyui.py::test_svd_export_writes_one_checkpoint_that_maps_back_to_the_student_and_the_teacher; "
                 "Wan: tests/test_comfyui.py::test_wan_export_writes_a_diffusion_model_that_from_single_file_loads_tensor_for_tensor"),
    # block 8: LoRA students
    "sfv distill --recipe recipes/toy_lora.yaml": ("here", "as written: the missing world is named with its command"),
    "sfv export --checkpoint runs/NAME/checkpoints/videos-000032000 --lora --out DIR":
        ("test", "tests/test_lora.py::test_svd_lora_export_is_a_merged_unet_and_a_peft_adapter_equal_to_the_student"),
    # block 9: bench and eval
    "sfv bench --teacher SVD_DIR --student SFV_DIR [--steps 25,16,8,4,1] [--frames 14 --height 576 --width 1024]":
        ("test", "tests/test_bench.py::test_bench_cli_writes_every_field"),
    "sfv bench --arch svd|svd-xt --random-weights --device cuda --dtype fp16 --fast-paths --out runs/bench-svd":
        ("hardware", "CUDA; the same architectures built on the meta device: tests/test_bench.py::test_full_size_architectures_build_on_the_meta_device"),
    "make gpu-check": ("hardware", "CUDA; its dry run at tiny size: tests/test_gpu_check.py::test_dry_run_measures_every_step_and_fills_the_gpu_section"),
    "sfv eval --videos GENERATED_DIR --reference REFERENCE_DIR [--i3d i3d_torchscript.pt --fvd-frames 14] [--psnr-ssim] [--lpips] [--out eval.json]":
        ("test", "tests/test_metrics.py::test_eval_cli_writes_json_with_protocol"),
}


def readme_commands() -> list[str]:
    """The command lines of the README's ```bash blocks: comments, option lines ('[...]') and '... --flag' lines
    (the previous command again) left out, each without its trailing comment."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.M | re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith(("#", "[", "...")):
                commands.append(" ".join(line.split()))
    return commands


def test_every_readme_command_is_listed():
    commands = readme_commands()
    assert len(commands) == len(set(commands)), "a README command appears twice"
    assert sorted(commands) == sorted(COMMANDS), (set(commands) ^ set(COMMANDS))
    for command, (kind, where) in COMMANDS.items():
        assert kind in ("here", "test", "hardware"), command
        for ref in re.findall(r"tests/\w+\.py(?:::\w+)?", where):  # each named test exists
            file, _, name = ref.partition("::")
            tree = ast.parse((ROOT / file).read_text())
            assert not name or name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, ref
    counts = {k: sum(v[0] == k for v in COMMANDS.values()) for k in ("here", "test", "hardware")}
    print(f"README commands: {len(commands)} ({counts['here']} run here, {counts['test']} by the named tests, "
          f"{counts['hardware']} need GPUs or nodes and run at CPU size in the named tests)")


def _run(argv: list, capsys) -> tuple[int, str, str]:
    code = sfv([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A folder that looks like a fresh clone after `make demo`'s setup: the committed models, recipes and docs, and
    no runs/ (the README's relative paths resolve as in the repository)."""
    for name in ("models", "recipes", "docs", "tools"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_commands_run_at_toy_size(fresh, capsys):
    from sfv.toy.world import main as world
    from sfv.video import read_video

    done = set()  # the README commands run below, as the table names them
    # training commands as written on a fresh clone: one line that names the command making the missing input
    for argv, needed in ((["distill", "--recipe", "recipes/tiny_cpu.yaml"], "python tools/make_tiny_svd.py --out runs/tiny-svd"),
                         (["distill", "--recipe", "recipes/toy.yaml"], "python -m sfv.toy.world --preset v2 --count 500"),
                         (["distill", "--recipe", "recipes/toy_lora.yaml"], "python -m sfv.toy.world --preset v2 --count 500"),
                         (["distill-decoder", "--recipe", "recipes/decoder_toy.yaml"], "python -m sfv.toy.world --preset v2 --count 300"),
                         (["distill-decoder", "--recipe", "recipes/decoder_toy_student.yaml"], "python -m sfv.toy.world")):
        code, _, err = _run(argv, capsys)
        assert code == 2 and needed in err and len(err.strip().splitlines()) == 1, err
        assert not (fresh / "runs").exists()  # nothing written
        done.add(next(c for c in COMMANDS if c.startswith(f"sfv {argv[0]} --recipe {argv[2]}")))

    # the toy worlds (--count 2), then the toy recipe as written, at a 4-video budget
    for out, extra in (("runs/toy/world-train", ["--seed", "1"]), ("runs/toy/world-eval", ["--seed", "2", "--samples", "2"]),
                       ("runs/ablation/world-train", ["--seed", "1"]), ("runs/toy/world-v2-train", ["--seed", "1"])):
        assert world(["--preset", "v2", "--count", "2", *extra, "--out", out]) == 0
        done.add(next(c for c in COMMANDS if c.startswith("python -m sfv.toy.world") and c.endswith(out)))
    code, _, err = _run(["distill", "--recipe", "recipes/toy.yaml", "train.total_videos=4", "train.batch_size=2",
                         "train.batch_per_device=2", "train.d_eval_count=2", "train.sample_every=0"], capsys)
    assert code == 0, err
    assert (fresh / "runs/toy/distill/export/sfv.json").is_file()

    # the decoder recipe once its world exists (a 2-clip world, 4 videos)
    assert world(["--preset", "v2", "--count", "2", "--seed", "7", "--out", "runs/decoder/world"]) == 0
    code, _, err = _run(["distill-decoder", "--recipe", "recipes/decoder_toy.yaml", "train.total_videos=4",
                         "train.batch_size=2"], capsys)
    assert code == 0, err

    # sample DIR / export --generator / cache at the toy models' own size
    code, out, err = _run(["sample", "--model", "models/toy-sfv-v2", "--image", "docs/img/frame0.png", "--out", "video.mp4"], capsys)
    assert code == 0 and "student, 1 step" in out.splitlines()[0], err
    assert read_video("video.mp4")[0].shape == (8, 32, 32, 3)
    code, _, err = _run(["export", "--generator", "models/toy-sfv-v2/unet", "--teacher", "models/toy-svd-v2", "--out", "exported"], capsys)
    assert code == 0 and (fresh / "exported/model_index.json").is_file(), err
    code, _, err = _run(["cache", "--teacher", "models/toy-svd-v2", "--videos", "runs/toy/world-train", "--out", "cache",
                         "--frames", "8", "--height", "32", "--width", "32"], capsys)
    assert code == 0 and any((fresh / "cache").iterdir()), err
    done |= {c for c, (kind, _) in COMMANDS.items()
             if kind == "here" and c.startswith(("sfv sample --model DIR", "sfv export --generator", "sfv cache"))}

    import runpy

    flops = runpy.run_path(str(ROOT / "tools/decoder_flops.py"), run_name="readme")
    assert flops["main"]([]) == 0 and "fewer FLOPs" in capsys.readouterr().out
    done.add("python tools/decoder_flops.py")
    assert done == {c for c, (kind, _) in COMMANDS.items() if kind == "here"}
    shutil.rmtree(fresh / "runs")
