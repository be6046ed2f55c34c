"""The simulator's SDSS-like mode: convention, JPEG-like pixels, determinism, merger structure."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from galmerge.conventions import SDSS_COLOUR_JPEG
from galmerge.data import open_dataset
from galmerge.data.simulator import simulate
from galmerge.data.simulator.sdss import (
    SDSSConfig,
    _Grid,
    _stretch,
    draw_catalogue,
    load_backgrounds,
    lupton_rgb8,
    render_flux,
    to_jpeg_model_pixels,
    unstretch,
)
from galmerge.errors import GalmergeError
from tests.simtools import count_peaks


@pytest.fixture(scope="module")
def sdss_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdss")
    simulate(out, n=32, seed=4, survey="sdss")
    return out


def test_sdss_file_has_the_colour_jpeg_convention(sdss_dir: Path) -> None:
    with open_dataset(sdss_dir / "source.h5") as ds:
        assert not (sdss_dir / "target.h5").exists()
        conv = ds.convention
        assert conv.pixel_convention == SDSS_COLOUR_JPEG
        assert conv.bands == ("i", "r", "g")
        assert conv.size == 75 and conv.crop_fraction == 1.0
        # The crop of real 423-px GZ1 JPEGs these images stand for travels with them.
        assert conv.extra["equivalent_real_crop_fraction"] == "0.5"
        assert ds.provenance["survey"] == "sdss"
        assert "crop_fraction=0.5" in ds.provenance["real_equivalent"]
        assert (ds.labels == 1).sum() == 16 and (ds.labels == 0).sum() == 16
        x = ds.read(np.arange(len(ds)))
    assert x.shape == (32, 3, 75, 75) and x.dtype == np.float32


def test_sdss_pixels_look_like_colour_jpegs(sdss_dir: Path) -> None:
    with h5py.File(sdss_dir / "source.h5") as f:
        x = f["images"][:]
    assert x.min() >= 0.0 and x.max() <= 255.0
    # Dark, noisy sky at the edges; a bright galaxy in the middle.
    edge = np.concatenate([x[..., :6, :].reshape(32, 3, -1), x[..., -6:, :].reshape(32, 3, -1)],
                          axis=2)
    sky = np.median(edge, axis=2)
    assert np.all(np.median(sky, axis=0) < 25)
    noise = np.median(np.abs(edge - sky[..., None]), axis=2)
    assert np.all(np.median(noise, axis=0) > 0.3)
    centre = x[..., 33:42, 33:42].mean(axis=(1, 2, 3))
    assert np.median(centre) > 60
    # Galaxies are redder than blue in (R, G, B) = (i, r, g) on average, as in SDSS images.
    c = x[..., 33:42, 33:42].mean(axis=(2, 3))
    assert np.median(c[:, 0] - c[:, 2]) > 0


def test_jpeg_step_matches_the_real_files() -> None:
    cfg = SDSSConfig()
    grid = _Grid(cfg)
    rgb = np.full((1, cfg.render_px, cfg.render_px, 3), 40, dtype=np.uint8)
    out = to_jpeg_model_pixels(rgb, cfg, grid)
    assert out.shape == (1, 3, 75, 75)
    np.testing.assert_allclose(out, 40, atol=1.0)
    # The encoder's quantisation tables equal those of the real GZ1 JPEGs (quality 75).
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(buf, format="JPEG",
                                                                 quality=cfg.jpeg_quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        tables = {k: list(v)[:8] for k, v in im.quantization.items()}
    assert tables[0] == [8, 6, 5, 8, 12, 20, 26, 31]
    assert tables[1] == [9, 9, 12, 24, 50, 50, 50, 50]


def test_sdss_same_seed_same_bytes(tmp_path: Path) -> None:
    a = simulate(tmp_path / "a", n=6, seed=11, survey="sdss").paths[0]
    b = simulate(tmp_path / "b", n=6, seed=11, survey="sdss").paths[0]
    c = simulate(tmp_path / "c", n=6, seed=12, survey="sdss").paths[0]
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_sdss_mergers_have_two_bodies_or_tidal_debris() -> None:
    cfg = SDSSConfig()
    rng = np.random.default_rng(3)
    cat = draw_catalogue(160, rng, cfg)
    m = cat["label"] == 1
    stage = cat["stage"]
    assert set(np.unique(stage[m])) == {1, 2, 3} and np.all(stage[~m] == 0)
    # Every merger carries debris; no non-merger does.
    assert np.all(cat["debris_flux"][m, 1] > 0) and np.all(cat["debris_flux"][~m, 1] == 0)
    # Pairs and interacting systems have a second galaxy within the frame.
    pairs = m & (stage < 3)
    assert np.all(cat["b_flux2"][pairs, 1] + cat["d_flux2"][pairs, 1] > 0)
    assert np.all(cat["sep"][pairs] >= 0.35 * cat["r90"][pairs])
    assert np.all(cat["mass_ratio"][m] <= 10.0 + 1e-9)
    # Chance projections: a second galaxy but no merger label and no debris.
    proj = cat["projection"] == 1
    assert proj.sum() > 5 and np.all(cat["label"][proj] == 0)
    # Noise-free images: well-separated, major pairs show two cores.
    flux = render_flux(cat, slice(0, 160), cfg, np.random.default_rng(0), noise=False)
    r_band = flux[:, 1]
    wide = np.flatnonzero(pairs & (cat["sep"] > 0.9 * cat["r90"]) & (cat["mass_ratio"] < 3)
                          & (cat["field_flux"][..., 1].max(axis=1) < 0.5 * 10 ** (-0.4 * (
                              cat["mag"] - 22.5))))
    assert len(wide) >= 3
    assert np.mean([count_peaks(r_band[i], 0.1) >= 2 for i in wide]) >= 0.8


def test_stretch_maps_zero_flux_to_black_and_keeps_colour_order() -> None:
    cfg = SDSSConfig()
    flux = np.zeros((2, 3, 8, 8), dtype=np.float32)
    flux[1, :, 4, 4] = (0.5, 1.0, 1.5)  # g < r < i: a red source
    rgb = lupton_rgb8(flux, cfg)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 8, 8, 3)
    assert rgb[0].max() == 0
    r, g, b = rgb[1, 4, 4].astype(int)
    assert r > g > b > 0


def test_unstretch_inverts_the_lupton_stretch() -> None:
    cfg = SDSSConfig()
    rng = np.random.default_rng(0)
    flux = rng.uniform(0.0, 2.0, (3, 3, 6, 6)).astype(np.float32)
    rgb = np.moveaxis(_stretch(flux, cfg), -1, 1)
    back = unstretch(rgb, cfg)
    unsaturated = (rgb < 254.9).all(axis=1, keepdims=True)
    np.testing.assert_allclose(back * unsaturated, flux * unsaturated, rtol=1e-4, atol=1e-6)


def test_real_sky_backgrounds(tmp_path: Path, example_dir: Path) -> None:
    jpegs = example_dir / "cutouts"
    a = simulate(tmp_path / "a", n=8, seed=2, survey="sdss", backgrounds=jpegs).paths[0]
    b = simulate(tmp_path / "b", n=8, seed=2, survey="sdss", backgrounds=jpegs).paths[0]
    assert a.read_bytes() == b.read_bytes()
    with open_dataset(a) as ds:
        sky = ds.provenance["sky"]
        assert sky["files"] == 24 and sky["blocks"] > 10 and len(sky["sha256"]) == 64
        x = ds.read(np.arange(len(ds)))
    assert x.min() >= 0 and x.max() <= 255
    edge = x[..., :6, :].reshape(8, 3, -1)
    assert np.median(edge) < 25
    bank = load_backgrounds(jpegs, SDSSConfig())
    assert bank.blocks.dtype == np.uint8 and bank.blocks.shape[1:] == (3, 105, 105)
    # The blocks are sky: no bright sources or galaxy outskirts.
    assert np.percentile(bank.blocks.mean(axis=1).reshape(len(bank.blocks), -1), 50,
                         axis=1).max() < 12


def test_background_errors(tmp_path: Path) -> None:
    with pytest.raises(GalmergeError, match="background directory not found"):
        simulate(tmp_path / "o", n=4, survey="sdss", backgrounds=tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(GalmergeError, match="no usable sky"):
        simulate(tmp_path / "o", n=4, survey="sdss", backgrounds=empty)
    with pytest.raises(GalmergeError, match="sdss only"):
        simulate(tmp_path / "o", n=4, survey="hst", backgrounds=empty)


def test_real_hosts_one_chain_for_both_classes(tmp_path: Path, example_dir: Path) -> None:
    jpegs = example_dir / "cutouts"
    a = simulate(tmp_path / "a", n=12, seed=3, survey="sdss", hosts=jpegs,
                 host_fraction=0.5).paths[0]
    b = simulate(tmp_path / "b", n=12, seed=3, survey="sdss", hosts=jpegs,
                 host_fraction=0.5).paths[0]
    assert a.read_bytes() == b.read_bytes()  # deterministic for a seed
    with open_dataset(a) as ds:
        prov = ds.provenance["hosts"]
        assert prov["files"] == 24 and prov["scenes"] == 6 and len(prov["sha256"]) == 64
        x = ds.read(np.arange(len(ds)))
        labels = ds.labels
    with h5py.File(a) as f:
        host, idx = f["extra/host"][:], f["extra/host_index"][:]
    # the last 6 scenes are painted onto real hosts, both classes among them
    assert host.tolist() == [0] * 6 + [1] * 6 and (idx[:6] == -1).all() and (idx[6:] >= 0).all()
    assert x.min() >= 0 and x.max() <= 255

    # a host non-merger without a projection is the real host re-processed: the central
    # region of its 75-px model input matches the real cutout read the usual way
    from galmerge.data.images import prepare, read_image
    from galmerge.data.simulator.hosts import load_hosts, pick_hosts

    bank = load_hosts(jpegs, 423, 212)
    assert bank.crops.shape[1:] == (3, 212, 212) and prov["ids"] == bank.ids
    with h5py.File(a) as f:
        proj = f["extra/projection"][:]
    lone = [i for i in range(6, 12) if labels[i] == 0 and proj[i] == 0]
    for i in lone:
        real = prepare(read_image(jpegs / f"{bank.ids[idx[i]]}.jpeg").pixels, 75, 0.5)
        # the host was flipped/rotated: compare against the best of its eight views
        views = [np.rot90(real, k, axes=(1, 2)) for k in range(4)]
        views += [v[:, :, ::-1] for v in views]
        err = min(float(np.abs(x[i] - v)[:, 20:55, 20:55].mean()) for v in views)
        assert err < 4.0, err  # DN: re-stretch and a second JPEG pass only
    # mergers on hosts carry extra light beyond the real host's
    mergers = [i for i in range(6, 12) if labels[i] == 1]
    assert mergers
    rng = np.random.default_rng(0)
    crops, _ = pick_hosts(bank, 4, rng)
    assert crops.shape == (4, 3, 212, 212) and crops.dtype == np.float32


def _elliptical_crop(q: float, angle: float, size: int = 212) -> np.ndarray:
    """(3, size, size) uint8: a Gaussian galaxy of axis ratio ``q`` on a noisy sky, and a
    round neighbour that must not count."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    img = 20 + 200 * np.exp(-0.5 * ((u / 25) ** 2 + (v / (25 * q)) ** 2))
    img += 150 * np.exp(-0.5 * ((xx - 80) ** 2 + (yy + 80) ** 2) / 36)  # neighbour
    img += np.random.default_rng(0).normal(0, 2, img.shape)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[None], 3, axis=0)


