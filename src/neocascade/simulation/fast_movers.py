"""Fast movers (near-Earth objects) with trails of tens to hundreds of px, and the long-streak confusers.

A fast mover's flux is spread evenly along its trail; a trail may leave the image (the flux outside is
lost) and cross masked pixels (masks are applied after painting). Satellites and aircraft cross the
whole quadrant; some flare (a glint brightening part of the streak) or are dashed (a tumbling or
blinking body). Every function draws from the given generator and returns what to paint.
"""

from __future__ import annotations

import numpy as np

from neocascade.simulation.artifacts import Pixels, flux_of
from neocascade.simulation.psf import PSFShape, local_fwhm, moffat, psf_profile, stamp_radius
from neocascade.simulation.streaks import TRAIL_STEP

__all__ = ["draw_fast_movers", "fast_mover_pixels", "render_long_trail", "satellite_line", "shape_streak"]


def draw_fast_movers(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    n: int,
    length_range: tuple[float, float],
    magnitude_range: tuple[float, float],
) -> np.ndarray:
    """Draw fast movers: centre uniform over the image, length and total magnitude uniform, any angle.

    Returns
    -------
    (n, 5) float64
        Columns x, y (trail centre, px), total magnitude, length (px), angle (degrees from +x to +y, [0, 180)),
        as the simulator's truth rows.
    """
    h, w = shape
    x = rng.uniform(0.0, w - 1.0, n)
    y = rng.uniform(0.0, h - 1.0, n)
    mag = rng.uniform(*magnitude_range, n)
    length = rng.uniform(*length_range, n)
    angle = rng.uniform(0.0, 180.0, n)
    return np.column_stack([x, y, mag, length, angle]).reshape(-1, 5)


