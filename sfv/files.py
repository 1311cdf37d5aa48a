"""Atomic writes: a result appears under its final name complete, or not at all."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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
