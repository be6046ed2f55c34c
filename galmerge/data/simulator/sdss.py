"""SDSS-like labelled source for simulation-to-real training (issue 6, paper §4.2).

Renders what a model sees of a Galaxy Zoo 1 SDSS colour JPEG after the crop
and resize the SDSS model uses: the central half (212×212 px) of a 423×423
ImgCutout JPEG, area-resized to 75×75. GZ1 cutouts are scaled per galaxy,
0.024 × petroR90_r arcsec per JPEG pixel (Lintott et al. 2008), so every
distance below is drawn in units of the central galaxy's R90 and converted
with that image's scale; the PSF, the noise grain and the neighbours then
follow from the galaxy's angular size.

Per image, in order (vectorised over batches):

1. **Scene** in g, r, i at a render grid of 106×106 px (2 JPEG px each),
   values in nanomaggies per native SDSS pixel (0.396"):
   the central object (elliptical; bulge + disc with clumpy spiral arms;
   edge-on disc) or a merger (close pair with two bright cores; interacting
   pair with tidal tails and bridges; post-merger with a second nucleus,
   shells, tails and a lopsided envelope); for some non-mergers an unrelated
   galaxy in chance projection; field galaxies and stars
   (number counts, colours) anywhere in the frame.
2. **Seeing**: an SDSS-like PSF (double Gaussian + exponential wing, no
   diffraction spikes), FWHM ~1.4" varying per image and band.
3. **Sky**: Gaussian noise at SDSS depth per native pixel (correlated over a
   native pixel when that is larger than a render pixel, averaged down when
   smaller) and a small residual sky offset.
4. **SDSS colour stretch**: astropy's :func:`~astropy.visualization.make_lupton_rgb`
   (Lupton et al. 2004) with (R, G, B) = (i, r, g), to 8 bits.
5. **Resampling and JPEG**: bilinear to the 212-px JPEG grid, JPEG
   quality 75 with 4:2:0 chroma subsampling (what the real GZ1 files use),
   decoded and area-resized to 75×75 by the same code that reads real cutouts.

The output convention is ``sdss-colour-jpeg`` (bands i, r, g; 0-255 as
float32), so the real target needs ``crop_fraction = 0.5`` on 423-px GZ1
JPEGs. See ``docs/simulator.md`` for the parameters and their sources.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from galmerge.conventions import SDSS_COLOUR_JPEG, SDSS_RGB_BANDS, ModelConvention
from galmerge.data.dataset import DatasetWriter
from galmerge.data.images import (
    JPEG_EXTENSIONS,
    decode_rgb8_bytes,
    image_suffix,
    prepare,
    read_image,
)
from galmerge.data.simulator import debris, hosts, profiles
from galmerge.data.simulator.sampling import (
    balanced_labels,
    choice_index,
    log_uniform,
    power_law_mags,
)
from galmerge.data.simulator.truth import truth_columns
from galmerge.errors import GalmergeError

__all__ = [
    "BANDS_GRI",
    "KINDS",
    "MAX_FIELD_SOURCES",
    "NATIVE_PIXEL_AREA",
    "SLOTS",
    "STAGES",
    "BackgroundBank",
    "SDSSConfig",
    "as_host_scenes",
    "composite",
    "convention",
    "draw_catalogue",
    "host_flux_scale",
    "images_from_flux",
    "images_on_backgrounds",
    "jpeg_to_model_pixels",
    "load_backgrounds",
    "lupton_rgb",
    "lupton_rgb8",
    "render_flux",
    "simulate_sdss",
    "sky_mosaics",
    "smooth_chroma",
    "to_jpeg_model_pixels",
    "unstretch",
]

#: Merger stage codes stored in ``extra/stage``.
STAGES = ("none", "pair", "interacting", "post-merger")
#: Central-object types stored in ``extra/kind`` (for mergers: the centred galaxy's type).
KINDS = ("elliptical", "disc", "edge-on")
BANDS_GRI = ("g", "r", "i")
#: Area of one native SDSS pixel (0.396")² in arcsec².
NATIVE_PIXEL_AREA = 0.396 ** 2
#: Sérsic component slots rendered per image: centred bulge/spheroid and disc,
#: second galaxy's bulge/spheroid and disc (merger partner or chance projection).
SLOTS = ("b1", "d1", "b2", "d2")
MAX_FIELD_SOURCES = 16


@dataclass(frozen=True)
class SDSSConfig:
    """Settings of the SDSS-like simulator; saved in each file's ``provenance``.

    Angles in arcsec, fluxes in nanomaggies (r-band zero point 22.5 mag).
    """

    size: int = 75  # DeepMerge input
    frame_px: int = 423  # GZ1 ImgCutout JPEG
    crop_fraction: float = 0.5  # findings #2: central half of the JPEG works best
    render_px: int = 106  # render grid over the crop: 2 JPEG px per render px
    # GZ1 scales each cutout by the galaxy (~0.024 × Petrosian radius arcsec per JPEG px);
    # 0.02 × R90 reproduces the radial light profile of the real pool crops best.
    gz_scale_per_r90: float = 0.02
    native_pixel_arcsec: float = 0.396  # SDSS camera
    # Central galaxy: r-band Petrosian magnitude (GZ1 limit r < 17.77, Euclidean counts)
    # and R90 ~ size-luminosity relation with scatter.
    mag_range: tuple[float, float] = (14.0, 17.77)
    mag_count_slope: float = 0.6
    r90_at_mag16p8: float = 7.5
    r90_mag_slope: float = 0.15  # dex per mag
    r90_scatter_dex: float = 0.2  # spread in surface brightness at fixed magnitude
    # Seeing (r band FWHM, arcsec) and band dependence (g, r, i).
    seeing_fwhm: tuple[float, float] = (1.4, 0.2)  # mean, sd (SDSS median ~1.4")
    seeing_band_factor: tuple[float, float, float] = (1.06, 1.0, 0.96)
    psf_second_weight: float = 0.1
    psf_wing_weight: float = 0.04
    # Sky noise per native pixel (g, r, i) in nanomaggies, with per-image scatter, and a
    # residual sky offset. Fitted with the stretch to the real pool's sky level, sky noise,
    # central brightness and radial profile in JPEG units (docs/simulator.md).
    sky_sigma: tuple[float, float, float] = (0.0040, 0.0073, 0.009)
    sky_sigma_scatter_dex: float = 0.1
    sky_offset: tuple[float, float] = (0.5, 0.3)  # mean, sd in units of sky sigma
    # Dark-sky brightness per native pixel (g, r, i; 21.9, 20.9, 20.2 mag/arcsec²): the
    # galaxies' own photon noise grows as sqrt(1 + I / sky) over the sky noise.
    sky_brightness: tuple[float, float, float] = (0.27, 0.69, 1.3)
    noise_grain: float = 0.45  # Gaussian σ of the noise grain per native pixel
    # SDSS colour stretch (Lupton et al. 2004): scales per band (g, r, i), Q, stretch.
    band_scales: tuple[float, float, float] = (1.3, 1.0, 0.9)
    lupton_q: float = 8.0
    lupton_stretch: float = 0.3
    # Chroma blur (Gaussian σ per native pixel, in render px) standing for the chroma
    # subsampling and quantisation of SDSS's native-scale colour images: the real pool's
    # small-scale noise is almost grey (fitted to its R-G / B-G residuals).
    chroma_smooth: float = 1.5
    jpeg_quality: int = 75  # quantisation tables of the real GZ1 JPEGs
    # Classes and populations.
    merger_fraction: float = 0.5
    stage_fractions: tuple[float, float, float] = (0.45, 0.35, 0.2)  # pair, interacting, post
    kind_fractions: tuple[float, float, float] = (0.3, 0.55, 0.15)  # elliptical, disc, edge-on
    merger_disc_fraction: float = 0.75  # Darg et al. 2010: 71-84 % of merging galaxies spirals
    projection_fraction: float = 0.25  # non-mergers with an unrelated galaxy nearby
    blend_fraction: float = 0.4  # close pairs (either class) measured as one object by SDSS
    blend_max_sep_r90: float = 1.3
    mass_ratio_sigma_dex: float = 0.55  # |N(0, σ)| dex, capped at 10:1 (Darg: median 0.44 dex)
    swap_fraction: float = 0.3  # pairs where the GZ target (centred) is the smaller galaxy
    pair_sep_r90: tuple[float, float] = (0.5, 2.0)
    interacting_sep_r90: tuple[float, float] = (0.4, 1.8)
    post_sep_r90: tuple[float, float] = (0.12, 0.5)  # Darg stage 3: nuclei 2.4-4.6" apart
    debris_fraction: tuple[tuple[float, float], ...] = ((0.03, 0.12), (0.1, 0.3), (0.15, 0.35))
    # Field sources per square arcminute and their magnitude ranges.
    field_galaxies_per_arcmin2: float = 6.0
    field_stars_per_arcmin2: float = 3.0
    field_galaxy_mags: tuple[float, float] = (15.5, 22.5)
    field_star_mags: tuple[float, float] = (12.0, 22.5)
    # Number-count slopes d log N / dm at high Galactic latitude (stars ~0.25, galaxies ~0.35
    # in r between 16 and 22): a bright (r < 16) star in ~3 % of frames.
    star_count_slope: float = 0.25
    galaxy_count_slope: float = 0.35
    spike_mag: float = 14.5  # stars brighter than this show diffraction spikes
    spike_angle: float = 0.0  # radians; SDSS cutouts are north-up, spikes along the axes
    # Inner/outer rings in face-on-ish discs of both classes, equally often, so that a ring
    # is no evidence of a merger (rings are common in SDSS discs: Nair & Abraham 2010,
    # ApJS 186, 427; real ringed hosts topped the false positives of the issue-10 models).
    # The ring takes ``ring_share`` of its disc's light, at ``ring_radius_re`` disc
    # effective radii, ``ring_width`` of its radius wide. 0 = no rings (the random streams
    # then stay as they were before rings existed).
    ring_fraction: float = 0.0
    ring_share: tuple[float, float] = (0.15, 0.45)
    ring_radius_re: tuple[float, float] = (0.8, 2.4)
    ring_width: tuple[float, float] = (0.05, 0.12)
    # Dust on the near side of inclined discs, in both classes equally often: a screen
    # that dims and reddens one side of the minor axis (bulge and disc), so that a real
    # dusty inclined disc's lopsided light -- the bulk of the false positives left once
    # bright stars are set aside (docs/sdss-model-selection.md, issue 10 fourth pass) --
    # is no longer seen only in simulated mergers (lopsided post-merger envelopes).
    # ``dust_fraction`` of the discs inclined beyond ``dust_min_e`` (1 - cos i) get it;
    # attenuation ``dust_tau_g`` in g at the screen's full depth, r and i scaled by the
    # SDSS extinction ratios A_r/A_g = 0.69, A_i/A_g = 0.51 (Schlafly & Finkbeiner 2011,
    # ApJ 737, 103, table 6, R_V = 3.1); the step across the minor axis is
    # ``dust_width`` disc effective radii wide. 0 = no dust (random streams unchanged).
    dust_fraction: float = 0.0
    dust_min_e: float = 0.4
    dust_tau_g: tuple[float, float] = (0.4, 0.9)
    dust_width: float = 0.15
    # Real sky: a directory of real GZ1 JPEGs (e.g. the unlabelled target pool) whose
    # corners (outside the central crop) become the sky behind the simulated scene,
    # in place of the synthetic sky; synthetic field sources are then thinned.
    backgrounds: str | None = None
    background_field_factor: float = 0.5
    background_max_blocks: int = 2400
    # Real hosts: a directory of real GZ1 JPEGs (the training part of the unlabelled pool);
    # this fraction of the images paints the simulated *other* galaxy (merger partner with
    # debris, chance projection, or none) onto a real host (galmerge.data.simulator.hosts).
    hosts: str | None = None
    host_fraction: float = 0.5
    host_aperture_r90: float = 1.5  # aperture (in R90) that measures a host's flux
    # Inclined and edge-on real hosts (apparent axis ratio below ``inclined_host_max_q``,
    # measured from the host's own isophote, galmerge.data.simulator.hosts.axis_ratio) are
    # drawn ``inclined_host_weight`` times as often as the others, for both classes alike:
    # large inclined discs with lopsided light head the false positives once bright stars
    # are set aside (docs/sdss-model-selection.md, issue 10 fourth pass). 1 = uniform (the
    # random streams as before). No label is used: the measure is the host image's shape.
    inclined_host_weight: float = 1.0
    inclined_host_max_q: float = 0.5
    chunk: int = 128

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for provenance."""
        def conv(v: Any) -> Any:
            return [conv(x) for x in v] if isinstance(v, tuple | list) else v
        return {k: conv(v) for k, v in asdict(self).items()}

    @property
    def crop_px(self) -> int:
        """JPEG pixels in the crop the model sees (212 for 423 px and 0.5)."""
        return max(1, round(self.frame_px * self.crop_fraction))

    def arcsec_per_render_px(self, r90: np.ndarray) -> np.ndarray:
        """Angular size of one render pixel for galaxies of Petrosian radius ``r90``."""
        return self.gz_scale_per_r90 * r90 * self.crop_px / self.render_px