@pytest.mark.parametrize(("q", "angle"), [(0.25, 0.3), (0.5, 1.2), (0.9, 2.0)])
def test_host_axis_ratio_is_the_central_galaxys_shape(q: float, angle: float) -> None:
    from galmerge.data.simulator.hosts import axis_ratio

    # the isophote 3 noise levels above the sky of a Gaussian is an ellipse of axis ratio q;
    # the flux-weighted moments inside it keep that ratio (JPEG-free, so within 0.05)
    assert axis_ratio(_elliptical_crop(q, angle)) == pytest.approx(q, abs=0.05)
    blank = np.full((3, 212, 212), 20, dtype=np.uint8)
    assert axis_ratio(blank) == 1.0  # nothing at the centre: counted as round


def test_inclined_hosts_drawn_more_often_in_both_classes(tmp_path: Path,
                                                         example_dir: Path) -> None:
    from galmerge.data.simulator.hosts import (
        axis_ratios,
        host_weights,
        load_hosts,
        pick_hosts,
    )

    jpegs = example_dir / "cutouts"
    bank = load_hosts(jpegs, 423, 212)
    q = axis_ratios(bank)
    inclined = q < 0.5
    assert 0 < inclined.sum() < len(q)  # the bundled sample holds both kinds
    p = host_weights(q, 4.0, 0.5)
    assert p.sum() == pytest.approx(1.0)
    assert p[inclined][0] == pytest.approx(4 * p[~inclined][0])
    _, idx = pick_hosts(bank, 4000, np.random.default_rng(1), p)
    share = inclined[idx].mean()
    expect = 4 * inclined.sum() / (4 * inclined.sum() + (~inclined).sum())
    assert share == pytest.approx(expect, abs=0.03)
    with pytest.raises(GalmergeError, match="must be positive"):
        host_weights(q, 0.0, 0.5)
    # through the simulator: recorded in the provenance, hosts drawn by the weights
    cfg = SDSSConfig(inclined_host_weight=50.0)
    a = simulate(tmp_path / "a", n=40, seed=3, survey="sdss", hosts=jpegs, host_fraction=1.0,
                 config=cfg).paths[0]
    with open_dataset(a) as ds:
        assert ds.provenance["hosts"]["inclined_hosts"] == int(inclined.sum())
    with h5py.File(a) as f:
        idx, labels = f["extra/host_index"][:], f["labels"][:]
    for c in (0, 1):
        assert inclined[idx[labels == c]].mean() > 0.8  # both classes alike
    b = simulate(tmp_path / "b", n=40, seed=3, survey="sdss", hosts=jpegs,
                 host_fraction=1.0).paths[0]
    with h5py.File(b) as f:
        assert inclined[f["extra/host_index"][:]].mean() < 0.6  # uniform without weights


