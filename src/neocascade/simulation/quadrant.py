"""Assemble a ZTF-like difference-image quadrant: noise, asteroids, nuisances, masks, dead borders."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from neocascade.simulation import artifacts as art
from neocascade.simulation import fast_movers as fm
from neocascade.simulation.config import QUADRANT_SHAPE, SimConfig
from neocascade.simulation.noise import background_map, correlated_noise, rms_map
from neocascade.simulation.psf import PSFShape
from neocascade.simulation.sky import draw_sky
from neocascade.simulation.streaks import render_trail

TRUTH_COLUMNS = ("image", "x", "y", "magnitude", "length", "angle")

# Child streams of each image's SeedSequence, one per component, so that changing one component's
# rate leaves every other component of that image unchanged.
_STREAMS = ("conditions", "noise", "asteroids", "residuals", "saturated", "transients", "cosmic_rays",
            "hot_pixels", "bad_columns", "satellites", "masked", "borders", "sky", "psf", "background",
            "fast_movers", "satellite_shape")  # append only: a child's stream depends on its position


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
    return component_streams(np.random.SeedSequence([int(seed), int(file_index), int(image_index)]))


def component_streams(sequence: np.random.SeedSequence) -> dict[str, np.random.Generator]:
    """One independent generator per image component (noise, asteroids, cosmic rays, ...) spawned from ``sequence``."""
    children = sequence.spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def _scales(config: SimConfig) -> tuple[float, float]:
    """(area, side) of this image relative to a full quadrant."""
    area = config.shape[0] * config.shape[1] / (QUADRANT_SHAPE[0] * QUADRANT_SHAPE[1])
    return area, float(np.sqrt(area))


def _count(config: SimConfig, rate: float, rng: np.random.Generator) -> int:
    """How many of a component (``rate`` per full quadrant) this image holds: a Poisson draw from its stream."""
    return int(rng.poisson(rate * _scales(config)[0]))


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


def image_config(config: SimConfig, streams: dict[str, np.random.Generator]) -> SimConfig:
    """This image's knobs: ``config`` itself, or (``config.sky`` set) its sky family's draw from the ``sky`` stream;
    with ``sky.base_fraction`` > 0, that share of the images (one more draw of the stream) keeps ``config``'s own."""
    if config.sky is None:
        return config
    rng = streams["sky"]
    drawn = draw_sky(config.sky, rng)
    if config.sky.base_fraction > 0 and rng.random() < config.sky.base_fraction:
        return dataclasses.replace(config, sky=None)
    return dataclasses.replace(config, sky=None, **drawn)


def psf_shape(config: SimConfig, rng: np.random.Generator) -> PSFShape | None:
    """The image's PSF kind, ellipticity and FWHM gradient; None (and no draws) for the seed's round Moffat."""
    if config.psf_kind == "moffat" and config.ellipticity_range[1] == 0.0 and config.fwhm_gradient == 0.0:
        return None
    h, w = config.shape
    ellipticity, angle = rng.uniform(*config.ellipticity_range), rng.uniform(0.0, 180.0)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    slope = config.fwhm_gradient / np.hypot(0.5 * w, 0.5 * h)  # reaches fwhm_gradient at the far corner
    return PSFShape(kind=config.psf_kind, ellipticity=float(ellipticity), angle=float(angle),
                    halo_fraction=config.halo_fraction, halo_scale=config.halo_scale,
                    gradient=(float(slope * np.cos(direction)), float(slope * np.sin(direction))),
                    centre=(0.5 * (w - 1), 0.5 * (h - 1)))


def _image_setup(config: SimConfig, seed: int, file_index: int, image_index: int) -> tuple[dict, SimConfig, Conditions, object]:
    """Checked inputs, then one image's streams, its (sky-drawn) config, conditions and PSF shape."""
    if not isinstance(config, SimConfig):
        raise ValueError(f"config: must be a SimConfig, got {type(config).__name__}")
    _check_indices(seed, file_index, image_index)
    streams = _streams(seed, file_index, image_index)
    config = image_config(config, streams)
    return streams, config, _conditions(config, streams), psf_shape(config, streams["psf"])


def draw_conditions(config: SimConfig, *, seed: int, file_index: int, image_index: int) -> Conditions:
    """The observing conditions :func:`simulate_image` uses for this image (noise, PSF, dead border)."""
    _check_indices(seed, file_index, image_index)
    streams = _streams(seed, file_index, image_index)
    return _conditions(image_config(config, streams), streams)