def _mags_to_flux(m: np.ndarray | float) -> np.ndarray:
    """Nanomaggies from AB magnitudes (zero point 22.5)."""
    return 10 ** (-0.4 * (np.asarray(m) - 22.5))


def _gri(flux_r: np.ndarray, g_r: np.ndarray, r_i: np.ndarray) -> np.ndarray:
    """(n, 3) g, r, i fluxes from r flux and colours."""
    return np.stack([flux_r * 10 ** (-0.4 * g_r), flux_r, flux_r * 10 ** (0.4 * r_i)], axis=1)


def _concentration(n: np.ndarray) -> np.ndarray:
    """Petrosian R90 / half-light radius for Sérsic index ``n`` (≈2.3 exponential,
    ≈4 de Vaucouleurs; Graham et al. 2005)."""
    return 2.3 + 0.57 * (np.asarray(n) - 1.0)


def _galaxy(
    rng: np.random.Generator, n: int, kind: np.ndarray, flux_r: np.ndarray, r90: np.ndarray,
    seeing: np.ndarray,
) -> dict[str, np.ndarray]:
    """Structure of one galaxy per image: bulge ('b') and disc ('d') Sérsic parts and arms."""
    ell, disc, edge = kind == 0, kind == 1, kind == 2
    r90_true = np.sqrt(np.maximum(r90 ** 2 - (0.9 * seeing) ** 2, (0.4 * r90) ** 2))
    theta = rng.uniform(0, np.pi, n)
    # Bulge / spheroid.
    n_b = np.where(ell, rng.uniform(3.0, 6.5, n), rng.uniform(1.5, 4.0, n))
    bt = np.where(ell, 1.0, np.where(disc, rng.uniform(0.05, 0.5, n), rng.uniform(0.0, 0.25, n)))
    # Disc: inclination from uniform cos(i) (edge-on: nearly 90 degrees).
    cos_i = np.where(edge, rng.uniform(0.1, 0.25, n), rng.uniform(0.3, 1.0, n))
    e_d = np.clip(1.0 - cos_i, 0.0, 0.9)
    re_d = r90_true / 2.3 * rng.uniform(0.9, 1.1, n)
    re_b = np.where(ell, r90_true / _concentration(n_b), re_d * rng.uniform(0.15, 0.35, n))
    e_b = np.where(ell, rng.uniform(0.0, 0.4, n), e_d * 0.4)
    # Colours: red spheroids, bluer discs; edge-on discs reddened by dust.
    # Disc colours span blue star-forming (g-r ~0.3) to red passive discs (~0.8); bulges
    # are redder than their discs; ellipticals are red (g-r ~0.82 at z ~0.07).
    gr_d = rng.uniform(0.25, 0.8, n) + np.where(edge, 0.12, 0.0)
    ri_d = 0.12 + 0.3 * gr_d + rng.normal(0, 0.03, n)
    gr_b = np.where(ell, rng.normal(0.82, 0.06, n),
                    np.minimum(gr_d + rng.uniform(0.05, 0.3, n), 0.92))
    ri_b = 0.12 + 0.35 * gr_b + rng.normal(0, 0.02, n)
    # Spiral arms take a share of the disc light (face-on-ish discs only).
    arm_frac = np.where(disc, rng.uniform(0.1, 0.4, n),
                        np.where(edge, rng.uniform(0.05, 0.25, n), 0.0))
    f_b = flux_r * bt
    f_d = flux_r * (1 - bt) * (1 - arm_frac)
    return {
        "b_flux": _gri(f_b, gr_b, ri_b), "b_re": re_b, "b_n": n_b, "b_e": e_b,
        "d_flux": _gri(f_d, gr_d, ri_d), "d_re": re_d, "d_n": rng.uniform(0.8, 1.2, n),
        "d_e": e_d, "theta": theta,
        "arm_flux": _gri(flux_r * (1 - bt) * arm_frac, gr_d - 0.25, ri_d - 0.08),
        "arm_pitch": rng.uniform(np.radians(12), np.radians(30), n),
        "arm_phase": rng.uniform(0, 2 * np.pi, n),
        "arm_amp": np.where(disc, 1.0, 0.0),  # edge-on discs: knots only, no visible arms
    }


