"""The embedded galaxy simulator: labelled training images without downloads.

Two modes (``survey``):

* ``"hst"`` — the paper's simulation-to-simulation experiment (§4.1): a
  pristine PSF-convolved ``source.h5`` and a noisy ``target.h5`` holding the
  same galaxies, three HST-like bands, linear flux (:mod:`.hst`).
* ``"sdss"`` — an SDSS-like labelled source for simulation-to-real training:
  g, r, i at SDSS pixel scale and seeing, sky noise at SDSS depth, neighbours
  and stars, real-sky backgrounds, the SDSS colour stretch and JPEG
  compression, rendered as the central crop of a Galaxy Zoo cutout
  (:mod:`.sdss`).

Everything is vectorised over batches and deterministic for a seed: the same
seed gives byte-identical files. See ``docs/simulator.md``. Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from galmerge.data.simulator.hst import HSTConfig, simulate_hst
from galmerge.data.simulator.sdss import SDSSConfig, simulate_sdss
from galmerge.data.simulator.truth import truth_columns
from galmerge.errors import GalmergeError

SURVEYS = ("hst", "sdss")


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` wrote."""

    survey: str
    paths: tuple[Path, ...]
    n: int
    seed: int


def simulate(
    out_dir: str | Path, n: int = 6000, seed: int = 1, survey: str = "hst",
    *, config: object | None = None, backgrounds: str | Path | None = None,
    hosts: str | Path | None = None, host_fraction: float | None = None,
) -> SimulationResult:
    """Simulate labelled galaxy images and write them as galmerge dataset files.

    Args:
        out_dir: directory to write to (created if missing).
        n: images per domain (at least 2; classes balanced).
        seed: random seed; the same seed gives byte-identical files.
        survey: ``"hst"`` (writes ``source.h5`` pristine and ``target.h5``
            noisy, paper §4.1) or ``"sdss"`` (writes ``source.h5`` in the
            ``sdss-colour-jpeg`` convention).
        config: an :class:`~.hst.HSTConfig` / :class:`~.sdss.SDSSConfig` to
            override the defaults.
        backgrounds: ``"sdss"`` only: a directory of real 423-px GZ1 SDSS JPEGs
            (e.g. the unlabelled target pool) whose sky replaces the synthetic sky.
        hosts: ``"sdss"`` only: a directory of real 423-px GZ1 SDSS JPEGs used as host
            galaxies (:mod:`galmerge.data.simulator.hosts`) for ``host_fraction`` of the
            images (default 0.5). Never point it at labelled evaluation images or at the
            held-out part of the pool (:mod:`galmerge.data.holdout`).

    Returns:
        The written paths.

    Raises:
        GalmergeError: bad ``n``, unknown survey, unwritable ``out_dir``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise GalmergeError(f"--n must be an integer of at least 2, got {n!r}")
    if survey not in SURVEYS:
        raise GalmergeError(f"unknown survey {survey!r}", hint=f"use one of {', '.join(SURVEYS)}")
    if (backgrounds is not None or hosts is not None) and survey != "sdss":
        raise GalmergeError("--backgrounds and --hosts apply to --survey sdss only")
    if host_fraction is not None and not 0.0 <= host_fraction <= 1.0:
        raise GalmergeError(f"--host-fraction must be between 0 and 1, got {host_fraction}")
    out = _writable_dir(Path(out_dir))
    if survey == "hst":
        cfg = config if config is not None else HSTConfig()
        if not isinstance(cfg, HSTConfig):
            raise GalmergeError("survey 'hst' needs an HSTConfig")
        paths: tuple[Path, ...] = simulate_hst(out, int(n), int(seed), cfg)
    else:
        cfg_s = config if config is not None else SDSSConfig()
        if not isinstance(cfg_s, SDSSConfig):
            raise GalmergeError("survey 'sdss' needs an SDSSConfig")
        if backgrounds is not None:
            cfg_s = replace(cfg_s, backgrounds=str(backgrounds))
        if hosts is not None:
            cfg_s = replace(cfg_s, hosts=str(hosts))
        if host_fraction is not None:
            cfg_s = replace(cfg_s, host_fraction=float(host_fraction))
        paths = simulate_sdss(out, int(n), int(seed), cfg_s)
    return SimulationResult(survey, paths, int(n), int(seed))


def _writable_dir(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise GalmergeError(f"{out}: exists and is not a directory",
                            hint="give a directory for --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GalmergeError(f"{out}: cannot create the output directory ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise GalmergeError(f"{out}: output directory is not writable",
                            hint="choose another --out or fix its permissions")
    return out


__all__ = ["SURVEYS", "SimulationResult", "simulate", "truth_columns"]
