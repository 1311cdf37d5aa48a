"""What every sfv command line shares: the argument parser that raises, the run wrapper that turns user
errors into one line and exit code 2, device and dtype parsing, and the quieting of library chatter.

cli.py, train.py, metrics/evaluate.py, the toy demo and tools/ import it; it imports nothing of sfv but
errors.py, so no command module has to import another to get these.
"""

from __future__ import annotations

import argparse
import sys
import time

from sfv.errors import InputError, SFVError

STARTED = time.perf_counter()  # the sfv command imports this module first: "since the command started" counts from here
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


class ArgParser(argparse.ArgumentParser):
    """argparse that raises (one line, exit 2 via run_command) instead of printing usage and exiting."""

    def error(self, message):
        raise InputError(f"{message} (see `{self.prog} --help`)")


def run_command(parser: argparse.ArgumentParser, command, argv: list[str] | None = None) -> int:
    """Parse, run, and turn user errors (SFVError) into one line on stderr and exit code 2."""
    try:
        args = parser.parse_args(argv)
        quiet_libraries()
        return command(args) or 0
    except SFVError as e:
        print(f"sfv: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sfv: interrupted", file=sys.stderr)
        return 130


def parse_dtype(name: str):
    import torch

    if name.lower() not in DTYPES:
        raise InputError(f"unknown dtype '{name}'; choose fp32, bf16 or fp16")
    return getattr(torch, DTYPES[name.lower()])


def parse_device(name: str, dtype=None):
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device '{name}'; choose cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{name}' requested but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device '{name}' requested but MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device '{name}'; choose cpu, cuda, cuda:N or mps")
    if device.type == "cpu" and dtype == torch.float16:
        raise InputError("fp16 is not supported on CPU; use --dtype fp32 or bf16 (or a GPU)")
    if device.type == "cpu" and dtype == torch.bfloat16:
        bf16_cpu_hint("--dtype bf16")
    return device


def bf16_cpu_hint(what: str) -> None:
    """One line on stderr: bf16 is asked for on a CPU, where it is far slower than fp32 (measured ≈ 18× here)."""
    print(f"sfv: note: {what} on a CPU runs about 18× slower than fp32; fp32 is the CPU's fast path", file=sys.stderr)


def parse_steps(text: str, flag: str = "--steps") -> list[int]:
    """Comma-separated positive step counts, e.g. '25,16,8,4,1'."""
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 1:
        raise InputError(f"{flag} must be comma-separated positive integers like 25,16,8,4,1 (got '{text}')")
    return steps


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """Each named option (flag spelling, e.g. 'decode-chunk-size') is unset or at least 1."""
    for name in names:
        value = getattr(args, name.replace("-", "_"))
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1 (got {value})")


def quiet_libraries() -> None:
    # Library chatter (torchvision fallbacks, deprecations, loading bars) would bury sfv's own lines;
    # the sampling progress bar and sfv's summary stay.
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