def _add_rings(rng: np.random.Generator, g: dict[str, np.ndarray], kind: np.ndarray,
               cfg: SDSSConfig) -> None:
    """Move a share of some discs' light into a ring (``cfg.ring_fraction`` of the kind-1
    discs), in place: ``ring_flux`` (n, 3), ``ring_r`` (in disc effective radii) and
    ``ring_w`` (width over radius). Draws nothing when ``ring_fraction`` is 0."""
    n = len(kind)
    g["ring_flux"] = np.zeros_like(g["d_flux"])
    g["ring_r"], g["ring_w"] = np.ones(n), np.zeros(n)
    if cfg.ring_fraction <= 0:
        return
    on = (kind == 1) & (rng.random(n) < cfg.ring_fraction)
    share = np.where(on, rng.uniform(*cfg.ring_share, n), 0.0)[:, None]
    g["ring_flux"] = g["d_flux"] * share
    g["d_flux"] = g["d_flux"] * (1.0 - share)
    g["ring_r"] = rng.uniform(*cfg.ring_radius_re, n)
    g["ring_w"] = rng.uniform(*cfg.ring_width, n)


#: A_r / A_g and A_i / A_g (Schlafly & Finkbeiner 2011, table 6, R_V = 3.1).
_DUST_BAND_RATIOS = (1.0, 2.285 / 3.303, 1.698 / 3.303)


def _add_dust(rng: np.random.Generator, g: dict[str, np.ndarray], kind: np.ndarray,
              cfg: SDSSConfig) -> None:
    """Give some inclined discs a near-side dust screen (``cfg.dust_fraction``), in place:
    ``dust_tau`` (n, 3) attenuation at full depth per band (0 = none) and ``dust_side``
    (+-1, which side of the minor axis is near). Draws nothing when the fraction is 0."""
    n = len(kind)
    g["dust_tau"], g["dust_side"] = np.zeros((n, 3)), np.ones(n)
    if cfg.dust_fraction <= 0:
        return
    on = (kind >= 1) & (g["d_e"] >= cfg.dust_min_e) & (rng.random(n) < cfg.dust_fraction)
    tau = np.where(on, rng.uniform(*cfg.dust_tau_g, n), 0.0)
    g["dust_tau"] = tau[:, None] * np.asarray(_DUST_BAND_RATIOS)[None]
    g["dust_side"] = np.where(rng.random(n) < 0.5, -1.0, 1.0)


def draw_catalogue(n: int, rng: np.random.Generator, cfg: SDSSConfig) -> dict[str, np.ndarray]:
    """Draw every image's scene (angles in arcsec relative to the frame centre)."""
    lab = balanced_labels(rng, n, cfg.merger_fraction)
    m = lab == 1
    cat: dict[str, np.ndarray] = {"label": lab}
    stage = np.zeros(n, dtype=np.int8)
    stage[m] = 1 + choice_index(rng, cfg.stage_fractions, int(m.sum()))
    cat["stage"] = stage
    kind = choice_index(rng, cfg.kind_fractions, n)
    kind[m] = np.where(rng.random(int(m.sum())) < cfg.merger_disc_fraction, 1, 0)
    cat["kind"] = kind
    # The GZ target: magnitude, R90 (sets the frame scale), seeing, sky.
    mag = power_law_mags(rng, *cfg.mag_range, cfg.mag_count_slope, n)
    r90 = cfg.r90_at_mag16p8 * 10 ** (-cfg.r90_mag_slope * (mag - 16.8)
                                      + rng.normal(0, cfg.r90_scatter_dex, n))
    r90 = np.clip(r90, 3.0, 40.0)
    seeing = np.clip(rng.normal(*cfg.seeing_fwhm, n), 0.9, 2.2)
    cat.update(mag=mag, r90=r90, seeing=seeing)
    sky = np.asarray(cfg.sky_sigma)[None] * 10 ** rng.normal(0, cfg.sky_sigma_scatter_dex, (n, 1))
    cat["sky_sigma"] = sky * 10 ** rng.normal(0, 0.03, (n, 3))
    cat["sky_offset"] = cat["sky_sigma"] * rng.normal(*cfg.sky_offset, (n, 1))
    # Second galaxy: merger partner or (some non-mergers) an unrelated projection.
    ratio = 10 ** np.minimum(np.abs(rng.normal(0, cfg.mass_ratio_sigma_dex, n)), 1.0)
    proj = (~m) & (rng.random(n) < cfg.projection_fraction)
    ratio = np.where(proj, log_uniform(rng, 1.5, 30.0, n), ratio)
    swap = m & (stage < 3) & (rng.random(n) < cfg.swap_fraction)
    f_target = _mags_to_flux(mag)
    f1 = f_target
    f2 = np.where(swap, f_target * ratio, f_target / ratio)
    r90_2 = np.where(swap, r90 * ratio ** 0.35, r90 * ratio ** -0.35)
    r90_2 = np.where(proj, r90 * rng.uniform(0.15, 0.6, n), r90_2)
    sep = np.zeros(n)
    for s, rr in ((1, cfg.pair_sep_r90), (2, cfg.interacting_sep_r90), (3, cfg.post_sep_r90)):
        sel = stage == s
        sep[sel] = rng.uniform(*rr, int(sel.sum())) * r90[sel]
    sep[proj] = rng.uniform(0.6, 2.4, int(proj.sum())) * r90[proj]
    pa = rng.uniform(0, 2 * np.pi, n)
    has2 = m | proj
    kind2 = np.where(rng.random(n) < cfg.merger_disc_fraction, 1, 0)
    kind2 = np.where(stage == 3, 0, kind2)  # a post-merger's second nucleus is compact
    # The SDSS pipeline often fails to deblend overlapping pairs: its R90 (which sets the
    # GZ1 frame scale) then covers the whole system and the frame centres on the blend.
    blend = has2 & (sep < cfg.blend_max_sep_r90 * r90) & (rng.random(n) < cfg.blend_fraction)
    frame_r90 = np.where(blend, np.sqrt(r90 ** 2 + sep ** 2), r90)
    shift = np.where(blend, f2 / (f1 + f2), 0.0) * sep
    off1 = rng.normal(0, 0.03, (n, 2)) * r90[:, None]
    cat["x1"] = off1[:, 0] - shift * np.cos(pa)
    cat["y1"] = off1[:, 1] - shift * np.sin(pa)
    cat["x2"] = cat["x1"] + sep * np.cos(pa)
    cat["y2"] = cat["y1"] + sep * np.sin(pa)
    cat["frame_r90"] = frame_r90
    cat["blend"] = blend.astype(np.int8)
    cat["mass_ratio"] = np.where(m, ratio, 0.0)
    cat["sep"] = np.where(has2, sep, 0.0)
    cat["pair_pa"] = pa
    cat["projection"] = proj.astype(np.int8)
    g1 = _galaxy(rng, n, kind, f1, r90, seeing)
    r90_2c = np.where(stage == 3, r90_2 * rng.uniform(0.2, 0.4, n), r90_2)
    g2 = _galaxy(rng, n, kind2.astype(np.int8), f2, r90_2c, seeing)
    # Background projections are often redder (higher redshift).
    redden = np.where(proj, rng.uniform(0.0, 0.5, n), 0.0)
    for g, kd in ((g1, kind), (g2, kind2)):
        _add_rings(rng, g, kd, cfg)
    for g, kd in ((g1, kind), (g2, kind2)):
        _add_dust(rng, g, kd, cfg)
    for key in ("b_flux", "d_flux", "arm_flux", "ring_flux"):
        g2[key] = g2[key] * np.where(has2, 1.0, 0.0)[:, None]
        g2[key][:, 0] *= 10 ** (-0.4 * redden)
        g2[key][:, 2] *= 10 ** (0.4 * 0.4 * redden)
    for pre, g in (("1", g1), ("2", g2)):
        for key, val in g.items():
            cat[f"{key}{pre}"] = val
    # Merger debris: flux share of the system, colour of a disc population.
    lo_hi = np.array(cfg.debris_fraction)
    st = np.clip(stage - 1, 0, 2)
    frac = rng.uniform(lo_hi[st, 0], lo_hi[st, 1])
    total_r = f1 + f2
    cat["debris_flux"] = _gri(np.where(m, frac * total_r, 0.0), rng.normal(0.6, 0.1, n),
                              rng.normal(0.32, 0.05, n))
    cat.update(_field_sources(rng, n, frame_r90, cfg))
    return cat


