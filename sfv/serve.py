"""`sfv serve`: a local web page for image-to-video with one model folder, loaded once per server.

    sfv serve [--model DIR] [--host 127.0.0.1] [--port 7860] [--device cpu] [--dtype fp32] [--decoder DIR]

A person uploads a first frame (or picks one of the toy world's), sets the motion bucket, fps, seed, steps, CFG,
the decoder and `sfv sample`'s long-video options, and gets the video back with its measured generation time.
The default model is the committed one-step toy student (models/toy-sfv-v2, with the committed fast decoder
models/toy-decoder-v2 beside its VAE), which runs on a CPU, offline.

How it serves:
  * one model per server, loaded before the page opens (Server.load); requests wait in gradio's queue and run
    one at a time, and a lock around the pipeline call keeps any other caller off the model as well;
  * every upload and setting is checked (load_frame, check_request) before the model runs: a bad one is an
    InputError, shown on the page as one line, and the server goes on serving;
  * the video has the first frame's size (both sides multiples of the VAE's scale factor). A student export
    (it carries sfv.json) samples on its own σ levels, 1..T_g − 1 steps; any other SVD folder, a teacher, samples
    with the stock Euler schedule — so teacher-25 with CFG is the same page with --model TEACHER, 25 steps, CFG 3.

gradio (the `serve` extra) is imported only when a page is built, so `import sfv.cli` stays light.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sfv.errors import InputError, ModelLoadError, SFVError, first_line
from sfv.sampling import LONG_VIDEO

MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS / "toy-sfv-v2"  # the committed one-step toy student ...
DEFAULT_DECODER = MODELS / "toy-decoder-v2"  # ... and the fast decoder trained on its latents, offered beside the VAE
MAX_UPLOAD_BYTES = 32 * 2**20
MAX_PIXELS = 1024 * 1024  # per first frame (SVD's own 1024×576 is 0.59 MP); `sfv serve --max-pixels`
MAX_FRAMES = 128
MAX_TEACHER_STEPS = 100
MAX_GUIDANCE = 20.0
KEEP_VIDEOS = 16  # videos kept in the server's folder (gradio serves a copy from its own cache)
EXAMPLE_SEEDS = (3, 7, 11, 20)  # toy-world v2 scenes offered as example first frames
EXAMPLE_SIZE, EXAMPLE_FPS = 32, 8  # the toy world's training size and frame rate (recipes/toy.yaml)
# Small frames and videos fill their boxes with sharp pixels (the toy world's 32×32 would be a dot, or a blur).
CSS = """
#sfv-frame img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#sfv-video video { image-rendering: pixelated; }
"""


# ---------------------------------------------------------------------------------------------- checks


def load_frame(path: str | os.PathLike, multiple: int, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_UPLOAD_BYTES):
    """The uploaded first frame as an RGB PIL image, or an InputError that says what is wrong and what to upload.

    The pixel size comes from the file's header, before any pixel is decoded, so a huge image costs nothing. The
    video has the frame's size, so both sides must be multiples of `multiple` (the VAE's scale factor)."""
    import PIL.Image

    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError:
        raise InputError("The upload did not arrive; upload the image again") from None
    if size > max_bytes:
        raise InputError(f"The file '{name}' is too large ({size / 2**20:.1f} MiB); upload an image of at most "
                         f"{max_bytes / 2**20:.0f} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # the pixel limit below is ours
            with PIL.Image.open(path) as im:
                width, height = im.size
                check_frame_size(name, width, height, multiple, max_pixels)
                return im.convert("RGB")  # decodes (frame 0 of an animation); a truncated file fails here
    except InputError:
        raise  # ValueErrors too: not to be reworded below
    except PIL.Image.DecompressionBombError:
        raise InputError(f"The image '{name}' is too large: over {2 * PIL.Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; "
                         f"upload one of at most {max_pixels / 1e6:.2f} megapixels") from None
    except PIL.UnidentifiedImageError:  # its message is the server's path of the upload: nothing for the reader
        raise InputError(f"The file '{name}' is not an image that can be read; upload a PNG, JPEG or WebP") from None
    except (OSError, ValueError, SyntaxError) as e:  # a damaged image (truncated, bad chunks)
        raise InputError(f"The file '{name}' is not an image that can be read ({first_line(e)}); upload a PNG, JPEG or WebP") from None


def check_frame_size(name: str, width: int, height: int, multiple: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(f"The image '{name}' is too large: {width}×{height} is {width * height / 1e6:.2f} megapixels and this "
                         f"server takes at most {max_pixels / 1e6:.2f} (sfv serve --max-pixels); downscale it")
    if width < multiple or height < multiple or width % multiple or height % multiple:
        fit = f"{max(multiple, width // multiple * multiple)}×{max(multiple, height // multiple * multiple)}"
        raise InputError(f"The image '{name}' has an unsupported size, {width}×{height}: the video has the first frame's size and "
                         f"this model needs both sides in multiples of {multiple} (its VAE's scale factor); "
                         f"crop or resize it to {fit}")


@dataclass(frozen=True)
class ModelSpec:
    """What the page needs to know about the served model (read before and at loading)."""

    path: str
    vae_scale_factor: int
    num_frames: int  # the model's window
    student: bool  # an sfv export (sfv.json): steps on its own σ levels; otherwise the stock Euler schedule
    max_steps: int  # T_g − 1 for a student
    decoders: tuple[str, ...] = ("vae",)

    @property
    def default_guidance(self) -> float:
        return 1.0 if self.student else 3.0  # SF-V samples without CFG; the stock pipeline's ramp ends at 3


@dataclass(frozen=True)
class Request:
    """One submission of the page, in `sfv sample`'s terms (as gradio hands them over: numbers may be floats)."""

    motion_bucket_id: float = 127
    fps: float = 7
    seed: float = 0
    steps: float = 1
    guidance: float = 1.0  # max_guidance_scale: above 1, SVD's per-frame CFG ramp from 1 (a doubled UNet batch)
    decoder: str = "vae"
    frames: float | None = None  # None: the model's window
    long: str | None = None  # None, "chain" or "multidiffusion"
    window: float | None = None  # with long: None for the model's window
    overlap: float | None = None  # with long: None for 1 (chain) or window // 2 (multidiffusion)


