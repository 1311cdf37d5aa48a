"""Everything sfv knows about running on several processes. The loop, losses and models never import
torch.distributed; they call these helpers, which are no-ops on one process.

Processes are started by `accelerate launch --multi_gpu` (or torchrun), which set RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR; `init` joins that process group itself (NCCL on GPUs, gloo on CPU) — accelerate's
PartialState reports a single process for multi-process CPU launches, and its FSDP plugin is ignored on CPU,
so neither is used. `parallelize` lays the models out over the processes (recipe `parallel.mode`):

  ddp   G and D's heads replicated, PyTorch DDP; gradients synchronised on the last accumulation round.
  fsdp  PyTorch's own FSDP2 (`fully_shard`) over a 1-D device mesh of all processes:
        * G's UNet is sharded per block (every SpatioTemporalResBlock / TransformerSpatioTemporalModel, one
          all-gather each, freed after use), then the root (embeddings, conv_in/out, samplers). G's fp32
          master weights, gradients and AdamW moments (16 bytes/param, 24 GB for SVD's 1.5 B) and the EMA
          copy (4 bytes/param) are split W ways. On GPU with bf16 the MixedPrecisionPolicy gathers and
          computes in bf16 and reduce-scatters gradients in fp32 (no precision lost in the sum).
        * The EMA UNet is sharded the same way, so the EMA update is a local lerp of matching shards; so is DMD's
          fake-score network (recipe `dmd`), a second trained copy of the teacher's UNet with its own optimiser.
        * D's heads (~1 % of G: a few convs per encoder block) stay replicated under DDP: sharding them
          would add one all-gather per head per pass to save a few tens of MB, and keeps their small
          optimiser state whole on every process.
        * The frozen teacher UNet, whose encoder is D's backbone, stays replicated, cast to bf16 when
          training in bf16 on GPU (3 GB for the full UNet): it has no gradients or optimiser state to
          shard, it runs twice per D step and once per G step, and sharding it would add an all-gather
          of every block to each of those passes for a 3 GB saving (1.5 GB in bf16 for the encoder half).
        * Activation checkpointing (recipe `model.gradient_checkpointing`) recomputes each UNet block in
          the backward (diffusers' per-block checkpointing; FSDP2 re-gathers the block for it);
          `parallel.cpu_offload` keeps G's and the EMA's shards, gradients and optimiser state in CPU memory.
        * A LoRA G (recipe `model.lora`, sfv/lora.py) has no copy of its own: its frozen base is the teacher's network,
          which is also D's backbone. That base is left out of sharding (`ignored_params`: whole on every process, as
          the frozen teacher is for a full G, and callable by D outside G's forward), and only the adapters become
          shards; their EMA copies are made after sharding, so they are sharded alike, and checkpoints hold the
          adapters, their EMA and their AdamW state, never the base.
  FSDP also runs on one process (a world of one), so a sharded checkpoint resumes anywhere.
Sharded checkpoints themselves (torch.distributed.checkpoint) are written and read by sfv/checkpoint.py
with the state dicts made here (`model_state`, `optimizer_state`).
"""

from __future__ import annotations

import contextlib
import os
import time
from copy import deepcopy
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)
from torch.distributed.tensor import DTensor
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


def init(cpu: bool = False, group: bool = False) -> World:
    """Join the process group the launcher set up (or run alone); pick this process's device.
    `group`: make a process group even for one process (FSDP needs one: a world of one)."""
    rank, size, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    use_cuda = torch.cuda.is_available() and not cpu
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if use_cuda else "gloo"
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if use_cuda else None)
    elif group and not dist.is_initialized():  # alone: an in-memory store, no address or port needed
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, device_id=device if use_cuda else None)
    return World(rank, size, local, device)


def wrap(module: torch.nn.Module, world: World, ignore: list[str] = ()) -> torch.nn.Module:
    """DDP over the parameters that need gradients (a frozen backbone inside is left alone; so are the parameters
    named in `ignore`, e.g. a LoRA G's adapters inside D's backbone, which D runs switched off)."""
    if world.size == 1:
        return module
    if ignore:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, list(ignore))
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def sync(module: torch.nn.Module, enabled: bool):
    """Synchronise gradients in this backward only if `enabled` (the last accumulation round)."""
    if isinstance(module, DistributedDataParallel) and not enabled:
        return module.no_sync()
    roots = [m for m in module.modules() if isinstance(m, FSDPModule)]
    if roots:  # FSDP2: skip the reduce-scatter (gradients accumulate unsharded) until the last round
        roots[0].set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


# -- FSDP2 ---------------------------------------------------------------------------------------------------