def _field_sources(
    rng: np.random.Generator, n: int, r90: np.ndarray, cfg: SDSSConfig,
) -> dict[str, np.ndarray]:
    """Unrelated field galaxies and stars spread over the frame (arcsec offsets)."""
    k = MAX_FIELD_SOURCES
    half = 0.5 * cfg.arcsec_per_render_px(r90) * (cfg.render_px + 16)  # frame + margin
    area = (2 * half / 60.0) ** 2
    n_gal = np.minimum(rng.poisson(cfg.field_galaxies_per_arcmin2 * area), k)
    n_star = np.minimum(rng.poisson(cfg.field_stars_per_arcmin2 * area), k - n_gal)
    slot = np.arange(k)[None, :]
    is_gal = slot < n_gal[:, None]
    is_star = (slot >= n_gal[:, None]) & (slot < (n_gal + n_star)[:, None])
    xy = (rng.random((n, k, 2)) * 2 - 1) * half[:, None, None]
    m_gal = power_law_mags(rng, *cfg.field_galaxy_mags, cfg.galaxy_count_slope,
                           n * k).reshape(n, k)
    m_star = power_law_mags(rng, *cfg.field_star_mags, cfg.star_count_slope, n * k).reshape(n, k)
    mag = np.where(is_gal, m_gal, m_star)
    gr_s = rng.uniform(0.2, 1.5, (n, k))
    gr = np.where(is_gal, rng.uniform(0.4, 1.7, (n, k)), gr_s)
    ri = np.where(is_gal, rng.uniform(0.25, 0.65, (n, k)),
                  0.45 * gr_s - 0.05 + rng.normal(0, 0.05, (n, k)))
    fr = np.where(is_gal | is_star, _mags_to_flux(mag), 0.0)
    flux = np.stack([fr * 10 ** (-0.4 * gr), fr, fr * 10 ** (0.4 * ri)], axis=-1)
    scale = 0.6 * 10 ** (-0.12 * (m_gal - 19.0) + rng.normal(0, 0.15, (n, k)))
    return {
        "field_x": xy[..., 0], "field_y": xy[..., 1], "field_flux": flux,
        "field_kind": np.where(is_gal, profiles.EXPONENTIAL, profiles.POINT).astype(np.int8),
        "field_scale": np.where(is_gal, scale, 0.0), "field_q": rng.uniform(0.3, 1.0, (n, k)),
        "field_theta": rng.uniform(0, np.pi, (n, k)),
    }


class _Grid:
    """Geometry shared by all batches."""

    def __init__(self, cfg: SDSSConfig) -> None:
        self.r = cfg.render_px
        self.shape = profiles.padded_shape(self.r, 22)
        self.centre = (self.r - 1) / 2.0
        self.up = _bilinear_matrix(self.r, 2 * self.r).astype(np.float32)


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of bilinear interpolation between pixel-centre grids."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = pos - lo
    mat = np.zeros((n_out, n_in))
    mat[np.arange(n_out), lo] += 1 - w
    mat[np.arange(n_out), hi] += w
    return mat


def _scene_debris(
    rng: np.random.Generator, g: dict[str, np.ndarray], px: dict[str, np.ndarray], k: int,
) -> tuple[debris.Points, debris.Points]:
    """Point clouds (render px): merger debris and spiral arms (both galaxies)."""
    stage = g["stage"]
    inter, pair, post = stage == 2, stage == 1, stage == 3
    r90p = px["r90"]
    x1, y1, x2, y2 = px["x1"], px["y1"], px["x2"], px["y2"]
    away = g["pair_pa"] + np.pi + rng.uniform(-1.0, 1.0, k)
    curl = np.where(rng.random(k) < 0.5, -1.0, 1.0) * rng.uniform(0.6, 1.6, k)
    length = r90p * np.where(inter, rng.uniform(0.8, 2.0, k), rng.uniform(0.4, 1.2, k))
    width = r90p * rng.uniform(0.06, 0.16, k)
    t1 = debris.tail(rng, k, 600, x1, y1, 0.5 * r90p, length, away, curl, width,
                     rng.uniform(0.5, 1.0, k))
    t2 = debris.tail(rng, k, 600, x2, y2, 0.4 * r90p, length * rng.uniform(0.5, 1.0, k),
                     away + np.pi, curl, width, rng.uniform(0.3, 1.0, k))
    br = debris.bridge(rng, k, 200, x1, y1, x2, y2, rng.uniform(-0.3, 0.3, k),
                       r90p * rng.uniform(0.06, 0.14, k),
                       np.where((pair | inter) & (rng.random(k) < 0.6), 0.5, 0.0))
    sh = debris.shells(rng, k, 400, x1, y1, r90p * rng.uniform(0.4, 0.8, k),
                       rng.uniform(0, 2 * np.pi, k), rng.uniform(0.6, 1.4, k),
                       np.where(post & (rng.random(k) < 0.6), 1.0, 0.0))
    ha = debris.halo(rng, k, 400, (x1 + x2) / 2, (y1 + y2) / 2, r90p * rng.uniform(0.1, 0.4, k),
                     rng.uniform(0, 2 * np.pi, k), r90p * rng.uniform(0.4, 0.9, k),
                     rng.uniform(0.0, 0.5, k), np.where(post, 1.0, 0.5))
    tail_amp = np.where(pair, 0.5, 1.0)[:, None]
    t1.w *= tail_amp
    t2.w *= tail_amp
    merger_pts = debris.Points.concat([t1, t2, br, sh, ha]).normalised()
    arms = []
    for pre, (cx, cy) in (("1", (x1, y1)), ("2", (x2, y2))):
        re_d = px[f"d_re{pre}"]
        on = (g[f"arm_flux{pre}"][:, 1] > 0).astype(np.float64)
        spiral = debris.spiral_arms(
            rng, k, 600, cx, cy, 0.4 * re_d, 2.6 * re_d, g[f"arm_pitch{pre}"],
            g[f"arm_phase{pre}"], g[f"d_e{pre}"], g[f"theta{pre}"], on * g[f"arm_amp{pre}"])
        knots = debris.disc_knots(rng, k, 400, cx, cy, re_d / 1.678, g[f"d_e{pre}"],
                                  g[f"theta{pre}"], on * 1.0)
        arms.append(debris.Points.concat([spiral, knots]))
    return merger_pts, debris.Points.concat(arms)


