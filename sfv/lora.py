"""G as a LoRA over the teacher's network (recipe `model.lora`): the teacher's frozen weights are G's base and D's
backbone at once, held once in memory; only the adapters (and their EMA and optimiser state) train and are checkpointed.

    G = W + (alpha / r)·B·A  on the targeted Linear layers,  B = 0 at the start (G starts as the teacher)

The adapters are peft's (`inject_adapter_in_model`, adapter "default"), injected into the teacher's network in place,
so the module objects D's backbone holds (Teacher.encoder(): the UNet's encoder half, the DiT's first blocks) carry
them too; `adapters_off` switches them off inside D's forward. Targets are a family preset (svd_unet.LORA_TARGETS,
wan_net.LORA_TARGETS) or a regular expression matched in full against module names, checked before peft runs.

Checkpoints hold the adapters only (`AdapterState`, keys as in the network's state dict: `….lora_A.default.weight`);
the EMA is a copy of the adapters alone (`AdapterEMA`). Exports merge them into a plain network
(`merged_copy`: W + scale·B·A, as peft merges) and write the adapter in the family's loader layout
(Teacher.export_lora).
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

import torch

from sfv.errors import InputError

ADAPTER = "default"  # peft's adapter name for G's adapters
ADAPTER_FOLDER = "lora"  # the adapter's folder inside a LoRA student's export (not in model_index.json: stock loaders skip it)
_FAMILY_TARGETS = {  # the diffusers network class -> (family, the module holding its presets)
    "UNetSpatioTemporalConditionModel": ("SVD", "sfv.teachers.svd_unet"),
    "WanTransformer3DModel": ("Wan", "sfv.teachers.wan_net"),
}


def _network_class(net: torch.nn.Module) -> str:
    """The diffusers class of `net`, also when a wrapper (FSDP) subclassed it."""
    for cls in type(net).__mro__:
        if cls.__name__ in _FAMILY_TARGETS:
            return cls.__name__
    return type(net).__name__


def presets(net: torch.nn.Module) -> dict[str, str]:
    """The family's target presets for `net` ({} for a network without presets: a regular expression still works)."""
    import importlib

    entry = _FAMILY_TARGETS.get(_network_class(net))
    return dict(importlib.import_module(entry[1]).LORA_TARGETS) if entry else {}


def target_pattern(net: torch.nn.Module, targets: str) -> str:
    """model.lora.targets as the regular expression peft matches in full: a preset's, or the value itself."""
    return presets(net).get(targets, targets)


def matched_modules(net: torch.nn.Module, cfg) -> list[str]:
    """Names of the Linear layers `cfg.targets` adapts in `net`; none is an InputError naming what was searched."""
    pattern = re.compile(f"(?:{target_pattern(net, cfg.targets)})")
    modules = dict(net.named_modules())
    names = [n for n in modules if n and pattern.fullmatch(n)]
    linear = [n for n in names if isinstance(modules[n], torch.nn.Linear)]
    if not linear:
        family = _FAMILY_TARGETS.get(_network_class(net), (_network_class(net),))[0]
        known = ", ".join(presets(net)) or "none"
        what = (f"the preset '{cfg.targets}' ({pattern.pattern})" if cfg.targets in presets(net)
                else f"the regular expression '{cfg.targets}'")
        other = f"; {len(names)} matched module(s) are not Linear layers (e.g. {names[0]})" if names else ""
        raise InputError(f"model.lora.targets: {what} matches no Linear layer of the {family} network "
                         f"({_network_class(net)}, {len(modules)} modules searched by full name{other}); "
                         f"use a preset ({known}) or a regular expression matching module names such as "
                         f"{_example_linear(net)}")
    return linear


def check_folder(teacher: str | Path, cfg) -> None:
    """`matched_modules` on the teacher folder's network built on the meta device from its config alone (no weights
    read), so that targets matching nothing stop a run before the teacher loads. Hub ids and unknown layouts: skipped
    (build checks again before peft runs)."""
    import json

    import diffusers

    for sub in ("unet", "transformer"):
        config = Path(teacher, sub, "config.json")
        if config.is_file():
            data = json.loads(config.read_text())
            cls = getattr(diffusers, str(data.get("_class_name")), None)
            if cls is None:
                return
            with torch.device("meta"):
                net = cls.from_config(data)
            matched_modules(net, cfg)
            return


def _example_linear(net: torch.nn.Module) -> str:
    return next((n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear)), "?")


