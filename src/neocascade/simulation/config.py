"""Every knob of the ZTF-like quadrant simulator, with where each default comes from.

Counts of nuisances are per full ZTF quadrant (3080 x 3072 px) and scale with the image area, and the
sizes of dead borders and masked regions scale with the image side, so that a small test image has
the same dead fraction and artifact density as a full quadrant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neocascade.simulation.psf import PSF_KINDS
from neocascade.simulation.sky import SkyRanges, sky_ranges

QUADRANT_SHAPE = (3080, 3072)  # rows, cols of a ZTF CCD quadrant


@dataclass(frozen=True)
class SimConfig:
    """Parameters of :func:`neocascade.simulation.quadrant.simulate_image`.

    Ranges are ``(low, high)`` pairs; ``_rate`` knobs are Poisson means per full quadrant.
    Build it from a preset with ``SimConfig(**sim, shape=..., n_asteroids=...)``; unknown keys raise
    ``TypeError`` and bad values ``ValueError`` naming the key.
    """

    shape: tuple[int, int] = QUADRANT_SHAPE  # (rows, cols); a ZTF quadrant at ~1"/px
    n_asteroids: int = 20  # injected per image, as in the seed data

    # photometry
    zero_point: float = 26.3  # ZTF r-band magzpsci (median of the real alerts: 26.29); DN = 10**(-0.4 (m - zp))
    gain: float = 6.2  # e-/DN of the ZTF CCDs; sets the Poisson noise of injected sources
    poisson: bool = True  # photon noise on asteroids, transients and star residuals

    # background noise of the difference image
    noise_rms: float = 6.2  # median rms-map level in DN; the measured MAD*1.4826 comes out ~3% lower, at the seed's ~6
    noise_rms_scatter: float = 0.12  # log-normal scatter of the per-image noise between images
    noise_rms_range: tuple[float, float] = (5.05, 7.5)  # clip, so measured MADs stay inside the seed's 4.8-7.6 DN
    noise_variation: float = 0.08  # relative rms of the smooth noise map across one image
    noise_grid: int = 5  # nodes per side of the low-resolution noise map (bilinear upsampling)
    noise_correlation: float = 0.1  # adjacent-pixel correlation left by PSF matching; real r-band stamps: 0.08
    background_rms: float = 0.0  # DN rms of a low-frequency residual background (imperfect sky subtraction); seed: flat
    background_grid: int = 5  # nodes per side of that background (bilinear upsampling): ~770 px structures

    # point-spread function: Moffat (1 + r^2/alpha^2)^-beta, broader wings than a Gaussian
    fwhm: float = 2.2  # median per-image FWHM in px (real r-band alerts: 2.05-2.27)
    fwhm_scatter: float = 0.2  # log-normal scatter of the per-image FWHM
    fwhm_range: tuple[float, float] = (1.3, 3.1)  # clip (the seed's seeing range)
    moffat_beta_range: tuple[float, float] = (2.5, 4.0)  # per image, uniform; typical ground-based wings
    psf_kind: str = "moffat"  # moffat | gaussian | core_halo (Gaussian core + Moffat halo); the seed: moffat
    halo_fraction: float = 0.2  # core_halo only: flux share of the halo
    halo_scale: float = 3.0  # core_halo only: halo FWHM / core FWHM
    ellipticity_range: tuple[float, float] = (0.0, 0.0)  # 1 - b/a per image, uniform, at a uniform angle; seed: round
    fwhm_gradient: float = 0.0  # relative FWHM change from the centre to a corner, random direction per image

    # asteroids
    magnitude_mean: float = 17.1  # tuned so the median 3x3 peak over asteroids is ~500 DN (seed)
    magnitude_sigma: float = 1.25  # truncated normal; its upper tail is the faint tail the method misses
    magnitude_range: tuple[float, float] = (13.0, 21.8)  # bright end to below the single-image limit (~21)
    slow_length_max: float = 2.0  # px; main-belt rates (<~4"/min) in a 30 s exposure, uniform 0..max
    fast_fraction: float = 0.03  # share of fast (NEO-like) movers; their long trails often miss the 1-px centre rule
    fast_length_range: tuple[float, float] = (2.0, 10.0)  # px, uniform; the seed's longest trails ~10 px

    # star-subtraction residuals (dipoles, rings, negative holes) around ordinary stars
    star_residual_rate: float = 60.0  # per quadrant (most stars subtract cleanly)
    star_magnitude_range: tuple[float, float] = (12.0, 19.0)  # magnitudes of the stars that leave residuals
    residual_fraction_range: tuple[float, float] = (0.005, 0.05)  # residual flux / star flux, log-uniform
    batch_residuals: bool = False  # draw all residuals at once (fast for crowded fields); False: the seed's per-star order
    star_magnitude_slope: float = 0.0  # batch_residuals only: counts rise as 10**(slope m); real fields ~0.3
    dipole_shift_range: tuple[float, float] = (0.15, 0.15)  # batch_residuals only: dipole misregistration in px
    # batch_residuals only: pixel-to-pixel residual of every residual star, rms as a share of the star's flux in
    # that pixel (PSF-matching and resampling errors). Real r-band alert stamps: 0.16 at ~80 DN/px falling to
    # 0.07 at ~20,000 DN/px (make calibrate); the dipole, ring and hole shapes alone give 0.02-0.06. 0: none.
    residual_pixel_noise: float = 0.0

    # saturated stars: NaN cores, NaN bleed columns, strong ring residuals
    saturated_rate: float = 3.0  # per quadrant
    saturated_magnitude_range: tuple[float, float] = (8.0, 11.5)  # bright enough to saturate in 30 s
    bleed_length_per_mag: float = 60.0  # px of bleed column per magnitude brighter than 11.5

    # sharp, non-PSF artifacts
    cosmic_ray_rate: float = 25.0  # per quadrant in 30 s, after the pipeline masks the obvious ones
    cosmic_ray_dn_range: tuple[float, float] = (80.0, 4000.0)  # per-pixel DN, log-uniform
    hot_pixel_rate: float = 20.0  # per quadrant, single pixels; negative when from the reference
    hot_pixel_dn_range: tuple[float, float] = (40.0, 1500.0)  # DN, log-uniform
    bad_column_rate: float = 0.8  # per quadrant; half are offsets, half masked (NaN)
    bad_column_dn_range: tuple[float, float] = (8.0, 40.0)  # |offset| in DN of an unmasked bad column

    # long streaks
    satellite_probability: float = 0.08  # per image: a satellite or airplane crosses the quadrant
    satellite_dn_range: tuple[float, float] = (15.0, 400.0)  # peak DN across the streak, log-uniform
    satellite_flare_probability: float = 0.0  # share of streaks with a glint (2-10x over 20-300 px); seed: none
    satellite_dash_probability: float = 0.0  # share of dashed (blinking) satellite streaks; seed: none

    # fast movers (NEOs close to the Earth): trails of tens to hundreds of px, added after the asteroids
    fast_mover_rate: float = 0.0  # per quadrant (Poisson); 0 reproduces the seed (trails <= 10 px only)
    fast_mover_length_range: tuple[float, float] = (10.0, 300.0)  # px, uniform: 10 deg/day to ~1 deg/h in 30 s
    fast_mover_magnitude_range: tuple[float, float] = (13.5, 18.5)  # total magnitude of the trail, uniform

    # real transients and variable stars: PSF-like, positive or negative (hardest negatives)
    transient_rate: float = 12.0  # per quadrant
    transient_magnitude_range: tuple[float, float] = (15.0, 21.0)  # uniform
    transient_negative_fraction: float = 0.3  # share that faded (negative subtraction)

    # dead and masked areas
    dead_border_probability: float = 0.45  # images with zero-valued borders (reference does not cover)
    dead_border_width_range: tuple[float, float] = (40.0, 100.0)  # px at full size (~70 px in the seed)
    masked_region_rate: float = 1.0  # NaN rectangles per quadrant (ghosts, bad amplifier regions)
    masked_region_size_range: tuple[float, float] = (100.0, 550.0)  # side in px at full size

    # per-image randomization: None draws every image from the knobs above; a SkyRanges (or mapping of its
    # fields, data.source.sim.sky) draws each image's knobs from a wide family (neocascade.simulation.sky)
    sky: SkyRanges | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        object.__setattr__(self, "sky", sky_ranges(self.sky))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_range"):
                object.__setattr__(self, f.name, tuple(float(v) for v in value))
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict of every knob (for file metadata and cache keys).

        Knobs added with the sky family are left out while at their defaults, so the cache key of a
        config that predates them (and simulates identical pixels) does not change.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in _SKY_KNOBS | _TRAIL_KNOBS or getattr(self, f.name) != f.default}
        if out.get("sky") is not None:
            out["sky"] = self.sky.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# added with the randomized sky family; their defaults reproduce the earlier simulator bit for bit
_SKY_KNOBS = frozenset({"psf_kind", "halo_fraction", "halo_scale", "ellipticity_range", "fwhm_gradient",
                        "background_rms", "background_grid", "batch_residuals", "star_magnitude_slope",
                        "dipole_shift_range", "residual_pixel_noise", "sky"})

# added with the fast movers (issue 15); at their defaults nothing is drawn, so pixels and cache keys stay the same
_TRAIL_KNOBS = frozenset({"satellite_flare_probability", "satellite_dash_probability", "fast_mover_rate",
                          "fast_mover_length_range", "fast_mover_magnitude_range"})


def _validate(c: SimConfig) -> None:
    """Check every knob once; raise ValueError naming the key."""
    if len(c.shape) != 2 or min(c.shape) < 16:
        raise ValueError(f"sim.shape: must be (rows, cols) with both >= 16, got {c.shape}")
    if c.n_asteroids < 0:
        raise ValueError(f"sim.n_asteroids: must be >= 0, got {c.n_asteroids}")
    for f in dataclasses.fields(c):
        name, value = f.name, getattr(c, f.name)
        if name.endswith("_range"):
            if len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"sim.{name}: must be (low, high) with low <= high, got {value}")
        elif isinstance(value, float) and value < 0 and name not in ("zero_point",):
            raise ValueError(f"sim.{name}: must be >= 0, got {value}")
    if c.gain <= 0:
        raise ValueError(f"sim.gain: must be > 0, got {c.gain}")
    if not c.noise_rms_range[0] <= c.noise_rms <= c.noise_rms_range[1]:
        raise ValueError(f"sim.noise_rms: must lie in noise_rms_range {c.noise_rms_range}, got {c.noise_rms}")
    if not c.fwhm_range[0] <= c.fwhm <= c.fwhm_range[1] or c.fwhm_range[0] <= 0:
        raise ValueError(f"sim.fwhm: must be > 0 and lie in fwhm_range {c.fwhm_range}, got {c.fwhm}")
    if c.moffat_beta_range[0] <= 1.0:
        raise ValueError(f"sim.moffat_beta_range: beta must be > 1, got {c.moffat_beta_range}")
    if not 0.0 <= c.noise_correlation < 0.7:
        raise ValueError(f"sim.noise_correlation: must be in [0, 0.7), got {c.noise_correlation}")
    if c.noise_grid < 2:
        raise ValueError(f"sim.noise_grid: must be >= 2, got {c.noise_grid}")
    if c.background_grid < 2:
        raise ValueError(f"sim.background_grid: must be >= 2, got {c.background_grid}")
    if c.psf_kind not in PSF_KINDS:
        raise ValueError(f"sim.psf_kind: must be one of {', '.join(PSF_KINDS)}, got {c.psf_kind!r}")
    if not (0.0 <= c.ellipticity_range[0] and c.ellipticity_range[1] < 1.0):
        raise ValueError(f"sim.ellipticity_range: must lie in [0, 1), got {c.ellipticity_range}")
    if c.halo_fraction >= 1.0 or c.halo_scale < 1.0 or c.fwhm_gradient > 0.5:
        raise ValueError(f"sim: need halo_fraction < 1, halo_scale >= 1 and fwhm_gradient <= 0.5, got "
                         f"{c.halo_fraction}, {c.halo_scale}, {c.fwhm_gradient}")
    if not c.batch_residuals and (c.star_magnitude_slope != 0.0 or c.dipole_shift_range != (0.15, 0.15)
                                  or c.residual_pixel_noise != 0.0):
        raise ValueError("sim.batch_residuals: star_magnitude_slope, dipole_shift_range and residual_pixel_noise need "
                         f"batch_residuals=true, got {c.star_magnitude_slope}, {c.dipole_shift_range}, "
                         f"{c.residual_pixel_noise}")
    if c.residual_pixel_noise > 1.0:
        raise ValueError(f"sim.residual_pixel_noise: must lie in [0, 1], got {c.residual_pixel_noise}")
    for name in ("fast_fraction", "satellite_probability", "transient_negative_fraction", "dead_border_probability"):
        value = getattr(c, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"sim.{name}: must be a probability in [0, 1], got {value}")
    if c.residual_fraction_range[0] <= 0 or c.cosmic_ray_dn_range[0] <= 0 or c.hot_pixel_dn_range[0] <= 0:
        raise ValueError("sim: log-uniform ranges (residual_fraction, cosmic_ray_dn, hot_pixel_dn) must be > 0")
    if c.satellite_dn_range[0] <= 0 or c.bad_column_dn_range[0] < 0:
        raise ValueError("sim: satellite_dn_range must be > 0 and bad_column_dn_range >= 0")