def _dust_screen(g: dict[str, np.ndarray], px: dict[str, np.ndarray], pre: str, r: int,
                 width_re: float) -> np.ndarray | float:
    """(k, 3, r, r) transmission of galaxy ``pre``'s near-side dust (1.0 when no scene has
    dust): 1 - tau_b * a smooth step across the minor axis, ``width_re`` disc effective
    radii wide, dark on the ``dust_side`` side; one screen for its bulge and disc."""
    tau = g[f"dust_tau{pre}"]
    if not (tau > 0).any():
        return 1.0
    yy, xx = np.mgrid[:r, :r].astype(np.float32)
    th = g[f"theta{pre}"].astype(np.float32)[:, None, None]
    u = (-(xx[None] - px[f"x{pre}"].astype(np.float32)[:, None, None]) * np.sin(th)
         + (yy[None] - px[f"y{pre}"].astype(np.float32)[:, None, None]) * np.cos(th))
    width = np.maximum(width_re * px[f"d_re{pre}"], 0.5).astype(np.float32)
    step = 0.5 * (1.0 + np.tanh(g[f"dust_side{pre}"].astype(np.float32)[:, None, None]
                                * u / width[:, None, None]))
    return 1.0 - tau.astype(np.float32)[:, :, None, None] * step[:, None]


def _rings(rng: np.random.Generator, g: dict[str, np.ndarray], px: dict[str, np.ndarray],
           k: int, r: int, to_native: np.ndarray) -> np.ndarray | float:
    """(k, 3, r, r) flux of both galaxies' rings (0.0 when no scene has one: nothing drawn)."""
    out: np.ndarray | float = 0.0
    for pre in ("1", "2"):
        flux = g[f"ring_flux{pre}"] * to_native[:, None]
        on = flux[:, 1] > 0
        if not on.any():
            continue
        radius = g[f"ring_r{pre}"] * px[f"d_re{pre}"]
        pts = debris.ring(rng, k, 500, px[f"x{pre}"], px[f"y{pre}"], radius,
                          g[f"ring_w{pre}"] * radius, g[f"d_e{pre}"], g[f"theta{pre}"],
                          on.astype(np.float64)).normalised()
        out = out + flux.astype(np.float32)[:, :, None, None] * profiles.splat(
            r, pts.px, pts.py, pts.w)[:, None]
    return out


def _spikes(
    rng: np.random.Generator, g: dict[str, np.ndarray], scale: np.ndarray,
    to_native: np.ndarray, gr: _Grid, cfg: SDSSConfig,
) -> np.ndarray:
    """Diffraction spikes of the brightest field star of each image, if brighter than
    ``cfg.spike_mag`` (SDSS's secondary-mirror vanes; spikes hold ~1.5 % of the flux)."""
    k = len(g["label"])
    star_r = np.where(g["field_kind"] == profiles.POINT, g["field_flux"][..., 1], 0.0)
    j = star_r.argmax(axis=1)
    rows = np.arange(k)
    f_r = star_r[rows, j]
    on = f_r > _mags_to_flux(cfg.spike_mag)
    length = np.minimum(12.0 * np.sqrt(f_r / _mags_to_flux(cfg.spike_mag)), 60.0) / scale
    pts = debris.diffraction_spikes(
        rng, k, 300, gr.centre + g["field_x"][rows, j] / scale,
        gr.centre + g["field_y"][rows, j] / scale, np.maximum(length, 2.0),
        np.full(k, cfg.spike_angle), on.astype(np.float64)).normalised()
    img = profiles.splat(gr.r, pts.px, pts.py, pts.w)
    flux = 0.015 * g["field_flux"][rows, j] * to_native[:, None]
    return (flux.astype(np.float32)[:, :, None, None] * img[:, None])


def render_flux(
    cat: dict[str, np.ndarray], sl: slice, cfg: SDSSConfig, rng: np.random.Generator,
    grid: _Grid | None = None, *, noise: bool = True, sky: bool = True,
) -> np.ndarray:
    """Noisy, PSF-convolved g, r, i images of ``cat[sl]`` at the render grid:
    float32 (k, 3, R, R) in nanomaggies per native pixel, before the stretch.

    ``sky=False`` leaves out the sky (noise and offset) but keeps the sources' own
    shot noise: for compositing onto real sky backgrounds, which bring their own.
    ``noise=False`` leaves out all noise (for tests and figures); the random stream
    is then consumed differently, so use it on its own generator.
    """
    gr = grid or _Grid(cfg)
    g = {key: v[sl] for key, v in cat.items()}
    k, r, shape = len(g["label"]), gr.r, gr.shape
    scale = cfg.arcsec_per_render_px(g["frame_r90"])  # arcsec per render px
    to_native = NATIVE_PIXEL_AREA / scale ** 2  # per-render-px flux -> per-native-px value
    px = {"r90": g["r90"] / scale}
    for key in ("x1", "y1", "x2", "y2"):
        px[key] = gr.centre + g[key] / scale
    for pre in ("1", "2"):
        for part in ("b_re", "d_re"):
            px[f"{part}{pre}"] = g[f"{part}{pre}"] / scale
    bands = np.zeros((k, 3, r, r), dtype=np.float32)
    for pre in ("1", "2"):
        screen = _dust_screen(g, px, pre, r, cfg.dust_width)
        for part in ("b", "d"):
            flux = g[f"{part}_flux{pre}"] * to_native[:, None]
            idx = np.flatnonzero(flux[:, 1] > 0)
            if idx.size == 0:
                continue
            img = profiles.sersic_images(
                r, px[f"x{pre}"][idx], px[f"y{pre}"][idx], np.ones(idx.size),
                np.maximum(px[f"{part}_re{pre}"][idx], 0.5), g[f"{part}_n{pre}"][idx],
                g[f"{part}_e{pre}"][idx], g[f"theta{pre}"][idx])
            dust = screen[idx] if isinstance(screen, np.ndarray) else screen
            bands[idx] += flux[idx].astype(np.float32)[:, :, None, None] * img[:, None] * dust
    merger_pts, arm_pts = _scene_debris(rng, g, px, k)
    deb = profiles.splat(r, merger_pts.px, merger_pts.py, merger_pts.w)
    bands += (g["debris_flux"] * to_native[:, None]).astype(np.float32)[:, :, None, None] \
        * deb[:, None]
    n_arm = arm_pts.px.shape[1] // 2
    for j, pre in enumerate(("1", "2")):
        cols = slice(j * n_arm, (j + 1) * n_arm)
        pts = debris.Points(arm_pts.px[:, cols], arm_pts.py[:, cols],
                            arm_pts.w[:, cols]).normalised()
        a_img = profiles.splat(r, pts.px, pts.py, pts.w)
        bands += (g[f"arm_flux{pre}"] * to_native[:, None]).astype(np.float32)[
            :, :, None, None] * a_img[:, None]
    bands += _rings(rng, g, px, k, r, to_native)
    bands += _spikes(rng, g, scale, to_native, gr, cfg)
    spec = np.fft.rfft2(bands, s=shape)
    spec += profiles.sources_spectrum(
        shape, gr.centre + g["field_x"] / scale[:, None], gr.centre + g["field_y"] / scale[:, None],
        g["field_flux"] * to_native[:, None, None], g["field_kind"],
        g["field_scale"] / scale[:, None], g["field_q"], g["field_theta"])
    fwhm = (g["seeing"] / scale)[:, None] * np.asarray(cfg.seeing_band_factor)[None]
    spec *= profiles.sdss_psf_transfer(shape, fwhm, second_weight=cfg.psf_second_weight,
                                       wing_weight=cfg.psf_wing_weight)
    native = cfg.native_pixel_arcsec / scale  # native pixel in render px
    std = g["sky_sigma"] * np.minimum(1.0, native)[:, None]
    grain = cfg.noise_grain * np.maximum(native, 1.0)
    out = profiles.irfft_cropped(spec, shape, r)
    if noise:
        sky_noise = profiles.irfft_cropped(profiles.noise_spectrum(rng, shape, std, grain),
                                           shape, r)
        # Shot noise of the sources themselves, on top of the sky's.
        bright = np.asarray(cfg.sky_brightness, dtype=np.float32)[None, :, None, None]
        shot = np.maximum(out, 0.0) / bright
        out += sky_noise * np.sqrt(1.0 + shot if sky else shot)
        if sky:
            out += g["sky_offset"].astype(np.float32)[:, :, None, None]
    return out


