"""Shared fixtures: tiny real SVD components built offline (no mocks, no downloads)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sfv.tiny import TinySVDConfig, build_tiny_svd, example_image, save_tiny_svd

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

REPO = Path(__file__).resolve().parents[1]
# A limit for each launched training, only there so that a hung process fails the test instead of CI: ~20× what a
# launch takes on an idle 2-core machine, so a loaded or slower machine never reaches it.
LAUNCH_TIMEOUT = 1200  # s


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(*args, timeout: int = LAUNCH_TIMEOUT) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 ARGS` on the CPU (two gloo processes, OMP_NUM_THREADS=1 so
    they do not fight over cores), from the repository root. Each launch gets its own free rendezvous port: the
    default 29500 may be held by another job on a shared machine or by a launch still shutting down. Should another
    process take the port between the choice and the bind, the launch fails before any training starts and is
    started again on a new port (only then)."""
    for _ in range(3):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
               "1", "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
               *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode == 0 or "EADDRINUSE" not in proc.stderr:
            return proc
    return proc


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny SVD folder on disk (4 default frames, VAE factor 2, UNet (32, 64))."""
    return save_tiny_svd(tmp_path_factory.mktemp("models") / "tiny-svd", TinySVDConfig(num_frames=4))


@pytest.fixture(scope="session")
def tiny_student(tiny_dir, tmp_path_factory):
    """The tiny SVD's own UNet exported as a student (sfv.json, T_g = 4): a folder `sfv sample` treats as a student."""
    from sfv.pipeline import export_pipeline
    from sfv.teachers.svd import SVDTeacher

    teacher = SVDTeacher.from_pretrained(tiny_dir)
    return export_pipeline(teacher.unet, teacher, tmp_path_factory.mktemp("student") / "tiny-student")


@pytest.fixture(scope="session")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "frame0.png"
    example_image(40, 56, seed=1).save(path)
    return path


@pytest.fixture
def tiny_pipe():
    pipe = build_tiny_svd(TinySVDConfig(num_frames=4))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def max_abs_diff(a, b) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    """Real mp4 files (a square moving over a gradient, 12 frames of 48×48 at 8 fps)."""
    from sfv.tiny import write_moving_squares

    root = tmp_path_factory.mktemp("videos")
    write_moving_squares(root, count=6, frames=12, size=48, fps=8)
    return root


def tiny_recipe(teacher, videos, run_dir, **overrides):
    """The tiny CPU recipe pointed at test folders, with dotted overrides (section__key=value)."""
    from sfv.config import load_recipe

    items = [f"model.teacher={teacher}", f"data.videos={videos}", f"train.run_dir={run_dir}",
             "train.sample_every=0", "train.export=false", "train.log_every=2"]
    items += [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    return load_recipe("recipes/tiny_cpu.yaml", items)


@pytest.fixture(scope="module")
def sfv_pipe(tiny_student):
    """SFVPipeline over a student: the tiny SVD's own UNet exported as one (sfv.json, T_g = 4; no training needed)."""
    from sfv.pipeline import SFVPipeline

    pipe = SFVPipeline.from_pretrained(tiny_student, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_sfv_pipe(pipe, **kw):
    """Latents of one 32×32 video from a fixed image and seed."""
    return pipe(example_image(32, 32, seed=2), generator=torch.Generator().manual_seed(5), output_type="latent",
                height=32, width=32, **kw).frames
