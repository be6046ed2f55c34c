"""Inputs are sacred: no file a run writes may be a file the run reads.

A run reads a catalogue, a model, cutouts (a folder, an HDF5 cube, a cache,
``file_loc`` targets) and writes an output, a sidecar, a work folder or a
status table. :func:`check_outputs_spare_inputs` compares them *before
anything is written* — by resolved path (symbolic links followed) and by
device and inode (hard links) — and refuses the run with one line when an
output would replace an input, or a work folder would hold one (its part
files are deleted when a run starts over).

``file_loc`` targets are only known row by row; :func:`file_loc_collision`
scans the catalogue's ``file_loc`` column for the outputs that already exist
(the only ones whose replacement could destroy anything).

Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from galmerge.inference.cutouts import WholeRunError

__all__ = ["check_outputs_spare_inputs", "file_loc_collision", "same_file"]


def _resolve(p: Path) -> Path:
    try:
        return p.expanduser().resolve()
    except (OSError, RuntimeError):
        return p.absolute()


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name one file (same resolved path, or same inode)."""
    pa, pb = Path(a), Path(b)
    if _resolve(pa) == _resolve(pb):
        return True
    try:
        return os.path.samefile(pa, pb)
    except (OSError, ValueError):
        return False


def _inside(child: Path, folder: Path) -> bool:
    c, f = _resolve(child), _resolve(folder)
    return c == f or f in c.parents


def check_outputs_spare_inputs(outputs: Sequence[tuple[str, Path]],
                               inputs: Sequence[tuple[str, Path]], *,
                               work: Path | None = None, hint: str = "choose another output"
                               ) -> None:
    """Refuse (one line) when an output is one of the inputs or a work folder holds one.

    Args:
        outputs: ``(what, path)`` of every file the run will write.
        inputs: ``(what, path)`` of every file or folder the run reads.
        work: the run's work folder (created; its part files may be deleted).

    Raises:
        WholeRunError: naming the output, the input and the fix.
    """
    for out_what, out in outputs:
        for in_what, src in inputs:
            if src.is_dir():
                continue
            if same_file(out, src):
                raise WholeRunError(f"{out}: the {out_what} would replace the {in_what} "
                                    f"{src} that this run reads", hint=hint)
    if work is not None:
        for in_what, src in inputs:
            if _inside(src, work):
                raise WholeRunError(f"{work}: the work folder would hold the {in_what} {src} "
                                    "that this run reads (its files are removed)", hint=hint)


def file_loc_collision(values: Iterable[str], base_dir: Path,
                       outputs: Sequence[tuple[str, Path]]) -> tuple[str, Path] | None:
    """The first output that a ``file_loc`` value names, or None.

    Only outputs that exist can be destroyed, so only those are looked for;
    values are compared by file name before anything is resolved.
    """
    present = [(what, p) for what, p in outputs if p.exists()]
    if not present:
        return None
    names = {p.name for _, p in present}
    for value in values:
        if not value:
            continue
        loc = value.rsplit("#", 1)[0] if "#" in value else value
        if Path(loc).name not in names:
            continue
        cand = Path(loc) if Path(loc).is_absolute() else base_dir / loc
        for what, p in present:
            if same_file(cand, p):
                return what, p
    return None