def lupton_rgb(flux_gri: np.ndarray, cfg: SDSSConfig) -> np.ndarray:
    """SDSS colour stretch of (k, 3, H, W) g, r, i flux: float (k, H, W, 3) in [0, 255],
    RGB = i, r, g.

    astropy's :func:`~astropy.visualization.make_lupton_rgb` is pixel-wise, so the
    batch is stacked into one tall image and stretched in a single call.
    """
    return _stretch(_scaled_rgb_flux(flux_gri, cfg), cfg)


def _scaled_rgb_flux(flux_gri: np.ndarray, cfg: SDSSConfig) -> np.ndarray:
    """(k, 3, H, W) g, r, i flux -> R, G, B = i, r, g times the stretch's band scales."""
    sg, sr, si = cfg.band_scales
    scales = np.asarray([si, sr, sg], dtype=np.float32)[None, :, None, None]
    return flux_gri[:, ::-1] * scales


def _stretch(rgb_flux: np.ndarray, cfg: SDSSConfig) -> np.ndarray:
    """astropy Lupton stretch of scaled (k, 3, H, W) R, G, B flux: float (k, H, W, 3) 0-255."""
    from astropy.visualization import make_lupton_rgb

    k, _, h, w = rgb_flux.shape
    tall = [rgb_flux[:, c].reshape(k * h, w).astype(np.float64) for c in range(3)]
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 where the intensity is 0
        rgb = make_lupton_rgb(tall[0], tall[1], tall[2], minimum=0.0,
                              stretch=cfg.lupton_stretch, Q=cfg.lupton_q,
                              output_dtype=np.float64)
    return (rgb.reshape(k, h, w, 3) * 255.0).astype(np.float32)


def unstretch(rgb: np.ndarray, cfg: SDSSConfig) -> np.ndarray:
    """Inverse of :func:`_stretch` for (k, 3, H, W) R, G, B pixel values: scaled flux.

    The Lupton mapping sends each pixel's mean intensity ``I`` to
    ``mean(R, G, B) = 255 · asinh(Q I / stretch) · 0.1 / asinh(0.1 Q)`` and keeps the
    colour ratios, so it inverts pixel by pixel (black pixels map to zero flux).
    """
    q, st = cfg.lupton_q, cfg.lupton_stretch
    m = rgb.mean(axis=1, keepdims=True) / 255.0
    intensity = st / q * np.sinh(m * np.arcsinh(0.1 * q) / 0.1)
    ratio = np.divide(intensity, m, out=np.zeros_like(m), where=m > 0)
    return (rgb / 255.0 * ratio).astype(np.float32)


def lupton_rgb8(flux_gri: np.ndarray, cfg: SDSSConfig) -> np.ndarray:
    """:func:`lupton_rgb` quantised to uint8 (k, H, W, 3)."""
    return np.clip(np.floor(lupton_rgb(flux_gri, cfg)), 0, 255).astype(np.uint8)


def _gaussian_matrices(n: int, sigma: np.ndarray) -> np.ndarray:
    """(k, n, n) row-normalised Gaussian smoothing matrices of widths ``sigma`` (k,) px."""
    d = np.arange(n, dtype=np.float32)
    s = np.maximum(np.asarray(sigma, dtype=np.float32), 1e-3)[:, None, None]
    m = np.exp(-0.5 * ((d[:, None] - d[None, :]) / s) ** 2)
    return m / m.sum(axis=2, keepdims=True)


