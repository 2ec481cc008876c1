"""Assemble a ZTF-like difference-image quadrant: noise, asteroids, nuisances, masks, dead borders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from neocascade.simulation import artifacts as art
from neocascade.simulation.config import QUADRANT_SHAPE, SimConfig
from neocascade.simulation.noise import correlated_noise, rms_map
from neocascade.simulation.streaks import render_trail

TRUTH_COLUMNS = ("image", "x", "y", "magnitude", "length", "angle")

# Child streams of each image's SeedSequence, one per component, so that changing one component's
# rate leaves every other component of that image unchanged.
_STREAMS = ("conditions", "noise", "asteroids", "residuals", "saturated", "transients", "cosmic_rays",
            "hot_pixels", "bad_columns", "satellites", "masked", "borders")


@dataclass(frozen=True)
class Conditions:
    """Per-image observing conditions, drawn before anything is rendered."""

    noise_rms: float  # median of the noise rms map, DN
    fwhm: float  # PSF FWHM, px
    beta: float  # Moffat wing index
    dead_border: tuple[int, int, int, int]  # zero-valued widths in px: top, bottom, left, right


def _check_indices(seed: int, file_index: int, image_index: int) -> None:
    """Refuse negative or non-integer seeds and indices (they would silently alias other images)."""
    for name, value in (("seed", seed), ("file_index", file_index), ("image_index", image_index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: must be a non-negative integer, got {value!r}")


def _streams(seed: int, file_index: int, image_index: int) -> dict[str, np.random.Generator]:
    """Independent generators for each component of one image."""
    children = np.random.SeedSequence([int(seed), int(file_index), int(image_index)]).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def _scales(config: SimConfig) -> tuple[float, float]:
    """(area, side) of this image relative to a full quadrant."""
    area = config.shape[0] * config.shape[1] / (QUADRANT_SHAPE[0] * QUADRANT_SHAPE[1])
    return area, float(np.sqrt(area))


def _conditions(config: SimConfig, streams: dict[str, np.random.Generator]) -> Conditions:
    """Per-image noise, PSF and dead border, from their own streams."""
    rng = streams["conditions"]
    rms = float(np.clip(config.noise_rms * np.exp(config.noise_rms_scatter * rng.standard_normal()),
                        *config.noise_rms_range))
    fwhm = float(np.clip(config.fwhm * np.exp(config.fwhm_scatter * rng.standard_normal()), *config.fwhm_range))
    beta = float(rng.uniform(*config.moffat_beta_range))
    _, side = _scales(config)
    lo, hi = config.dead_border_width_range
    border = art.dead_borders(rng=streams["borders"], probability=config.dead_border_probability,
                              width_range=(lo * side, hi * side))
    return Conditions(noise_rms=rms, fwhm=fwhm, beta=beta, dead_border=border)


def draw_conditions(config: SimConfig, *, seed: int, file_index: int, image_index: int) -> Conditions:
    """The observing conditions :func:`simulate_image` uses for this image (noise, PSF, dead border)."""
    _check_indices(seed, file_index, image_index)
    return _conditions(config, _streams(seed, file_index, image_index))


def _draw_asteroids(config: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """(M, 5) columns x, y, magnitude, length, angle."""
    n = config.n_asteroids
    h, w = config.shape
    x = rng.uniform(0.0, w - 1.0, n)
    y = rng.uniform(0.0, h - 1.0, n)
    lo, hi = config.magnitude_range
    mag = rng.normal(config.magnitude_mean, config.magnitude_sigma, n)
    bad = (mag < lo) | (mag > hi)
    while bad.any():  # truncated normal by redrawing; expected under one extra round
        mag[bad] = rng.normal(config.magnitude_mean, config.magnitude_sigma, int(bad.sum()))
        bad = (mag < lo) | (mag > hi)
    fast = rng.random(n) < config.fast_fraction
    length = np.where(fast, rng.uniform(*config.fast_length_range, n), rng.uniform(0.0, config.slow_length_max, n))
    angle = rng.uniform(0.0, 180.0, n)
    return np.column_stack([x, y, mag, length, angle])


def _overlap(shape: tuple[int, int], row0: int, col0: int, stamp: np.ndarray) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Image and stamp slices where a stamp placed at (row0, col0) overlaps the image; None if nowhere."""
    h, w = shape
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + stamp.shape[0], h), min(col0 + stamp.shape[1], w)
    if r0 >= r1 or c0 >= c1:
        return None
    return (slice(r0, r1), slice(c0, c1)), (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))


