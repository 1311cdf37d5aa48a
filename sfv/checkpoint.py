"""Training checkpoints: safetensors + JSON only (nothing is unpickled on resume), written atomically.

    <run>/checkpoints/videos-000001280/
        generator.safetensors  generator_ema.safetensors  discriminator_heads.safetensors
        optim_g.safetensors + optim_g.json     optim_d.safetensors + optim_d.json
        rng-rank0.safetensors + rng-rank0.json ...   (every RNG of every process)
        state.json                              (videos seen, counters, world size, recipe)

Process 0 writes into `.videos-….partial`, every process adds its RNG state, and process 0 renames the
folder once all have finished — so a checkpoint that exists under its final name is complete, and
`latest` never picks a half-written one. Old checkpoints beyond `keep` are deleted after the rename.
(A shared filesystem across nodes is assumed, as with any multi-node checkpointing.)
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sfv import distributed
from sfv.errors import DataError, InputError, first_line

NAME = re.compile(r"^videos-(\d{9})$")


def checkpoint_name(videos: int) -> str:
    return f"videos-{videos:09d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and NAME.match(p.name) and (p / "state.json").is_file())


def resolve(resume: str, run_dir: Path) -> Path:
    """`latest` (newest complete checkpoint of the run) or an explicit checkpoint folder."""
    if resume == "latest":
        found = list_checkpoints(run_dir / "checkpoints")
        if not found:
            raise InputError(f"--resume latest: no complete checkpoint under '{run_dir / 'checkpoints'}'")
        return found[-1]
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise InputError(f"--resume '{resume}' is not a complete checkpoint folder (no state.json)")
    return path


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
    weights: dict[str, dict[str, torch.Tensor]],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    state: dict,
    keep: int,
) -> Path:
    """Write checkpoint `videos-N` under root (see module docstring). Collective: every process calls it."""
    final = root / checkpoint_name(videos)
    tmp = root / f".{final.name}.partial"
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, tensors in weights.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / f"{name}.safetensors")
        for name, opt in optimizers.items():
            optimizer_to_files(opt, tmp / name)
    distributed.barrier(world)
    tensors, rest = capture_rng(generators)
    save_file(tensors, tmp / f"rng-rank{world.rank}.safetensors")
    (tmp / f"rng-rank{world.rank}.json").write_text(json.dumps(rest))
    distributed.barrier(world)
    if world.is_main:
        (tmp / "state.json").write_text(json.dumps({**state, "world_size": world.size}, indent=1))  # last: marks complete
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
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
) -> dict:
    """Restore weights, optimisers and (if the world size matches) every process's RNGs; return state.json."""
    try:
        state = json.loads((path / "state.json").read_text())
        for name, module in modules.items():
            missing, unexpected = module.load_state_dict(load_file(path / f"{name}.safetensors"), strict=False)
            if unexpected or [k for k in missing if not k.startswith("backbone.")]:
                raise DataError(f"checkpoint '{path}' does not fit this recipe's {name} "
                                f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
        for name, opt in optimizers.items():
            optimizer_from_files(opt, path / name)
        rng = path / f"rng-rank{world.rank}.safetensors"
        if state.get("world_size") == world.size and rng.is_file():
            restore_rng(load_file(rng), json.loads(rng.with_suffix(".json").read_text()), generators)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise DataError(f"cannot resume from '{path}': {first_line(e)[:300]}") from None
    return state
