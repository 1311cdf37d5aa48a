"""`sfv serve`: the local web page over sfv.serve's Server — the page, its styling and the launch (gradio, the `serve`
extra, is imported only here, and only when a page is built).

    sfv serve [--model DIR] [--host 127.0.0.1] [--port 7860] [--device cpu] [--dtype fp32] [--decoder vae|tiny|PATH]

A person uploads a first frame (or, for a toy model, picks one of the toy world's), sets the motion bucket, fps,
seed, steps, CFG, the decoder and `sfv sample`'s long-video options (a Wan model: a prompt and a negative prompt
instead of the motion bucket, and no long video), and gets the video back with its measured generation time. The default model is the committed one-step toy student (models/toy-sfv-v2, with the committed
fast decoder models/toy-decoder-v2 beside its VAE), which runs on a CPU, offline.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

from sfv.errors import InputError, SFVError
from sfv.sampling import LONG_VIDEO
from sfv.serve import (DEFAULT_DECODER, DEFAULT_MODEL, FPS, FRAMES, GUIDANCE, MAX_PIXELS, MAX_PROMPT, MAX_UPLOAD_BYTES,
                       MOTION_BUCKETS, SEEDS, Request, Server, load_frame, spec_line, toy_examples)

# Small frames and videos fill their boxes with sharp pixels (the toy world's 32×32 would be a dot, or a blur).
CSS = """
#sfv-frame img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#sfv-video video { image-rendering: pixelated; }
"""
TOY_BUCKETS = "the toy world: 32, 128, 224 = slow, medium, fast"


def build_page(server: Server, examples: list[list]):
    """The gradio Blocks of the page (imports gradio)."""
    import gradio as gr

    spec = server.spec
    kind = (f"a one-step SF-V student (1–{spec.max_steps} steps on its own σ levels)" if spec.student
            else f"a teacher sampled on its stock schedule ({spec.default_steps} steps, CFG "
                 f"{'' if spec.text else '1 → '}{spec.default_guidance:g})")
    device = server.pipe.device
    shown = os.path.relpath(spec.path) if not os.path.relpath(spec.path).startswith("..") else spec.path
    # delete_cache: gradio's copies of uploads and videos go after an hour, and all of them when the server stops
    with gr.Blocks(title="sfv serve", delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"## sfv — image to video\nModel `{shown}`: {kind}, {spec.num_frames}-frame window, "
                    f"on {device.type} ({str(server.pipe.dtype).removeprefix('torch.')}), loaded once in "
                    f"{server.load_seconds:.1f} s. The video has the first frame's size "
                    f"(sides in multiples of {spec.size_multiple}).")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=260):
                frame = gr.Image(label="First frame", type="filepath", sources=["upload"], height=200, elem_id="sfv-frame")
                frame.preprocess = _upload_path
                example_column = gr.Column()
            with gr.Column(scale=1, min_width=300):
                settings = {}  # Request's fields -> their controls; ranges are the checks' own (sfv.serve)
                if spec.text:  # a text-and-image family (Wan): the prompt takes the motion bucket's place
                    settings["prompt"] = gr.Textbox(label="Prompt", lines=2, max_length=MAX_PROMPT, elem_id="sfv-prompt")
                    settings["negative_prompt"] = gr.Textbox(label="Negative prompt (with CFG)", max_length=MAX_PROMPT,
                                                             elem_id="sfv-negative-prompt")
                else:
                    settings["motion_bucket_id"] = gr.Slider(*MOTION_BUCKETS, value=127, step=1, label="Motion bucket",
                                                             info=TOY_BUCKETS if spec.toy_world else None, elem_id="sfv-bucket")
                settings["fps"] = gr.Slider(*FPS, value=min(max(spec.fps, FPS[0]), FPS[1]), step=1, label="fps",
                                            info="playback" if spec.text else "conditioning and playback", elem_id="sfv-fps")
                with gr.Row():
                    settings["seed"] = gr.Number(value=0, precision=0, minimum=SEEDS[0], maximum=SEEDS[1], label="Seed",
                                                 elem_id="sfv-seed")
                    settings["steps"] = gr.Slider(1, spec.max_steps, value=spec.default_steps, step=1, label="Steps",
                                                  elem_id="sfv-steps")
                with gr.Row():
                    settings["guidance"] = gr.Slider(*GUIDANCE, value=spec.default_guidance, step=0.5, label="CFG (1 = off)",
                                                     elem_id="sfv-guidance")
                    settings["decoder"] = gr.Radio(list(spec.decoders), value="vae", label="Decoder", elem_id="sfv-decoder")
                with gr.Accordion("Frames" if spec.text else "Frames and long video", open=False):
                    settings["frames"] = gr.Number(value=spec.num_frames, precision=0, minimum=FRAMES[0], maximum=FRAMES[1],
                                                   label="Frames" + (" (4k+1)" if spec.text else ""), elem_id="sfv-frames")
                    if not spec.text:
                        settings["long"] = gr.Radio(["off", *LONG_VIDEO], value="off", label="Long video")
                        with gr.Row():
                            settings["window"] = gr.Number(value=None, precision=0, label="Window (blank: the model's)")
                            settings["overlap"] = gr.Number(value=None, precision=0,
                                                            label="Overlap (blank: 1 chain, window/2 multidiffusion)")
                button = gr.Button("Generate", variant="primary", elem_id="sfv-generate")
            with gr.Column(scale=1, min_width=300):
                video = gr.Video(label="Video", autoplay=True, loop=True, height=300, elem_id="sfv-video")
                timing = gr.Markdown("The generation time appears here.", elem_id="sfv-time")
        if examples:
            with example_column:
                gr.Examples(examples, inputs=[frame, settings["motion_bucket_id"], settings["fps"]],
                            label="Toy-world first frames (motion bucket, fps)")

        def refused(e: SFVError):
            """A user's error: one line on the page and in the server's log (no traceback: nothing is broken)."""
            line = " ".join(str(e).split())
            print(f"sfv serve: refused: {line}", flush=True)
            return gr.Error(line, print_exception=False)

        def run(values: dict):
            """values: every input component -> its value (a set of inputs hands them over as one dict)."""
            try:
                if values[frame] is None:
                    raise InputError("Upload a first frame or pick an example first")
                out = server.generate(values[frame], Request(**{name: values[c] for name, c in settings.items()}))
            except SFVError as e:
                raise refused(e) from None
            return str(out.path), out.summary()

        def check_upload(path):
            if path is not None:
                try:
                    load_frame(path, spec.size_multiple, server.max_pixels)
                except SFVError as e:
                    raise refused(e) from None

        frame.upload(check_upload, frame, None, show_progress="hidden", concurrency_limit=None)
        button.click(run, {frame, *settings.values()}, [video, timing], concurrency_limit=1, concurrency_id="model")
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
    from sfv.decoders import build_decoder, resolve_decoder
    from sfv.model_dir import check_model_dir
    from sfv.teachers import SVD, check_teacher_folder, family_of

    check_listen(args.host, args.port)
    check_positive(args, "max-pixels")
    model, decoder = args.model, args.decoder
    if model is None:
        model = str(DEFAULT_MODEL)
        decoder = decoder if decoder is not None or not DEFAULT_DECODER.is_dir() else str(DEFAULT_DECODER)
    if family_of(model) != SVD:  # the folder's files and configs, by its family, at the size it records (or the stock one)
        from sfv.model_dir import read_video_record
        from sfv.teachers.wan_pipeline import video_defaults

        check_teacher_folder(model, *video_defaults(read_video_record(model))[:3])
        if decoder not in (None, "vae"):
            raise InputError(f"--decoder {decoder}: '{model}' is a {family_of(model)} folder, decoded by its own VAE only "
                             "(no fast decoder for it yet); drop --decoder")
    else:
        check_model_dir(model)
        if decoder is not None:
            name, folder = resolve_decoder(decoder, model)
            if folder is not None:
                build_decoder(name, None, folder)  # the folder alone, before gradio or the model loads
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
        examples = toy_examples(out_dir, server.spec.video) if server.spec.toy_world and not server.spec.text else []
        page = build_page(server, examples)
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
