"""Everything sfv knows about running on several processes. The loop, losses and models never import
torch.distributed; they call these helpers, which are no-ops on one process.

Processes are started by `accelerate launch --multi_gpu` (or torchrun), which set RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR; `init` joins that process group itself (NCCL on GPUs, gloo on CPU) — accelerate's
PartialState reports a single process for multi-process CPU launches, so it is not used for this. Models are wrapped in PyTorch's DDP
here; gradients are synchronised only on the last accumulation round (`sync`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(cpu: bool = False) -> World:
    """Join the process group the launcher set up (or run alone); pick this process's device."""
    rank, size, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    use_cuda = torch.cuda.is_available() and not cpu
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return World(rank, size, local, device)


def wrap(module: torch.nn.Module, world: World) -> torch.nn.Module:
    """DDP over the parameters that need gradients (a frozen backbone inside is left alone)."""
    if world.size == 1:
        return module
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def sync(module: torch.nn.Module, enabled: bool):
    """Synchronise gradients in this backward only if `enabled` (the last accumulation round)."""
    if isinstance(module, DistributedDataParallel) and not enabled:
        return module.no_sync()
    return contextlib.nullcontext()


def any_true(flag: bool, world: World) -> bool:
    """True on every process if it is true on any (e.g. a non-finite loss: all skip the update together)."""
    if world.size == 1:
        return flag
    t = torch.tensor([float(flag)], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean(values: list[float], world: World) -> list[float]:
    """Average scalars over processes (for logging)."""
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return (t / world.size).tolist()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def gather_objects(obj, world: World) -> list:
    """Every process's value of a picklable Python object (our own objects only), on every process."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def shutdown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
