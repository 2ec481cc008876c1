"""Sky geometry for linking: the gnomonic (tangent-plane) projection around a field centre."""

from __future__ import annotations

import numpy as np

__all__ = ["field_centre", "tangent_plane", "from_tangent_plane", "position_angle", "image_footprint"]


def field_centre(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """Direction of the mean unit vector of sky positions, ``(ra0, dec0)`` in degrees.

    Parameters
    ----------
    ra, dec : (N,) float arrays
        Degrees; N >= 1.

    Notes
    -----
    The mean of unit vectors is safe across RA = 0/360, unlike the mean of RA.
    """
    r, d = np.deg2rad(np.asarray(ra, dtype=np.float64)), np.deg2rad(np.asarray(dec, dtype=np.float64))
    if r.size == 0:
        raise ValueError("ra, dec: need at least one position for a field centre")
    v = np.array([np.sum(np.cos(d) * np.cos(r)), np.sum(np.cos(d) * np.sin(r)), np.sum(np.sin(d))])
    norm = np.linalg.norm(v)
    if norm == 0:
        raise ValueError("ra, dec: positions cancel out, the field has no centre")
    v /= norm
    return float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0), float(np.rad2deg(np.arcsin(np.clip(v[2], -1, 1))))


def tangent_plane(ra: np.ndarray, dec: np.ndarray, *, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection of sky positions around ``(ra0, dec0)``.

    Parameters
    ----------
    ra, dec : (N,) float arrays
        Degrees.
    ra0, dec0 : float
        Tangent point in degrees.

    Returns
    -------
    xi, eta : (N,) float64 arrays
        Standard coordinates in degrees: ``xi`` towards east (increasing RA), ``eta`` towards north.

    Notes
    -----
    Positions 90 deg or more from the tangent point have no projection and give NaN.
    """
    r = np.deg2rad(np.asarray(ra, dtype=np.float64) - ra0)
    d = np.deg2rad(np.asarray(dec, dtype=np.float64))
    d0 = np.deg2rad(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(cos_c > 0, 1.0 / cos_c, np.nan)
    xi = np.cos(d) * np.sin(r) * inv
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(r)) * inv
    return np.rad2deg(xi), np.rad2deg(eta)


def from_tangent_plane(xi: np.ndarray, eta: np.ndarray, *, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`tangent_plane`: standard coordinates (deg) to ``(ra, dec)`` in degrees, RA in [0, 360)."""
    x = np.deg2rad(np.asarray(xi, dtype=np.float64))
    y = np.deg2rad(np.asarray(eta, dtype=np.float64))
    d0 = np.deg2rad(dec0)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = np.deg2rad(ra0) + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec)


def position_angle(dxi: np.ndarray, deta: np.ndarray) -> np.ndarray:
    """Direction of a tangent-plane motion in degrees east of north, in [0, 360)."""
    return np.rad2deg(np.arctan2(np.asarray(dxi, dtype=np.float64), np.asarray(deta, dtype=np.float64))) % 360.0


def image_footprint(image: np.ndarray, *, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the box of rows and columns holding data, shrunk by ``margin`` px.

    Parameters
    ----------
    image : (H, W) array
        NaN or exact zero marks pixels without data (masked, or outside this visit's pointing).
    margin : float
        Px the detector cannot use at the data's edge (half a cutout).

    Returns
    -------
    x, y : (4,) float arrays
        Corners (0-based pixels, x = column) in order around the box; a box with no data left has
        all four corners at the image centre (it contains nothing).
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image: expected a 2-D array, got shape {arr.shape}")
    valid = np.isfinite(arr) & (arr != 0)
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if rows.size == 0 or rows[-1] - rows[0] < 2 * margin or cols[-1] - cols[0] < 2 * margin:
        cy, cx = (arr.shape[0] - 1) / 2, (arr.shape[1] - 1) / 2
        return np.full(4, cx), np.full(4, cy)
    x0, x1 = cols[0] + margin, cols[-1] - margin
    y0, y1 = rows[0] + margin, rows[-1] - margin
    return np.array([x0, x1, x1, x0], dtype=np.float64), np.array([y0, y0, y1, y1], dtype=np.float64)