def conditions_from(config: SimConfig, streams: dict[str, np.random.Generator]) -> Conditions:
    """Observing conditions drawn from :func:`component_streams` (for images simulated outside :func:`simulate_image`)."""
    return _conditions(config, streams)


def _draw_asteroids(config: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """(M, 5) columns x, y, magnitude, length, angle."""
    n = config.n_asteroids
    h, w = config.shape
    x = rng.uniform(0.0, w - 1.0, n)
    y = rng.uniform(0.0, h - 1.0, n)
    mag = draw_magnitudes(config, rng, n)
    fast = rng.random(n) < config.fast_fraction
    length = np.where(fast, rng.uniform(*config.fast_length_range, n), rng.uniform(0.0, config.slow_length_max, n))
    angle = rng.uniform(0.0, 180.0, n)
    return np.column_stack([x, y, mag, length, angle])


def draw_magnitudes(config: SimConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) asteroid magnitudes: the config's normal, truncated to ``magnitude_range`` by redrawing."""
    lo, hi = config.magnitude_range
    mag = rng.normal(config.magnitude_mean, config.magnitude_sigma, n)
    bad = (mag < lo) | (mag > hi)
    while bad.any():  # expected under one extra round
        mag[bad] = rng.normal(config.magnitude_mean, config.magnitude_sigma, int(bad.sum()))
        bad = (mag < lo) | (mag > hi)
    return mag


def _draw_fast_movers(config: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """The image's fast movers (rows of :func:`~neocascade.simulation.fast_movers.draw_fast_movers`), drawn first
    from the ``fast_movers`` stream: :func:`simulate_image` paints them, :func:`trail_models` models them."""
    return fm.draw_fast_movers(config.shape, rng=rng, n=_count(config, config.fast_mover_rate, rng),
                               length_range=config.fast_mover_length_range,
                               magnitude_range=config.fast_mover_magnitude_range)


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


def paint_stamps(image: np.ndarray, stamps: Iterable[art.Stamp]) -> None:
    """Add stamps to ``image`` in place, clipped at the edges (for images the caller just rendered)."""
    _paint(image, stamps)


def render_background(config: SimConfig, streams: dict[str, np.random.Generator], cond: Conditions) -> np.ndarray:
    """A new (H, W) float32 background: correlated noise under a smooth rms map, from the ``noise`` stream."""
    noise_rng = streams["noise"]
    rms = rms_map(config.shape, rng=noise_rng, rms=cond.noise_rms, variation=config.noise_variation,
                  grid=config.noise_grid)
    image = correlated_noise(config.shape, rng=noise_rng, correlation=config.noise_correlation, rms=rms)
    if config.background_rms > 0:
        image += background_map(config.shape, rng=streams["background"], rms=config.background_rms,
                                grid=config.background_grid)
    return image


def add_detector_artifacts(
    image: np.ndarray, config: SimConfig, streams: dict[str, np.random.Generator], cond: Conditions,
    masks: Iterable[art.Stamp] = (),
) -> None:
    """Finish a rendered image in place: cosmic rays, hot pixels, bad columns, satellites, then NaN masks
    (``masks`` first, e.g. saturated cores, then bad columns and masked regions) and the dead border."""
    shape = config.shape
    side = _scales(config)[1]
    rng = streams["cosmic_rays"]
    _add_pixels(image, art.cosmic_rays(shape, rng=rng, n=_count(config, config.cosmic_ray_rate, rng),
                                       dn_range=config.cosmic_ray_dn_range))
    rng = streams["hot_pixels"]
    _add_pixels(image, art.hot_pixels(shape, rng=rng, n=_count(config, config.hot_pixel_rate, rng),
                                      dn_range=config.hot_pixel_dn_range))
    rng = streams["bad_columns"]
    offsets, column_masks = art.bad_columns(shape, rng=rng, n=_count(config, config.bad_column_rate, rng),
                                            dn_range=config.bad_column_dn_range)
    _add_pixels(image, offsets)
    streak = art.satellites(shape, rng=streams["satellites"], probability=config.satellite_probability,
                            dn_range=config.satellite_dn_range, fwhm=cond.fwhm)
    if config.satellite_flare_probability > 0 or config.satellite_dash_probability > 0:
        streak = fm.shape_streak(streak, rng=streams["satellite_shape"],
                                 flare_probability=config.satellite_flare_probability,
                                 dash_probability=config.satellite_dash_probability)
    _add_pixels(image, streak)

    rng = streams["masked"]
    lo, hi = config.masked_region_size_range
    regions = art.masked_regions(shape, rng=rng, n=_count(config, config.masked_region_rate, rng),
                                 size_range=(lo * side, hi * side))
    _mask(image, [*masks, *column_masks, *regions])
    top, bottom, left, right = cond.dead_border
    h, w = shape
    image[:top] = 0.0
    image[h - bottom:] = 0.0
    image[:, :left] = 0.0
    image[:, w - right:] = 0.0


def _residual_stamps(config: SimConfig, streams: dict[str, np.random.Generator], cond: Conditions, psf: PSFShape | None, *,
                     stars: list | None = None) -> list[art.Stamp]:
    """The image's star-subtraction residuals from its ``residuals`` stream (one star at a time, or batched);
    ``stars`` (one star at a time only) receives each star's ``(x, y, magnitude)``."""
    rng = streams["residuals"]
    n = _count(config, config.star_residual_rate, rng)
    common = dict(rng=rng, n=n, fwhm=cond.fwhm, beta=cond.beta, zero_point=config.zero_point, gain=config.gain,
                  magnitude_range=config.star_magnitude_range, fraction_range=config.residual_fraction_range,
                  poisson=config.poisson, psf=psf)
    if config.batch_residuals:
        return art.star_residual_batch(config.shape, **common, shift_range=config.dipole_shift_range,
                                       magnitude_slope=config.star_magnitude_slope,
                                       pixel_noise=config.residual_pixel_noise)
    return art.star_residuals(config.shape, **common, stars=stars)


def _saturated(config: SimConfig, streams: dict[str, np.random.Generator], cond: Conditions, *,
               stars: list | None = None) -> tuple[list[art.Stamp], list[art.Stamp]]:
    """Halos and NaN masks of the image's saturated stars from its ``saturated`` stream; ``stars`` as above."""
    rng = streams["saturated"]
    return art.saturated_stars(config.shape, rng=rng, n=_count(config, config.saturated_rate, rng),
                               fwhm=cond.fwhm, beta=cond.beta, zero_point=config.zero_point,
                               magnitude_range=config.saturated_magnitude_range,
                               bleed_length_per_mag=config.bleed_length_per_mag * _scales(config)[1], stars=stars)


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
    streams, config, cond, psf = _image_setup(config, seed, file_index, image_index)
    shape = config.shape
    image = render_background(config, streams, cond)

    _paint(image, _residual_stamps(config, streams, cond, psf))
    halos, sat_masks = _saturated(config, streams, cond)
    _paint(image, halos)
    rng = streams["transients"]
    _paint(image, art.transients(
        shape, rng=rng, n=_count(config, config.transient_rate, rng), fwhm=cond.fwhm, beta=cond.beta,
        zero_point=config.zero_point, gain=config.gain, magnitude_range=config.transient_magnitude_range,
        negative_fraction=config.transient_negative_fraction, poisson=config.poisson, psf=psf))

    rng = streams["asteroids"]
    rows = _draw_asteroids(config, rng)
    flux = art.flux_of(rows[:, 2], config.zero_point)
    stamps = []
    for (x, y, _, length, angle), f in zip(rows, flux):
        stamp, row0, col0 = render_trail(x, y, length=length, angle=angle, fwhm=cond.fwhm, beta=cond.beta, psf=psf)
        data = stamp.astype(np.float64) * f
        if config.poisson:
            data = rng.poisson(data * config.gain) / config.gain
        stamps.append(art.Stamp(row0, col0, data.astype(np.float32)))
    _paint(image, stamps)
    if config.fast_mover_rate > 0:
        rng = streams["fast_movers"]
        fast = _draw_fast_movers(config, rng)
        _add_pixels(image, fm.fast_mover_pixels(shape, fast, rng=rng, zero_point=config.zero_point, gain=config.gain,
                                                poisson=config.poisson, fwhm=cond.fwhm, beta=cond.beta, psf=psf))
        rows = np.concatenate([rows, fast])  # after the ordinary asteroids, so their truth rows keep their order
    add_detector_artifacts(image, config, streams, cond, sat_masks)

    truth = np.column_stack([np.full(len(rows), float(image_index)), rows]).reshape(-1, 6)
    return image, truth.astype(np.float64)


def reference_stars(config: SimConfig, *, seed: int, file_index: int, image_index: int) -> np.ndarray:
    """The stars under an image's subtraction residuals and saturated cores: its reference catalogue.

    The residual and saturated-star streams of :func:`simulate_image` are drawn again (the image's other
    components are not simulated), so the catalogue is exactly the stars that left marks in that image.

    Returns
    -------
    (N, 3) float64
        Columns ``x, y, magnitude`` (px, 0-based, x = column; magnitude in the config's photometric system).
    """
    streams, config, cond, psf = _image_setup(config, seed, file_index, image_index)
    stars: list = []
    if config.batch_residuals:  # the batch draws its stars first: no stamp needs rendering
        rng = streams["residuals"]
        n = _count(config, config.star_residual_rate, rng)
        stars.extend(zip(*art.star_field(config.shape, rng=rng, n=n, magnitude_range=config.star_magnitude_range,
                                         magnitude_slope=config.star_magnitude_slope)))
    else:
        _residual_stamps(config, streams, cond, psf, stars=stars)
    _saturated(config, streams, cond, stars=stars)
    return np.asarray(stars, dtype=np.float64).reshape(-1, 3)


def transient_sources(config: SimConfig, *, seed: int, file_index: int, image_index: int) -> np.ndarray:
    """The real transients :func:`simulate_image` paints into this image (stationary point sources).

    Only the image's ``transients`` stream is drawn again, so the table matches the image exactly.

    Returns
    -------
    (N, 4) float64
        Columns ``x, y, magnitude, sign`` (px, 0-based, x = column; sign +1 brightened, -1 faded).
    """
    streams, config, _, _ = _image_setup(config, seed, file_index, image_index)
    rng = streams["transients"]
    n = _count(config, config.transient_rate, rng)
    return art.draw_transients(config.shape, rng=rng, n=n, magnitude_range=config.transient_magnitude_range,
                               negative_fraction=config.transient_negative_fraction)


def asteroid_peak_snr(config: SimConfig, *, seed: int, file_index: int, image_index: int) -> np.ndarray:
    """Peak SNR of each asteroid :func:`simulate_image` injects into this image, in truth order.

    Returns
    -------
    (M,) float64
        Noiseless peak DN of the asteroid's (trailed, PSF-convolved) stamp over the noise rms map at its
        centre pixel (0 where the rms is 0). Redraws only the streams it needs, so it costs a small
        fraction of simulating the image.
    """
    streams, config, cond, psf = _image_setup(config, seed, file_index, image_index)
    rms = rms_map(config.shape, rng=streams["noise"], rms=cond.noise_rms, variation=config.noise_variation,
                  grid=config.noise_grid)
    rows = _draw_asteroids(config, streams["asteroids"])
    flux = art.flux_of(rows[:, 2], config.zero_point)
    peaks = np.array([render_trail(x, y, length=length, angle=angle, fwhm=cond.fwhm, beta=cond.beta, psf=psf)[0].max()
                      for x, y, _, length, angle in rows], dtype=np.float64).reshape(-1) * flux
    r = np.clip(np.rint(rows[:, 1]).astype(np.int64), 0, config.shape[0] - 1)
    c = np.clip(np.rint(rows[:, 0]).astype(np.int64), 0, config.shape[1] - 1)
    noise = rms[r, c].astype(np.float64)
    return np.divide(peaks, noise, out=np.zeros_like(peaks), where=noise > 0)


def trail_models(config: SimConfig, *, seed: int, file_index: int,
                 image_index: int) -> tuple[list[art.Pixels], np.ndarray, float]:
    """Noiseless model of every asteroid of one image, as :func:`simulate_image` paints it before photon noise.

    Returns
    -------
    models : list of Pixels
        One per truth row, in the truth table's order (ordinary asteroids, then fast movers); pixels off the
        image dropped.
    rms : (H, W) float32
        The image's noise rms map.
    correlation : float
        Adjacent-pixel correlation of the noise. With ``rms`` it gives each model's matched-filter SNR.
    """
    streams, config, cond, psf = _image_setup(config, seed, file_index, image_index)
    shape = config.shape
    rms = rms_map(shape, rng=streams["noise"], rms=cond.noise_rms, variation=config.noise_variation,
                  grid=config.noise_grid)
    models = []
    for x, y, mag, length, angle in _draw_asteroids(config, streams["asteroids"]):
        models.append(fm.render_long_trail(shape, x=x, y=y, length=length, angle=angle,
                                           flux=float(art.flux_of(mag, config.zero_point)),
                                           fwhm=cond.fwhm, beta=cond.beta, psf=psf))
    if config.fast_mover_rate > 0:
        fast = _draw_fast_movers(config, streams["fast_movers"])
        models += [fm.render_long_trail(shape, x=x, y=y, length=length, angle=angle,
                                        flux=float(art.flux_of(mag, config.zero_point)),
                                        fwhm=cond.fwhm, beta=cond.beta, psf=psf)
                   for x, y, mag, length, angle in fast]
    return models, rms, float(config.noise_correlation)


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
