"""What every training run sets up the same way before its loop (`sfv distill`, sfv/train.py, and `sfv distill-decoder`,
sfv/decoder_train.py): the run folder, never overwritten without asking; the process group; seeding; precision,
decided here and nowhere else; the frozen teacher; and the resolved recipe written into the run folder."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from sfv import distributed
from sfv.sections import save_recipe
from sfv.console import bf16_cpu_hint
from sfv.errors import InputError

# What a run writes into its folder. Any of them but config.yaml means the folder holds a run.
RUN_OUTPUTS = ("checkpoints", "log.jsonl", "heldout.jsonl", "tensorboard", "samples", "report.json", "export", "decoder")
RECIPE_FILE = "config.yaml"


def check_run_dir(run_dir: str | Path, resume: str | None, overwrite: bool) -> None:
    """A run folder that already holds a run is continued (`resume`) or started again (`overwrite`), never silently
    written over: without either it is one InputError, and nothing in it is touched."""
    if resume and overwrite:
        raise InputError("--resume continues a run and --overwrite starts it again from nothing: pass one of them")
    run_dir = Path(run_dir)
    if resume or overwrite or not run_dir.is_dir():
        return
    found = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if found:
        raise InputError(f"run folder '{run_dir}' already holds a run ({', '.join(found)}); continue it with --resume latest, "
                         "start a new run in another folder (train.run_dir=NEW), or start this one again with --overwrite "
                         "(deletes its checkpoints and logs)")


def start(run_dir: str | Path, resume: str | None = None, overwrite: bool = False, cpu: bool = False,
          group: bool = False) -> distributed.World:
    """Check the run folder, join the process group (sfv.distributed.init; `group`: one even for a single process, as
    FSDP needs), and with `overwrite` clear what an earlier run left (process 0, before anyone writes)."""
    check_run_dir(run_dir, resume, overwrite)
    world = distributed.init(cpu=cpu, group=group)
    if overwrite:
        if world.is_main:
            clear_run_dir(run_dir)
        distributed.barrier(world)
    return world


def clear_run_dir(run_dir: str | Path) -> None:
    """Delete what a run writes into `run_dir` (RUN_OUTPUTS and its recipe), and nothing else the folder holds."""
    for name in (*RUN_OUTPUTS, RECIPE_FILE):
        path = Path(run_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def seed(seed: int, rank: int = 0) -> None:
    """Seed torch's global generator (the draws no explicit generator makes: weight initialisation)."""
    torch.manual_seed(seed + rank)


def use_bf16(precision: str, device: torch.device) -> bool:
    """train.precision (checked by sfv.config) on this device: bf16 autocast or fp32. `auto` is bf16 on a GPU only."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if bf16 and device.type == "cpu":
        bf16_cpu_hint("train.precision=bf16")
    return bf16


LARGE_G = 500_000_000  # parameters of G (the SVD UNet has 1.5 B) from which activation checkpointing is a memory question


def checkpointing_hint(gradient_checkpointing: bool, g_parameters: int, device: torch.device) -> bool:
    """One line on stderr (returns True) when a full-size G trains on a GPU without activation checkpointing: at 14 frames
    of 768×448 its step measured 78.7 GiB on one GPU against 55.7 GiB with it (docs/benchmarks.md)."""
    if gradient_checkpointing or device.type != "cuda" or g_parameters < LARGE_G:
        return False
    print(f"sfv: note: model.gradient_checkpointing is off for a G of {g_parameters / 1e9:.1f} B parameters; the full-size "
          "SVD step peaked at 78.7 GiB on one GPU without it and 55.7 GiB with it (docs/benchmarks.md): set "
          "model.gradient_checkpointing=true if the GPU runs out of memory", file=sys.stderr)
    return True


def freeze(teacher):
    """The teacher never trains: no gradients, every module in eval mode (dropout off, norms fixed)."""
    teacher.requires_grad_(False)
    for module in teacher.modules():
        module.eval()
    return teacher


def write_recipe(recipe, run_dir: str | Path, world: distributed.World) -> None:
    """The resolved recipe, every default filled in, as the run folder's config.yaml (process 0)."""
    if world.is_main:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, Path(run_dir) / RECIPE_FILE)
