"""HST-like simulation-to-simulation domains (paper §4.1).

Two files with the *same galaxies*: ``source`` ("pristine": PSF-convolved) and
``target`` ("noisy": the same images plus random sky noise), three HST-like
bands (F814W, F356W, F160W), 75×75 pixels, linear flux in units of the
target's mean sky noise.

* Non-mergers: one Sérsic galaxy with random index, size, ellipticity,
  orientation, colour and a small centroid offset.
* Mergers: two Sérsic galaxies (mass ratio ≤ 10:1, flux ∝ mass) as
  coalesced remnants, close pairs or wide pairs, plus faint tidal debris
  (tails, bridges, shells, a lopsided envelope) whose flux-weighted surface
  brightness is drawn around the target's noise level. In the pristine
  source the debris is a clean, easy merger signal; in the noisy target it
  is buried, so a classifier trained on the source alone leans on features
  the target lacks — the domain gap of the paper's §4.1 experiment. Second
  cores and asymmetry survive the noise, so domain adaptation can close most
  of the gap.
* Total flux is drawn from the same distribution for both classes (the debris
  and the second galaxy take their share of it), so no single brightness
  number gives the class away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from galmerge.conventions import FLUX_LINEAR, ModelConvention
from galmerge.data.dataset import DatasetWriter
from galmerge.data.simulator import debris, profiles
from galmerge.data.simulator.sampling import balanced_labels, log_uniform
from galmerge.data.simulator.truth import truth_columns

__all__ = [
    "STAGES",
    "HSTConfig",
    "HSTRender",
    "add_sky_noise",
    "convention",
    "draw_catalogue",
    "render_batch",
    "simulate_hst",
]

#: Merger stages drawn by the simulator (index stored per image in ``extra/stage``).
STAGES = ("none", "remnant", "close-pair", "wide-pair")


@dataclass(frozen=True)
class HSTConfig:
    """Settings of the HST-like simulator; saved in each file's ``provenance``.

    Fluxes are in units of the mean target sky noise per pixel (σ̄ = 1).
    """

    size: int = 75  # paper §4.1: 75×75 images
    bands: tuple[str, ...] = ("F814W", "F356W", "F160W")  # paper §4.1 filters
    psf_fwhm_px: tuple[float, ...] = (1.6, 2.0, 2.6)  # redder band, broader PSF
    psf_beta: float = 3.0  # Moffat wings
    noise_sigma: tuple[float, ...] = (1.1, 0.8, 1.1)  # target sky noise per band
    merger_fraction: float = 0.5  # balanced classes (paper §4.1: 8120 : 7306)
    flux_range: tuple[float, float] = (500.0, 5000.0)  # total flux, log-uniform
    r_eff_range_px: tuple[float, float] = (1.5, 5.0)  # primary half-light radius
    sersic_n_range: tuple[float, float] = (0.7, 4.0)
    ellip_max: float = 0.6
    offset_sigma_px: float = 1.5  # centroid offset of the primary
    max_mass_ratio: float = 10.0  # paper §4.1: major mergers, ratio up to 10:1
    stage_fractions: tuple[float, float, float] = (0.3, 0.4, 0.3)  # remnant, close, wide
    remnant_sep_px: tuple[float, float] = (0.0, 2.5)
    close_sep_px: tuple[float, float] = (4.0, 12.0)
    wide_sep_px: tuple[float, float] = (12.0, 24.0)
    tidal_sb_sigma: tuple[float, float] = (0.3, 1.2)  # debris SB / σ̄, log-uniform
    tidal_max_fraction: float = 0.35  # debris flux at most this share of the total
    tidal_smooth_px: tuple[float, float] = (0.8, 1.8)
    tidal_points: int = 640
    chunk: int = 256  # images rendered per batch

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for provenance."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _colours(rng: np.random.Generator, redness: np.ndarray) -> np.ndarray:
    """Per-band flux multipliers (k, 3) with mean 1: blue star-forming to red old populations."""
    blue = np.array([1.25, 1.0, 0.75])
    red = np.array([0.7, 1.0, 1.3])
    c = (1 - redness)[:, None] * blue + redness[:, None] * red
    c = c * np.exp(rng.normal(0.0, 0.06, c.shape))
    return c / c.mean(axis=1, keepdims=True)


def draw_catalogue(n: int, rng: np.random.Generator, cfg: HSTConfig) -> dict[str, np.ndarray]:
    """Draw every image's physical parameters (one entry per image; pixels, radians)."""
    c = cfg.size / 2.0 - 0.5
    lab = balanced_labels(rng, n, cfg.merger_fraction)
    m = lab == 1
    cat: dict[str, np.ndarray] = {"label": lab}
    cat["flux"] = log_uniform(rng, *cfg.flux_range, n)
    cat["x1"] = c + np.clip(rng.normal(0, cfg.offset_sigma_px, n), -4, 4)
    cat["y1"] = c + np.clip(rng.normal(0, cfg.offset_sigma_px, n), -4, 4)
    cat["r1"] = log_uniform(rng, *cfg.r_eff_range_px, n)
    cat["n1"] = rng.uniform(*cfg.sersic_n_range, n)
    cat["e1"] = rng.uniform(0, cfg.ellip_max, n)
    cat["t1"] = rng.uniform(0, np.pi, n)
    lo, hi = cfg.sersic_n_range
    red1 = np.clip((cat["n1"] - lo) / (hi - lo) + rng.normal(0, 0.2, n), 0, 1)
    cat["colour1"] = _colours(rng, red1)
    # Secondary galaxy (mergers only; zero flux otherwise).
    ratio = np.exp(rng.uniform(0, np.log(cfg.max_mass_ratio), n))
    stage = np.zeros(n, dtype=np.int8)
    stage[m] = 1 + rng.choice(3, size=int(m.sum()), p=np.asarray(cfg.stage_fractions))
    sep = np.zeros(n)
    for s, rng_sep in ((1, cfg.remnant_sep_px), (2, cfg.close_sep_px), (3, cfg.wide_sep_px)):
        sel = stage == s
        sep[sel] = rng.uniform(*rng_sep, int(sel.sum()))
    pa = rng.uniform(0, 2 * np.pi, n)
    cat["stage"] = stage
    cat["mass_ratio"] = np.where(m, ratio, 0.0)
    cat["sep"] = sep
    cat["x2"] = cat["x1"] + sep * np.cos(pa)
    cat["y2"] = cat["y1"] + sep * np.sin(pa)
    cat["r2"] = np.maximum(cat["r1"] * ratio ** -0.3 * log_uniform(rng, 0.8, 1.25, n), 1.0)
    cat["n2"] = rng.uniform(*cfg.sersic_n_range, n)
    cat["e2"] = rng.uniform(0, cfg.ellip_max, n)
    cat["t2"] = rng.uniform(0, np.pi, n)
    red2 = np.clip((cat["n2"] - lo) / (hi - lo) + rng.normal(0, 0.2, n), 0, 1)
    cat["colour2"] = _colours(rng, red2)
    # Debris: surface-brightness goal, geometry, colour (tidal debris is bluish).
    cat["tidal_sb_goal"] = np.where(m, log_uniform(rng, *cfg.tidal_sb_sigma, n), 0.0)
    cat["tidal_smooth"] = rng.uniform(*cfg.tidal_smooth_px, n)
    cat["tidal_colour"] = _colours(rng, rng.uniform(0.0, 0.4, n))
    cat["pair_pa"] = pa
    return cat