def render_long_trail(
    shape: tuple[int, int],
    *,
    x: float,
    y: float,
    length: float,
    angle: float,
    flux: float,
    fwhm: float,
    beta: float,
    psf: PSFShape | None = None,
) -> Pixels:
    """Render a trail of any length as sparse pixels: the PSF swept evenly along the segment.

    Parameters
    ----------
    shape : (H, W)
        Image shape; pixels outside it are dropped (their flux is lost, as for a trail leaving the CCD).
    x, y : float
        Trail centre in px (x column, y row).
    length, angle : float
        Length in px (>= 0) and direction in degrees from +x towards +y.
    flux : float
        Total DN of the whole trail, inside and outside the image.
    fwhm, beta : float
        PSF FWHM (px) and Moffat wing index.
    psf : PSFShape, optional
        Another PSF kind, ellipticity or FWHM gradient (taken at the trail centre); None: round Moffat.

    Returns
    -------
    Pixels
        Unique in-image pixels and their noiseless DN.

    Notes
    -----
    The cost is (samples along the trail) x (PSF stamp area), e.g. 1,500 x 19 x 19 for 300 px at
    FWHM 2.2, never the bounding box of the trail, so a 300 px diagonal trail stays cheap.
    """
    if length < 0 or fwhm <= 0 or beta <= 1:
        raise ValueError(f"trail: need length >= 0, fwhm > 0, beta > 1, got {length}, {fwhm}, {beta}")
    radius = stamp_radius(fwhm)
    n = max(1, int(np.ceil(length / TRAIL_STEP)) + 1)
    t = np.linspace(-0.5 * length, 0.5 * length, n) if n > 1 else np.zeros(1)
    theta = np.deg2rad(angle)
    sx, sy = x + t * np.cos(theta), y + t * np.sin(theta)
    offsets = np.arange(-radius, radius + 1)
    cols = np.rint(sx).astype(np.int64)[:, None, None] + offsets[None, None, :]
    rows = np.rint(sy).astype(np.int64)[:, None, None] + offsets[None, :, None]
    dx, dy = cols - sx[:, None, None], rows - sy[:, None, None]
    if psf is None:
        values = moffat(dx, dy, fwhm=fwhm, beta=beta)
    else:
        values = psf_profile(dx, dy, fwhm=float(local_fwhm(fwhm, x, y, psf)), beta=beta, shape=psf)
    values = values * (flux / values.sum())
    rows, cols = np.broadcast_arrays(rows, cols)
    h, w = shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = rows[inside] * w + cols[inside]
    unique, inverse = np.unique(index, return_inverse=True)
    summed = np.bincount(inverse, weights=values[inside], minlength=unique.size)
    return Pixels(unique // w, unique % w, summed.astype(np.float32))


def fast_mover_pixels(
    shape: tuple[int, int],
    rows: np.ndarray,
    *,
    rng: np.random.Generator,
    zero_point: float,
    gain: float,
    poisson: bool,
    fwhm: float,
    beta: float,
    psf: PSFShape | None = None,
) -> Pixels:
    """All fast movers of an image (rows of :func:`draw_fast_movers`) as sparse pixels, with photon noise."""
    parts = [render_long_trail(shape, x=x, y=y, length=length, angle=angle, flux=float(flux_of(mag, zero_point)),
                               fwhm=fwhm, beta=beta, psf=psf) for x, y, mag, length, angle in rows]
    if not parts:
        return Pixels(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    r = np.concatenate([p.rows for p in parts])
    c = np.concatenate([p.cols for p in parts])
    v = np.concatenate([p.values for p in parts]).astype(np.float64)
    if poisson:
        v = rng.poisson(v * gain) / gain
    return Pixels(r, c, v.astype(np.float32))


def shape_streak(
    pixels: Pixels,
    *,
    rng: np.random.Generator,
    flare_probability: float,
    dash_probability: float,
    flare_gain_range: tuple[float, float] = (2.0, 10.0),
    dash_period_range: tuple[float, float] = (20.0, 200.0),
) -> Pixels:
    """Make a satellite streak flare (a glint) or dashed (blinking), with the given probabilities.

    Parameters
    ----------
    pixels : Pixels
        A straight streak (:func:`~neocascade.simulation.streaks.line_pixels`); may be empty.
    rng : np.random.Generator
        Source of randomness (three uniform draws, then the shape's own).
    flare_probability, dash_probability : float
        Chances that the streak brightens by ``flare_gain_range`` times over a Gaussian stretch of
        20-300 px, and that it is cut into on/off dashes with a period in ``dash_period_range`` px.

    Returns
    -------
    Pixels
        The same pixels with scaled values.
    """
    flare, dash, phase = rng.random(), rng.random(), rng.random()
    if pixels.rows.size < 2 or (flare >= flare_probability and dash >= dash_probability):
        return pixels
    r, c = pixels.rows.astype(np.float64), pixels.cols.astype(np.float64)
    cov = np.cov(np.vstack([c - c.mean(), r - r.mean()]))
    direction = np.linalg.eigh(cov)[1][:, -1]
    t = (c - c.mean()) * direction[0] + (r - r.mean()) * direction[1]
    scale = np.ones_like(t)
    if flare < flare_probability:
        centre = rng.uniform(t.min(), t.max())
        width = rng.uniform(20.0, 300.0)
        scale *= 1.0 + (rng.uniform(*flare_gain_range) - 1.0) * np.exp(-0.5 * ((t - centre) / width) ** 2)
    if dash < dash_probability:
        period = rng.uniform(*dash_period_range)
        scale *= (np.floor(t / period + phase) % 2 == 0)
    return Pixels(pixels.rows, pixels.cols, (pixels.values * scale).astype(np.float32))


def satellite_line(config, *, seed: int, file_index: int, image_index: int) -> tuple[float, float, float] | None:
    """The satellite streak :func:`~neocascade.simulation.quadrant.simulate_image` paints in this image, or None.

    Returns
    -------
    (x, y, angle) or None
        A point on the streak (px) and its direction (deg from +x to +y), redrawn from the image's own
        ``satellites`` stream in the order :func:`~neocascade.simulation.artifacts.satellites` draws them.
    """
    from neocascade.simulation.quadrant import _check_indices, _streams, image_config

    _check_indices(seed, file_index, image_index)
    streams = _streams(seed, file_index, image_index)
    config = image_config(config, streams)
    rng = streams["satellites"]
    if rng.random() >= config.satellite_probability:
        return None
    h, w = config.shape
    x, y, angle = rng.uniform(0, w - 1), rng.uniform(0, h - 1), rng.uniform(0, 180)
    return float(x), float(y), float(angle)
