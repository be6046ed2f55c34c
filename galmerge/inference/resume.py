"""The run's manifest and resume: fingerprints, the work folder, reusable part files.

A run records itself in ``OUT.parts/manifest.json`` (catalogue fingerprint, model
sha256, the settings that change the output, columns, date, command line). A
resumed run checks that nothing that changes the output differs, keeps the
original manifest (so it writes the same bytes as an uninterrupted run) and
reuses the part files that are complete (:func:`part_reusable`). Torch-free.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from galmerge.errors import GalmergeError
from galmerge.inference.engine import OnnxClassifier
from galmerge.inference.scoring import Scoring
from galmerge.inference.status import FETCH_FAILED
from galmerge.inference.writers import part_rows

__all__ = [
    "EXECUTION_FLAGS",
    "EXECUTION_OPTIONS",
    "MANIFEST",
    "MANIFEST_VERSION",
    "catalog_fingerprint",
    "empty_work_dir",
    "locked",
    "manifest_key",
    "normalised_command",
    "part_reusable",
    "prepare_work_dir",
    "run_date",
    "run_metadata",
]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def catalog_fingerprint(path: Path) -> dict[str, Any]:
    """Size plus sha256 of the first and last 8 MiB: cheap, copy-proof identity."""
    size = path.stat().st_size
    h = hashlib.sha256()
    block = 8 << 20
    with path.open("rb") as f:
        h.update(f.read(block))
        if size > 2 * block:
            f.seek(size - block)
        h.update(f.read(block))
    return {"size": size, "sha256_head_tail": h.hexdigest()}


def run_date() -> str:
    """Now in UTC (ISO 8601), or ``$SOURCE_DATE_EPOCH`` for reproducible outputs."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.UTC) if epoch and epoch.isdigit()
            else _dt.datetime.now(_dt.UTC))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


#: Options that change how a run executes, not what it writes: left out of the
#: recorded command, so that a resumed or a Dask run writes the same bytes.
EXECUTION_FLAGS = ("--resume",)
EXECUTION_OPTIONS = ("--dask", "--dask-workers", "--dask-resources")


def normalised_command(command: list[str] | None) -> list[str]:
    cmd = list(command) if command else ["(python) galmerge.inference.classify_catalog"]
    out: list[str] = []
    skip = False
    for c in cmd:
        if skip:
            skip = False
        elif c in EXECUTION_FLAGS or (c.split("=", 1)[0] in EXECUTION_OPTIONS and "=" in c):
            continue
        elif c in EXECUTION_OPTIONS:
            skip = True
        else:
            out.append(c)
    return out


def manifest_key(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("manifest_version", "galmerge_version", "catalog", "model",
                              "settings", "columns", "output", "source")}


@contextlib.contextmanager
def locked(work: Path) -> Iterator[None]:
    work.mkdir(parents=True, exist_ok=True)
    fh = (work / "lock").open("w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise GalmergeError(f"{work}: another galmerge classify is writing this output",
                                hint="wait for it, or choose another --output") from None
        yield
    finally:
        fh.close()


def empty_work_dir(work: Path) -> None:
    """Remove everything in the work folder, the lock file last (its holder keeps the lock)."""
    for child in work.iterdir():
        if child.name == "lock":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    (work / "lock").unlink(missing_ok=True)


def prepare_work_dir(work: Path, manifest: dict[str, Any], resume: bool
                      ) -> tuple[dict[str, Any], bool]:
    """Return the manifest to use (the original one when resuming) and whether resuming."""
    mpath = work / MANIFEST
    if resume and mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None:
            new_key, old_key = manifest_key(manifest), manifest_key(old)
            if new_key != old_key:
                changed = sorted(k for k in new_key if new_key[k] != old_key.get(k))
                raise GalmergeError(
                    f"cannot resume {work}: {', '.join(changed)} changed since the interrupted "
                    "run", hint="rerun without --resume to start over")
            return old, True
    for child in work.iterdir():
        if child.name.startswith(("part-", ".part-")) or child.name == MANIFEST:
            child.unlink()
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    tmp = work / f".{MANIFEST}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, mpath)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GalmergeError(f"{mpath}: cannot write the run manifest "
                            f"({exc.strerror or type(exc).__name__})",
                            hint="free some disk space, or choose another --output") from None
    # What a resumed run reads back (key order included), so both write the same bytes.
    return json.loads(text), False



def part_reusable(path: Path, n_rows: int) -> bool:
    """A finished part that a resumed run keeps: complete, and no row failed to fetch.

    Parts holding ``fetch_failed`` rows are recomputed, so a resumed run asks the
    service again for exactly those rows (the others come from the cache).
    """
    if not path.exists() or part_rows(path) != n_rows:
        return False
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        status = pq.read_table(path, columns=["status"]).column("status")
    except Exception:  # unreadable: recompute
        return False
    return not pc.any(pc.equal(status, FETCH_FAILED)).as_py()



def run_metadata(manifest: dict[str, Any], clf: OnnxClassifier, catalog_format: str,
                 scoring: Scoring) -> dict[str, Any]:
    """The run metadata written into the output (counts are added by the writer)."""
    return {
        "galmerge_version": manifest["galmerge_version"],
        "date": manifest["created"],
        "command": " ".join(manifest["command"]),
        "model": manifest["model"]["name"],
        "model_file": manifest["model"]["file"],
        "model_sha256": manifest["model"]["sha256"],
        "model_placeholder": manifest["model"]["placeholder"],
        "model_convention": clf.convention.pixel_convention,
        "catalog": Path(manifest["catalog"]["path"]).name,
        "catalog_format": catalog_format,
        "cutout_source": manifest["source"],
        "columns": {k: v for k, v in manifest["columns"].items() if v},
        **scoring.metadata(),
    }