@dataclass(frozen=True)
class Settings:
    """A checked request: whole numbers, frames resolved, long-video windows resolved."""

    motion_bucket_id: int
    fps: int
    seed: int
    steps: int
    guidance: float
    decoder: str
    frames: int
    long: str | None
    window: int | None
    overlap: int | None


def _whole(value, name: str, low: int, high: int, hint: str = "") -> int:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise InputError(f"{name} must be a whole number (got {value!r})")
    if not low <= int(value) <= high:
        raise InputError(f"{name} must be from {low} to {high} (got {int(value)}){hint}")
    return int(value)


def check_request(request: Request, spec: ModelSpec) -> Settings:
    """Check one submission against the served model; an InputError names the setting and its range."""
    steps_hint = (f": a one-step student samples on its T_g − 1 = {spec.max_steps} training levels" if spec.student else "")
    frames = spec.num_frames if request.frames in (None, 0) else _whole(request.frames, "frames", 1, MAX_FRAMES)
    guidance = request.guidance
    if not isinstance(guidance, (int, float)) or not 1.0 <= guidance <= MAX_GUIDANCE:
        raise InputError(f"CFG (max guidance scale) must be from 1 (off) to {MAX_GUIDANCE:g} (got {guidance!r})")
    if request.decoder not in spec.decoders:
        raise InputError(f"decoder must be one of {', '.join(spec.decoders)} for this model (got {request.decoder!r}); "
                         "the tiny decoder needs an export with fast_decoder/ or `sfv serve --decoder DIR`")
    long = None if request.long in (None, "", "off") else request.long
    window = None if request.window in (None, 0) else _whole(request.window, "window", 1, MAX_FRAMES)
    overlap = None if request.overlap is None else _whole(request.overlap, "overlap", 0, MAX_FRAMES)
    if long is None and (window is not None or overlap is not None):
        raise InputError("window and overlap go with a long video: choose chain or multidiffusion, or clear them")
    if long is not None:
        from sfv.sampling import long_video_windows

        window, overlap = long_video_windows(long, frames, window, overlap, spec.num_frames)
    return Settings(
        motion_bucket_id=_whole(request.motion_bucket_id, "motion bucket", 0, 1023),
        fps=_whole(request.fps, "fps", 1, 240),
        seed=_whole(request.seed, "seed", 0, 2**63 - 1),
        steps=_whole(request.steps, "steps", 1, spec.max_steps, steps_hint),
        guidance=float(guidance), decoder=request.decoder, frames=frames, long=long, window=window, overlap=overlap,
    )


