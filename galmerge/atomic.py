"""Atomic file writes: a temporary file beside the target, then one rename.

A reader sees the old file or the new one, never a part; a failed write leaves the target
as it was. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from galmerge.errors import GalmergeError

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (parents created) through ``.NAME.PID.tmp`` + rename.

    Raises:
        GalmergeError: the folder cannot be written (one line with the OS reason).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GalmergeError(f"{path}: cannot write ({exc.strerror})") from None