def peft_config(net: torch.nn.Module, cfg):
    """peft's LoraConfig for the recipe's `model.lora` on `net`: dropout as given (0), B initialised to zero."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.rank if cfg.alpha is None else cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=f"(?:{target_pattern(net, cfg.targets)})", init_lora_weights=True, bias="none")


def add_adapters(net: torch.nn.Module, cfg) -> dict[str, torch.nn.Parameter]:
    """Inject G's adapters into `net` in place (its weights are not copied) -> the adapter parameters by name.
    The base stays frozen; only the adapters require gradients."""
    from peft import inject_adapter_in_model

    matched_modules(net, cfg)  # before peft: one line naming what was searched
    net.requires_grad_(False)
    inject_adapter_in_model(peft_config(net, cfg), net, adapter_name=ADAPTER)
    adapters = adapter_parameters(net)
    for name, p in net.named_parameters():
        p.requires_grad_(name in adapters)
    return adapters


def is_adapted(net: torch.nn.Module) -> bool:
    return any(".lora_" in n for n, _ in net.named_parameters())


def adapter_parameters(net: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """G's adapter parameters by their name in `net` (`….lora_A.default.weight`, `….lora_B.default.weight`)."""
    return {n: p for n, p in net.named_parameters() if f".lora_A.{ADAPTER}." in n or f".lora_B.{ADAPTER}." in n}


