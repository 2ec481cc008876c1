"""Trailed sources: asteroids (short PSF trails) and satellite or airplane streaks (long lines)."""

from __future__ import annotations

import numpy as np

from neocascade.simulation.psf import PSFShape, local_fwhm, moffat, psf_profile, stamp_radius

TRAIL_STEP = 0.2  # px between PSF samples along a trail: finer than any pixel-scale structure


def render_trail(
    x: float, y: float, *, length: float, angle: float, fwhm: float, beta: float, psf: PSFShape | None = None
) -> tuple[np.ndarray, int, int]:
    """Render a unit-flux trailed PSF: a Moffat convolved with a line segment.

    Parameters
    ----------
    x, y : float
        Trail centre in px (x column, y row).
    length : float
        Trail length in px (0 gives a point source).
    angle : float
        Direction in degrees from +x towards +y (rows), in [0, 180).
    fwhm, beta : float
        Moffat FWHM in px and wing index.
    psf : PSFShape, optional
        Another PSF kind, ellipticity or FWHM gradient (taken at the trail centre); None: round Moffat.

    Returns
    -------
    stamp : (S, S) float32
        Noiseless trail summing to exactly 1.
    row0, col0 : int
        Image position of the stamp's top-left pixel (may be negative near the edge).
    """
    if length < 0 or fwhm <= 0 or beta <= 1:
        raise ValueError(f"trail: need length >= 0, fwhm > 0, beta > 1, got {length}, {fwhm}, {beta}")
    radius = stamp_radius(fwhm, extent=length)
    n = max(1, int(np.ceil(length / TRAIL_STEP)) + 1)
    t = np.linspace(-0.5 * length, 0.5 * length, n) if n > 1 else np.zeros(1)
    theta = np.deg2rad(angle)
    sx = x + t * np.cos(theta)
    sy = y + t * np.sin(theta)
    col0 = int(np.rint(x)) - radius
    row0 = int(np.rint(y)) - radius
    grid = np.arange(2 * radius + 1, dtype=np.float64)
    dx = (col0 + grid)[None, None, :] - sx[:, None, None]
    dy = (row0 + grid)[None, :, None] - sy[:, None, None]
    if psf is None:
        stamp = moffat(dx, dy, fwhm=fwhm, beta=beta).sum(axis=0)
    else:
        stamp = psf_profile(dx, dy, fwhm=float(local_fwhm(fwhm, x, y, psf)), beta=beta, shape=psf).sum(axis=0)
    stamp /= stamp.sum()
    return stamp.astype(np.float32), row0, col0


def line_pixels(
    shape: tuple[int, int], *, x: float, y: float, angle: float, peak: float, fwhm: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of a straight streak crossing the whole image, with a Gaussian cross-section.

    Parameters
    ----------
    shape : (H, W)
        Image shape.
    x, y : float
        A point on the line in px.
    angle : float
        Direction in degrees from +x towards +y.
    peak : float
        DN at the streak's centre line.
    fwhm : float
        Cross-section FWHM in px.

    Returns
    -------
    rows, cols : (N,) int arrays
        Unique pixels within 3 FWHM of the line (only inside the image).
    values : (N,) float32
        DN to add at those pixels.

    Notes
    -----
    Pixels are enumerated along the streak's major axis (a band of 2 * 3 FWHM pixels per column or
    row), so the cost is O(length x width), never O(H x W).
    """
    h, w = int(shape[0]), int(shape[1])
    theta = np.deg2rad(angle)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    half = int(np.ceil(3.0 * fwhm / max(abs(cos_t), abs(sin_t))))
    offsets = np.arange(-half, half + 1)
    if abs(cos_t) >= abs(sin_t):  # mostly horizontal: one band of rows per column
        cols = np.arange(w)
        centre = y + (cols - x) * sin_t / cos_t
        rr = np.rint(centre).astype(np.int64)[:, None] + offsets[None, :]
        cc = np.broadcast_to(cols[:, None], rr.shape)
    else:
        rows = np.arange(h)
        centre = x + (rows - y) * cos_t / sin_t
        cc = np.rint(centre).astype(np.int64)[:, None] + offsets[None, :]
        rr = np.broadcast_to(rows[:, None], cc.shape)
    keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    rr, cc = rr[keep], cc[keep]
    # perpendicular distance of each pixel centre to the line
    dist = np.abs(-(cc - x) * sin_t + (rr - y) * cos_t)
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    values = (peak * np.exp(-0.5 * (dist / sigma) ** 2)).astype(np.float32)
    return rr, cc, values
