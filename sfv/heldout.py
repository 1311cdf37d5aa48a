"""D's verdict on a fixed held-out set of real/fake pairs, measured as training goes (`train.d_eval_every`).

Per-position sign accuracy on the training batches is a poor gauge of whether D learns (`losses.video_stats`).
Here everything is fixed except the two networks: the same real clips and conditioning, the same one-step
input noise for G's fakes (x0 + σ_max·ε, G's top-level training input, which generation from pure noise matches up
to x0 ≪ σ_max), and the same σ′ and ε for D's re-noising. A change in the pair-win rate is then a change in D
or in G's one-step videos, not in the draw. Every process computes it (G may be sharded); process 0 logs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sfv import losses
from sfv.data import ClipSpec, VideoFolder, collate

HELDOUT_SEED = 2_718_281  # the held-out pairs' draws, apart from training (data-position seeds) and samples


@dataclass
class Pairs:
    """One chunk of held-out pairs: real latents, conditioning and the fixed draws."""

    x0: torch.Tensor  # [B, F, C, h, w]
    cond: object  # the teacher's Condition for these B videos
    noise: torch.Tensor  # ε of G's input x0 + σ_max·ε
    sigma: torch.Tensor  # σ′ per pair, [B]
    eps_real: torch.Tensor
    eps_fake: torch.Tensor


def make_pairs(recipe, cfg, dataset, teacher, sigma_d) -> list[Pairs]:
    """The held-out pairs: frame 0 + clip of the first cfg.d_eval_count videos of d.eval_videos (else of `dataset`),
    encoded once, with every random number the judging needs drawn now. cfg: the recipe's train section."""
    d, source = recipe.data, dataset
    if d.eval_videos:
        source = VideoFolder(d.eval_videos, ClipSpec.of(recipe), seed=cfg.seed)
    n, chunk = min(cfg.d_eval_count, len(source)), cfg.batch_per_device
    gen = torch.Generator(teacher.device).manual_seed(HELDOUT_SEED)
    out = []
    for j in range(0, n, chunk):
        batch = collate([source[(i, 0)] for i in range(j, min(j + chunk, n))])
        x0, cond = teacher.encode_batch(batch, d.height, d.width, recipe.svd.noise_aug_strength, gen)
        draw = lambda: torch.randn(x0.shape, generator=gen, device=x0.device)  # noqa: E731
        out.append(Pairs(x0, cond, draw(), sigma_d(len(x0), gen).to(x0.device), draw(), draw()))
    return out


@torch.no_grad()
def logits(pairs: list[Pairs], G, D, amp, add_noise) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """D's logits, per head, on every real clip and on G's one-step video of the same conditioning (pair i is row i of
    both). add_noise: the teacher's forward process (Teacher.precond.add_noise)."""
    was = G.training
    G.eval()
    real: dict[str, list] = {}
    fake: dict[str, list] = {}
    try:
        for p in pairs:
            top = torch.full((len(p.x0),), G.top_level, device=p.x0.device)
            with amp:
                x_fake = G(add_noise(p.x0, G.top_level, p.noise), top, p.cond)
                s = p.sigma.reshape(-1, 1, 1, 1, 1)
                for store, x, eps in ((real, p.x0, p.eps_real), (fake, x_fake, p.eps_fake)):
                    for k, v in D(add_noise(x, s, eps), p.sigma, p.cond).items():
                        store.setdefault(k, []).append(v.float())
    finally:
        G.train(was)
    return {k: torch.cat(v) for k, v in real.items()}, {k: torch.cat(v) for k, v in fake.items()}


def judge(pairs: list[Pairs], G, D, amp, add_noise) -> dict[str, float]:
    """D's verdict on the held-out pairs -> logit and video stats (`losses.logit_stats`), as logged in heldout.jsonl."""
    stats = losses.logit_stats(*logits(pairs, G, D, amp, add_noise))
    return {"heldout/" + k.split("/", 1)[1]: v for k, v in stats.items()}