# ---------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Generated:
    path: Path
    seconds: float  # the pipeline call: conditioning, sampling and decoding (device synchronised)
    write_seconds: float
    settings: Settings
    height: int
    width: int

    def summary(self) -> str:
        s = self.settings
        cfg = f"CFG ramp 1 → {s.guidance:g}" if s.guidance > 1 else "no CFG"
        long = f", {s.long} windows of {s.window} overlapping by {s.overlap}" if s.long else ""
        return (f"**{self.seconds:.3f} s** to generate {s.frames} frames of {self.width}×{self.height} "
                f"({s.steps} step{'s' if s.steps > 1 else ''}, {cfg}, {s.decoder} decoder{long}; "
                f"motion bucket {s.motion_bucket_id}, {s.fps} fps, seed {s.seed}). Writing the mp4 took {self.write_seconds:.3f} s.")


class Server:
    """One model on one device, loaded once; `generate` runs the pipeline for one request at a time."""

    def __init__(self, pipe, spec: ModelSpec, decoders: dict, out_dir: Path, max_pixels: int, load_seconds: float):
        self.pipe, self.spec, self.decoders = pipe, spec, decoders
        self.out_dir, self.max_pixels, self.load_seconds = Path(out_dir), max_pixels, load_seconds
        self._lock = threading.Lock()  # one pipeline call at a time, whoever calls
        self._numbers = itertools.count()
        self._videos: deque[Path] = deque()

    @classmethod
    def load(cls, model: str | os.PathLike, device, dtype, out_dir: str | os.PathLike, decoder: str | None = None,
             max_pixels: int = MAX_PIXELS) -> "Server":
        """Load the folder (and a fast decoder: `decoder`, else the export's own fast_decoder/, if any)."""
        from sfv.decoders import build_decoder
        from sfv.model_dir import check_model_dir
        from sfv.pipeline import EXPORT_INFO, load_pipeline, shipped_decoders

        info = check_model_dir(model)
        t0 = time.perf_counter()
        pipe = load_pipeline(model, device, dtype)
        pipe.set_progress_bar_config(disable=True)
        folder = decoder if decoder is not None else shipped_decoders(model).get("tiny")
        decoders = {"vae": "vae"}
        if folder is not None:
            try:
                decoders["tiny"] = build_decoder("tiny", pipe.vae, folder)
            except SFVError:
                raise
            except Exception as e:  # a damaged decoder folder: one line, as for the model
                raise ModelLoadError(f"could not load the fast decoder '{folder}': {first_line(e)}") from None
        load_seconds = time.perf_counter() - t0
        student = (Path(model) / EXPORT_INFO).is_file()
        spec = ModelSpec(str(model), info.vae_scale_factor, info.num_frames, student,
                         pipe.t_g - 1 if student else MAX_TEACHER_STEPS, tuple(decoders))
        return cls(pipe, spec, decoders, out_dir, max_pixels, load_seconds)

    def sampling(self, steps: int) -> dict:
        """A student's own σ levels (SFVPipeline's num_inference_steps), or the stock Euler schedule for a teacher."""
        if self.spec.student:
            return {"num_inference_steps": steps}
        from diffusers import EulerDiscreteScheduler

        scheduler = EulerDiscreteScheduler.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(steps)
        return {"num_inference_steps": steps, "sigmas": scheduler.sigmas.tolist()}

    def generate(self, frame_path: str | os.PathLike, request: Request) -> Generated:
        """Check the upload and the settings, run the pipeline (timed, under the lock), write the mp4."""
        import torch

        from sfv.model_dir import check_video_size
        from sfv.pipeline import generate_frames
        from sfv.video import write_video

        image = load_frame(frame_path, self.spec.vae_scale_factor, self.max_pixels)
        s = check_request(request, self.spec)
        width, height = image.size
        check_video_size(height, width, s.frames, self.spec.vae_scale_factor)
        with self._lock:
            self.pipe.decoder = self.decoders[s.decoder]
            t0 = time.perf_counter()
            frames = generate_frames(
                self.pipe, image, "try fewer frames or a smaller first frame", height=height, width=width,
                num_frames=s.frames, min_guidance_scale=1.0, max_guidance_scale=s.guidance, fps=s.fps,
                motion_bucket_id=s.motion_bucket_id, generator=torch.Generator("cpu").manual_seed(s.seed),
                long_video=s.long, window=s.window, overlap=s.overlap, **self.sampling(s.steps),
            )
            seconds = time.perf_counter() - t0
        path = self.out_dir / f"video-{next(self._numbers):05d}.mp4"
        t1 = time.perf_counter()
        write_video(path, frames, fps=s.fps)
        self._keep(path)
        return Generated(path, seconds, time.perf_counter() - t1, s, height, width)

    def wait_idle(self) -> None:
        """Return once no pipeline call is running (a server that stops lets the request in flight finish)."""
        with self._lock:
            pass

    def _keep(self, path: Path) -> None:
        self._videos.append(path)
        while len(self._videos) > KEEP_VIDEOS:
            self._videos.popleft().unlink(missing_ok=True)


