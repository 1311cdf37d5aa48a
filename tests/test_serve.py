"""`sfv serve`'s checks of a request, called directly (no page, no browser): what a bad upload or a bad setting is
told; and the server's model, run by one request at a time. The page itself is driven in a real browser by
tests/test_serve_browser.py."""

import struct
import zlib

import numpy as np
import PIL.Image
import pytest

from sfv.errors import InputError
from sfv.serve import ModelSpec, Request, check_request, load_frame, toy_examples

STUDENT = ModelSpec("student", size_multiple=2, num_frames=8, student=True, max_steps=3)
TEACHER = ModelSpec("teacher", size_multiple=2, num_frames=8, student=False, max_steps=100)


def png_header_only(path, width, height):
    """A PNG whose header claims width×height and which has no pixel data: its size is readable, nothing else."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_a_good_frame_loads_as_rgb_at_its_own_size(tmp_path):
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    PIL.Image.fromarray(rgba).save(tmp_path / "frame.png")
    image = load_frame(tmp_path / "frame.png", multiple=2)
    assert image.mode == "RGB" and image.size == (48, 32) and image.getpixel((0, 0)) == (200, 0, 0)


def test_not_an_image_is_refused_with_what_to_upload(tmp_path):
    (tmp_path / "notes.png").write_bytes(b"this is not a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    PIL.Image.new("RGB", (32, 32), "red").save(tmp_path / "whole.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    for name in ("notes.png", "empty.jpg", "truncated.png"):
        with pytest.raises(InputError, match=f"'{name}' is not an image that can be read.*upload a PNG, JPEG or WebP") as e:
            load_frame(tmp_path / name, multiple=2)
        assert str(tmp_path) not in str(e.value)  # the server's folders are not the reader's business


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    # 2000×2000 claims 12 MB of pixels in a 45-byte file: refused by the server's limit, nothing decoded
    with pytest.raises(InputError, match=r"too large: 2000×2000 is 4.00 megapixels.*at most 1.05.*--max-pixels"):
        load_frame(png_header_only(tmp_path / "big.png", 2000, 2000), multiple=2)
    with pytest.raises(InputError, match="too large: over .* megapixels"):  # beyond Pillow's own decompression-bomb limit
        load_frame(png_header_only(tmp_path / "bomb.png", 30000, 30000), multiple=2)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    PIL.Image.fromarray(noise).save(tmp_path / "heavy.png")  # ≈ 12 KB
    with pytest.raises(InputError, match=r"file 'heavy.png' is too large \(0.0 MiB\)"):  # too many bytes: not even opened
        load_frame(tmp_path / "heavy.png", multiple=2, max_bytes=1000)


def test_an_unsupported_size_is_refused_with_the_size_that_fits(tmp_path):
    PIL.Image.new("RGB", (33, 32)).save(tmp_path / "odd.png")
    with pytest.raises(InputError, match=r"unsupported size, 33×32: .* multiples of 2 .* resize it to 32×32"):
        load_frame(tmp_path / "odd.png", multiple=2)
    PIL.Image.new("RGB", (4, 12)).save(tmp_path / "small.png")
    with pytest.raises(InputError, match=r"unsupported size, 4×12: .* multiples of 8 .* resize it to 8×8"):
        load_frame(tmp_path / "small.png", multiple=8)


def test_the_toy_world_examples_are_frames_the_page_takes(tmp_path):
    rows = toy_examples(tmp_path)
    assert len(rows) >= 3 and {fps for _, _, fps in rows} == {8} and {b for _, b, _ in rows} <= {32, 128, 224}
    for path, _, _ in rows:
        assert load_frame(path, multiple=2).size == (32, 32)


def test_a_request_is_checked_against_the_model():
    s = check_request(Request(), STUDENT)
    assert (s.steps, s.frames, s.guidance, s.long, s.window, s.overlap) == (1, 8, 1.0, None, None, None)
    s = check_request(Request(motion_bucket_id=224.0, fps=8.0, seed=3.0, steps=3.0), STUDENT)  # gradio's floats
    assert (s.motion_bucket_id, s.fps, s.seed, s.steps) == (224, 8, 3, 3) and isinstance(s.steps, int)
    assert check_request(Request(steps=25, guidance=3.0), TEACHER).steps == 25  # a teacher: the stock schedule
    s = check_request(Request(frames=20, long="chain"), STUDENT)
    assert (s.frames, s.long, s.window, s.overlap) == (20, "chain", 8, 1)
    s = check_request(Request(frames=20, long="multidiffusion", window=8), STUDENT)
    assert (s.window, s.overlap) == (8, 4)

    bad = {
        "steps must be from 1 to 3 .*T_g − 1 = 3": Request(steps=4),
        "steps must be a whole number": Request(steps=1.5),
        "seed must be from 0": Request(seed=-1),
        "fps must be from 1": Request(fps=0),
        "CFG .* must be from 1": Request(guidance=0.5),
        "decoder must be one of vae .*fast_decoder": Request(decoder="tiny"),
        "window and overlap go with a long video": Request(window=4),
        "long-video mode must be one of": Request(frames=20, long="loop"),
        "frames must be from 1 to 128": Request(frames=1000),
        "no text encoder": Request(prompt="a ball rolls"),
    }
    for message, request in bad.items():
        with pytest.raises(InputError, match=message):
            check_request(request, STUDENT)


def test_the_server_runs_one_pipeline_call_at_a_time(tmp_path):
    """The committed toy student loaded once; three requests from three threads at once (as gradio's workers would
    hand them over if its queue let them): their pipeline calls never overlap, and each gets its own video."""
    import threading
    import time

    import torch

    from sfv.serve import DEFAULT_MODEL, Server
    from sfv.video import read_video

    server = Server.load(DEFAULT_MODEL, torch.device("cpu"), torch.float32, tmp_path)
    spans, real = [], server.pipe

    class Recording:  # the real pipeline, its calls' start and end recorded
        def __getattr__(self, name):
            return getattr(real, name)

        def __setattr__(self, name, value):
            setattr(real, name, value)

        def __call__(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spans.append((start, time.perf_counter()))

    server.pipe = Recording()
    frame = toy_examples(tmp_path)[0][0]
    results, errors = [], []

    def request(seed):
        try:
            results.append(server.generate(frame, Request(seed=seed, fps=8)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=request, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 3 == len(spans)
    spans.sort()
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
    assert len({r.path for r in results}) == 3 and all(read_video(r.path)[0].shape == (8, 32, 32, 3) for r in results)


def test_the_server_module_imports_without_gradio():
    """sfv.serve (requests, checks, the server) is gradio-free: it imports, and serves a request's checks, in a process
    where importing gradio fails; only sfv.serve_page needs it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['gradio'] = None\n"  # `import gradio` now raises ImportError
            "import sfv.serve as s\n"
            "spec = s.ModelSpec('m', size_multiple=2, num_frames=8, student=True, max_steps=3)\n"
            "assert s.check_request(s.Request(steps=3), spec).steps == 3\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'gradio' and sys.modules[m] is not None]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _page_controls(model, tmp_path):
    """The page built over `model` (no browser): its controls by elem_id, and the server."""
    pytest.importorskip("gradio", reason="gradio is the serve extra: pip install -e '.[dev,serve]'")
    import torch

    from sfv.serve import Server
    from sfv.serve_page import build_page

    server = Server.load(model, torch.device("cpu"), torch.float32, tmp_path)
    page = build_page(server, [])
    return {b.elem_id: b for b in page.blocks.values() if getattr(b, "elem_id", None)}, server


