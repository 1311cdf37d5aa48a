"""Shared fixtures: tiny real SVD components built offline (no mocks, no downloads)."""

import numpy as np
import pytest
import torch

from sfv.tiny import TinySVDConfig, build_tiny_svd, example_image, save_tiny_svd

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny SVD folder on disk (4 default frames, VAE factor 2, UNet (32, 64))."""
    return save_tiny_svd(tmp_path_factory.mktemp("models") / "tiny-svd", TinySVDConfig(num_frames=4))


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
def sfv_pipe(tiny_dir):
    """SFVPipeline over the tiny SVD folder (the pipeline runs any SVD-layout folder; no training needed)."""
    from sfv.pipeline import SFVPipeline

    pipe = SFVPipeline.from_pretrained(tiny_dir, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_sfv_pipe(pipe, **kw):
    """Latents of one 32×32 video from a fixed image and seed."""
    return pipe(example_image(32, 32, seed=2), generator=torch.Generator().manual_seed(5), output_type="latent",
                height=32, width=32, **kw).frames