def toy_examples(folder: str | os.PathLike) -> list[list]:
    """First frames of toy-world v2 scenes as PNG files, each with its motion bucket and the world's fps."""
    import PIL.Image

    from sfv.toy.world import make_branch_scene, render

    rows = []
    for seed in EXAMPLE_SEEDS:
        scene = make_branch_scene(seed)
        path = Path(folder) / f"toy-world-{seed}.png"
        PIL.Image.fromarray(render(scene, 1, EXAMPLE_SIZE)[0]).save(path)
        rows.append([str(path), scene.motion_bucket_id, EXAMPLE_FPS])
    return rows


# ---------------------------------------------------------------------------------------------- the page


def build_page(server: Server, examples: list[list]):
    """The gradio Blocks of the page (imports gradio)."""
    import gradio as gr

    spec = server.spec
    kind = (f"a one-step SF-V student (1–{spec.max_steps} steps on its own σ levels)" if spec.student
            else "an SVD folder sampled with the stock Euler schedule (a teacher)")
    device = server.pipe.device
    shown = os.path.relpath(spec.path) if not os.path.relpath(spec.path).startswith("..") else spec.path
    # delete_cache: gradio's copies of uploads and videos go after an hour, and all of them when the server stops
    with gr.Blocks(title="sfv serve", delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"## sfv — image to video\nModel `{shown}`: {kind}, {spec.num_frames}-frame window, "
                    f"on {device.type} ({str(server.pipe.unet.dtype).removeprefix('torch.')}), loaded once in "
                    f"{server.load_seconds:.1f} s. The video has the first frame's size "
                    f"(sides in multiples of {spec.vae_scale_factor}).")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260):
                frame = gr.Image(label="First frame", type="filepath", sources=["upload"], height=200, elem_id="sfv-frame")
                frame.preprocess = _upload_path
                example_column = gr.Column()
            with gr.Column(scale=1, min_width=300):
                bucket = gr.Slider(0, 255, value=127, step=1, label="Motion bucket",
                                   info="the toy world: 32, 128, 224 = slow, medium, fast")
                fps = gr.Slider(1, 30, value=7, step=1, label="fps", info="conditioning and playback", elem_id="sfv-fps")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="sfv-seed")
                    steps = gr.Slider(1, spec.max_steps, value=1, step=1, label="Steps")
                with gr.Row():
                    guidance = gr.Slider(1.0, MAX_GUIDANCE, value=spec.default_guidance, step=0.5, label="CFG (1 = off)")
                    decoder = gr.Radio(list(spec.decoders), value="vae", label="Decoder", elem_id="sfv-decoder")
                with gr.Accordion("Frames and long video", open=False):
                    frames = gr.Number(value=spec.num_frames, precision=0, minimum=1, maximum=MAX_FRAMES, label="Frames")
                    long = gr.Radio(["off", *LONG_VIDEO], value="off", label="Long video")
                    with gr.Row():
                        window = gr.Number(value=None, precision=0, label="Window (blank: the model's)")
                        overlap = gr.Number(value=None, precision=0, label="Overlap (blank: 1 chain, window/2 multidiffusion)")
                button = gr.Button("Generate", variant="primary", elem_id="sfv-generate")
            with gr.Column(scale=1, min_width=300):
                video = gr.Video(label="Video", autoplay=True, loop=True, height=300, elem_id="sfv-video")
                timing = gr.Markdown("The generation time appears here.", elem_id="sfv-time")
        with example_column:
            gr.Examples(examples, inputs=[frame, bucket, fps], label="Toy-world first frames (motion bucket, fps)")

        def refused(e: SFVError):
            """A user's error: one line on the page and in the server's log (no traceback: nothing is broken)."""
            line = " ".join(str(e).split())
            print(f"sfv serve: refused: {line}", flush=True)
            return gr.Error(line, print_exception=False)

        def run(path, bucket, fps, seed, steps, guidance, decoder, frames, long, window, overlap):
            try:
                if path is None:
                    raise InputError("Upload a first frame or pick an example first")
                request = Request(motion_bucket_id=bucket, fps=fps, seed=seed, steps=steps, guidance=guidance,
                                  decoder=decoder, frames=frames, long=long, window=window, overlap=overlap)
                out = server.generate(path, request)
            except SFVError as e:
                raise refused(e) from None
            return str(out.path), out.summary()

        def check_upload(path):
            if path is not None:
                try:
                    load_frame(path, spec.vae_scale_factor, server.max_pixels)
                except SFVError as e:
                    raise refused(e) from None

        frame.upload(check_upload, frame, None, show_progress="hidden", concurrency_limit=None)
        button.click(run, [frame, bucket, fps, seed, steps, guidance, decoder, frames, long, window, overlap],
                     [video, timing], concurrency_limit=1, concurrency_id="model")
    return page


