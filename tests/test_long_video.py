"""Long videos in temporal windows: the window arithmetic, MultiDiffusion's fusion, chaining, through SFVPipeline."""

import pytest
import torch

from conftest import run_sfv_pipe as _run
from sfv.errors import InputError
from sfv.sampling import fusion_weights, long_video_windows, multidiffusion, window_starts
from sfv.teachers.svd import SVDTeacher
from sfv.tiny import example_image

CASES = [(8, 8, 1), (8, 8, 7), (32, 8, 4), (32, 8, 1), (10, 8, 1), (25, 14, 3), (7, 4, 2), (9, 2, 1)]


@pytest.mark.parametrize("frames, window, overlap", CASES)
def test_windows_cover_every_frame_and_overlap_at_least_as_asked(frames, window, overlap):
    starts = window_starts(frames, window, overlap)
    covered = sorted({j for s in starts for j in range(s, s + window)})
    assert covered == list(range(frames))  # every frame, none outside [0, N)
    assert starts[0] == 0 and starts[-1] + window == frames and starts == sorted(set(starts))
    assert all(a + window - b >= overlap for a, b in zip(starts, starts[1:]))  # neighbours share ≥ O frames


@pytest.mark.parametrize("frames, window, overlap", CASES)
def test_fusion_weights_sum_to_one_per_frame_and_stay_inside_their_window(frames, window, overlap):
    w = fusion_weights(frames, window, overlap)
    starts = window_starts(frames, window, overlap)
    assert w.shape == (len(starts), frames) and (w >= 0).all()
    torch.testing.assert_close(w.sum(0), torch.ones(frames))
    for k, s in enumerate(starts):
        inside = torch.zeros(frames, dtype=torch.bool)
        inside[s : s + window] = True
        assert (w[k, ~inside] == 0).all() and (w[k, inside] > 0).all()


def test_window_arithmetic_by_hand():
    assert window_starts(32, 8, 4) == [0, 4, 8, 12, 16, 20, 24]
    assert window_starts(10, 8, 1) == [0, 2]  # the last window ends at frame N
    assert window_starts(8, 8, 3) == [0]
    torch.testing.assert_close(fusion_weights(7, 4, 1), torch.tensor([[1, 1, 1, 0.5, 0, 0, 0], [0, 0, 0, 0.5, 1, 1, 1]]))


@pytest.mark.parametrize("frames, window, overlap, message", [
    (8, 8, 8, "overlap must be at least 1 and less than the window"),
    (8, 4, 5, "overlap must be at least 1 and less than the window"),
    (8, 4, 0, "overlap must be at least 1"),
    (6, 8, 1, "6 frames are fewer than the window of 8"),
    (8, 1, 0, "window must be at least 2"),
])
def test_bad_window_combinations_are_clear_input_errors(frames, window, overlap, message):
    with pytest.raises(InputError, match=message):
        window_starts(frames, window, overlap)
    with pytest.raises(InputError, match=message):
        long_video_windows("multidiffusion", frames, window, overlap, model_window=8)


def test_multidiffusion_averages_the_windows_predictions_per_frame():
    """Against MultiDiffusion's formula, written out: x̂0(j) = Σ_k w_k(j)·x̂0_k(j), with a denoiser whose answer for
    a frame depends on which window it sees (the window's mean), so the fusion is visible."""
    x = torch.randn(2, 7, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    def window_mean(x, sigma):
        return x.mean(1, keepdim=True).expand_as(x) / sigma
    fused = multidiffusion(window_mean, 7, 4, 1)(x, torch.tensor(2.0))
    first, second = window_mean(x[:, :4], 2.0), window_mean(x[:, 3:], 2.0)
    expected = torch.cat([first[:, :3], 0.5 * first[:, 3:] + 0.5 * second[:, :1], second[:, 1:]], dim=1)
    torch.testing.assert_close(fused, expected)
    assert not torch.allclose(fused[:, 3], first[:, 3])  # the shared frame really is a blend


# ----------------------------------------------------------------------------------------------------
# Through SFVPipeline (tiny real SVD components)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("mode", ["chain", "multidiffusion"])
def test_one_window_is_the_normal_path_bit_for_bit(sfv_pipe, mode, steps):
    normal = _run(sfv_pipe, num_frames=4, num_inference_steps=steps)
    windowed = _run(sfv_pipe, num_frames=4, num_inference_steps=steps, long_video=mode, window=4, overlap=2)
    assert torch.equal(windowed, normal)
    defaults = _run(sfv_pipe, num_frames=4, num_inference_steps=steps, long_video=mode)  # window: the model's 4
    assert torch.equal(defaults, normal)
    longer = _run(sfv_pipe, num_frames=6, num_inference_steps=steps, long_video=mode, window=4, overlap=2)
    assert longer.shape == (1, 6, 4, 16, 16) and not torch.equal(longer[:, :4], normal)  # two windows really fuse


def test_chain_conditions_each_window_on_the_frame_where_it_starts(sfv_pipe):
    """N = 7, W = 4, O = 1: window 2 starts at frame 3 and is conditioned on window 1's frame 3 (its last)."""
    out = _run(sfv_pipe, num_frames=7, long_video="chain", window=4, overlap=1)
    svd = SVDTeacher.from_pipeline(sfv_pipe)
    g = torch.Generator().manual_seed(5)
    cond = svd.encode_condition(example_image(32, 32, seed=2), 32, 32, generator=g)
    eps = svd.initial_latents(1, 7, 32, 32, torch.tensor(1.0), g)
    kw = dict(num_inference_steps=1, max_guidance_scale=1.0, generator=g)
    first = svd.sample(cond, 4, 32, 32, latents=eps[:, :4], **kw)
    second = svd.sample(svd.condition_on_frame(cond, first[:, 3], g), 4, 32, 32, latents=eps[:, 3:], **kw)
    expected = torch.cat([first[:, :3], 0.5 * first[:, 3:4] + 0.5 * second[:, :1], second[:, 1:]], dim=1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    unchained = svd.sample(cond, 4, 32, 32, latents=eps[:, 3:], **kw)
    assert (second - unchained).abs().max() > 1e-3  # the new conditioning frame changes window 2


def test_long_video_decodes_to_all_frames_and_bad_arguments_are_input_errors(sfv_pipe):
    frames = sfv_pipe(example_image(32, 32), num_frames=6, long_video="multidiffusion", window=4, output_type="np",
                      num_inference_steps=2, height=32, width=32).frames
    assert frames.shape == (1, 6, 32, 32, 3)
    for kw, message in [(dict(long_video="chain", window=4, overlap=4), "overlap must be"),
                        (dict(long_video="chain", window=8), "fewer than the window"),
                        (dict(long_video="loop"), "long-video mode must be one of chain, multidiffusion"),
                        (dict(window=4), "window and overlap go with long_video")]:
        with pytest.raises(InputError, match=message):
            _run(sfv_pipe, num_frames=6, **kw)
