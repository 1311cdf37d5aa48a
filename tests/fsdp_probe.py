"""Two measurements for tests/test_fsdp.py, made with the trainer's own functions on any number of processes
(launched by `accelerate launch --multi_gpu`, or called in-process on one):

  reload CKPT OUT --recipe R [overrides]   load checkpoint CKPT into freshly built parts and save them straight
                                           back under OUT (no training step between): what a resume starts from
  grads OUT --recipe R [overrides]         train one step (a D update, the fake-score updates of DMD, then a G update)
                                           and save, on process 0, each update's whole gradients as the optimiser is
                                           about to apply them
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sfv import checkpoint, distributed, train
from sfv.config import load_recipe


def reload(ckpt: Path, out: Path, recipe) -> None:
    world = distributed.init(cpu=True, group=recipe.parallel.mode == "fsdp")
    p = train.build(recipe, world)
    modules, optimizers = train.checkpointed(p)
    saved = checkpoint.load(ckpt, world, modules, optimizers, {})
    checkpoint.save(out, saved["state"]["videos"], world, modules, optimizers, {}, saved, keep=0,
                    sharded=recipe.parallel.mode == "fsdp")
    distributed.shutdown(world)


def grads(out: Path, recipe) -> None:
    """The gradients of the first D, fake-score and G updates of a real run, {d|f|g}/<parameter name> -> whole tensor."""
    built, captured = [], {}

    def observed_build(*args, **kwargs):  # the run's parts, to name the parameters each optimiser steps
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def before_step(opt, args, kwargs):
        p = built[-1]
        phase, module = ("d", p.D) if opt is p.opt_d else ("f", p.fake) if opt is p.opt_fake else ("g", p.G)
        if phase in captured:
            return
        names = {id(q): n for n, q in module.named_parameters()}
        captured[phase] = {f"{phase}/{names[id(q)]}": _whole(q.grad) for group in opt.param_groups
                           for q in group["params"] if q.grad is not None}

    real_build = train.build
    train.build = observed_build
    handle = register_optimizer_step_pre_hook(before_step)
    try:
        train.run(recipe, cpu=True)
    finally:
        handle.remove()
        train.build = real_build
    if int(os.environ.get("RANK", 0)) == 0:
        save_file({k: v for phase in captured.values() for k, v in phase.items()}, out)


def _whole(grad: torch.Tensor) -> torch.Tensor:
    """A gradient as one tensor: FSDP's shards gathered from every process (a collective: all processes call it)."""
    return (grad.full_tensor() if isinstance(grad, DTensor) else grad).detach().clone().contiguous()


def main(argv: list[str]) -> None:
    mode, rest = argv[0], argv[1:]
    if mode == "reload":
        ckpt, out, rest = Path(rest[0]), Path(rest[1]), rest[2:]
    else:
        out, rest = Path(rest[0]), rest[1:]
    assert rest[0] == "--recipe", rest
    recipe = load_recipe(rest[1], rest[2:])
    reload(ckpt, out, recipe) if mode == "reload" else grads(out, recipe)


if __name__ == "__main__":
    main(sys.argv[1:])
