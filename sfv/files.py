"""Atomic writes: a result appears under its final name complete, or not at all; an export target is checked first."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sfv.errors import InputError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, tmp_name: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write a file or a folder into; when the block ends without an
    error it is renamed to `path` (os.replace: atomic on one filesystem), otherwise it is removed.

    tmp_name: the temporary's name (default `.NAME.partial-PID`; keep the suffix where a writer reads it).
    A folder replaces only a missing or empty `path` (os.replace's rule for directories).
    """
    path = Path(path)
    tmp = path.with_name(tmp_name or f".{path.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            path.rmdir()  # empty (os.replace cannot replace a non-empty folder; callers check before writing)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def check_export_target(out_dir: str | os.PathLike) -> Path:
    """The export folder must be new (or empty) and its parent writable."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"export folder '{out}' already exists and is not empty; choose a new folder or remove it")
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"cannot create export folder '{out}': '{parent}' is not a writable folder")
    return out
