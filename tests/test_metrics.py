"""Metrics against closed forms: Fréchet distance vs SciPy, FVD plumbing with a tiny TorchScript detector
(including the reference cache), PSNR/SSIM on known pairs, and `sfv eval` bad input (one line, exit 2)."""

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from sfv.cli import main
from sfv.metrics.evaluate import evaluate
from sfv.metrics.frechet import frechet_distance, gaussian_stats
from sfv.metrics.fvd import FVDProtocol, preprocess
from sfv.video import write_video


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The closed form as StyleGAN-V / the TF FVD reference write it: ‖μa − μb‖² + Tr(Σa + Σb − 2·sqrtm(Σa Σb))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = scipy.linalg.sqrtm(s_a @ s_b, disp=False)
    return float(np.real(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root)))


@pytest.mark.parametrize("n, d", [(64, 8), (200, 16), (10, 24)])  # the last: N < D, singular covariances
def test_frechet_distance_matches_scipy_closed_form(n, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d))
    b = rng.normal(loc=0.3, scale=1.5, size=(n + 5, d)) @ rng.normal(size=(d, d)) / math.sqrt(d)
    ours = frechet_distance(*gaussian_stats(torch.from_numpy(a)), *gaussian_stats(torch.from_numpy(b)))
    assert ours == pytest.approx(scipy_frechet(a, b), rel=1e-6, abs=1e-6)
    assert frechet_distance(*gaussian_stats(torch.from_numpy(a)), *gaussian_stats(torch.from_numpy(a))) == pytest.approx(0, abs=1e-6)


