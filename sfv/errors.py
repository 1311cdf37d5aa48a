"""Exceptions sfv raises for problems a user can fix. Each message says what is wrong and how to fix it.

The CLI turns any `SFVError` into one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""


class SFVError(Exception):
    """Base class: a problem with the user's input, files or environment (not a bug in sfv)."""


class ModelLoadError(SFVError):
    """A model folder or hub id is missing, incomplete or cannot be loaded."""


class InputError(SFVError, ValueError):
    """An argument or input file is invalid (image, size, frame count, dtype, device, output path).

    Also a ValueError: what diffusers' pipelines raise for bad input, so code written against the stock
    pipeline (`except ValueError`) catches SFVPipeline's errors too."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type name): library errors reworded for one-line reports."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class DataError(SFVError):
    """A training data folder, metadata file or latent cache is missing, empty or unusable."""


class CheckpointError(DataError):
    """A training checkpoint is damaged (a file missing, truncated or unreadable); the message names the file."""
