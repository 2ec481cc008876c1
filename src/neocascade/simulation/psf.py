"""Moffat point-spread function: rendering small stamps and measuring FWHM."""

from __future__ import annotations

import numpy as np
from scipy import optimize


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Core radius alpha of a Moffat profile with the given FWHM (px) and wing index beta."""
    return float(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat(dx: np.ndarray, dy: np.ndarray, *, fwhm: float, beta: float) -> np.ndarray:
    """Unnormalised Moffat profile ``(1 + r^2 / alpha^2)^-beta`` at offsets ``dx, dy`` (px); 1 at r = 0."""
    alpha = moffat_alpha(fwhm, beta)
    return (1.0 + (dx * dx + dy * dy) / (alpha * alpha)) ** (-beta)


def stamp_radius(fwhm: float, *, extent: float = 0.0) -> int:
    """Half-size in px of a stamp that holds >99.5% of a Moffat source's flux, plus ``extent`` (a trail)."""
    return int(np.ceil(max(4.0 * fwhm, 7.0) + 0.5 * extent))


def render_points(
    x: np.ndarray, y: np.ndarray, *, fwhm: float, beta: float, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render unit-flux Moffat sources, one stamp each.

    Parameters
    ----------
    x, y : (N,) float arrays
        Source centres in px (x column, y row).
    fwhm, beta : float
        Moffat FWHM in px and wing index.
    radius : int
        Stamp half-size; stamps are ``2 * radius + 1`` px square.

    Returns
    -------
    stamps : (N, S, S) float32
        Each stamp sums to exactly 1 (the profile is sampled at pixel centres, then normalised).
    row0, col0 : (N,) int arrays
        Image position of each stamp's top-left pixel; stamps may overhang the image edge.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    col0 = np.rint(x).astype(np.int64) - radius
    row0 = np.rint(y).astype(np.int64) - radius
    grid = np.arange(2 * radius + 1, dtype=np.float64)
    dx = (col0 - x)[:, None, None] + grid[None, None, :]
    dy = (row0 - y)[:, None, None] + grid[None, :, None]
    stamps = moffat(dx, dy, fwhm=fwhm, beta=beta)
    stamps /= stamps.sum(axis=(1, 2), keepdims=True)
    return stamps.astype(np.float32), row0, col0


def measure_fwhm(stamp: np.ndarray, *, beta: float | None = None) -> float:
    """Fit a circular profile plus constant background to a stamp and return its FWHM in px.

    Parameters
    ----------
    stamp : (H, W) float array
        A cutout with one source near its centre; NaN pixels are ignored.
    beta : float, optional
        Fit a Moffat with this fixed wing index; by default a Gaussian (what survey pipelines quote).

    Returns
    -------
    float
        The fitted FWHM, or NaN when the fit fails or the stamp has fewer than 9 finite pixels.
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    if stamp.ndim != 2:
        raise ValueError(f"stamp: must be a 2-D array, got shape {stamp.shape}")
    rows, cols = np.indices(stamp.shape)
    ok = np.isfinite(stamp)
    if ok.sum() < 9:
        return float("nan")
    z, yy, xx = stamp[ok], rows[ok].astype(np.float64), cols[ok].astype(np.float64)
    peak = np.unravel_index(np.nanargmax(stamp), stamp.shape)
    bg0 = float(np.median(z))
    p0 = [float(stamp[peak]) - bg0, float(peak[1]), float(peak[0]), 2.0, bg0]

    def residual(p: np.ndarray) -> np.ndarray:
        amp, x0, y0, fwhm, bg = p
        if beta is None:
            model = np.exp(-4.0 * np.log(2.0) * ((xx - x0) ** 2 + (yy - y0) ** 2) / fwhm**2)
        else:
            model = moffat(xx - x0, yy - y0, fwhm=fwhm, beta=beta)
        return amp * model + bg - z

    lower = [-np.inf, -np.inf, -np.inf, 0.3, -np.inf]
    upper = [np.inf, np.inf, np.inf, 30.0, np.inf]
    try:
        fit = optimize.least_squares(residual, p0, bounds=(lower, upper))
    except ValueError:
        return float("nan")
    return float(fit.x[3]) if fit.success else float("nan")
