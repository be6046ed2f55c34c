"""A fixed, documented part of an unlabelled survey sample kept out of all training.

The survey-like check (:mod:`galmerge.training.survey`) ranks labelled galaxies among
unlabelled survey galaxies.  Any galaxy that took part in training in any role (domain
adaptation target, real host, BatchNorm statistics) flatters that check, so a fixed part of
the unlabelled pool is held out by a rule anyone can recompute from the object id alone:

    held out  <=>  int(sha256(objid as UTF-8).hexdigest(), 16) % HOLDOUT_MODULUS == 0

With ``HOLDOUT_MODULUS = 3`` one third of the pool (405 of the 1199 GZ1 pool galaxies in
``shared/data/sdss_gz1/pool``) is held out; the rule does not depend on the order, the
number of files or a random seed.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path

__all__ = ["HOLDOUT_MODULUS", "fold_of", "is_held_out", "split_ids", "split_image_dir"]

#: One object in HOLDOUT_MODULUS is held out of training.
HOLDOUT_MODULUS = 3


def is_held_out(objid: str, modulus: int = HOLDOUT_MODULUS) -> bool:
    """True when ``objid`` (the catalogue id, e.g. an SDSS objID as text) is held out."""
    digest = hashlib.sha256(str(objid).strip().encode("utf-8")).hexdigest()
    return int(digest, 16) % modulus == 0


def fold_of(objid: str, folds: int) -> int:
    """Cross-fitting fold (0..folds-1) of ``objid``: a salted hash, independent of
    :func:`is_held_out`, so that folds cut across the held-out/training split evenly."""
    digest = hashlib.sha256(("fold:" + str(objid).strip()).encode("utf-8")).hexdigest()
    return int(digest, 16) % folds


def split_ids(ids: Iterable[str], modulus: int = HOLDOUT_MODULUS) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids), each in the order given."""
    train: list[str] = []
    held: list[str] = []
    for i in ids:
        (held if is_held_out(i, modulus) else train).append(i)
    return train, held


def split_image_dir(src: str | Path, train_dir: str | Path, heldout_dir: str | Path,
                    modulus: int = HOLDOUT_MODULUS) -> tuple[int, int]:
    """Copy the cutouts of ``src`` (named ``<objid>.<ext>``) into a training and a held-out
    directory by :func:`is_held_out` of the file stem; returns the two counts.

    Files are copied (not linked) so that the two folders are ordinary image
    directories that every reader accepts.  Existing destination folders are replaced.
    """
    src = Path(src)
    counts = [0, 0]
    dests = [Path(train_dir), Path(heldout_dir)]
    for d in dests:
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for f in sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")):
        k = int(is_held_out(f.stem, modulus))
        shutil.copy2(f, dests[k] / f.name)
        counts[k] += 1
    return counts[0], counts[1]