def _upload_path(payload):
    """The uploaded file's path, unread: gr.Image's own preprocessing opens the file and answers a non-image with
    gradio's internal error; this way load_frame judges every upload and a bad one gets its message. (Set on the
    component, not by subclassing: gradio writes a .pyi stub beside any module that defines a component class.)"""
    return None if payload is None or payload.path is None else payload.path


def check_listen(host: str, port: int) -> None:
    """Raise InputError unless a server could listen on host:port now (a bad address or a port in use)."""
    import socket

    if not 1 <= port <= 65535:
        raise InputError(f"--port must be from 1 to 65535 (got {port})")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise InputError(f"--host {host!r} is not an address here ({e}); use 127.0.0.1 (this machine only)") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
        try:
            sock.bind(address)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}; pass another --port") from None


def serve_cli(args) -> int:
    """`sfv serve`: everything cheap is checked before gradio or any weights load (one line, exit 2)."""
    import importlib.util

    from sfv.console import check_positive, parse_device, parse_dtype
    from sfv.decoders.tiny import CONFIG_NAME, WEIGHTS_NAME
    from sfv.model_dir import check_model_dir

    check_listen(args.host, args.port)
    check_positive(args, "max-pixels")
    model, decoder = args.model, args.decoder
    if model is None:
        model = str(DEFAULT_MODEL)
        decoder = decoder if decoder is not None or not DEFAULT_DECODER.is_dir() else str(DEFAULT_DECODER)
    check_model_dir(model)
    if decoder is not None:
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (Path(decoder) / n).is_file()]
        if missing:
            raise InputError(f"fast decoder folder '{decoder}' lacks {', '.join(missing)}; pass a "
                             "`sfv distill-decoder` output (e.g. models/toy-decoder-v2)")
    if importlib.util.find_spec("gradio") is None:
        raise InputError("sfv serve needs gradio, the `serve` extra: pip install -e '.[serve]' (make setup installs it)")
    dtype = parse_dtype(args.dtype)
    device = parse_device(args.device, dtype)

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage reports, no version checks
    out_dir = Path(tempfile.mkdtemp(prefix="sfv-serve-"))
    server = None
    try:
        print(f"sfv serve: loading {model} ({args.dtype}, {device})", flush=True)
        server = Server.load(model, device, dtype, out_dir, decoder, args.max_pixels or MAX_PIXELS)
        page = build_page(server, toy_examples(out_dir))
        import gradio as gr

        # api_open=False: every request goes through the queue; system fonts: the page needs no font server
        page.queue(default_concurrency_limit=1, api_open=False)
        theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
        print(f"sfv serve: http://{args.host}:{args.port} ({spec_line(server)}; Ctrl+C stops)", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server as Ctrl+C does (and this folder goes)
        page.launch(server_name=args.host, server_port=args.port, share=False, quiet=True, show_error=False,
                    allowed_paths=[str(out_dir)], max_file_size=MAX_UPLOAD_BYTES, theme=theme, css=CSS, ssr_mode=False,
                    mcp_server=False, pwa=False)
    finally:
        if server is not None:
            server.wait_idle()
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def spec_line(server: Server) -> str:
    spec = server.spec
    what = f"student, 1–{spec.max_steps} steps" if spec.student else "Euler schedule"
    return f"{what}, decoders {', '.join(spec.decoders)}, loaded in {server.load_seconds:.1f} s"