def test_host_errors(tmp_path: Path) -> None:
    with pytest.raises(GalmergeError, match="host directory not found"):
        simulate(tmp_path / "o", n=4, survey="sdss", hosts=tmp_path / "missing")
    with pytest.raises(GalmergeError, match="--host-fraction"):
        simulate(tmp_path / "o", n=4, survey="sdss", hosts=tmp_path, host_fraction=1.5)
    with pytest.raises(GalmergeError, match="sdss only"):
        simulate(tmp_path / "o", n=4, survey="hst", hosts=tmp_path)


def test_rings_only_in_discs_of_both_classes_and_off_by_default(tmp_path: Path) -> None:
    rng_draws = draw_catalogue(400, np.random.default_rng(5), SDSSConfig())
    assert np.all(rng_draws["ring_flux1"] == 0) and np.all(rng_draws["ring_flux2"] == 0)
    # ring_fraction 0 is the simulator as it was: the same bytes as the default config.
    a = simulate(tmp_path / "a", n=6, seed=11, survey="sdss").paths[0]
    b = simulate(tmp_path / "b", n=6, seed=11, survey="sdss",
                 config=SDSSConfig(ring_fraction=0.0)).paths[0]
    assert a.read_bytes() == b.read_bytes()
    cfg = SDSSConfig(ring_fraction=0.5)
    cat = draw_catalogue(400, np.random.default_rng(5), cfg)
    ringed = cat["ring_flux1"][:, 1] > 0
    assert np.all(cat["kind"][ringed] == 1)
    discs = cat["kind"] == 1
    for label in (0, 1):  # about half the discs of each class
        assert 0.35 < ringed[discs & (cat["label"] == label)].mean() < 0.65
    # The ring's light comes out of its disc: total disc + ring flux is unchanged.
    plain = draw_catalogue(400, np.random.default_rng(5), cfg)
    assert np.allclose(plain["d_flux1"] + plain["ring_flux1"],
                       cat["d_flux1"] + cat["ring_flux1"])
    # Noise-free: a face-on ringed disc has more light at the ring radius than without it.
    on = np.flatnonzero(ringed & (cat["d_e1"] < 0.3) & (cat["ring_r1"] > 1.5)
                        & (cat["label"] == 0) & (cat["projection"] == 0))[:4]
    assert len(on) >= 1
    with_ring = render_flux(cat, slice(0, 400), cfg, np.random.default_rng(0), noise=False)
    no_ring = dict(cat, ring_flux1=np.zeros_like(cat["ring_flux1"]),
                   d_flux1=cat["d_flux1"] + cat["ring_flux1"])
    without = render_flux(no_ring, slice(0, 400), cfg, np.random.default_rng(0), noise=False)
    grid = _Grid(cfg)
    yy, xx = np.mgrid[:grid.r, :grid.r]
    for i in on:  # ring light at the ring's radius, taken from the disc inside it
        scale = cfg.arcsec_per_render_px(cat["frame_r90"][i])
        cx, cy = grid.centre + cat["x1"][i] / scale, grid.centre + cat["y1"][i] / scale
        radius = cat["ring_r1"][i] * cat["d_re1"][i] / scale
        rr = np.hypot(xx - cx, yy - cy)
        annulus, inner = np.abs(rr - radius) < 0.15 * radius, rr < 0.5 * radius
        assert with_ring[i, 1][annulus].sum() > without[i, 1][annulus].sum()
        assert with_ring[i, 1][inner].sum() < without[i, 1][inner].sum()


