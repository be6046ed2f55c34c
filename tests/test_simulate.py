"""The embedded simulator, HST-like sim->sim mode (paper §4.1): files, determinism, the
domain difference, merger structure, bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from galmerge.conventions import FLUX_LINEAR
from galmerge.data import open_dataset
from galmerge.data.simulator import simulate
from galmerge.data.simulator.hst import HSTConfig, _Optics, draw_catalogue, render_batch
from galmerge.errors import GalmergeError
from tests.simtools import count_peaks


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(out, n=60, seed=5)
    return out


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula."""
    ranks = np.argsort(np.argsort(score)) + 1
    pos = label == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_files_shapes_attrs_and_balanced_labels(sim_dir: Path) -> None:
    src = open_dataset(sim_dir / "source.h5")
    tgt = open_dataset(sim_dir / "target.h5")
    with src, tgt:
        for ds, domain in ((src, "source"), (tgt, "target")):
            x = ds.read(np.arange(len(ds)))
            assert x.shape == (60, 3, 75, 75) and x.dtype == np.float32
            assert np.isfinite(x).all()
            assert ds.convention.pixel_convention == FLUX_LINEAR
            assert ds.convention.bands == ("F814W", "F356W", "F160W")
            assert ds.provenance["domain"] == domain
            assert ds.provenance["seed"] == 5 and ds.provenance["n"] == 60
            assert ds.provenance["config"]["noise_sigma"] == list(HSTConfig().noise_sigma)
            assert (ds.labels == 1).sum() == 30 and (ds.labels == 0).sum() == 30
        # The same galaxies in both domains: same ids, labels and split.
        assert list(src.ids) == list(tgt.ids)
        assert np.array_equal(src.labels, tgt.labels)
        assert np.array_equal(src.split, tgt.split)
        assert set(src.split) == {"train", "val", "test"}
        # Three bands with different colours: band ratios differ between galaxies.
        x = src.read(np.arange(len(src)))
        flux = x.sum(axis=(2, 3))
        colour = flux[:, 0] / flux[:, 2]
        assert colour.std() > 0.1
        assert not np.allclose(flux[:, 0], flux[:, 1], rtol=0.05)
    # Per-image truth beside the images: merger stage 1-3 exactly for mergers.
    with h5py.File(sim_dir / "source.h5") as f:
        stage = f["extra/stage"][:]
        assert np.array_equal(stage > 0, f["labels"][:] == 1)
        ratio = f["extra/mass_ratio"][:][stage > 0]
        assert np.all((ratio >= 1) & (ratio <= HSTConfig().max_mass_ratio))


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a, b, c = (simulate(tmp_path / name, n=12, seed=s) for name, s in
               (("a", 7), ("b", 7), ("c", 8)))
    for pa, pb, pc in zip(a.paths, b.paths, c.paths, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.read_bytes() != pc.read_bytes()
    with h5py.File(a.paths[0]) as fa, h5py.File(c.paths[0]) as fc:
        assert not np.array_equal(fa["images"][:], fc["images"][:])


def test_target_is_source_plus_configured_sky_noise(sim_dir: Path) -> None:
    cfg = HSTConfig()
    with h5py.File(sim_dir / "source.h5") as s, h5py.File(sim_dir / "target.h5") as t:
        diff = t["images"][:] - s["images"][:]
    per_band = diff.std(axis=(0, 2, 3))
    np.testing.assert_allclose(per_band, cfg.noise_sigma, rtol=0.02)
    assert abs(diff.mean()) < 0.01
    # White noise: neighbouring pixels uncorrelated.
    r = np.corrcoef(diff[..., :-1].ravel(), diff[..., 1:].ravel())[0, 1]
    assert abs(r) < 0.02


def test_tidal_debris_sits_at_the_noise_level_while_cores_survive() -> None:
    cfg = HSTConfig()
    rng = np.random.default_rng(0)
    cat = draw_catalogue(96, rng, cfg)
    r = render_batch(cat, slice(0, 96), cfg, rng, _Optics(cfg), components=True)
    assert r.tidal is not None
    merger = cat["label"] == 1
    sigma = np.asarray(cfg.noise_sigma)[:, None]
    assert np.all(r.tidal[~merger] == 0)
    sb_debris, sb_core = [], []
    for i in np.flatnonzero(merger):
        tid = r.tidal[i].reshape(3, -1)
        gal = (r.pristine[i] - r.tidal[i]).reshape(3, -1)
        # Pixels where the debris outshines the galaxies: the tails and shells themselves.
        footprint = (tid.sum(0) > gal.sum(0)) & (tid.sum(0) > 0.05 * tid.sum(0).max())
        if footprint.sum() < 10:
            continue
        sb_debris.append(float(np.median((tid[:, footprint] / sigma).mean(0))))
        sb_core.append(float((r.pristine[i].reshape(3, -1) / sigma).mean(0).max()))
    assert len(sb_debris) >= 20
    # Noise-free source: the debris is a clean signal (S/N infinite). Noisy target: the
    # debris pixels sit near one sigma, so the feature is buried ...
    assert 0.1 < np.median(sb_debris) < 1.5
    # ... while the galaxy cores stay far above the noise.
    assert np.median(sb_core) > 15
    # Achieved debris SB (flux-weighted) within the configured range (or capped below it).
    got = r.tidal_sb[merger]
    assert np.all(got <= cfg.tidal_sb_sigma[1] * 1.001)
    assert np.median(got) > cfg.tidal_sb_sigma[0]


def test_mergers_have_two_components_non_mergers_one() -> None:
    cfg = HSTConfig()
    rng = np.random.default_rng(1)
    cat = draw_catalogue(200, rng, cfg)
    r = render_batch(cat, slice(0, 200), cfg, rng, _Optics(cfg))
    m = cat["label"] == 1
    assert np.all((cat["mass_ratio"][m] >= 1) & (cat["mass_ratio"][m] <= cfg.max_mass_ratio))
    assert np.all(cat["mass_ratio"][~m] == 0) and np.all(cat["stage"][~m] == 0)
    assert set(np.unique(cat["stage"][m])) == {1, 2, 3}
    galaxies = r.pristine.sum(axis=1)
    wide = np.flatnonzero(m & (cat["stage"] == 3) & (cat["mass_ratio"] < 4))
    assert len(wide) >= 5
    assert all(count_peaks(galaxies[i], 0.05) >= 2 for i in wide)
    single = np.flatnonzero(~m)
    assert np.mean([count_peaks(galaxies[i], 0.05) == 1 for i in single]) > 0.95


def test_class_not_given_away_by_brightness() -> None:
    cfg = HSTConfig()
    rng = np.random.default_rng(2)
    cat = draw_catalogue(400, rng, cfg)
    r = render_batch(cat, slice(0, 400), cfg, rng, _Optics(cfg))
    total = r.pristine.sum(axis=(1, 2, 3))
    assert abs(_auc(total, cat["label"]) - 0.5) < 0.1
    mean_colour = r.pristine[:, 0].sum(axis=(1, 2)) / r.pristine[:, 2].sum(axis=(1, 2))
    assert abs(_auc(mean_colour, cat["label"]) - 0.5) < 0.15


@pytest.mark.parametrize("n", [1, 0, -5])
def test_too_few_images_is_a_user_error(tmp_path: Path, n: int) -> None:
    with pytest.raises(GalmergeError, match="at least 2"):
        simulate(tmp_path, n=n)


def test_bad_output_directory_is_a_user_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(GalmergeError, match="not a directory"):
        simulate(afile, n=4)
    with pytest.raises(GalmergeError, match="cannot create"):
        simulate(afile / "sub", n=4)
    with pytest.raises(GalmergeError, match="unknown survey"):
        simulate(tmp_path / "x", n=4, survey="euclid")


def test_cli_writes_both_files_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "galmerge", "simulate", "--out", str(out),
                           "--n", "10", "--seed", "3"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "source.h5").is_file() and (out / "target.h5").is_file()
    with h5py.File(out / "source.h5") as f:
        assert json.loads(f.attrs["provenance"])["seed"] == 3
        assert f["images"].shape == (10, 3, 75, 75)
    bad = subprocess.run([sys.executable, "-m", "galmerge", "simulate", "--out", str(out),
                          "--n", "1"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr
