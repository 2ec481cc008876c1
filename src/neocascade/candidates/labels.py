"""Label candidates against the injected asteroids: near a trail's centre, or near any part of it."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["match_centres", "match_trails", "segment_distance"]


def match_centres(
    rows: np.ndarray, cols: np.ndarray, truth_xy: np.ndarray, *, radius: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Label each candidate by its distance to the nearest asteroid centre (the seed's rule).

    Parameters
    ----------
    rows, cols : (N,) integer or real arrays
        Candidate pixels (y = row, x = col).
    truth_xy : (M, 2) real array
        Asteroid centres as (x, y) in px.
    radius : float
        A candidate is positive when its nearest centre is at most ``radius`` px away (≥ 0).

    Returns
    -------
    label : (N,) bool array
    matched : (N,) int64 array
        Row of ``truth_xy`` of the nearest centre for positives, -1 for negatives.

    Notes
    -----
    Distances equal to ``radius`` count as matches. With M = 0 every candidate is negative.
    """
    x, y = _check_points(rows, cols)
    truth = np.asarray(truth_xy, dtype=np.float64)
    if truth.ndim != 2 or truth.shape[1] != 2:
        raise ValueError(f"truth_xy: must have shape (M, 2) [x, y], got {truth.shape}")
    if not np.isfinite(truth).all():
        raise ValueError("truth_xy: must be finite")
    _check_radius(radius)
    return _match_centres(x, y, truth, float(radius))


def match_trails(
    rows: np.ndarray, cols: np.ndarray, truth: np.ndarray, *, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Label each candidate by its distance to the nearest asteroid trail segment.

    Parameters
    ----------
    rows, cols : (N,) integer or real arrays
        Candidate pixels (y = row, x = col).
    truth : (M, 6) or (M, 4) real array
        Either the canonical truth table, columns ``image, x, y, magnitude, length, angle``, or
        just ``x, y, length, angle``. A trail is the segment ``centre ± length/2 · (cos a, sin a)``
        in (x, y), with ``length`` in px and the angle ``a`` in degrees from +x towards +y (rows).
    radius : float
        A candidate is positive when the nearest trail segment is at most ``radius`` px away.

    Returns
    -------
    label : (N,) bool array
    matched : (N,) int64 array
        Row of ``truth`` of the nearest trail for positives, -1 for negatives.

    Notes
    -----
    A KD-tree on the trail centres keeps only pairs within ``radius + max(length) / 2``; the exact
    point-to-segment distance decides among those. Length 0 is a point (as :func:`match_centres`).
    """
    x, y = _check_points(rows, cols)
    table = np.asarray(truth, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] not in (4, 6):
        raise ValueError(
            "truth: must have shape (M, 6) [image, x, y, magnitude, length, angle] or (M, 4) "
            f"[x, y, length, angle], got {table.shape}"
        )
    trails = table[:, [1, 2, 4, 5]] if table.shape[1] == 6 else table
    if not np.isfinite(trails).all():
        raise ValueError("truth: x, y, length and angle must be finite")
    if (trails[:, 2] < 0).any():
        raise ValueError(f"truth: length must be >= 0, got {trails[:, 2].min()}")
    _check_radius(radius)
    return _match_trails(x, y, trails, float(radius))


def segment_distance(
    px: np.ndarray, py: np.ndarray, cx: np.ndarray, cy: np.ndarray, length: np.ndarray, angle: np.ndarray
) -> np.ndarray:
    """Distance in px from points to trail segments, elementwise.

    A trail is the segment from ``centre - length/2 * u`` to ``centre + length/2 * u`` with
    ``u = (cos angle, sin angle)`` in (x, y) and ``angle`` in degrees. Length 0 gives the distance
    to the centre. Shared by the training labels and the end-to-end matching, so both use one geometry.
    """
    a = np.deg2rad(angle)
    ux, uy = np.cos(a), np.sin(a)
    dx, dy = px - cx, py - cy
    half = 0.5 * np.abs(length)
    t = np.clip(dx * ux + dy * uy, -half, half)
    return np.hypot(dx - t * ux, dy - t * uy)


def _check_points(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate candidate rows and cols; return x (cols) and y (rows) as float64."""
    r, c = np.asarray(rows), np.asarray(cols)
    for name, v in (("rows", r), ("cols", c)):
        if v.ndim != 1:
            raise ValueError(f"{name}: must be a 1-D array, got shape {v.shape}")
        if v.size and not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
            raise ValueError(f"{name}: must hold numbers, got dtype {v.dtype}")
    if r.size != c.size:
        raise ValueError(f"rows, cols: must have the same length, got {r.size} and {c.size}")
    x, y = c.astype(np.float64), r.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("rows, cols: must be finite")
    return x, y


def _check_radius(radius: object) -> None:
    """Raise ValueError unless ``radius`` is a finite number ≥ 0."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)):
        raise ValueError(f"radius: must be a number, got {radius!r}")
    if not (np.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius: must be finite and >= 0, got {radius!r}")


def _empty(n: int) -> tuple[np.ndarray, np.ndarray]:
    """All-negative labels for ``n`` candidates."""
    return np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64)


def _match_centres(x: np.ndarray, y: np.ndarray, truth: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest truth centre per candidate via a KD-tree; positive within ``radius`` (inclusive)."""
    if x.size == 0 or truth.shape[0] == 0:
        return _empty(x.size)
    distance, nearest = cKDTree(truth).query(np.column_stack([x, y]), k=1)
    label = distance <= radius
    return label, np.where(label, nearest, -1).astype(np.int64)


def _match_trails(x: np.ndarray, y: np.ndarray, trails: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """KD-tree prefilter on trail centres, exact segment distance, nearest trail per candidate."""
    n = x.size
    if n == 0 or trails.shape[0] == 0:
        return _empty(n)
    # A hair of slack so rounding never drops a pair the exact distance would keep.
    reach = (radius + 0.5 * float(trails[:, 2].max())) * (1 + 1e-9) + 1e-9
    points = cKDTree(np.column_stack([x, y]))
    pairs = points.sparse_distance_matrix(cKDTree(trails[:, :2]), reach, output_type="ndarray")
    cand = pairs["i"].astype(np.int64)
    trail = pairs["j"].astype(np.int64)
    t = trails[trail]
    dist = segment_distance(x[cand], y[cand], t[:, 0], t[:, 1], t[:, 2], t[:, 3])
    keep = dist <= radius
    cand, trail, dist = cand[keep], trail[keep], dist[keep]
    label, matched = _empty(n)
    if cand.size:
        order = np.lexsort((trail, dist, cand))
        first = order[np.unique(cand[order], return_index=True)[1]]
        label[cand[first]] = True
        matched[cand[first]] = trail[first]
    return label, matched