def test_dust_dims_and_reddens_one_side_of_inclined_discs_of_both_classes(tmp_path: Path
                                                                          ) -> None:
    assert np.all(draw_catalogue(300, np.random.default_rng(5), SDSSConfig())["dust_tau1"] == 0)
    a = simulate(tmp_path / "a", n=6, seed=11, survey="sdss").paths[0]
    b = simulate(tmp_path / "b", n=6, seed=11, survey="sdss",
                 config=SDSSConfig(dust_fraction=0.0)).paths[0]
    assert a.read_bytes() == b.read_bytes()  # off: the simulator as it was
    cfg = SDSSConfig(dust_fraction=0.6)
    cat = draw_catalogue(600, np.random.default_rng(5), cfg)
    dusty = cat["dust_tau1"][:, 0] > 0
    assert np.all(cat["kind"][dusty] >= 1) and np.all(cat["d_e1"][dusty] >= cfg.dust_min_e)
    inclined = (cat["kind"] >= 1) & (cat["d_e1"] >= cfg.dust_min_e)
    for label in (0, 1):  # about 60 % of the inclined discs of each class
        assert 0.4 < dusty[inclined & (cat["label"] == label)].mean() < 0.8
    tau = cat["dust_tau1"][dusty]
    assert np.all((tau[:, 0] > tau[:, 1]) & (tau[:, 1] > tau[:, 2]))  # redder: g dimmed most
    # Noise-free: the near side of the minor axis loses light, most in g; the far side not.
    on = np.flatnonzero(dusty & (cat["label"] == 0) & (cat["projection"] == 0))[:4]
    clean = dict(cat, dust_tau1=np.zeros_like(cat["dust_tau1"]))
    got = render_flux(cat, slice(0, 600), cfg, np.random.default_rng(0), noise=False)
    ref = render_flux(clean, slice(0, 600), cfg, np.random.default_rng(0), noise=False)
    grid = _Grid(cfg)
    yy, xx = np.mgrid[:grid.r, :grid.r]
    for i in on:
        scale = cfg.arcsec_per_render_px(cat["frame_r90"][i])
        cx, cy = grid.centre + cat["x1"][i] / scale, grid.centre + cat["y1"][i] / scale
        th = cat["theta1"][i]
        u = (-(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)) * cat["dust_side1"][i]
        near, far = u > 2, u < -2
        loss = 1 - got[i][:, near].sum(axis=1) / ref[i][:, near].sum(axis=1)
        assert loss[0] > loss[1] > loss[2] > 0.05  # g, r, i
        assert got[i][:, far].sum() > 0.9 * ref[i][:, far].sum()