def base_parameters(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The frozen base's parameters (everything but the adapters)."""
    adapters = set(adapter_parameters(net))
    return [p for n, p in net.named_parameters() if n not in adapters]


def _lora_layers(module: torch.nn.Module) -> list:
    if "peft" not in sys.modules:  # nothing was adapted in this process
        return []
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


@contextlib.contextmanager
def adapters_off(module: torch.nn.Module):
    """Run `module` as the frozen base (D's backbone on G's base), then switch the adapters back on.

    peft's toggle (`LoraLayer.enable_adapters`) also sets the adapters' requires_grad (False off, True on); every flag
    is put back as it was, so G's frozen adapters stay frozen and its trained ones trainable. No adapters: no-op."""
    layers = _lora_layers(module)
    if not layers:
        yield
        return
    flags = [(p, p.requires_grad) for m in layers for n, p in m.named_parameters() if "lora_" in n]
    disabled = [m.disable_adapters for m in layers]
    try:
        for m in layers:
            m.enable_adapters(False)
        yield
    finally:
        for m, was in zip(layers, disabled):
            m.enable_adapters(not was)
        for p, flag in flags:
            p.requires_grad_(flag)


# -- checkpoints and the EMA ---------------------------------------------------------------------------------


class AdapterState:
    """What a checkpoint stores of a LoRA network: named adapter tensors (G's parameters, or their EMA), not the base.
    `state_dict` / `load_state_dict` (copying in place, shards included) / `parameters`, as sfv.checkpoint reads a
    module; sfv.distributed.model_state takes it as it is."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors)

    def parameters(self):
        return iter(self.tensors.values())

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = False):
        missing = [k for k in self.tensors if k not in state]
        unexpected = [k for k in state if k not in self.tensors]
        if strict and (missing or unexpected):
            raise RuntimeError(f"adapter state: {len(missing)} missing, {len(unexpected)} unexpected tensors")
        with torch.no_grad():
            for k, t in self.tensors.items():
                if k in state and state[k] is not t:
                    t.copy_(state[k])
        return torch.nn.modules.module._IncompatibleKeys(missing, unexpected)


class AdapterEMA:
    """The EMA of G's adapters alone (what AveragedModel does for a full G, without a copy of the base):
    `update_parameters(net)` after each G step, `n_averaged`, and `module`, the network with the EMA adapters in
    (for samples and the export). Built after sharding: the copies are sharded as the adapters are."""

    def __init__(self, net: torch.nn.Module, decay: float):
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        self.net = net
        self.avg = get_ema_multi_avg_fn(decay)
        self.tensors = {n: p.detach().clone() for n, p in adapter_parameters(net).items()}
        self.n_averaged = torch.tensor(0, dtype=torch.long)
        self.module = AdapterNet(net, self.tensors)

    def state(self) -> AdapterState:
        return AdapterState(self.tensors)

    @torch.no_grad()
    def update_parameters(self, net: torch.nn.Module) -> None:
        current = adapter_parameters(net)
        ema = [self.tensors[n] for n in current]
        model = [p.detach() for p in current.values()]
        if self.n_averaged == 0:
            for e, p in zip(ema, model):
                e.copy_(p)
        else:
            self.avg(ema, model, self.n_averaged)
        self.n_averaged += 1


class AdapterNet:
    """A LoRA network run with the adapter values `tensors` (None: its own) swapped in for the call and swapped back
    after (bit for bit): G's EMA as a network for samples. Everything else (dtype, config, train/eval) is the network's."""

    def __init__(self, net: torch.nn.Module, tensors: dict[str, torch.Tensor] | None = None):
        self.net, self.tensors = net, tensors

    def __getattr__(self, name):
        return getattr(self.net, name)

    def __call__(self, *args, **kwargs):
        with swapped(self.net, self.tensors):
            return self.net(*args, **kwargs)

    def values(self) -> dict[str, torch.Tensor]:
        return self.tensors if self.tensors is not None else {n: p.detach() for n, p in adapter_parameters(self.net).items()}

    def gather(self, world) -> tuple[dict, dict] | None:
        """(the base's state, the adapter values), whole, on process 0 (None on the others). Collective."""
        from sfv import distributed

        state = {k: distributed.full_value(v).detach() for k, v in self.net.state_dict().items() if ".lora_" not in k}
        values = {k: distributed.full_value(v).detach().cpu() for k, v in self.values().items()}
        return (state, values) if world.is_main else None

    def unsharded_copy(self, world):
        """The network with these adapters merged in, as a plain unsharded module on process 0 (None on the others);
        what sfv.distributed.unsharded returns for it. Collective (the adapters' shards are gathered)."""
        gathered = self.gather(world)
        return None if gathered is None else merged_copy(self.net, gathered[1], gathered[0]).to(world.device)


@contextlib.contextmanager
def swapped(net: torch.nn.Module, tensors: dict[str, torch.Tensor] | None):
    if tensors is None:
        yield
        return
    params = adapter_parameters(net)
    with torch.no_grad():
        kept = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.copy_(tensors[n])
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(kept[n])


# -- merging and files ---------------------------------------------------------------------------------------


def scalings(net: torch.nn.Module) -> dict[str, float]:
    """{adapted module name: alpha / r}."""
    from peft.tuners.lora import LoraLayer

    return {n: float(m.scaling[ADAPTER]) for n, m in net.named_modules() if isinstance(m, LoraLayer)}


def merged_state(state: dict[str, torch.Tensor], values: dict[str, torch.Tensor], scale: dict[str, float]) -> dict[str, torch.Tensor]:
    """The plain network's state dict: the base's tensors (`state`, keys with peft's `.base_layer`) under their
    original names, W + scale·(B @ A) where adapted (peft's merge, in the same order of operations)."""
    plain = {k.replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
    for name, s in scale.items():
        a, b = values[f"{name}.lora_A.{ADAPTER}.weight"], values[f"{name}.lora_B.{ADAPTER}.weight"]
        weight = plain[f"{name}.weight"]
        plain[f"{name}.weight"] = weight + ((b.float() @ a.float()) * s).to(weight.dtype)
    return plain


def merged_copy(net: torch.nn.Module, values: dict[str, torch.Tensor], state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """A plain network of `net`'s diffusers class (no peft layers, no sharding) holding `net`'s base with the adapter
    `values` merged in. `state`: the base's whole tensors (default: `net.state_dict()`, for an unsharded `net`)."""
    import diffusers

    if state is None:
        state = {k: v.detach() for k, v in net.state_dict().items() if ".lora_" not in k}
    with torch.device("meta"):  # no random initialisation of a full-size network: every tensor is assigned below
        plain = getattr(diffusers, _network_class(net)).from_config(net.config)
    plain.load_state_dict(merged_state(state, values, scalings(net)), strict=True, assign=True)
    constants = {k.replace(".base_layer.", "."): b for k, b in net.named_buffers()}
    for name, buffer in list(plain.named_buffers()):  # buffers outside the state dict (a DiT's RoPE tables)
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            plain.get_submodule(owner)._buffers[leaf] = constants[name].detach().clone()
    return plain.eval().requires_grad_(False)


def file_state(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapter tensors under peft's saved names (`….lora_A.weight`: the adapter name dropped), contiguous, on the CPU."""
    return {k.replace(f".{ADAPTER}.", "."): v.detach().cpu().contiguous() for k, v in values.items()}


def save_peft_adapter(out: str | Path, net: torch.nn.Module, values: dict[str, torch.Tensor], cfg) -> Path:
    """A peft adapter folder (adapter_config.json + adapter_model.safetensors) that `PeftModel.from_pretrained(base, out)`
    loads onto the teacher's network."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    peft_config(net, cfg).save_pretrained(str(out))
    save_file({f"base_model.model.{k}": v for k, v in file_state(values).items()}, out / "adapter_model.safetensors")
    return out

