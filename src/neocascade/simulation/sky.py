"""A randomized family of skies: each image's PSF, background, residuals, artifacts, transients and zero
point drawn from wide ranges, so that a model trained on it cannot learn one simulator's look.

:class:`SkyRanges` holds the ranges (``data.source.sim.sky``); :func:`draw_sky` turns one generator
into the :class:`~neocascade.simulation.config.SimConfig` knobs of one image. The simulator applies
them before anything else is drawn, from the image's own ``sky`` stream, so an image stays
reproducible from ``(seed, file, image)`` alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from neocascade.simulation.psf import PSF_KINDS

AXES = ("psf", "background", "residuals", "artifacts", "transients", "brightness")


@dataclass(frozen=True)
class SkyRanges:
    """Ranges of the randomized sky family; ``(low, high)`` pairs, drawn per image.

    ``axes`` lists the axes that are randomized; an axis left out keeps the preset's own knobs,
    and the draws of the other axes do not change (every value is always drawn).
    Rates are per full quadrant, as in SimConfig.
    """

    axes: tuple[str, ...] = AXES
    # psf: the family (FWHM 1.2-4.5 px, Moffat beta 1.5-6, ellipticity <= 0.3, three profile kinds)
    psf_kinds: tuple[str, ...] = PSF_KINDS  # drawn with equal odds
    fwhm_range: tuple[float, float] = (1.2, 4.5)  # px, log-uniform: real r-band alerts 1.3-3.1 (10-90 %: 1.26-2.91)
    moffat_beta_range: tuple[float, float] = (1.5, 6.0)  # Moffat wing index (and halo of core_halo)
    ellipticity_range: tuple[float, float] = (0.0, 0.3)  # 1 - b/a; the angle is uniform
    halo_fraction_range: tuple[float, float] = (0.05, 0.3)  # core_halo: flux share of the halo
    halo_scale_range: tuple[float, float] = (2.0, 4.0)  # core_halo: halo FWHM / core FWHM
    fwhm_gradient_range: tuple[float, float] = (0.0, 0.15)  # relative FWHM change centre -> corner
    # background
    noise_rms_range: tuple[float, float] = (3.0, 15.0)  # DN, log-uniform (real alerts: 4.8-7.6 at 10-90 %)
    noise_correlation_range: tuple[float, float] = (0.0, 0.4)  # adjacent-pixel correlation (real r: 0.08)
    noise_variation_range: tuple[float, float] = (0.0, 0.3)  # relative rms of the smooth noise map
    background_rms_range: tuple[float, float] = (0.0, 4.0)  # DN, low-frequency residual background
    # star-subtraction residuals, saturated stars
    star_residual_rate_range: tuple[float, float] = (3.0, 6000.0)  # log-uniform: a few to a crowded field
    star_magnitude_range: tuple[float, float] = (12.0, 20.5)  # residual stars, counts rising 10**(0.3 m)
    star_magnitude_slope: float = 0.3  # d log10 N / dm of field stars (galactic-latitude average)
    residual_fraction_range: tuple[float, float] = (0.003, 0.08)  # residual / star flux, log-uniform per star
    dipole_shift_range: tuple[float, float] = (0.02, 0.3)  # px misregistration of dipoles
    # per-pixel residual of every residual star, rms over the star's flux in the pixel (SimConfig.residual_pixel_noise),
    # uniform per image; (0, 0): none, as the family was first built. Real alert stamps: 0.07-0.16 (make calibrate)
    residual_pixel_noise_range: tuple[float, float] = (0.0, 0.0)
    saturated_rate_range: tuple[float, float] = (0.0, 12.0)  # saturated stars with bleeds, uniform
    # sharp artifacts, masks, borders
    cosmic_ray_rate_range: tuple[float, float] = (2.0, 300.0)  # log-uniform
    hot_pixel_rate_range: tuple[float, float] = (2.0, 300.0)  # log-uniform
    bad_column_rate_range: tuple[float, float] = (0.0, 4.0)  # uniform
    satellite_probability_range: tuple[float, float] = (0.0, 0.3)  # per image
    masked_region_rate_range: tuple[float, float] = (0.0, 3.0)  # uniform
    dead_border_probability_range: tuple[float, float] = (0.2, 0.7)  # per image
    # real transients, brightening and fading
    # uniform; not the 0-20: at a mean of 10 per quadrant no single-exposure threshold reaches validation
    # precision 0.98 (conf/sky/randomized.yaml); the realistic 12 per quadrant is left to linking (data=night)
    transient_rate_range: tuple[float, float] = (0.0, 1.0)
    transient_negative_fraction_range: tuple[float, float] = (0.2, 0.6)  # share that faded
    # asteroid brightness, calibrated on the real alerts (see docs): zero point and magnitudes
    # effective zero point: the real alerts' peak-vs-magpsf (log10 peak = -0.838 - 0.4 (magpsf - magzpsci) for known
    # asteroids) is matched by the simulator's trailed Moffat at magzpsci + 0.39 = 26.69; +-0.1 as real magzpsci
    zero_point_range: tuple[float, float] = (26.59, 26.79)
    magnitude_mean: float = 19.0  # real known asteroids: magpsf median 19.3, 15.8-20.5
    magnitude_sigma: float = 1.5  # truncated normal, as SimConfig
    magnitude_range: tuple[float, float] = (14.0, 22.0)  # down to below the single-image limit (~20.5-21)
    # share of images drawn with the data preset's own knobs (its one sky) instead of the family: a mixture
    base_fraction: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_range"):
                value = tuple(float(v) for v in value)
                if len(value) != 2 or not value[0] <= value[1] or not np.all(np.isfinite(value)):
                    raise ValueError(f"sim.sky.{f.name}: must be finite (low, high) with low <= high, got {value}")
                object.__setattr__(self, f.name, value)
        object.__setattr__(self, "axes", tuple(str(a) for a in self.axes))
        object.__setattr__(self, "psf_kinds", tuple(str(k) for k in self.psf_kinds))
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (tuples as lists); ``base_fraction`` and ``residual_pixel_noise_range`` only when
        set, so families made before them keep their cache keys."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if out["base_fraction"] == 0.0:
            del out["base_fraction"]
        if out["residual_pixel_noise_range"] == [0.0, 0.0]:
            del out["residual_pixel_noise_range"]
        return out


def sky_ranges(value: SkyRanges | Mapping[str, Any] | None) -> SkyRanges | None:
    """A SkyRanges from a mapping of overrides (``data.source.sim.sky``); None stays None."""
    if value is None or isinstance(value, SkyRanges):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"sim.sky: must be a mapping of SkyRanges fields or null, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(SkyRanges)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"sim.sky: unknown key '{unknown[0]}' (expected one of {', '.join(sorted(known))})")
    return SkyRanges(**value)


def _validate(r: SkyRanges) -> None:
    """Check the ranges once; raise ValueError naming the key."""
    bad = [a for a in r.axes if a not in AXES]
    if bad or len(set(r.axes)) != len(r.axes):
        raise ValueError(f"sim.sky.axes: must be distinct names from {', '.join(AXES)}, got {list(r.axes)}")
    if not r.psf_kinds or any(k not in PSF_KINDS for k in r.psf_kinds):
        raise ValueError(f"sim.sky.psf_kinds: must be a non-empty list from {', '.join(PSF_KINDS)}, got {list(r.psf_kinds)}")
    positive = ("fwhm_range", "noise_rms_range", "residual_fraction_range", "star_residual_rate_range",
                "cosmic_ray_rate_range", "hot_pixel_rate_range")
    for name in positive:
        if getattr(r, name)[0] <= 0:
            raise ValueError(f"sim.sky.{name}: must be > 0 (drawn log-uniform), got {getattr(r, name)}")
    limits = {"moffat_beta_range": (1.0, np.inf, False), "ellipticity_range": (0.0, 0.9, True),
              "halo_fraction_range": (0.0, 0.9, True), "halo_scale_range": (1.0, np.inf, True),
              "fwhm_gradient_range": (0.0, 0.5, True), "noise_correlation_range": (0.0, 0.7, True),
              "noise_variation_range": (0.0, 2.0, True), "background_rms_range": (0.0, np.inf, True),
              "dipole_shift_range": (0.0, 2.0, True), "saturated_rate_range": (0.0, np.inf, True),
              "residual_pixel_noise_range": (0.0, 1.0, True),
              "bad_column_rate_range": (0.0, np.inf, True), "masked_region_rate_range": (0.0, np.inf, True),
              "satellite_probability_range": (0.0, 1.0, True), "dead_border_probability_range": (0.0, 1.0, True),
              "transient_rate_range": (0.0, np.inf, True), "transient_negative_fraction_range": (0.0, 1.0, True)}
    for name, (lo, hi, closed) in limits.items():
        a, b = getattr(r, name)
        if a < lo or (a == lo and not closed) or b > hi:
            raise ValueError(f"sim.sky.{name}: must lie in {'[' if closed else '('}{lo}, {hi}], got {(a, b)}")
    if r.magnitude_sigma <= 0 or not r.magnitude_range[0] <= r.magnitude_mean <= r.magnitude_range[1]:
        raise ValueError(f"sim.sky.magnitude_mean: must lie in magnitude_range {r.magnitude_range} with sigma > 0, "
                         f"got {r.magnitude_mean}, {r.magnitude_sigma}")
    if isinstance(r.base_fraction, bool) or not isinstance(r.base_fraction, (int, float)) \
            or not 0.0 <= r.base_fraction < 1.0:
        raise ValueError(f"sim.sky.base_fraction: must be a share in [0, 1), got {r.base_fraction!r}")
    if r.star_magnitude_slope < 0:
        raise ValueError(f"sim.sky.star_magnitude_slope: must be >= 0, got {r.star_magnitude_slope}")


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """One draw spread evenly in log between the bounds."""
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def draw_sky(ranges: SkyRanges, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one image's sky: SimConfig knobs for every axis in ``ranges.axes``.

    Parameters
    ----------
    ranges : SkyRanges
        The family.
    rng : np.random.Generator
        The image's own generator; every value is drawn whatever the axes, so switching an axis
        off leaves the others' draws unchanged.

    Returns
    -------
    dict
        SimConfig field -> value. Per-image values are pinned (``fwhm`` with ``fwhm_range = (fwhm, fwhm)``,
        ``fwhm_scatter = 0`` ...) so the simulator's own per-image scatter does not move them.
    """
    uni = rng.uniform
    fwhm = _log_uniform(rng, ranges.fwhm_range)
    beta = float(uni(*ranges.moffat_beta_range))
    ell = float(uni(*ranges.ellipticity_range))
    rms = _log_uniform(rng, ranges.noise_rms_range)
    axes: dict[str, dict[str, Any]] = {
        "psf": {
            "psf_kind": ranges.psf_kinds[int(rng.integers(len(ranges.psf_kinds)))],
            "fwhm": fwhm, "fwhm_range": (fwhm, fwhm), "fwhm_scatter": 0.0,
            "moffat_beta_range": (beta, beta),
            "ellipticity_range": (ell, ell),
            "halo_fraction": float(uni(*ranges.halo_fraction_range)),
            "halo_scale": float(uni(*ranges.halo_scale_range)),
            "fwhm_gradient": float(uni(*ranges.fwhm_gradient_range)),
        },
        "background": {
            "noise_rms": rms, "noise_rms_range": (rms, rms), "noise_rms_scatter": 0.0,
            "noise_correlation": float(uni(*ranges.noise_correlation_range)),
            "noise_variation": float(uni(*ranges.noise_variation_range)),
            "background_rms": float(uni(*ranges.background_rms_range)),
        },
        "residuals": {
            "batch_residuals": True,
            "star_residual_rate": _log_uniform(rng, ranges.star_residual_rate_range),
            "star_magnitude_range": ranges.star_magnitude_range,
            "star_magnitude_slope": ranges.star_magnitude_slope,
            "residual_fraction_range": ranges.residual_fraction_range,
            "dipole_shift_range": ranges.dipole_shift_range,
            "saturated_rate": float(uni(*ranges.saturated_rate_range)),
        },
        "artifacts": {
            "cosmic_ray_rate": _log_uniform(rng, ranges.cosmic_ray_rate_range),
            "hot_pixel_rate": _log_uniform(rng, ranges.hot_pixel_rate_range),
            "bad_column_rate": float(uni(*ranges.bad_column_rate_range)),
            "satellite_probability": float(uni(*ranges.satellite_probability_range)),
            "masked_region_rate": float(uni(*ranges.masked_region_rate_range)),
            "dead_border_probability": float(uni(*ranges.dead_border_probability_range)),
        },
        "transients": {
            "transient_rate": float(uni(*ranges.transient_rate_range)),
            "transient_negative_fraction": float(uni(*ranges.transient_negative_fraction_range)),
        },
        "brightness": {
            "zero_point": float(uni(*ranges.zero_point_range)),
            "magnitude_mean": ranges.magnitude_mean,
            "magnitude_sigma": ranges.magnitude_sigma,
            "magnitude_range": ranges.magnitude_range,
        },
    }
    if ranges.residual_pixel_noise_range != (0.0, 0.0):  # drawn last, so the draws above stay as they were
        axes["residuals"]["residual_pixel_noise"] = float(uni(*ranges.residual_pixel_noise_range))
    out: dict[str, Any] = {}
    for axis in ranges.axes:
        out.update(axes[axis])
    return out