class TinyI3D(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: same call signature, [N, 3, T, H, W] -> features [N, 6]."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv3d(3, 6, kernel_size=3, stride=(1, 8, 8))
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = torch.nn.functional.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        feats = torch.relu(self.conv(x)).mean(dim=(2, 3, 4)) + x.mean(dim=(2, 3, 4)).sum(1, keepdim=True)
        return feats if return_features else torch.softmax(self.head(feats), dim=-1)


def save_detector(path, seed):
    torch.jit.save(torch.jit.script(TinyI3D(seed).eval()), str(path))
    return path


def write_set(folder, count, frames, seed, size=(40, 48), suffix=".npy"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = rng.integers(0, 256, size=(1, *size, 3))
        video = np.clip(base + rng.integers(-30, 30, size=(frames, *size, 3)) * np.arange(frames)[:, None, None, None] / frames, 0, 255)
        video = video.astype(np.uint8)
        if suffix == ".npy":
            np.save(folder / f"clip{i:02d}.npy", video)
        else:
            write_video(folder / f"clip{i:02d}{suffix}", video, fps=7)
    return folder


def test_fvd_plumbing_equals_the_closed_form_on_detector_features_and_uses_the_cache(tmp_path):
    videos, reference = write_set(tmp_path / "gen", 5, 6, seed=1), write_set(tmp_path / "ref", 6, 7, seed=2)
    det_a, det_b = save_detector(tmp_path / "a.pt", 0), save_detector(tmp_path / "b.pt", 1)
    cache = tmp_path / "cache"

    first = evaluate(videos, reference, i3d=det_a, fvd_frames=5, cache_dir=cache)["fvd"]
    # The same number from features computed here, independently of sfv's batching, with SciPy's closed form.
    protocol, scripted = FVDProtocol(frames=5), torch.jit.load(str(det_a))
    def feats(folder):
        clips = torch.stack([preprocess(np.load(p), protocol) for p in sorted(folder.glob("*.npy"))])
        assert clips.shape[1:] == (3, 5, 224, 224) and clips.min() >= -1 and clips.max() <= 1
        return scripted(clips, rescale=False, resize=False, return_features=True).detach().double().numpy()
    assert first["value"] == pytest.approx(scipy_frechet(feats(videos), feats(reference)), rel=1e-6)
    assert first["value"] > 0
    assert first["protocol"]["frames"] == 5 and first["protocol"]["resolution"] == 224
    assert first["protocol"]["count_videos"] == 5 and first["protocol"]["count_reference"] == 6
    assert first["reference_cache"]["status"].startswith("miss")

    second = evaluate(videos, reference, i3d=det_a, fvd_frames=5, cache_dir=cache)["fvd"]
    assert second["reference_cache"]["status"] == "hit" and second["value"] == first["value"]

    changed = evaluate(videos, reference, i3d=det_b, fvd_frames=5, cache_dir=cache)["fvd"]  # another detector
    assert changed["reference_cache"]["status"].startswith("miss") and changed["value"] != first["value"]
    other_protocol = evaluate(videos, reference, i3d=det_a, fvd_frames=4, cache_dir=cache)["fvd"]
    assert other_protocol["reference_cache"]["status"].startswith("miss")
    assert len(list(cache.glob("*.safetensors"))) == 3


def test_psnr_ssim_on_known_pairs(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(20, 200, size=(4, 24, 32, 3)).astype(np.uint8)
    (tmp_path / "gen").mkdir()
    (tmp_path / "ref").mkdir()
    write_video(tmp_path / "gen" / "same.mp4", base, fps=7)  # lossy codec: the file vs itself is identical
    (tmp_path / "ref" / "same.mp4").write_bytes((tmp_path / "gen" / "same.mp4").read_bytes())
    np.save(tmp_path / "ref" / "offset.npy", base)
    np.save(tmp_path / "gen" / "offset.npy", base + 8)  # a constant offset of 8/255 everywhere
    out = evaluate(tmp_path / "gen", tmp_path / "ref", psnr_ssim=True)
    same, offset = out["per_video"]["same"], out["per_video"]["offset"]
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert offset["psnr"] == pytest.approx(20 * math.log10(255 / 8), abs=1e-4)  # PSNR = 10·log10(1/MSE), MSE = (8/255)²
    assert 0 < offset["ssim"] < 1
    assert out["psnr"]["pairs"] == 2


def test_eval_cli_writes_json_with_protocol(tmp_path, capsys):
    videos, reference = write_set(tmp_path / "gen", 3, 4, seed=1, suffix=".gif"), write_set(tmp_path / "ref", 3, 4, seed=1, suffix=".gif")
    det = save_detector(tmp_path / "i3d.pt", 0)
    out = tmp_path / "eval.json"
    code = main(["eval", "--videos", str(videos), "--reference", str(reference), "--i3d", str(det), "--fvd-frames", "3",
                 "--psnr-ssim", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["fvd"]["value"] == pytest.approx(0, abs=1e-6)  # the same files on both sides
    assert result["fvd"]["protocol"]["frames"] == 3 and result["psnr"]["mean"] == "inf" and result["ssim"]["mean"] == 1
    assert "3 frames at 224x224" in capsys.readouterr().out


def _bad_eval_cases(tmp_path):
    good, other = write_set(tmp_path / "good", 3, 4, seed=1), write_set(tmp_path / "other", 1, 4, seed=2)
    renamed = write_set(tmp_path / "renamed", 3, 4, seed=1)
    (renamed / "clip02.npy").rename(renamed / "zzz.npy")
    small = tmp_path / "small"
    write_set(small, 3, 4, seed=1, size=(40, 40))
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    det = save_detector(tmp_path / "i3d.pt", 0)
    return {
        "videos missing": (["--videos", tmp_path / "nope", "--reference", good, "--psnr-ssim"], "does not exist"),
        "reference missing": (["--videos", good, "--reference", tmp_path / "nope", "--psnr-ssim"], "does not exist"),
        "no videos": (["--videos", tmp_path / "empty", "--reference", good, "--psnr-ssim"], "has no videos"),
        "nothing to compute": (["--videos", good, "--reference", good], "nothing to compute"),
        "names differ": (["--videos", renamed, "--reference", good, "--psnr-ssim"], "match videos to references by file name"),
        "shapes differ": (["--videos", small, "--reference", good, "--psnr-ssim"], "but its reference has"),
        "sizes differ: the fix": (["--videos", small, "--reference", good, "--psnr-ssim"],
                                  "has 4 frames of 40×40 but its reference has 4 frames of 48×40: PSNR/SSIM/LPIPS compare them frame by frame and pixel by pixel; generate at the reference's size (sfv sample --height 40 --width 48)"),
        "i3d missing": (["--videos", good, "--reference", good, "--i3d", tmp_path / "no.pt"], "--i3d"),
        "i3d not torchscript": (["--videos", good, "--reference", good, "--i3d", tmp_path / "junk.pt"], "as TorchScript"),
        "too few frames": (["--videos", good, "--reference", good, "--i3d", det], "pass --fvd-frames 4"),
        "one reference": (["--videos", good, "--reference", other, "--i3d", det, "--fvd-frames", "4"], "at least 2 reference"),
        "lpips extra missing": (["--videos", good, "--reference", good, "--lpips"], "pip install 'sfv[lpips]'"),
        "out is a folder": (["--videos", good, "--reference", good, "--psnr-ssim", "--out", tmp_path], "is a folder"),
    }


BAD_EVAL = ["videos missing", "reference missing", "no videos", "nothing to compute", "names differ", "shapes differ",
            "sizes differ: the fix",
            "i3d missing", "i3d not torchscript", "too few frames", "one reference", "lpips extra missing", "out is a folder"]


@pytest.mark.parametrize("case", BAD_EVAL)
def test_eval_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    if case == "lpips extra missing":
        try:
            import lpips  # noqa: F401
            pytest.skip("lpips is installed here")
        except ImportError:
            pass
    argv, message = _bad_eval_cases(tmp_path)[case]
    out = tmp_path / "result.json"
    if "--out" not in argv:
        argv = [*argv, "--out", out]
    code = main(["eval", *[str(a) for a in argv], "--cache-dir", str(tmp_path / "cache")])
    _, stderr = capsys.readouterr()
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("sfv: error:") and message in lines[0], stderr
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
