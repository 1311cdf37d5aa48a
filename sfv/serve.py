"""`sfv serve`'s server, without the page: one model folder loaded once, each request checked, then generated.

How it serves (the page, its styling and the launch are sfv/serve_page.py; this module never imports gradio):
  * one model per server, loaded before the page opens (Server.load); requests wait in the page's queue and run
    one at a time, and a lock around the pipeline call keeps any other caller off the model as well;
  * every upload and setting is checked (load_frame, check_request) before the model runs: a bad one is an
    InputError, shown on the page as one line, and the server goes on serving;
  * the video has the first frame's size (both sides multiples of the model's cell: SVD's VAE factor, Wan's VAE factor
    × patch). A student export (sfv.json) samples on its own σ levels, 1..T_g − 1 steps; any other folder is a teacher,
    sampled on its stock schedule (the pipeline's teacher mode) — so teacher-25 with CFG is the same page with
    --model TEACHER;
  * the family is the folder's (model_index.json): SVD through SFVPipeline (motion bucket, fps, long video, fast
    decoders), Wan through sfv.load_pipeline's WanSFVPipeline (a prompt and a negative prompt, its own VAE, 4k+1 frames).

The ranges below are the checks' and the page's sliders' alike (tests/test_serve.py holds them to it).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sfv.errors import InputError, ModelLoadError, SFVError, first_line
from sfv.images import check_frame_size, load_image
from sfv.model_dir import VideoRecord

MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS / "toy-sfv-v2"  # the committed one-step toy student ...
DEFAULT_DECODER = MODELS / "toy-decoder-v2"  # ... and the fast decoder trained on its latents, offered beside the VAE
MAX_UPLOAD_BYTES = 32 * 2**20
MAX_PIXELS = 1024 * 1024  # per first frame (SVD's own 1024×576 is 0.59 MP); `sfv serve --max-pixels`
MAX_TEACHER_STEPS = 100
KEEP_VIDEOS = 16  # videos kept in the server's folder (the page serves a copy from its own cache)
# (lowest, highest) of each setting, for the checks and the page's controls alike
MOTION_BUCKETS = (0, 255)  # SVD's motion buckets
FPS = (1, 30)
SEEDS = (0, 2**63 - 1)
FRAMES = (1, 128)
GUIDANCE = (1.0, 20.0)  # SVD: max_guidance_scale (a ramp from 1); Wan: guidance_scale; 1 is off
MAX_PROMPT = 2000  # characters of a prompt (Wan's text encoder reads 512 tokens)
EXAMPLE_SEEDS = (3, 7, 11, 20)  # toy-world v2 scenes offered as example first frames


def load_frame(path: str | os.PathLike, multiple: int, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_UPLOAD_BYTES):
    """The uploaded first frame as an RGB PIL image (sfv.images.load_image under this server's limits), its sides in
    multiples of `multiple` (the video takes its size); otherwise an InputError that says what to upload."""
    image = load_image(path, max_pixels, max_bytes, source="upload")
    check_frame_size(Path(path).name, *image.size, multiple)
    return image


@dataclass(frozen=True)
class ModelSpec:
    """What the page needs to know about the served model (read before and at loading)."""

    path: str
    size_multiple: int  # both sides of the first frame: SVD's VAE factor, Wan's VAE factor × patch size
    num_frames: int  # the model's window
    student: bool  # an sfv export (sfv.json): steps on its own σ levels; otherwise a teacher on its stock schedule
    max_steps: int  # T_g − 1 for a student
    decoders: tuple[str, ...] = ("vae",)
    default_steps: int = 1  # what the model samples with unless told otherwise (SFVPipeline.sampling_defaults)
    default_guidance: float = 1.0
    video: VideoRecord | None = None  # what the model was trained on (video.json)
    text: bool = False  # a text-and-image family (Wan): a prompt per request; SVD's motion bucket and long video are off
    fps: int = 7  # the page's default fps (SVD: the stock pipeline's 7; Wan: video.json's, else the stock 16)

    @property
    def toy_world(self) -> str | None:
        """The sfv toy world the model knows (its example frames and motion-bucket hint are offered only then)."""
        return self.video.toy_world if self.video else None


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
    prompt: str = ""  # Wan only
    negative_prompt: str = ""  # Wan only: what CFG steers away from


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
    prompt: str = ""
    negative_prompt: str = ""


def _whole(value, name: str, low: int, high: int, hint: str = "") -> int:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise InputError(f"{name} must be a whole number (got {value!r})")
    if not low <= int(value) <= high:
        raise InputError(f"{name} must be from {low} to {high} (got {int(value)}){hint}")
    return int(value)


def _text(value, name: str) -> str:
    value = "" if value is None else value
    if not isinstance(value, str):
        raise InputError(f"{name} must be text (got {value!r})")
    if len(value) > MAX_PROMPT:
        raise InputError(f"{name} must be at most {MAX_PROMPT} characters (got {len(value)})")
    return value.strip()


def check_request(request: Request, spec: ModelSpec) -> Settings:
    """Check one submission against the served model; an InputError names the setting and its range."""
    steps_hint = (f": a one-step student samples on its T_g − 1 = {spec.max_steps} training levels" if spec.student else "")
    frames = spec.num_frames if request.frames in (None, 0) else _whole(request.frames, "frames", *FRAMES)
    guidance = request.guidance
    if not isinstance(guidance, (int, float)) or not GUIDANCE[0] <= guidance <= GUIDANCE[1]:
        raise InputError(f"CFG (max guidance scale) must be from {GUIDANCE[0]:g} (off) to {GUIDANCE[1]:g} (got {guidance!r})")
    if request.decoder not in spec.decoders:
        raise InputError(f"decoder must be one of {', '.join(spec.decoders)} for this model (got {request.decoder!r}); "
                         "the tiny decoder needs an export with fast_decoder/ or `sfv serve --decoder DIR`")
    long = None if request.long in (None, "", "off") else request.long
    prompt, negative = _text(request.prompt, "prompt"), _text(request.negative_prompt, "negative prompt")
    if not spec.text and (prompt or negative):
        raise InputError("this SVD model is conditioned on the first frame only (it has no text encoder): clear the prompt")
    if spec.text and long is not None:
        raise InputError("long video (chain, multidiffusion) is SVD-only so far: turn it off for this Wan model")
    window = None if request.window in (None, 0) else _whole(request.window, "window", *FRAMES)
    overlap = None if request.overlap is None else _whole(request.overlap, "overlap", 0, FRAMES[1])
    if long is None and (window is not None or overlap is not None):
        raise InputError("window and overlap go with a long video: choose chain or multidiffusion, or clear them")
    if long is not None:
        from sfv.sampling import long_video_windows

        window, overlap = long_video_windows(long, frames, window, overlap, spec.num_frames)
    return Settings(
        motion_bucket_id=_whole(request.motion_bucket_id, "motion bucket", *MOTION_BUCKETS),
        fps=_whole(request.fps, "fps", *FPS),
        seed=_whole(request.seed, "seed", *SEEDS),
        steps=_whole(request.steps, "steps", 1, spec.max_steps, steps_hint),
        guidance=float(guidance), decoder=request.decoder, frames=frames, long=long, window=window, overlap=overlap,
        prompt=prompt, negative_prompt=negative,
    )


@dataclass(frozen=True)
class Generated:
    path: Path
    seconds: float  # the pipeline call: conditioning, sampling and decoding (device synchronised)
    write_seconds: float
    settings: Settings
    height: int
    width: int
    text: bool = False  # the served model is a text-and-image family's (Wan)

    def summary(self) -> str:
        s = self.settings
        if self.text:
            cfg = f"CFG {s.guidance:g}" if s.guidance > 1 else "no CFG"
            labels = f"prompt “{s.prompt}”" if s.prompt else "empty prompt"
        else:
            cfg = f"CFG ramp 1 → {s.guidance:g}" if s.guidance > 1 else "no CFG"
            labels = f"motion bucket {s.motion_bucket_id}"
        long = f", {s.long} windows of {s.window} overlapping by {s.overlap}" if s.long else ""
        return (f"**{self.seconds:.3f} s** to generate {s.frames} frames of {self.width}×{self.height} "
                f"({s.steps} step{'s' if s.steps > 1 else ''}, {cfg}, {s.decoder} decoder{long}; "
                f"{labels}, {s.fps} fps, seed {s.seed}). Writing the mp4 took {self.write_seconds:.3f} s.")


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
        """Load the folder, and the fast decoder offered beside its VAE: `decoder` as `--decoder` names one (vae: none;
        tiny: the export's fast_decoder/; a fast decoder folder), by default the export's own, if it has one."""
        from sfv.decoders import build_decoder, resolve_decoder
        from sfv.model_dir import check_model_dir, shipped_decoders
        from sfv.pipeline import load_pipeline
        from sfv.teachers import SVD, family_of

        if family_of(model) != SVD:
            return cls._load_text_family(model, device, dtype, out_dir, decoder, max_pixels)
        info = check_model_dir(model)
        name, folder = resolve_decoder(decoder, model) if decoder is not None else ("tiny", shipped_decoders(model).get("tiny"))
        t0 = time.perf_counter()
        pipe = load_pipeline(model, device, dtype)
        pipe.set_progress_bar_config(disable=True)
        decoders = {"vae": "vae"}
        if folder is not None:
            try:
                decoders[name] = build_decoder(name, pipe.vae, folder)
            except SFVError:
                raise
            except Exception as e:  # a damaged decoder folder: one line, as for the model
                raise ModelLoadError(f"could not load the fast decoder '{folder}': {first_line(e)}") from None
        load_seconds = time.perf_counter() - t0
        steps, guidance = pipe.sampling_defaults()
        spec = ModelSpec(str(model), info.vae_scale_factor, info.num_frames, info.student,
                         info.student_steps if info.student else MAX_TEACHER_STEPS, tuple(decoders), steps, guidance,
                         info.video)
        return cls(pipe, spec, decoders, out_dir, max_pixels, load_seconds)

    @classmethod
    def _load_text_family(cls, model, device, dtype, out_dir, decoder, max_pixels) -> "Server":
        """A text-and-image family (Wan): its pipeline from sfv.load_pipeline, decoded by its own VAE."""
        from sfv.model_dir import student_steps
        from sfv.teachers import load_pipeline

        t0 = time.perf_counter()
        try:
            pipe = load_pipeline(model, device, dtype, decoder=decoder or "vae")
        except SFVError:
            raise
        except Exception as e:  # corrupt weights, mismatched configs: one line
            raise ModelLoadError(f"could not load '{model}': {first_line(e)}") from None
        steps, guidance = pipe.sampling_defaults()
        spec = ModelSpec(str(model), pipe.teacher.size_multiple, pipe.video_defaults[0], pipe.is_student,
                         student_steps(pipe.info) if pipe.is_student else MAX_TEACHER_STEPS, ("vae",), steps, guidance,
                         pipe.video, text=True, fps=pipe.video_defaults[3])
        return cls(pipe, spec, {"vae": "vae"}, out_dir, max_pixels, time.perf_counter() - t0)

    def generate(self, frame_path: str | os.PathLike, request: Request) -> Generated:
        """Check the upload and the settings, run the pipeline (timed, under the lock), write the mp4."""
        import torch

        from sfv.model_dir import check_video_size
        from sfv.pipeline import generate_frames
        from sfv.video import write_video

        image = load_frame(frame_path, self.spec.size_multiple, self.max_pixels)
        s = check_request(request, self.spec)
        width, height = image.size
        if self.spec.text:  # the family's own labels and size rule (Wan: 4k+1 frames)
            self.pipe.teacher.check_video_size(s.frames, height, width)
            labels = dict(prompt=s.prompt, negative_prompt=s.negative_prompt, guidance_scale=s.guidance)
        else:
            check_video_size(height, width, s.frames, self.spec.size_multiple)
            labels = dict(min_guidance_scale=1.0, max_guidance_scale=s.guidance, fps=s.fps,
                          motion_bucket_id=s.motion_bucket_id, long_video=s.long, window=s.window, overlap=s.overlap)
        with self._lock:
            if not self.spec.text:
                self.pipe.decoder = self.decoders[s.decoder]
            t0 = time.perf_counter()
            frames = generate_frames(
                self.pipe, image, "try fewer frames or a smaller first frame", height=height, width=width,
                num_frames=s.frames, num_inference_steps=s.steps, generator=torch.Generator("cpu").manual_seed(s.seed),
                **labels,
            )
            seconds = time.perf_counter() - t0
        path = self.out_dir / f"video-{next(self._numbers):05d}.mp4"
        t1 = time.perf_counter()
        write_video(path, frames, fps=s.fps)
        self._keep(path)
        return Generated(path, seconds, time.perf_counter() - t1, s, height, width, self.spec.text)

    def wait_idle(self) -> None:
        """Return once no pipeline call is running (a server that stops lets the request in flight finish)."""
        with self._lock:
            pass

    def _keep(self, path: Path) -> None:
        self._videos.append(path)
        while len(self._videos) > KEEP_VIDEOS:
            self._videos.popleft().unlink(missing_ok=True)


def toy_examples(folder: str | os.PathLike, video: VideoRecord | None = None) -> list[list]:
    """First frames of toy-world v2 scenes as PNG files at the model's size (`video`; default the toy models'), each
    with its motion bucket and the world's fps."""
    import PIL.Image

    from sfv.toy.teacher import FPS as TOY_FPS, SIZE as TOY_SIZE
    from sfv.toy.world import make_branch_scene, render

    size, fps = (video.width, video.fps) if video else (TOY_SIZE, TOY_FPS)
    rows = []
    for seed in EXAMPLE_SEEDS:
        scene = make_branch_scene(seed)
        path = Path(folder) / f"toy-world-{seed}.png"
        PIL.Image.fromarray(render(scene, 1, size)[0]).save(path)
        rows.append([str(path), scene.motion_bucket_id, fps])
    return rows


def spec_line(server: Server) -> str:
    spec = server.spec
    what = f"student, 1–{spec.max_steps} steps" if spec.student else f"teacher, {spec.default_steps} steps by default"
    return f"{what}, decoders {', '.join(spec.decoders)}, loaded in {server.load_seconds:.1f} s"
