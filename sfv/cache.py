"""The latent cache (`sfv cache`): training clips encoded once by the frozen teacher, read instead of the videos.

    <cache>/index.json            frames, size, fps, noise_aug_strength, shards, skipped files (, teacher_pairs)
    <cache>/shard-00000.safetensors  per clip: latents [F, C, h, w], the condition's cache tensors, the labels
                                     (, pair_seeds [K], pair_latents [K, F, C, h, w])

Teacher pairs (`sfv cache --teacher-pairs K`, for `generator.rec_target: teacher`): per clip K noise seeds and the
teacher's deterministic N-step sample from each noise under the clip's cached conditioning. Noise → teacher sample is
a function, so G regressing onto it at σ_max averages nothing (DMD's regression term, CausVid's ODE pairs). They are
written once here because running the teacher's sampler in the loop would cost its N steps (×2 with CFG) per video
per step: 1.6 s per pair at 25 steps with CFG for the toy teacher on a 2-core CPU, against ~0.25 s for a whole toy
training step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from sfv.data import ClipSpec, VideoFolder, collate
from sfv.errors import DataError, first_line
from sfv.files import atomic_path


class LatentCache(torch.utils.data.Dataset):
    """Clips precomputed by `sfv cache`: item -> dict(latents, the condition's cache tensors, labels)."""

    def __init__(self, root: str | Path, spec: ClipSpec | None = None, noise_aug_strength: float | None = None):
        self.root = Path(root)
        index = self.root / "index.json"
        if not index.is_file():
            raise DataError(f"'{root}' is not a latent cache (no index.json); write one with `sfv cache`")
        self.info = json.loads(index.read_text())
        if spec is not None:
            want = {"frames": spec.frames, "height": spec.height, "width": spec.width, "fps": spec.fps}
            have = {k: self.info.get(k) for k in want}
            if want != have:
                raise DataError(f"latent cache '{root}' holds {have}, the recipe asks for {want}; re-run `sfv cache`")
        if noise_aug_strength is not None and abs(self.info.get("noise_aug_strength", -1) - noise_aug_strength) > 1e-9:
            raise DataError(f"latent cache '{root}' was written with noise_aug_strength {self.info.get('noise_aug_strength')}, "
                            f"the recipe asks for {noise_aug_strength}")
        self.shards = [(self.root / s["file"], s["count"]) for s in self.info["shards"]]
        self.offsets = np.cumsum([0] + [c for _, c in self.shards])
        if self.offsets[-1] == 0:
            raise DataError(f"latent cache '{root}' is empty")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def teacher_pairs(self) -> dict | None:
        """How the cache's teacher pairs were made ({count, steps, guidance}), or None if it has none."""
        return self.info.get("teacher_pairs")

    def __getitem__(self, item) -> dict:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        shard = int(np.searchsorted(self.offsets, index, side="right") - 1)
        row = index - int(self.offsets[shard])
        with safe_open(self.shards[shard][0], framework="pt") as f:  # every key write_cache stored
            out = {k: f.get_slice(k)[row : row + 1][0] for k in f.keys()}
        if "pair_latents" in out:  # K teacher pairs per clip: epoch e reads pair e mod K
            j = epoch % len(out["pair_seeds"])
            out["pair_seed"], out["pair_latents"] = out.pop("pair_seeds")[j], out["pair_latents"][j]
        return {**out, "skipped": []}


PAIR_SEED_BASE = 1 << 40  # teacher-pair noise seeds: apart from the data-position seeds of training draws


def pair_seed(clip: int, k: int, count: int) -> int:
    """The noise seed of teacher pair k of cached clip `clip` (one of `count` per clip)."""
    return PAIR_SEED_BASE + clip * count + k


def pair_noise(teacher, seeds: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
    """ε [B, F, C, h, w] of teacher pairs, each drawn from its own seed exactly as the teacher's sampler drew it
    (Teacher.initial_latents at scale 1 with one CPU generator per video)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return teacher.initial_latents(len(gens), num_frames, height, width, torch.tensor(1.0), gens)


@torch.no_grad()
def write_cache(teacher, dataset: VideoFolder, out: str | Path, noise_aug_strength: float, shard_size: int = 256,
                batch_size: int = 4, seed: int = 0, progress=None, pairs: int = 0, pair_steps: int = 25,
                pair_guidance: float = 3.0) -> dict:
    """Encode one clip per video (the epoch-0 clip) with the teacher (Teacher.encode_batch) into safetensors shards.

    Per clip: `latents` [F, C, h, w] (x0, as training denoises it), the condition's `cache_tensors()` and the
    clip's labels (every other tensor of the dataset item: fps, ...). Written to a temporary folder and renamed,
    so a half-written cache is never read. Returns the index.

    pairs > 0 also stores that many teacher pairs per clip (`generator.rec_target: teacher`): `pair_seeds` [K] and
    `pair_latents` [K, F, C, h, w], the teacher's deterministic `pair_steps`-step sample (CFG `pair_guidance`) from
    the noise of each seed under the clip's cached conditioning. Training then reads pair (epoch mod K) of a clip
    and never runs the teacher's sampler itself.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists():
        raise DataError(f"cache folder '{out}' already exists; pick a new one")
    with atomic_path(out, f".{out.name}.partial") as tmp:
        tmp.mkdir(parents=True)
        spec = dataset.spec
        generator = torch.Generator(teacher.device).manual_seed(seed)  # the noise-augmentation draws
        shards, skipped, pending = [], [], {}

        def flush():
            if not pending.get("latents"):
                return
            name = f"shard-{len(shards):05d}.safetensors"
            save_file({k: torch.cat(v).contiguous() for k, v in pending.items()}, tmp / name)
            shards.append({"file": name, "count": sum(len(t) for t in pending["latents"])})
            for v in pending.values():
                v.clear()

        batch: list[dict] = []
        for i in range(len(dataset)):
            try:
                batch.append(dataset.load(i))
            except Exception as e:
                skipped.append(f"{dataset.files[i]}: {first_line(e)[:160]}")
            if batch and (len(batch) == batch_size or i == len(dataset) - 1):
                clips = collate([{**b, "skipped": []} for b in batch])
                x0, cond = teacher.encode_batch(clips, spec.height, spec.width, noise_aug_strength, generator)
                # the caption is stored as the condition's text embeddings (Wan's prompt_embeds), not as text
                labels = {k: v for k, v in clips.items() if k not in ("frames", "skipped", "caption")}
                if pairs:
                    first = sum(len(t) for t in pending.get("latents", [])) + sum(s["count"] for s in shards)
                    labels.update(_teacher_pairs(teacher, cond, x0.shape, first, pairs, pair_steps, pair_guidance))
                for k, v in {"latents": x0.cpu(), **cond.cache_tensors(), **labels}.items():
                    pending.setdefault(k, []).append(v)
                batch = []
                if sum(len(t) for t in pending["latents"]) >= shard_size:
                    flush()
            if progress is not None:
                progress()
        flush()
        if not shards:
            raise DataError(f"no usable videos in '{dataset.root}' ({len(skipped)} skipped; first: {skipped[0] if skipped else '-'})")
        index = {
            "frames": spec.frames, "height": spec.height, "width": spec.width, "fps": spec.fps,
            "noise_aug_strength": noise_aug_strength, "source": str(dataset.root), "shards": shards,
            "clips": sum(s["count"] for s in shards), "skipped": skipped,
            **({"teacher_pairs": {"count": pairs, "steps": pair_steps, "guidance": pair_guidance}} if pairs else {}),
        }
        (tmp / "index.json").write_text(json.dumps(index, indent=1))
    return index


def _teacher_pairs(teacher, cond, shape, first: int, count: int, steps: int, guidance: float) -> dict[str, torch.Tensor]:
    """`count` teacher pairs for each of the B clips numbered first.. (see write_cache): seeds [B, K], latents
    [B, K, F, C, h, w]; one sampler call per pair index, all clips of the batch together."""
    b, frames, _, h, w = shape
    height, width = h * teacher.vae_scale_factor, w * teacher.vae_scale_factor
    seeds = torch.tensor([[pair_seed(first + i, k, count) for k in range(count)] for i in range(b)], dtype=torch.int64)
    latents = []
    for k in range(count):
        noise = pair_noise(teacher, seeds[:, k], frames, height, width)
        latents.append(teacher.sample(cond, frames, height, width, num_inference_steps=steps, max_guidance_scale=guidance,
                                      latents=noise).cpu())
    return {"pair_seeds": seeds, "pair_latents": torch.stack(latents, dim=1)}