def _debris_points(
    rng: np.random.Generator, cat: dict[str, np.ndarray], sl: slice, cfg: HSTConfig,
) -> debris.Points:
    """Tails, bridges, shells and halos for the mergers of ``cat[sl]`` (unit total weight)."""
    g = {k: v[sl] for k, v in cat.items()}
    k = len(g["label"])
    stage = g["stage"]
    remnant, pair = stage == 1, stage >= 2
    p = cfg.tidal_points
    # Tail 1 from the primary, tail 2 from the secondary, thrown out on
    # opposite sides with the same sense of rotation (Toomre & Toomre 1972).
    away = g["pair_pa"] + np.pi + rng.uniform(-1.0, 1.0, k)
    sense = np.where(rng.random(k) < 0.5, -1.0, 1.0)
    curl = sense * rng.uniform(0.6, 1.6, k)
    length = rng.uniform(10.0, 24.0, k)
    width = rng.uniform(1.0, 2.5, k)
    t_amp = np.where(remnant, rng.uniform(0.2, 1.0, k), rng.uniform(0.5, 1.0, k))
    t2_amp = t_amp * rng.uniform(0.3, 1.0, k)
    tail1 = debris.tail(rng, k, p // 4, g["x1"], g["y1"], 1.5 * g["r1"], length, away, curl,
                        width, t_amp)
    tail2 = debris.tail(rng, k, p // 4, g["x2"], g["y2"], 1.5 * g["r2"],
                        length * rng.uniform(0.6, 1.0, k), away + np.pi, curl, width, t2_amp)
    has_bridge = pair & (rng.random(k) < 0.6)
    br = debris.bridge(rng, k, p // 8, g["x1"], g["y1"], g["x2"], g["y2"],
                       rng.uniform(-0.3, 0.3, k), rng.uniform(0.8, 1.8, k),
                       np.where(has_bridge, 0.4, 0.0))
    has_shells = remnant & (rng.random(k) < 0.7)
    sh = debris.shells(rng, k, p // 8, g["x1"], g["y1"], rng.uniform(5.0, 9.0, k),
                       rng.uniform(0, 2 * np.pi, k), rng.uniform(0.6, 1.4, k),
                       np.where(has_shells, 0.8, 0.0))
    ha = debris.halo(rng, k, p - 2 * (p // 4) - 2 * (p // 8), g["x1"], g["y1"],
                     rng.uniform(2.0, 6.0, k), rng.uniform(0, 2 * np.pi, k),
                     2.0 * g["r1"] + rng.uniform(2.0, 5.0, k), rng.uniform(0.0, 0.5, k),
                     np.where(remnant, 0.6, 0.3))
    pts = debris.Points.concat([tail1, tail2, br, sh, ha])
    pts.w *= (g["label"] == 1)[:, None]
    return pts.normalised()


@dataclass
class HSTRender:
    """One rendered batch: the pristine images and, optionally, their tidal component."""

    pristine: np.ndarray  # (k, 3, S, S) float32
    tidal: np.ndarray | None  # (k, 3, S, S) float32 — the debris alone, PSF-convolved
    tidal_sb: np.ndarray  # (k,) achieved flux-weighted debris SB / σ̄
    tidal_flux: np.ndarray  # (k,) debris flux (band mean)


class _Optics:
    """PSF transfer functions of the padded FFT grid (computed once)."""

    def __init__(self, cfg: HSTConfig) -> None:
        self.shape = profiles.padded_shape(cfg.size, 16)
        kern = np.stack([profiles.moffat_kernel(self.shape, f, cfg.psf_beta)
                         for f in cfg.psf_fwhm_px])
        self.psf = np.fft.rfft2(kern).real.astype(np.float32)  # (3, H, W//2+1)


def render_batch(
    cat: dict[str, np.ndarray], sl: slice, cfg: HSTConfig, rng: np.random.Generator,
    optics: _Optics | None = None, *, components: bool = False,
) -> HSTRender:
    """Render images ``cat[sl]`` (pristine, PSF-convolved, linear flux)."""
    opt = optics or _Optics(cfg)
    g = {k: v[sl] for k, v in cat.items()}
    k, s, shape = len(g["label"]), cfg.size, opt.shape
    sigma_mean = float(np.mean(cfg.noise_sigma))
    # Debris first: its flux is set by its surface brightness, and the galaxies
    # get the rest of the image's total flux.
    pts = _debris_points(rng, cat, sl, cfg)
    t_img = profiles.splat(s, pts.px, pts.py, pts.w)
    ft = np.fft.rfft2(t_img, s=shape) * profiles.gaussian_transfer(shape, g["tidal_smooth"])
    seen = profiles.irfft_cropped(ft * opt.psf.mean(axis=0), shape, s)
    tot = seen.reshape(k, -1).sum(axis=1)
    sq = (seen.astype(np.float64) ** 2).reshape(k, -1).sum(axis=1)
    fw_sb = np.divide(sq, tot, out=np.zeros(k), where=tot > 0)  # flux-weighted SB per unit
    scale = np.divide(g["tidal_sb_goal"] * sigma_mean, fw_sb, out=np.zeros(k), where=fw_sb > 0)
    scale = np.minimum(scale, np.divide(cfg.tidal_max_fraction * g["flux"], tot,
                                        out=np.zeros(k), where=tot > 0))
    tidal_flux = scale * tot
    # Galaxies share the remaining flux by mass ratio (flux ∝ stellar mass).
    gal_flux = g["flux"] - tidal_flux
    merger = g["label"] == 1
    f2 = np.where(merger, gal_flux / (1.0 + np.where(merger, g["mass_ratio"], 1.0)), 0.0)
    f1 = gal_flux - f2
    p1 = profiles.sersic_images(s, g["x1"], g["y1"], f1, g["r1"], g["n1"], g["e1"], g["t1"])
    gal = g["colour1"].astype(np.float32)[:, :, None, None] * p1[:, None]
    idx = np.flatnonzero(merger)
    if idx.size:
        p2 = profiles.sersic_images(s, g["x2"][idx], g["y2"][idx], f2[idx], g["r2"][idx],
                                    g["n2"][idx], g["e2"][idx], g["t2"][idx])
        gal[idx] += g["colour2"][idx].astype(np.float32)[:, :, None, None] * p2[:, None]
    tcol = (g["tidal_colour"] * scale[:, None]).astype(np.complex64)[:, :, None, None]
    spec_t = tcol * ft[:, None]
    spec = (np.fft.rfft2(gal, s=shape) + spec_t) * opt.psf[None]
    pristine = profiles.irfft_cropped(spec, shape, s)
    tidal = profiles.irfft_cropped(spec_t * opt.psf[None], shape, s) if components else None
    return HSTRender(pristine, tidal, scale * fw_sb / sigma_mean, tidal_flux)


def add_sky_noise(images: np.ndarray, cfg: HSTConfig, rng: np.random.Generator) -> np.ndarray:
    """The noisy target: images plus Gaussian sky noise of ``cfg.noise_sigma`` per band."""
    sig = np.asarray(cfg.noise_sigma, dtype=np.float32)[None, :, None, None]
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    return images + sig * noise


def convention(cfg: HSTConfig, domain: str) -> ModelConvention:
    """The pixel convention of the simulated HST-like files."""
    return ModelConvention(
        pixel_convention=FLUX_LINEAR, bands=tuple(cfg.bands), size=cfg.size,
        stretch="none",
        extra={"simulator": "galmerge-hst", "domain": domain},
    )


def simulate_hst(out_dir: Path, n: int, seed: int, cfg: HSTConfig) -> tuple[Path, Path]:
    """Write ``source.h5`` (pristine) and ``target.h5`` (noisy) with the same galaxies."""
    ss = np.random.SeedSequence(seed)
    r_cat, r_debris, r_noise = (np.random.default_rng(s) for s in ss.spawn(3))
    cat = draw_catalogue(n, r_cat, cfg)
    ids = [f"hst-s{seed}-{i:06d}" for i in range(n)]
    opt = _Optics(cfg)
    base = {"simulator": "galmerge.data.simulator.hst", "survey": "hst", "seed": seed, "n": n,
            "config": cfg.to_dict(), "stages": list(STAGES),
            "paper": "DeepMerge II §4.1 (sim->sim)"}
    paths = (out_dir / "source.h5", out_dir / "target.h5")
    tidal_sb = np.zeros(n)
    tidal_flux = np.zeros(n)
    with DatasetWriter(paths[0], n, convention(cfg, "source"), labels=cat["label"], ids=ids,
                       split_seed=seed,
                       provenance={**base, "domain": "source",
                                   "description": "pristine: PSF-convolved, no noise"}) as ws, \
         DatasetWriter(paths[1], n, convention(cfg, "target"), labels=cat["label"], ids=ids,
                       split_seed=seed,
                       provenance={**base, "domain": "target",
                                   "description": "noisy: the source images plus Gaussian sky "
                                                  "noise (noise_sigma per band)"}) as wt:
        for start in range(0, n, cfg.chunk):
            sl = slice(start, min(start + cfg.chunk, n))
            r = render_batch(cat, sl, cfg, r_debris, opt)
            ws.write(start, r.pristine)
            wt.write(start, add_sky_noise(r.pristine, cfg, r_noise))
            tidal_sb[sl], tidal_flux[sl] = r.tidal_sb, r.tidal_flux
        truth = truth_columns(cat, tidal_sb=tidal_sb, tidal_flux=tidal_flux)
        for w in (ws, wt):
            for name, col in truth.items():
                w.write_extra(name, col)
    return paths
