"""Watching a run (process 0 only): progress bar, tensorboard scalars, sample videos from the EMA generator
on fixed conditioning images, and the end-of-run report of skipped files. It observes; it changes nothing of the
run and writes nothing but its logs (the export is the trainer's)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from sfv import distributed

# Fixed seeds of the sample videos, apart from the data-position seeds of training (sfv.steps.round_generator):
SAMPLE_CONDITION_SEED = 12345  # the noise augmentation of the fixed conditioning frames
SAMPLE_NOISE_SEED = 54321  # the initial noise σ_max·ε of the sample videos, the same at every sampling


def crossed(before: int, after: int, every: int) -> bool:
    """Did the count pass a multiple of `every` between before (exclusive) and after (inclusive)?"""
    return every > 0 and after // every > before // every


class Monitor:
    def __init__(self, run_dir: Path, cfg, data, world: distributed.World, teacher, sample_cond):
        """cfg: the recipe's train section (cadences, length); data: its data section (the sample videos' size)."""
        self.run_dir, self.cfg, self.data, self.world, self.teacher = Path(run_dir), cfg, data, world, teacher
        self.before = 0  # videos before the current iteration
        self.acc: dict[str, list[float]] = {}  # key -> [sum, count] since the last log
        self.writer = self.bar = None
        if not world.is_main:
            return
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        self.sample_cond = sample_cond  # fixed conditioning for the sample videos (frame 0 of the first clips)
        count = len(sample_cond) if sample_cond is not None else 0
        d, gen = data, torch.Generator(teacher.device).manual_seed(SAMPLE_NOISE_SEED)
        self.sample_noise = torch.randn(teacher.latent_shape(count, d.frames, d.height, d.width), generator=gen,
                                        device=teacher.device)

    def start(self, state) -> None:
        self.before, self.t0, self.v0 = state.videos, time.perf_counter(), state.videos
        if self.world.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.cfg.total_videos, initial=state.videos, unit="video", desc="sfv distill", dynamic_ncols=True)

    def due(self, videos: int, every: int) -> bool:
        return crossed(self.before, videos, every)

    def step(self, state, stats: dict, ema_net) -> None:
        """Called once per iteration on every process (scalars are averaged over processes when logged)."""
        for k, v in stats.items():
            entry = self.acc.setdefault(k, [0.0, 0])
            entry[0], entry[1] = entry[0] + float(v), entry[1] + 1
        if self.due(state.videos, self.cfg.log_every) or state.videos >= self.cfg.total_videos:
            self.log(state)
        if self.due(state.videos, self.cfg.sample_every):  # gathering a sharded EMA is collective: every process
            self.sample(state.videos, distributed.unsharded(ema_net, self.world, like=self.teacher.net))
        if self.bar is not None:
            self.bar.update(state.videos - self.bar.n)
        self.before = state.videos

    def log(self, state) -> None:
        keys = sorted(self.acc)
        values = distributed.mean([self.acc[k][0] / self.acc[k][1] for k in keys], self.world)
        now = time.perf_counter()
        scalars = dict(zip(keys, values))
        scalars["speed/videos_per_s"] = (state.videos - self.v0) / max(now - self.t0, 1e-9)
        d, g, data = (scalars.get(f"time/{k}_s", 0.0) for k in ("d", "g", "data"))
        scalars["time/d_share"] = d / max(d + g, 1e-9)  # of the model time (data loading/encoding is time/data_s)
        if d + g + data > 0:  # of the whole step: clip loading alone, and loading + the teacher's encode
            scalars["time/load_share"] = scalars.get("time/load_s", 0.0) / (d + g + data)
            scalars["time/data_share"] = data / (d + g + data)
        self.acc, self.t0, self.v0 = {}, now, state.videos
        if self.writer is None:
            return
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, state.videos)
        self.writer.flush()
        with (self.run_dir / "log.jsonl").open("a") as f:
            f.write(json.dumps({"videos": state.videos, "g_steps": state.g_steps, **scalars}) + "\n")
        if self.bar is not None:
            self.bar.set_postfix({k.split("/")[-1]: f"{scalars[k]:.3g}" for k in ("loss/d", "loss/g", "logits/sign_accuracy") if k in scalars})

    def heldout(self, state, values: dict) -> None:
        """D's verdict on the held-out pairs (sfv/heldout.py) -> tensorboard and heldout.jsonl."""
        if self.writer is None:
            return
        for k, v in values.items():
            self.writer.add_scalar(k, v, state.videos)
        with (self.run_dir / "heldout.jsonl").open("a") as f:
            f.write(json.dumps({"videos": state.videos, "g_steps": state.g_steps, "d_steps": state.d_steps, **values}) + "\n")

    @torch.no_grad()
    def sample(self, videos: int, net) -> Path | None:
        """One-step videos from `net` on the fixed conditioning -> samples/videos-N.gif (+ .mp4) and tensorboard."""
        if self.writer is None or self.sample_cond is None:
            return None
        from sfv.video import write_video

        d = self.data
        was_training = net.training
        net.eval()
        latents = self.teacher.sample(self.sample_cond, d.frames, d.height, d.width, num_inference_steps=1,
                                      max_guidance_scale=1.0, latents=self.sample_noise, net=net)
        net.train(was_training)
        frames = self.teacher.postprocess(self.teacher.decode(latents), "np")  # [B, F, H, W, 3] in [0, 1]
        grid = np.concatenate(list(frames), axis=2)  # videos side by side
        path = self.run_dir / "samples" / f"videos-{videos:09d}.gif"
        write_video(path, grid, fps=d.fps)
        if grid.shape[1] % 2 == 0 and grid.shape[2] % 2 == 0:
            write_video(path.with_suffix(".mp4"), grid, fps=d.fps)
        self.writer._get_file_writer().add_summary(_gif_summary("samples/ema_one_step", path.read_bytes(), grid), videos)
        self.writer.flush()
        return path

    def finish(self, state, net, extra: dict | None = None) -> None:
        """The last sample videos from `net` (whole, on process 0), report.json, the list of skipped files. Collective."""
        skipped = sorted({s for lst in distributed.gather_objects(state.skipped_files, self.world) for s in lst})
        if not self.world.is_main:
            return
        if self.bar is not None:
            self.bar.close()
        self.sample(state.videos, net)
        report = {"videos": state.videos, "g_steps": state.g_steps, "d_steps": state.d_steps,
                  "skipped_steps": state.skipped_steps, "skipped_files": skipped, **(extra or {})}
        (self.run_dir / "report.json").write_text(json.dumps(report, indent=1))
        if skipped:
            print(f"sfv distill: skipped {len(skipped)} unusable video file(s) (see {self.run_dir / 'report.json'}):")
            for s in skipped[:10]:
                print(f"  {s}")
        self.writer.close()


def _gif_summary(tag: str, gif: bytes, grid: np.ndarray):
    """A tensorboard image summary holding an animated GIF (what SummaryWriter.add_video writes, without moviepy)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=grid.shape[1], width=grid.shape[2], colorspace=3, encoded_image_string=gif)
    return Summary(value=[Summary.Value(tag=tag, image=image)])
