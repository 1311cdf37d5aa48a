"""Training checkpoints: safetensors + JSON only (nothing is unpickled on resume), written atomically.

    <run>/checkpoints/videos-000001280/        (parallel.mode=ddp, or one process)
        generator.safetensors  generator_ema.safetensors  discriminator_heads.safetensors
        optim_g.safetensors + optim_g.json     optim_d.safetensors + optim_d.json
        rng-rank0.safetensors + rng-rank0.json ...   (every RNG of every process)
        state.json                              (videos seen, counters, world size, format, recipe)

With parallel.mode=fsdp the models and optimisers go into one `sharded/` folder instead, written by every
process through torch.distributed.checkpoint (see "the sharded layout" below); it resumes on any number of
processes, and `sfv export --checkpoint` consolidates it on one (sfv.export).

Process 0 writes into `.videos-….partial`, every process adds its RNG state, and process 0 renames the
folder once all have finished — so a checkpoint that exists under its final name is complete, and
`latest` never picks a half-written one. Old checkpoints beyond `keep` are deleted after the rename.
(A shared filesystem across nodes is assumed, as with any multi-node checkpointing.)

state.json also lists every file of the checkpoint with its size (`files`). Before anything is loaded,
`verify` checks that each is there, has that size and parses (safetensors header and extent, JSON), so a
checkpoint damaged after it was written (a full disk, a broken copy) stops a resume with one line that names
the file and the previous checkpoint to resume from, before the run folder is touched.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.api import CheckpointException

from sfv import distributed
from sfv.discriminator import BACKBONE_PREFIX
from sfv.errors import CheckpointError, DataError, InputError, SFVError, first_line

NAME = re.compile(r"^videos-(\d{9})$")
STUDENT_WEIGHTS = {"ema": "generator_ema", "raw": "generator"}  # `sfv export --weights` -> the model's file name


def checkpoint_name(videos: int) -> str:
    return f"videos-{videos:09d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and NAME.match(p.name) and (p / "state.json").is_file())


def resolve(resume: str, run_dir: Path) -> Path:
    """`latest` (newest complete checkpoint of the run) or an explicit checkpoint folder; verified intact."""
    if resume == "latest":
        found = list_checkpoints(run_dir / "checkpoints")
        if not found:
            raise InputError(f"--resume latest: no complete checkpoint under '{run_dir / 'checkpoints'}'")
        path = found[-1]
    else:
        path = Path(resume)
        if not (path / "state.json").is_file():
            raise InputError(f"--resume '{resume}' is not a complete checkpoint folder (no state.json)")
    verify(path)
    return path


def verify(path: Path) -> dict:
    """Check every file of checkpoint `path` before any is loaded; return its state.json. A damaged file raises
    CheckpointError naming it and the checkpoint to fall back to. Checkpoints written before state.json listed
    its files are checked file by file as found (every safetensors and JSON file must parse)."""
    try:
        state = json.loads((path / "state.json").read_text())
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise CheckpointError(_damaged(path, "state.json", first_line(e)[:200])) from None
    listed = state.get("files")
    if listed is None:
        listed = {str(f.relative_to(path)): None for f in sorted(path.rglob("*"))
                  if f.is_file() and f.suffix in (".safetensors", ".json") and f.name != "state.json"}
    for rel, size in listed.items():
        problem = _file_problem(path / rel, size)
        if problem:
            raise CheckpointError(_damaged(path, rel, problem))
    return state


def _file_problem(file: Path, size: int | None) -> str | None:
    """What is wrong with one checkpoint file (None: nothing found)."""
    if not file.is_file():
        return "missing"
    actual = file.stat().st_size
    if size is not None and actual != size:
        return f"{actual} bytes, {size} written ({'truncated' if actual < size else 'changed since'})"
    try:
        if file.suffix == ".safetensors":
            with safe_open(str(file), "pt"):  # reads the header and checks it covers the whole file
                pass
        elif file.suffix == ".json":
            json.loads(file.read_text())
    except (OSError, ValueError, SafetensorError) as e:
        return f"unreadable ({first_line(e)[:150]})"
    return None


def _damaged(path: Path, rel: str, problem: str) -> str:
    earlier = [p for p in list_checkpoints(path.parent) if p.name < path.name]
    fix = (f"resume from the previous checkpoint with --resume {earlier[-1]}" if earlier
           else "no earlier checkpoint to resume from; start the run again without --resume")
    return f"checkpoint '{path}' is damaged: {rel} is {problem}; {fix}"


# -- optimizers and RNGs as tensors + JSON ---------------------------------------------------------------


def _split(state: dict, prefix: str = "") -> tuple[dict, dict]:
    """Nested dict -> (flat tensors, JSON-able rest)."""
    tensors, rest = {}, {}
    for k, v in state.items():
        key = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            tensors[key] = v.detach().cpu().contiguous()
        elif isinstance(v, dict):
            t, r = _split(v, f"{key}/")
            tensors.update(t)
            rest[str(k)] = r
        else:
            rest[str(k)] = v
    return tensors, rest


def optimizer_to_files(opt: torch.optim.Optimizer, path: Path) -> None:
    sd = opt.state_dict()
    tensors, rest = _split(sd["state"], "state/")
    save_file(tensors, f"{path}.safetensors")
    Path(f"{path}.json").write_text(json.dumps({"param_groups": sd["param_groups"], "state": rest}))


def optimizer_from_files(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors = load_file(f"{path}.safetensors")
    meta = json.loads(Path(f"{path}.json").read_text())
    state: dict = {}
    for key, value in tensors.items():  # state/<param id>/<name>
        _, pid, name = key.split("/", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in meta["state"].items():
        state.setdefault(int(pid), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def capture_rng(generators: dict[str, torch.Generator]) -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state(), **{f"gen/{k}": g.get_state() for k, g in generators.items()}}
    if torch.cuda.is_available():
        tensors.update({f"cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    np_state = np.random.get_state()
    rest = {"python": _jsonable(random.getstate()), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, rest


def restore_rng(tensors: dict, rest: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(tensors["torch"])
    for k, g in generators.items():
        g.set_state(tensors[f"gen/{k}"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda/"))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    random.setstate(_tuples(rest["python"]))
    np.random.set_state((rest["numpy"][0], np.array(rest["numpy"][1], dtype=np.uint32), *rest["numpy"][2:]))


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (list, tuple)) else x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


# -- save / load ---------------------------------------------------------------------------------------------


def save(
    root: Path,
    videos: int,
    world: distributed.World,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, tuple[torch.optim.Optimizer, torch.nn.Module]],
    generators: dict[str, torch.Generator],
    state: dict,
    keep: int,
    sharded: bool = False,
) -> Path:
    """Write checkpoint `videos-N` under root (see module docstring). Collective: every process calls it.
    modules: name -> module (D's frozen backbone is left out); optimizers: name -> (optimiser, the module
    whose parameters it steps); sharded: the sharded layout (FSDP), else the single-process one."""
    final = root / checkpoint_name(videos)
    tmp = root / f".{final.name}.partial"
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier(world)
    if sharded:
        _save_sharded(tmp, world, modules, optimizers)
    elif world.is_main:
        for name, module in modules.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in _without_backbone(module.state_dict()).items()},
                      tmp / f"{name}.safetensors")
        for name, (opt, _) in optimizers.items():
            optimizer_to_files(opt, tmp / name)
    tensors, rest = capture_rng(generators)
    save_file(tensors, tmp / f"rng-rank{world.rank}.safetensors")
    (tmp / f"rng-rank{world.rank}.json").write_text(json.dumps(rest))
    distributed.barrier(world)
    if world.is_main:
        files = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
        meta = {**state, "world_size": world.size, "format": "sharded" if sharded else "single", "files": files}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))  # last: marks complete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    distributed.barrier(world)
    return final


def load(
    path: Path,
    world: distributed.World,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, tuple[torch.optim.Optimizer, torch.nn.Module]],
    generators: dict[str, torch.Generator],
) -> dict:
    """Restore weights, optimisers and (if the world size matches) every process's RNGs; return state.json.
    A sharded checkpoint loads on any number of processes (the reader reshards); a single-process one
    needs unsharded modules (parallel.mode=ddp)."""
    try:
        state = json.loads((path / "state.json").read_text())
        if is_sharded(path):
            _load_sharded(path, modules, optimizers)
        else:
            if any(distributed.is_sharded(m) for m in modules.values()):
                raise InputError(f"checkpoint '{path}' was written by parallel.mode=ddp (one safetensors file per model); "
                                 "resume it with parallel.mode=ddp")
            for name, module in modules.items():
                missing, unexpected = module.load_state_dict(load_file(path / f"{name}.safetensors"), strict=False)
                _check_fit(path, name, missing, unexpected)
            for name, (opt, _) in optimizers.items():
                optimizer_from_files(opt, path / name)
        rng = path / f"rng-rank{world.rank}.safetensors"
        if state.get("world_size") == world.size and rng.is_file():
            restore_rng(load_file(rng), json.loads(rng.with_suffix(".json").read_text()), generators)
    except SFVError:
        raise  # already one clear line (InputError is also a ValueError)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AssertionError, SafetensorError, CheckpointException) as e:
        raise DataError(f"cannot resume from '{path}': {first_line(e)[:300]}") from None
    return state


def _without_backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}


def _check_fit(path: Path, name: str, missing: list[str], unexpected: list[str]) -> None:
    if unexpected or [k for k in missing if not k.startswith(BACKBONE_PREFIX)]:
        raise DataError(f"checkpoint '{path}' does not fit this recipe's {name} "
                        f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")


# -- the sharded layout (FSDP): torch.distributed.checkpoint in safetensors files ------------------------------
#
#   videos-N/sharded/shard-0000R-model-00001-of-00001.safetensors   every process's shards of every model and
#                                                                   optimiser tensor (DCP's placement of each
#                                                                   shard in the file's safetensors header)
#   videos-N/optim_g.json  optim_d.json                            param_groups + any non-tensor state
#   videos-N/rng-rankR.*   state.json                              as above
#
# DCP's Hugging Face storage writes and reads plain safetensors (no pickled `.metadata` file, unlike its
# default FileSystemWriter): nothing is unpickled on resume. Reading reshards onto any number of processes.

SHARDED = "sharded"


def is_sharded(path: Path) -> bool:
    return (path / SHARDED).is_dir()


def _sharded_state(modules, optimizers) -> tuple[dict, dict]:
    """(tensors for DCP: {name: {key: tensor}}, JSON rest: {optimizer name: {...}})."""
    tensors, rest = {}, {}
    for name, module in modules.items():
        tensors[name] = distributed.model_state(module, skip=BACKBONE_PREFIX)
    for name, (opt, module) in optimizers.items():
        sd = distributed.optimizer_state(module, opt)  # by parameter name; creates AdamW's zero state if none yet
        tensors[name], state_rest = _split(sd["state"], "state/")
        rest[name] = {"param_groups": sd["param_groups"], "state": state_rest}
    return tensors, rest


def _save_sharded(folder: Path, world, modules, optimizers) -> None:
    import torch.distributed.checkpoint as dcp

    tensors, rest = _sharded_state(modules, optimizers)
    dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(str(folder / SHARDED), save_distributed=True))
    if world.is_main:
        for name, r in rest.items():
            (folder / f"{name}.json").write_text(json.dumps(r))


def _load_sharded(folder: Path, modules, optimizers) -> None:
    import torch.distributed.checkpoint as dcp

    tensors, _ = _sharded_state(modules, optimizers)  # targets: this process's shards, filled in place
    dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(folder / SHARDED)))
    for name, module in modules.items():
        _check_fit(folder, name, *distributed.load_model_state(module, tensors[name]))
    for name, (opt, module) in optimizers.items():
        meta = json.loads((folder / f"{name}.json").read_text())
        state: dict = {}
        for key, value in tensors[name].items():  # state/<parameter name>/<entry>
            _, param, entry = key.split("/", 2)
            state.setdefault(param, {})[entry] = value
        for param, entries in meta["state"].items():
            state.setdefault(param, {}).update(entries)
        distributed.load_optimizer_state(module, opt, {"state": state, "param_groups": meta["param_groups"]})


def read_full(path: Path, like: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """Whole tensors from a sharded checkpoint on this process alone (no process group), consolidating every
    process's shards: `like` names what to read, {model or optimiser name: {key: tensor of the full shape}}."""
    import torch.distributed.checkpoint as dcp

    out = {name: {k: torch.empty_like(v, device="cpu") for k, v in tensors.items()} for name, tensors in like.items()}
    dcp.load(out, storage_reader=dcp.HuggingFaceStorageReader(str(path / SHARDED)), no_dist=True)
    return out
