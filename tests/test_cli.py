"""`sfv sample` / `sfv export` / `sfv serve`: real files in and out; every bad input is one line on stderr, exit 2, nothing written."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sfv.cli import main
from sfv.video import read_video


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sample_args(model, image, out, *extra):
    return ["sample", "--model", model, "--image", image, "--out", out, "--height", "32", "--width", "48", *extra]


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_sample_writes_a_video_with_the_requested_frames_and_size(tiny_dir, image_path, tmp_path, capsys, suffix):
    out = tmp_path / f"clip{suffix}"
    code, stdout, _ = run_cli(sample_args(tiny_dir, image_path, out, "--frames", "5", "--fps", "6"), capsys)
    assert code == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype.name == "uint8"
    assert abs(fps - 6) < 0.5
    assert "5 frames 32x48" in stdout and "generate" in stdout  # one-line timing summary
    assert "s since the command started, imports" in stdout  # the whole command's time, named as such
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp files left


def _bad_cases(tiny_dir, image_path, tmp_path):
    incomplete = shutil.copytree(tiny_dir, tmp_path / "incomplete")
    (incomplete / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    broken_json = shutil.copytree(tiny_dir, tmp_path / "broken-json")
    (broken_json / "unet" / "config.json").write_text("{not json")
    broken_weights = shutil.copytree(tiny_dir, tmp_path / "broken-weights")
    (broken_weights / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    epsilon = shutil.copytree(tiny_dir, tmp_path / "epsilon")
    sched = epsilon / "scheduler" / "scheduler_config.json"
    sched.write_text(sched.read_text().replace('"v_prediction"', '"epsilon"'))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    return {
        "model missing": ([tmp_path / "no-model", image_path], [], "does not exist"),
        "model incomplete": ([incomplete, image_path], [], "unet/diffusion_pytorch_model.safetensors"),
        "image missing": ([tiny_dir, tmp_path / "nope.png"], [], "does not exist"),
        "image unreadable": ([tiny_dir, garbage], [], "is not an image that can be read"),
        "height not a multiple": ([tiny_dir, image_path], ["--height", "31"], "height 31 is not a positive multiple of 2"),
        "width not a multiple": ([tiny_dir, image_path], ["--width", "49"], "width 49 is not a positive multiple of 2"),
        "corrupt config": ([broken_json, image_path], [], "cannot parse"),
        "corrupt weights": ([broken_weights, image_path], [], "could not load"),
        "wrong scheduler": ([epsilon, image_path], [], "v_prediction"),
        "zero steps": ([tiny_dir, image_path], ["--steps", "0"], "--steps must be at least 1"),
        "zero fps": ([tiny_dir, image_path], ["--fps", "0"], "--fps must be at least 1"),
        "zero decode chunk": ([tiny_dir, image_path], ["--decode-chunk-size", "0"], "--decode-chunk-size must be at least 1"),
        "negative seed": ([tiny_dir, image_path], ["--seed", "-1"], "--seed must be in"),
        "zero frames": ([tiny_dir, image_path], ["--frames", "0"], "at least 1"),
        "negative frames": ([tiny_dir, image_path], ["--frames", "-3"], "at least 1"),
        "unknown dtype": ([tiny_dir, image_path], ["--dtype", "fp8"], "unknown dtype 'fp8'"),
        "unknown device": ([tiny_dir, image_path], ["--device", "quantum"], "unknown device 'quantum'"),
        "cuda unavailable": ([tiny_dir, image_path], ["--device", "cuda"], "CUDA is not available"),
        "fp16 on cpu": ([tiny_dir, image_path], ["--dtype", "fp16"], "fp16 is not supported on CPU"),
        "frames not an int": ([tiny_dir, image_path], ["--frames", "many"], "invalid int value"),
    }


BAD = ["model missing", "model incomplete", "corrupt config", "corrupt weights", "wrong scheduler", "image missing",
       "image unreadable", "height not a multiple", "width not a multiple", "zero frames", "negative frames",
       "zero steps", "zero fps", "zero decode chunk", "negative seed", "unknown dtype", "unknown device",
       "cuda unavailable", "fp16 on cpu", "frames not an int"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tiny_dir, image_path, tmp_path, capsys):
    (model, image), extra, message = _bad_cases(tiny_dir, image_path, tmp_path)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, stdout, stderr = run_cli(sample_args(model, image, out_dir / "clip.mp4", *extra), capsys)
    lines = stderr.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("sfv: error:") and message in lines[0], stderr
    assert "Traceback" not in stderr
    assert all(line.startswith("sfv sample: loading") for line in stdout.splitlines())  # no summary: nothing made
    assert list(out_dir.iterdir()) == []


def test_bad_output_path(tiny_dir, image_path, tmp_path, capsys):
    for out, message in [(tmp_path / "clip.avi", "must end in .mp4 or .gif"), (tmp_path / "no" / "clip.mp4", "does not exist")]:
        code, _, stderr = run_cli(sample_args(tiny_dir, image_path, out), capsys)
        assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _sfv_command():
    script = Path(sys.executable).parent / "sfv"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sfv.cli"]


def test_console_script_bad_input_has_no_traceback(tmp_path, image_path):
    """The real entry point, in its own process: stderr is exactly one line, exit code 2."""
    out = tmp_path / "x.mp4"
    proc = subprocess.run(_sfv_command() + ["sample", "--model", str(tmp_path / "nothing"), "--image", str(image_path),
                                            "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "does not exist" in proc.stderr
    assert not out.exists()


def test_export_cli_roundtrip_and_errors(tiny_dir, image_path, tmp_path, capsys):
    from sfv.generator import SFVGenerator
    from sfv.teachers.svd import SVDTeacher

    SFVGenerator.from_teacher(SVDTeacher.from_pretrained(tiny_dir)).net.save_pretrained(tmp_path / "g", safe_serialization=True)
    code, stdout, _ = run_cli(["export", "--generator", tmp_path / "g", "--teacher", tiny_dir, "--out", tmp_path / "student"], capsys)
    assert code == 0 and "sfv export" in stdout
    code, _, _ = run_cli(sample_args(tmp_path / "student", image_path, tmp_path / "s.gif", "--frames", "2"), capsys)
    assert code == 0 and read_video(tmp_path / "s.gif")[0].shape == (2, 32, 48, 3)

    assert json.loads((tmp_path / "student" / "sfv.json").read_text())["sampling"]["t_g"] == 4
    code, _, _ = run_cli(["export", "--generator", tmp_path / "g", "--teacher", tiny_dir, "--t-g", "3", "--out", tmp_path / "tg3"], capsys)
    assert code == 0 and json.loads((tmp_path / "tg3" / "sfv.json").read_text())["sampling"]["t_g"] == 3
    code, _, stderr = run_cli(sample_args(tmp_path / "tg3", image_path, tmp_path / "s3.gif", "--frames", "2", "--steps", "3"), capsys)
    assert code == 2 and "num_inference_steps must be 1..2" in stderr  # the recorded T_g reached the pipeline
    code, _, stderr = run_cli(["export", "--generator", tmp_path / "g", "--teacher", tiny_dir, "--t-g", "1", "--out", tmp_path / "tg1"], capsys)
    assert code == 2 and "--t-g must be at least 2" in stderr and not (tmp_path / "tg1").exists()

    code, _, stderr = run_cli(["export", "--generator", tmp_path / "g", "--teacher", tiny_dir, "--out", tmp_path / "student"], capsys)
    assert code == 2 and "not empty" in stderr
    code, _, stderr = run_cli(["export", "--generator", tmp_path / "nope", "--teacher", tiny_dir, "--out", tmp_path / "s2"], capsys)
    assert code == 2 and "neither a UNet folder" in stderr and not (tmp_path / "s2").exists()
    (tmp_path / "corrupt.safetensors").write_bytes(b"garbage")
    code, _, stderr = run_cli(["export", "--generator", tmp_path / "corrupt.safetensors", "--teacher", tiny_dir, "--out", tmp_path / "s3"], capsys)
    assert code == 2 and "cannot read generator weights" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s3").exists() and not list(tmp_path.glob(".s3*"))


def test_sample_long_video_writes_every_frame(tiny_dir, image_path, tmp_path, capsys):
    out = tmp_path / "long.gif"
    code, stdout, _ = run_cli(sample_args(tiny_dir, image_path, out, "--frames", "7", "--long", "chain", "--window", "4",
                                          "--steps", "2"), capsys)
    assert code == 0 and read_video(out)[0].shape == (7, 32, 48, 3)
    assert "7 frames 32x48, 2 step(s), chain windows of 4 overlapping by 1" in stdout


@pytest.mark.parametrize("extra, message", [
    (["--frames", "6", "--long", "chain", "--window", "4", "--overlap", "4"], "overlap must be at least 1 and less than the window"),
    (["--frames", "6", "--long", "multidiffusion", "--window", "4", "--overlap", "0"], "overlap must be at least 1"),
    (["--frames", "3", "--long", "multidiffusion", "--window", "4"], "3 frames are fewer than the window of 4"),
    (["--frames", "3", "--long", "chain"], "3 frames are fewer than the window of 4"),  # the model's window: 4
    (["--frames", "6", "--long", "loop"], "long-video mode must be one of chain, multidiffusion"),
    (["--frames", "6", "--window", "4"], "--window and --overlap go with --long"),
    (["--overlap", "2"], "--window and --overlap go with --long"),
    (["--steps", "4"], "num_inference_steps must be 1..3"),
])
def test_bad_long_video_and_step_arguments_are_one_line_exit_2(extra, message, tiny_student, image_path, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    code, _, stderr = run_cli(sample_args(tiny_student, image_path, out, *extra), capsys)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in stderr, stderr
    assert not out.exists()


def _serve_bad_cases(tmp_path):
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    busy = listening.getsockname()[1]
    return listening, {
        "model missing": (["--model", tmp_path / "no-model"], "does not exist"),
        "port too large": (["--port", "70000"], "--port must be from 1 to 65535"),
        "port zero": (["--port", "0"], "--port must be from 1 to 65535"),
        "port not an int": (["--port", "http"], "invalid int value"),
        "port in use": (["--port", busy], f"cannot listen on 127.0.0.1:{busy}"),
        "decoder folder missing": (["--decoder", tmp_path / "no-decoder"], "no-decoder' does not exist"),
        "zero max pixels": (["--max-pixels", "0"], "--max-pixels must be at least 1"),
        "unknown device": (["--device", "quantum"], "unknown device 'quantum'"),
    }


@pytest.mark.parametrize("case", ["model missing", "port too large", "port zero", "port not an int", "port in use",
                                  "decoder folder missing", "zero max pixels", "unknown device"])
def test_serve_bad_input_is_one_line_exit_2_before_the_page(case, tmp_path, capsys):
    listening, cases = _serve_bad_cases(tmp_path)
    extra, message = cases[case]
    gradio_before = "gradio" in sys.modules
    with listening:
        code, stdout, stderr = run_cli(["serve", *extra], capsys)
    assert code == 2
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith("sfv: error:") and message in stderr, stderr
    assert stdout == ""  # nothing loaded ("sfv serve: loading ..." comes after every check)
    assert ("gradio" in sys.modules) == gradio_before  # refused before the page's library was imported


def test_sample_runs_a_teacher_as_a_teacher_and_a_student_as_a_student(tiny_dir, tiny_student, image_path, tmp_path, capsys,
                                                                       monkeypatch):
    """No sfv.json: the teacher's stock schedule at its default steps, with its CFG (25 UNet calls of batch 2); an
    export: one step, no CFG. The first line printed says which."""
    from sfv.pipeline import SFVPipeline

    calls = []
    original = SFVPipeline.__call__

    def counting(pipe, *args, **kwargs):
        hook = pipe.unet.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
        try:
            return original(pipe, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(SFVPipeline, "__call__", counting)  # the real call, its UNet batches recorded
    code, teacher_out, _ = run_cli(sample_args(tiny_dir, image_path, tmp_path / "t.gif", "--frames", "2"), capsys)
    teacher_calls, calls[:] = list(calls), []
    code2, student_out, _ = run_cli(sample_args(tiny_student, image_path, tmp_path / "s.gif", "--frames", "2"), capsys)
    assert code == 0 and teacher_out.splitlines()[0].startswith(f"sfv sample: loading {tiny_dir}: teacher, 25 steps, CFG 1→3;")
    assert teacher_calls == [2] * 25
    assert code2 == 0 and student_out.splitlines()[0].startswith(f"sfv sample: loading {tiny_student}: student, 1 step;")
    assert calls == [1]


def test_sample_sizes_follow_the_model_else_the_first_frame(tiny_student, image_path, tmp_path, capsys):
    """Without --height/--width/--frames/--fps: the size, frames and fps the model records (video.json); a model that
    records none takes the first frame's size in whole VAE cells (image_path is 56×40, factor 2) and its window."""
    from sfv.model_dir import VideoRecord, write_video_record

    code, stdout, _ = run_cli(["sample", "--model", tiny_student, "--image", image_path, "--out", tmp_path / "a.gif"], capsys)
    frames, _ = read_video(tmp_path / "a.gif")
    assert code == 0 and frames.shape == (4, 40, 56, 3) and "the first frame's size" in stdout.splitlines()[0]
    recorded = shutil.copytree(tiny_student, tmp_path / "recorded")
    write_video_record(recorded, VideoRecord(height=16, width=24, frames=3, fps=5))
    code, stdout, _ = run_cli(["sample", "--model", recorded, "--image", image_path, "--out", tmp_path / "b.mp4"], capsys)
    frames, fps = read_video(tmp_path / "b.mp4")
    assert code == 0 and frames.shape == (3, 16, 24, 3) and abs(fps - 5) < 0.5
    assert f"3 frames of 24×16 at 5 fps (what {recorded} was trained at, from its video.json)" in stdout