@pytest.mark.parametrize("elem_id, field", [("sfv-bucket", "motion_bucket_id"), ("sfv-fps", "fps"), ("sfv-steps", "steps"),
                                            ("sfv-guidance", "guidance"), ("sfv-frames", "frames"), ("sfv-seed", "seed")])
def test_every_value_a_control_offers_is_one_the_check_takes(elem_id, field, tmp_path):
    """The page's sliders and number boxes span exactly the checks' ranges: their ends are accepted, one step past
    either end is refused (the motion bucket's slider once stopped at 255 while its check took 1023)."""
    from sfv.serve import DEFAULT_MODEL

    controls, server = _page_controls(DEFAULT_MODEL, tmp_path)
    control = controls[elem_id]
    low, high = control.minimum, control.maximum
    step = getattr(control, "step", 1) or 1
    for value in (low, high):
        check_request(Request(**{field: value}), server.spec)
    below = low - step if field != "frames" else -1  # frames 0 is a cleared box: the model's window
    for value in (below, high + step):
        with pytest.raises(InputError, match="must be from"):
            check_request(Request(**{field: value}), server.spec)


def test_the_toy_world_hint_shows_for_toy_models_only(tiny_dir, tmp_path):
    from sfv.serve import DEFAULT_MODEL

    toy, _ = _page_controls(DEFAULT_MODEL, tmp_path / "toy")
    other, server = _page_controls(tiny_dir, tmp_path / "other")
    assert "toy world" in (toy["sfv-bucket"].info or "") and not other["sfv-bucket"].info
    assert server.spec.toy_world is None and not server.spec.student and server.spec.default_steps == 25