def smooth_chroma(rgb: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Blur the colour (YCbCr chroma) of (k, H, W, 3) RGB by Gaussians of ``sigma`` (k,) px,
    keeping the luminance: what chroma subsampling and JPEG quantisation of the native-scale
    SDSS colour images do before the cutout service resamples them."""
    planes = np.ascontiguousarray(np.moveaxis(rgb, -1, 1), dtype=np.float32)  # (k, 3, H, W)
    r, g, b = planes[:, 0], planes[:, 1], planes[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    chroma = np.stack([-0.168736 * r - 0.331264 * g + 0.5 * b,
                       0.5 * r - 0.418688 * g - 0.081312 * b], axis=1)  # (k, 2, H, W)
    # Explicit (k, 2, H, H) copies: numpy's batched matmul is ~30x slower when broadcasting.
    mat = np.ascontiguousarray(np.broadcast_to(
        _gaussian_matrices(rgb.shape[1], sigma)[:, None], chroma.shape[:2] + (rgb.shape[1],) * 2))
    mat_t = np.ascontiguousarray(mat.transpose(0, 1, 3, 2))
    chroma = np.matmul(np.matmul(mat, chroma), mat_t)
    cb, cr = chroma[:, 0], chroma[:, 1]
    out = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb],
                   axis=-1)
    return out


def to_jpeg_model_pixels(rgb8: np.ndarray, cfg: SDSSConfig, grid: _Grid) -> np.ndarray:
    """Render-grid RGB8 -> JPEG grid (bilinear ×2) -> JPEG -> the 75-px model input.

    Decoding and resizing use the same functions as real cutouts
    (:func:`galmerge.data.images.decode_rgb8_bytes` and :func:`~galmerge.data.images.prepare`).
    """
    x = rgb8.astype(np.float32)
    up = np.einsum("ij,kjlc,ml->kimc", grid.up, x, grid.up, optimize=True)
    up = np.clip(np.rint(up), 0, 255).astype(np.uint8)
    crop = cfg.crop_px
    return jpeg_to_model_pixels(up[:, :crop, :crop], cfg)


def jpeg_to_model_pixels(rgb8: np.ndarray, cfg: SDSSConfig) -> np.ndarray:
    """JPEG-compress (k, H, W, 3) uint8 crops at ``cfg.jpeg_quality``, decode and
    area-resize them to the model size, exactly as real cutouts are read."""
    from PIL import Image

    out = np.empty((len(rgb8), 3, cfg.size, cfg.size), dtype=np.float32)
    for i, im in enumerate(rgb8):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=cfg.jpeg_quality)
        raw = decode_rgb8_bytes(buf.getvalue(), source="simulated")
        out[i] = prepare(raw.pixels, cfg.size, 1.0)
    return out


def images_from_flux(
    flux_gri: np.ndarray, frame_r90: np.ndarray, cfg: SDSSConfig, grid: _Grid,
) -> np.ndarray:
    """Render-grid g, r, i flux -> the final 75-px colour-JPEG model pixels (k, 3, 75, 75):
    Lupton stretch, chroma blur at the native pixel scale, 8 bits, JPEG grid, JPEG."""
    native = cfg.native_pixel_arcsec / cfg.arcsec_per_render_px(frame_r90)
    rgb = smooth_chroma(lupton_rgb(flux_gri, cfg), cfg.chroma_smooth * np.maximum(native, 1.0))
    rgb8 = np.clip(np.floor(rgb), 0, 255).astype(np.uint8)
    return to_jpeg_model_pixels(rgb8, cfg, grid)


@dataclass
class BackgroundBank:
    """Sky blocks cut from the corners of real 423-px GZ1 JPEGs (outside the central crop).

    Attributes:
        blocks: uint8 (B, 3, b, b) with ``b = (frame_px - crop_px) // 2`` (105 px).
        files: how many JPEGs were read.
        digest: SHA-256 of the blocks (recorded in provenance).
    """

    blocks: np.ndarray
    files: int
    digest: str


def load_backgrounds(directory: str | Path, cfg: SDSSConfig) -> BackgroundBank:
    """Cut sky blocks from every ``frame_px``-square JPEG in ``directory`` (sorted by name).

    Blocks holding bright sources or the central galaxy's outskirts (99.5th percentile
    above 40 or median above 12 in the mean of R, G, B) are dropped; at most
    ``cfg.background_max_blocks`` are kept, evenly spaced, so memory stays bounded.

    Raises:
        GalmergeError: no directory, or no usable JPEGs in it.
    """
    import hashlib

    d = Path(directory)
    if not d.is_dir():
        raise GalmergeError(f"{d}: background directory not found",
                            hint="give a directory of real SDSS GZ1 JPEGs, e.g. the target pool")
    files = sorted(p for p in d.iterdir() if p.is_file() and image_suffix(p) in JPEG_EXTENSIONS)
    b = (cfg.frame_px - cfg.crop_px) // 2
    blocks = []
    for f in files:
        x = read_image(f).pixels
        if x.shape != (3, cfg.frame_px, cfg.frame_px):
            continue
        for ys in (slice(0, b), slice(cfg.frame_px - b, cfg.frame_px)):
            for xs in (slice(0, b), slice(cfg.frame_px - b, cfg.frame_px)):
                blk = x[:, ys, xs]
                lum = blk.mean(axis=0)
                if np.percentile(lum, 99.5) < 40 and np.median(lum) < 12:
                    blocks.append(blk.astype(np.uint8))
    if not blocks:
        raise GalmergeError(
            f"{d}: no usable sky found in {len(files)} JPEG(s)",
            hint=f"backgrounds must be {cfg.frame_px}x{cfg.frame_px} SDSS colour JPEGs")
    arr = np.stack(blocks)
    if len(arr) > cfg.background_max_blocks:
        keep = np.linspace(0, len(arr) - 1, cfg.background_max_blocks).round().astype(int)
        arr = arr[keep]
    return BackgroundBank(arr, len(files), hashlib.sha256(arr.tobytes()).hexdigest())


def sky_mosaics(bank: BackgroundBank, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(k, 3, size, size) float skies, each a 2×2 mosaic of random, randomly flipped blocks
    (edge-padded to ``size``)."""
    b = bank.blocks.shape[-1]
    idx = rng.integers(0, len(bank.blocks), (k, 4))
    flips = rng.random((k, 4, 2)) < 0.5
    out = np.empty((k, 3, 2 * b, 2 * b), dtype=np.float32)
    for i in range(k):
        for j in range(4):
            blk = bank.blocks[idx[i, j]]
            if flips[i, j, 0]:
                blk = blk[:, ::-1]
            if flips[i, j, 1]:
                blk = blk[:, :, ::-1]
            y0, x0 = (j // 2) * b, (j % 2) * b
            out[i, :, y0:y0 + b, x0:x0 + b] = blk
    pad = size - 2 * b
    lo = pad // 2
    return np.pad(out, ((0, 0), (0, 0), (lo, pad - lo), (lo, pad - lo)), mode="reflect")


def images_on_backgrounds(
    flux_gri: np.ndarray, bank: BackgroundBank, cfg: SDSSConfig, grid: _Grid,
    rng: np.random.Generator,
) -> np.ndarray:
    """Composite render-grid g, r, i flux (no sky) onto real sky and make model pixels.

    The sky mosaic is mapped back to flux with :func:`unstretch`, the scene is
    resampled to the JPEG grid and added, and the sum is stretched, quantised,
    JPEG-compressed and resized like the real cutouts.
    """
    return composite(flux_gri, sky_mosaics(bank, len(flux_gri), cfg.crop_px, rng), cfg, grid)


def composite(flux_gri: np.ndarray, base_rgb: np.ndarray, cfg: SDSSConfig, grid: _Grid,
              scale: np.ndarray | None = None) -> np.ndarray:
    """Render-grid g, r, i flux added to real JPEG pixels, then made model pixels.

    ``base_rgb`` (k, 3, c, c) R, G, B values of real JPEG crops (sky or a host galaxy) are
    mapped back to flux with :func:`unstretch`; the scene is resampled to the JPEG grid,
    multiplied by ``scale`` (k,) if given, added, and the sum is stretched, quantised,
    JPEG-compressed and resized like the real cutouts.
    """
    crop = cfg.crop_px
    up = np.einsum("ij,kcjl,ml->kcim", grid.up, flux_gri, grid.up, optimize=True)
    scene = _scaled_rgb_flux(up[:, :, :crop, :crop], cfg)
    if scale is not None:
        scene = scene * scale.astype(np.float32)[:, None, None, None]
    rgb = _stretch(scene + unstretch(base_rgb, cfg), cfg)
    return jpeg_to_model_pixels(np.clip(np.floor(rgb), 0, 255).astype(np.uint8), cfg)


#: Catalogue columns of the second galaxy and the debris (scaled to a real host's flux).
_COMPANION_FLUX = ("b_flux2", "d_flux2", "arm_flux2", "ring_flux2", "debris_flux")


def as_host_scenes(cat: dict[str, np.ndarray], sel: np.ndarray) -> None:
    """Turn the scenes ``sel`` (index array) into "everything but the central galaxy", in
    place: the real host replaces galaxy 1 at the frame centre, so its light, the blend
    re-centring and the synthetic field (the real cutout has its own) are removed."""
    for key in ("b_flux1", "d_flux1", "arm_flux1", "ring_flux1"):
        cat[key][sel] = 0.0
    cat["field_flux"][sel] = 0.0
    cat["blend"][sel] = 0
    cat["frame_r90"][sel] = cat["r90"][sel]
    cat["x1"][sel] = 0.0
    cat["y1"][sel] = 0.0
    cat["x2"][sel] = cat["sep"][sel] * np.cos(cat["pair_pa"][sel])
    cat["y2"][sel] = cat["sep"][sel] * np.sin(cat["pair_pa"][sel])


def host_flux_scale(host_rgb: np.ndarray, cat: dict[str, np.ndarray], sl: slice,
                    cfg: SDSSConfig) -> np.ndarray:
    """(k,) factor that puts the simulated companion on the real host's flux scale.

    The catalogue draws the companion relative to a central galaxy of flux
    ``10^(-0.4 (mag - 22.5))``; the real host's r-band flux (sky-subtracted, inside
    ``host_aperture_r90`` R90 of the centre, in the stretch's units per native pixel summed
    over JPEG pixels) is converted with the frame's pixel area and divided by it, so mass
    ratios hold against the real host. Clipped to 0.1-10 (bright stars in the aperture).
    """
    base = unstretch(host_rgb, cfg)[:, 1:2]  # G = r band (band scale 1.0)
    radius = cfg.host_aperture_r90 / cfg.gz_scale_per_r90
    s_host = np.maximum(hosts.aperture_flux(base, radius)[:, 0], 0.0)
    jpeg_px_arcsec = cfg.gz_scale_per_r90 * cat["frame_r90"][sl]
    f_host = s_host * (jpeg_px_arcsec / cfg.native_pixel_arcsec) ** 2
    return np.clip(f_host / _mags_to_flux(cat["mag"][sl]), 0.1, 10.0)


def convention(cfg: SDSSConfig) -> ModelConvention:
    """The pixel convention of the simulated SDSS-like file (final 75-px model pixels)."""
    return ModelConvention(
        pixel_convention=SDSS_COLOUR_JPEG, bands=SDSS_RGB_BANDS, size=cfg.size,
        crop_fraction=1.0, petro_scale_factor=None,
        stretch="SDSS colour JPEG (Lupton et al. 2004 asinh via astropy make_lupton_rgb), "
                f"JPEG quality {cfg.jpeg_quality}",
        extra={"simulator": "galmerge-sdss",
               "equivalent_real_crop_fraction": repr(cfg.crop_fraction),
               "equivalent_real_frame_px": str(cfg.frame_px),
               "gz_scale_per_r90": repr(cfg.gz_scale_per_r90)},
    )


def simulate_sdss(out_dir: Path, n: int, seed: int, cfg: SDSSConfig) -> tuple[Path]:
    """Write ``source.h5``: SDSS-like labelled images in the ``sdss-colour-jpeg`` convention.

    With ``cfg.hosts`` the last ``round(n * cfg.host_fraction)`` scenes are painted onto
    real host galaxies (:func:`as_host_scenes`, :func:`composite`); the dataset's random
    train/val/test split mixes both kinds. ``extra/host`` marks them (1) and
    ``extra/host_index`` names the host (index into ``provenance["hosts"]["ids"]``, -1 for
    purely simulated scenes).
    """
    ss = np.random.SeedSequence(seed)
    r_cat, r_render = (np.random.default_rng(s) for s in ss.spawn(2))
    bank = load_backgrounds(cfg.backgrounds, cfg) if cfg.backgrounds else None
    if bank is not None:
        cfg = replace(cfg, field_galaxies_per_arcmin2=cfg.field_galaxies_per_arcmin2
                      * cfg.background_field_factor,
                      field_stars_per_arcmin2=cfg.field_stars_per_arcmin2
                      * cfg.background_field_factor)
    host_bank = hosts.load_hosts(cfg.hosts, cfg.frame_px, cfg.crop_px) if cfg.hosts else None
    n_host = round(n * cfg.host_fraction) if host_bank is not None else 0
    host_q = (hosts.axis_ratios(host_bank)
              if host_bank is not None and cfg.inclined_host_weight != 1.0 else None)
    host_p = (None if host_q is None else
              hosts.host_weights(host_q, cfg.inclined_host_weight, cfg.inclined_host_max_q))
    cat = draw_catalogue(n, r_cat, cfg)
    as_host_scenes(cat, np.arange(n - n_host, n))
    host_index = np.full(n, -1, dtype=np.int32)
    grid = _Grid(cfg)
    ids = [f"sdss-s{seed}-{i:06d}" for i in range(n)]
    prov = _provenance(cfg, seed, n, bank, host_bank, n_host, host_q)
    path = out_dir / "source.h5"
    with DatasetWriter(path, n, convention(cfg), labels=cat["label"], ids=ids,
                       split_seed=seed, provenance=prov) as w:
        for sl in _chunks(n, n - n_host, cfg.chunk):
            on_host = sl.start >= n - n_host
            flux = render_flux(cat, sl, cfg, r_render, grid,
                               sky=bank is None and not on_host)
            if on_host:
                assert host_bank is not None
                base, host_index[sl] = hosts.pick_hosts(host_bank, sl.stop - sl.start,
                                                        r_render, host_p)
                scale = host_flux_scale(base, cat, sl, cfg)
                w.write(sl.start, composite(flux, base, cfg, grid, scale))
            elif bank is None:
                w.write(sl.start, images_from_flux(flux, cat["frame_r90"][sl], cfg, grid))
            else:
                w.write(sl.start, images_on_backgrounds(flux, bank, cfg, grid, r_render))
        truth = truth_columns(cat, kind=cat["kind"], projection=cat["projection"],
                              r90=cat["r90"], frame_r90=cat["frame_r90"], blend=cat["blend"],
                              mag=cat["mag"], seeing=cat["seeing"],
                              ring=(cat["ring_flux1"][:, 1] > 0).astype(np.int8),
                              dust=((cat["dust_tau1"][:, 0] > 0)
                                    & (cat["d_flux1"][:, 1] > 0)).astype(np.int8),
                              host=(host_index >= 0).astype(np.int8), host_index=host_index)
        for name, col in truth.items():
            w.write_extra(name, col)
    return (path,)


def _chunks(n: int, boundary: int, size: int) -> list[slice]:
    """Slices of at most ``size`` over ``range(n)`` that never straddle ``boundary``."""
    out = []
    for lo, hi in ((0, boundary), (boundary, n)):
        out += [slice(s, min(s + size, hi)) for s in range(lo, hi, size)]
    return out


def _provenance(cfg: SDSSConfig, seed: int, n: int, bank: BackgroundBank | None,
                host_bank: hosts.HostBank | None, n_host: int,
                host_q: np.ndarray | None = None) -> dict[str, Any]:
    """What the simulated file records about how it was made."""
    return {
        "simulator": "galmerge.data.simulator.sdss", "survey": "sdss", "seed": seed, "n": n,
        "domain": "source", "config": cfg.to_dict(), "stages": list(STAGES),
        "kinds": list(KINDS),
        "real_equivalent": (f"central {cfg.crop_fraction:g} ({cfg.crop_px} px) of a "
                            f"{cfg.frame_px}x{cfg.frame_px} Galaxy Zoo 1 SDSS JPEG "
                            f"({cfg.gz_scale_per_r90} x petroR90_r arcsec/px), area-resized "
                            f"to {cfg.size}x{cfg.size}: read the real target with "
                            f"crop_fraction={cfg.crop_fraction:g}"),
        "paper": "DeepMerge II §4.2 (sim->real source)",
        "sky": "synthetic" if bank is None else {
            "backgrounds": str(cfg.backgrounds), "files": bank.files,
            "blocks": len(bank.blocks), "sha256": bank.digest},
        "hosts": None if host_bank is None else {
            "directory": str(cfg.hosts), "files": len(host_bank.ids), "ids": host_bank.ids,
            "sha256": host_bank.digest, "scenes": n_host,
            "inclined_hosts": (None if host_q is None else
                               int((host_q < cfg.inclined_host_max_q).sum())),
            "method": "real GZ1 host crop -> flux (inverse Lupton stretch) + simulated "
                      "companion/debris/projection -> stretch -> JPEG -> resize, every class"},
    }