def test_readme_sample_commands_run_on_the_committed_toy_models(tmp_path, capsys):
    """The README's first sample commands, as written: the toy teacher (25 steps with CFG) and the toy student with the
    committed fast decoder, on the shipped example frame, at the size the models record (32×32, 8 frames, 8 fps)."""
    code, stdout, _ = run_cli(["sample", "--model", "models/toy-svd-v2", "--image", "docs/img/frame0.png",
                               "--out", tmp_path / "t.mp4"], capsys)
    assert code == 0 and "teacher, 25 steps, CFG 1→3" in stdout.splitlines()[0]
    assert read_video(tmp_path / "t.mp4")[0].shape == (8, 32, 32, 3)
    code, stdout, _ = run_cli(["sample", "--model", "models/toy-sfv-v2", "--image", "docs/img/frame0.png",
                               "--out", tmp_path / "s.mp4", "--decoder", "models/toy-decoder-v2"], capsys)
    assert code == 0 and "student, 1 step" in stdout.splitlines()[0] and "tiny decoder" in stdout.splitlines()[0]
    assert read_video(tmp_path / "s.mp4")[0].shape == (8, 32, 32, 3)
    code, _, stderr = run_cli(["sample", "--model", "models/toy-sfv-v2", "--image", "docs/img/frame0.png",
                               "--out", tmp_path / "x.mp4", "--decoder", "tiny"], capsys)
    assert code == 2 and "--decoder models/toy-decoder-v2" in stderr and not (tmp_path / "x.mp4").exists()


def test_bf16_on_a_cpu_gets_a_one_line_hint(tiny_student, image_path, tmp_path, capsys):
    code, _, stderr = run_cli(sample_args(tiny_student, image_path, tmp_path / "b.gif", "--frames", "2", "--dtype", "bf16"),
                              capsys)
    hints = [line for line in stderr.splitlines() if "bf16" in line]
    assert code == 0 and len(hints) == 1 and "on a CPU runs about 18× slower than fp32" in hints[0]
