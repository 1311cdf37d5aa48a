"""`sfv bench`'s measuring instruments: per-component timing through forward hooks, peak memory, medians.

Components are the modules that do the work (COMPONENTS): the CLIP image encoder, the VAE encoder (+ quant
conv), the UNet (every call) and the VAE decoder; the teacher's code runs unchanged under the hooks. On CUDA
the hooks record CUDA events, on CPU they read perf_counter.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch

COMPONENTS = ("clip_encode", "vae_encode", "unet_total", "vae_decode")  # the stacked parts of a run


class ComponentTimer:
    """Forward pre/post hooks that time every call of the modules of each component."""

    def __init__(self, groups: dict[str, list[torch.nn.Module]], device: torch.device):
        self.groups, self.cuda = groups, device.type == "cuda"
        self.marks: dict[str, list] = {name: [] for name in groups}
        self._open: dict[int, object] = {}
        self._handles: list = []
        self.unet_batches: list[int] = []  # batch of each UNet call, as observed (CFG doubles it)

    def now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def elapsed(self, start, end) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start

    def __enter__(self) -> "ComponentTimer":
        for name, modules in self.groups.items():
            for module in modules:
                self._handles.append(module.register_forward_pre_hook(self._pre))
                self._handles.append(module.register_forward_hook(self._post(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre(self, module, args):
        if module in self.groups.get("unet_total", ()) and args:
            self.unet_batches.append(int(args[0].shape[0]))  # sample [B, F, C, h, w]
        self._open[id(module)] = self.now()

    def _post(self, name):
        def hook(module, args, output):
            self.marks[name].append((self._open.pop(id(module)), self.now()))

        return hook

    def collect(self) -> dict[str, list[float]]:
        """Per component, the duration of each call since the last collect (synchronises CUDA once)."""
        if self.cuda:
            torch.cuda.synchronize()
        out = {name: [self.elapsed(a, b) for a, b in marks] for name, marks in self.marks.items()}
        out["unet_batches"] = self.unet_batches
        self.marks, self.unet_batches = {name: [] for name in self.groups}, []
        return out


def component_groups(svd) -> dict[str, list[torch.nn.Module]]:
    """The modules behind each component of an SVDTeacher (decode: its decoding slot's network)."""
    return {
        "clip_encode": [svd.image_encoder],
        "vae_encode": [svd.vae.encoder, svd.vae.quant_conv],
        "unet_total": [svd.unet],
        "vae_decode": [svd.decoder.module],  # the decoding slot's network (the VAE's decoder, or a fast decoder)
    }


def _reset_peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_memory_allocated"
    try:  # Linux ≥ 4.0: "5" resets the peak RSS (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
        return "process_peak_rss_reset_per_run"
    except OSError:
        return "process_peak_rss_monotonic_since_start"


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if platform.system() == "Darwin" else 1024)


def timed_run(call, timer: ComponentTimer, device: torch.device) -> dict:
    """Run `call()` once under the hooks: end-to-end and per-component seconds, UNet calls, peak memory."""
    memory_kind = _reset_peak_memory(device)
    timer.collect()  # drop stale marks
    with timer:
        start = timer.now()
        call()
        end = timer.now()
    parts = timer.collect()  # synchronises CUDA before reading the events
    run = {"total": timer.elapsed(start, end), **{name: sum(parts[name]) for name in COMPONENTS}}
    run["unet_calls"], run["unet_batches"] = len(parts["unet_total"]), sorted(set(parts["unet_batches"]))
    run["unet_per_call"] = run["unet_total"] / max(1, run["unet_calls"])
    run["components_sum"] = sum(run[name] for name in COMPONENTS)
    run["other"] = run["total"] - run["components_sum"]
    run["peak_memory_bytes"], run["memory_kind"] = _peak_memory(device), memory_kind
    return run


def summarise(runs: list[dict]) -> dict:
    """Median, min, max (and all values) of each timed quantity over the repeats."""
    keys = ("total", *COMPONENTS, "unet_per_call", "components_sum", "other")
    out = {k: {"median_s": statistics.median(r[k] for r in runs), "min_s": min(r[k] for r in runs),
               "max_s": max(r[k] for r in runs), "values_s": [r[k] for r in runs]} for k in keys}
    out["unet_calls"], out["unet_batches_observed"] = runs[0]["unet_calls"], runs[0]["unet_batches"]
    out["peak_memory"] = {"bytes": max(r["peak_memory_bytes"] for r in runs), "kind": runs[0]["memory_kind"]}
    return out


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError))