def _paint(image: np.ndarray, stamps: Iterable[art.Stamp]) -> None:
    """Add stamps to ``image`` in place, clipped at the edges."""
    for row0, col0, data in stamps:
        where = _overlap(image.shape, row0, col0, data)
        if where is not None:
            image[where[0]] += data[where[1]]


def _mask(image: np.ndarray, masks: Iterable[art.Stamp]) -> None:
    """Set the True pixels of boolean stamps to NaN in place, clipped at the edges."""
    for row0, col0, data in masks:
        where = _overlap(image.shape, row0, col0, data)
        if where is not None:
            view = image[where[0]]
            view[data[where[1]]] = np.nan


def _add_pixels(image: np.ndarray, pixels: art.Pixels) -> None:
    """Add sparse pixels in place; repeated indices accumulate."""
    if pixels.rows.size:
        np.add.at(image, (pixels.rows, pixels.cols), pixels.values)


def simulate_image(config: SimConfig, *, seed: int, file_index: int, image_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one ZTF-like r-band difference-image quadrant with injected asteroids.

    Parameters
    ----------
    config : SimConfig
        Simulator knobs, including ``shape`` and ``n_asteroids``.
    seed, file_index, image_index : int
        Non-negative; together they seed ``np.random.SeedSequence([seed, file_index, image_index])``,
        so each image is regenerated alone and identically.

    Returns
    -------
    image : (H, W) float32
        Difference image in DN: correlated noise, asteroids and nuisances; masked pixels are NaN and
        dead borders exactly 0.0.
    truth : (M, 6) float64
        Columns ``image, x, y, magnitude, length, angle``: ``image == image_index``; x (column) and
        y (row) of the trail centre, 0-based; magnitude with the config's zero point; trail length in
        px; angle in degrees from +x towards +y, in [0, 180).

    Notes
    -----
    Asteroids are placed uniformly over the whole image, so some land on masked pixels or dead
    borders; they stay in the truth (the cannot-be-seen share the method is measured against).
    """
    if not isinstance(config, SimConfig):
        raise ValueError(f"config: must be a SimConfig, got {type(config).__name__}")
    _check_indices(seed, file_index, image_index)
    streams = _streams(seed, file_index, image_index)
    cond = _conditions(config, streams)
    shape = config.shape
    area, side = _scales(config)

    def count(rate: float, rng: np.random.Generator) -> int:
        return int(rng.poisson(rate * area))

    noise_rng = streams["noise"]
    rms = rms_map(shape, rng=noise_rng, rms=cond.noise_rms, variation=config.noise_variation, grid=config.noise_grid)
    image = correlated_noise(shape, rng=noise_rng, correlation=config.noise_correlation, rms=rms)

    rng = streams["residuals"]
    _paint(image, art.star_residuals(
        shape, rng=rng, n=count(config.star_residual_rate, rng), fwhm=cond.fwhm, beta=cond.beta,
        zero_point=config.zero_point, gain=config.gain, magnitude_range=config.star_magnitude_range,
        fraction_range=config.residual_fraction_range, poisson=config.poisson))
    rng = streams["saturated"]
    halos, sat_masks = art.saturated_stars(
        shape, rng=rng, n=count(config.saturated_rate, rng), fwhm=cond.fwhm, beta=cond.beta,
        zero_point=config.zero_point, magnitude_range=config.saturated_magnitude_range,
        bleed_length_per_mag=config.bleed_length_per_mag * side)
    _paint(image, halos)
    rng = streams["transients"]
    _paint(image, art.transients(
        shape, rng=rng, n=count(config.transient_rate, rng), fwhm=cond.fwhm, beta=cond.beta,
        zero_point=config.zero_point, gain=config.gain, magnitude_range=config.transient_magnitude_range,
        negative_fraction=config.transient_negative_fraction, poisson=config.poisson))

    rng = streams["asteroids"]
    rows = _draw_asteroids(config, rng)
    flux = art.flux_of(rows[:, 2], config.zero_point)
    stamps = []
    for (x, y, _, length, angle), f in zip(rows, flux):
        stamp, row0, col0 = render_trail(x, y, length=length, angle=angle, fwhm=cond.fwhm, beta=cond.beta)
        data = stamp.astype(np.float64) * f
        if config.poisson:
            data = rng.poisson(data * config.gain) / config.gain
        stamps.append(art.Stamp(row0, col0, data.astype(np.float32)))
    _paint(image, stamps)

    rng = streams["cosmic_rays"]
    _add_pixels(image, art.cosmic_rays(shape, rng=rng, n=count(config.cosmic_ray_rate, rng),
                                       dn_range=config.cosmic_ray_dn_range))
    rng = streams["hot_pixels"]
    _add_pixels(image, art.hot_pixels(shape, rng=rng, n=count(config.hot_pixel_rate, rng),
                                      dn_range=config.hot_pixel_dn_range))
    rng = streams["bad_columns"]
    offsets, column_masks = art.bad_columns(shape, rng=rng, n=count(config.bad_column_rate, rng),
                                            dn_range=config.bad_column_dn_range)
    _add_pixels(image, offsets)
    _add_pixels(image, art.satellites(shape, rng=streams["satellites"], probability=config.satellite_probability,
                                      dn_range=config.satellite_dn_range, fwhm=cond.fwhm))

    rng = streams["masked"]
    lo, hi = config.masked_region_size_range
    regions = art.masked_regions(shape, rng=rng, n=count(config.masked_region_rate, rng),
                                 size_range=(lo * side, hi * side))
    _mask(image, [*sat_masks, *column_masks, *regions])
    top, bottom, left, right = cond.dead_border
    h, w = shape
    image[:top] = 0.0
    image[h - bottom:] = 0.0
    image[:, :left] = 0.0
    image[:, w - right:] = 0.0

    truth = np.column_stack([np.full(len(rows), float(image_index)), rows]).reshape(-1, 6)
    return image, truth.astype(np.float64)


def simulate_file(
    config: SimConfig, *, seed: int, file_index: int, n_images: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate ``n_images`` quadrants of one file, image by image.

    Parameters
    ----------
    config : SimConfig
        Simulator knobs.
    seed, file_index : int
        Non-negative; image ``i`` equals ``simulate_image(config, seed=seed, file_index=file_index,
        image_index=i)``.
    n_images : int
        Images in the file (>= 0).
    out : (n_images, H, W) float32 array, optional
        Preallocated destination (e.g. ``np.lib.format.open_memmap``), filled and returned, so a
        large file never needs a second copy in memory.

    Returns
    -------
    images : (N, H, W) float32
    truth : (M, 6) float64
        Rows of all images, in image order.
    """
    _check_indices(seed, file_index, 0)
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 0:
        raise ValueError(f"n_images: must be a non-negative integer, got {n_images!r}")
    shape = (int(n_images), *config.shape)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out: must be float32 with shape {shape}, got {out.dtype} {out.shape}")
    truths = [np.zeros((0, 6))]
    for i in range(int(n_images)):
        out[i], truth = simulate_image(config, seed=seed, file_index=file_index, image_index=i)
        truths.append(truth)
    return out, np.concatenate(truths, axis=0)