def parallelize(world: World, mode: str, trained: list[tuple[torch.nn.Module, list[torch.nn.Module]]],
                averaged: list[tuple[torch.nn.Module, list[torch.nn.Module]]], D: torch.nn.Module, frozen: list[torch.nn.Module],
                *, bf16: bool = False, cpu_offload: bool = False,
                frozen_base: list[torch.nn.Parameter] | None = None) -> tuple[list[torch.nn.Module], torch.nn.Module]:
    """Lay out the models for `mode` (see the module docstring) -> (the trained networks as the loop calls them, D).

    trained: networks with gradients (G; DMD's fake score), each with its UNet's blocks (`teacher.sharding_units`);
    averaged: copies updated without gradients (G's EMA), sharded like the network they follow; D: the discriminator
    (trainable heads, frozen backbone); frozen: the teacher's modules. Parameters are replaced by their shards in
    place, so optimisers are built after this.
    frozen_base: a LoRA G's base (recipe model.lora; sfv/lora.py), the teacher's own weights, also D's backbone: under
    FSDP it is left out of sharding (`ignored_params`: whole and replicated, as the frozen teacher is for a full G) and
    only the adapters become shards; D's heads are wrapped without the backbone's parameters (the adapters in it)."""
    backbone = D.backbone_parameter_names() if frozen_base is not None else []
    if mode == "ddp":
        return [wrap(m, world) for m, _ in trained], wrap(D, world, ignore=backbone)
    if not dist.is_initialized():
        raise RuntimeError("FSDP needs a process group: distributed.init(group=True)")
    mesh = init_device_mesh(world.device.type, (world.size,))
    cuda_bf16 = bf16 and world.device.type == "cuda"
    # bf16 goes with bf16 autocast (train.precision), which casts activations; inputs are not cast at the root,
    # where x_t = x0 + σ·ε (σ up to 700) must reach the preconditioning in fp32.
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
          if cuda_bf16 else MixedPrecisionPolicy())
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    ignored = set(frozen_base) if frozen_base is not None else None
    for root, units in [*trained, *averaged]:
        for unit in units:  # one all-gather per block, freed again after its forward
            fully_shard(unit, mesh=mesh, mp_policy=mp, offload_policy=offload, ignored_params=ignored)
        fully_shard(root, mesh=mesh, mp_policy=mp, offload_policy=offload, ignored_params=ignored)  # the rest: embeddings, conv_in/out, samplers
    if cuda_bf16:
        for module in frozen:
            module.to(torch.bfloat16)
        for p in frozen_base or []:  # the shared base, cast where it lies (the adapters stay fp32 masters)
            p.data = p.data.to(torch.bfloat16)
    return [m for m, _ in trained], wrap(D, world, ignore=backbone)


def is_sharded(module: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def shard_numels(module: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """{parameter: (elements held by this process, elements of the full tensor)}."""
    return {n: (p.to_local().numel() if isinstance(p, DTensor) else p.numel(), p.numel()) for n, p in module.named_parameters()}


def parameter_layout(module: torch.nn.Module, world: World) -> dict:
    """{"full": elements of all parameters, "held_per_process": [elements process r holds, ...]}. Collective."""
    counts = shard_numels(module).values()
    return {"full": sum(f for _, f in counts), "held_per_process": gather_objects(sum(h for h, _ in counts), world)}


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A sharded tensor's whole value (collective); a plain tensor as is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def unsharded(module: torch.nn.Module, world: World, like: torch.nn.Module) -> torch.nn.Module | None:
    """An ordinary, unsharded copy of a sharded module on process 0 (None on the others) — for sampling and
    export, which run on process 0 alone; `like` is a plain module of the same architecture (its copy receives
    the gathered fp32 weights). Collective. A module that is not sharded is returned as it is; a sharded LoRA network
    (sfv.lora.AdapterNet) makes its own copy, with the adapters merged in."""
    own = getattr(module, "unsharded_copy", None)
    if own is not None and is_sharded(module.net):
        return own(world)
    if not is_sharded(module):
        return module
    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not world.is_main:
        return None
    copy = deepcopy(like)
    copy.load_state_dict(state, assign=True)  # the gathered fp32 tensors themselves, whatever `like`'s dtype
    return copy.to(world.device).train(module.training)


def model_state(module: torch.nn.Module, skip: str) -> dict[str, torch.Tensor]:
    """The module's state dict (DTensor shards where sharded; DDP's `module.` prefix removed), without
    parameters under `skip` (D's frozen backbone is the teacher's, saved with it). A LoRA G's adapters
    (sfv.lora.AdapterState) are named tensors already: their shards as they are."""
    if not isinstance(module, torch.nn.Module):
        return module.state_dict()
    return {k: v for k, v in get_model_state_dict(module).items() if not k.startswith(skip)}


def load_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load `model_state` output back (resharding is the reader's job); -> (missing, unexpected) keys."""
    if not isinstance(module, torch.nn.Module):
        result = module.load_state_dict(state)
        return list(result.missing_keys), list(result.unexpected_keys)
    result = set_model_state_dict(module, state, options=StateDictOptions(strict=False))
    return list(result.missing_keys), list(result.unexpected_keys)


def optimizer_state(module: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimiser's state keyed by parameter names (not positions), shards where sharded."""
    return get_optimizer_state_dict(module, opt)


def load_optimizer_state(module: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(module, opt, state)


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
    """End the process group without a deadlock at exit.

    gloo's worker threads free each finished collective just after it completes. A collective's tensors made in
    Python need the GIL to be freed. The group's destructor joins those threads while holding the GIL (it runs when
    DDP's reducer drops the last reference, after this function). If a thread is still freeing a collective then,
    each waits on the other forever. This was seen once, at the end of a two-process decoder run. So every process
    meets at a barrier, then sleeps a moment with the GIL released so the threads can finish, before the group is
    destroyed."""
    if dist.is_initialized():
        if world.size > 1:
            dist.barrier()
            time.sleep(0.2)
        dist.destroy_process_group()
