"""Streak veto: detections lined up along a satellite streak or a bad column are not asteroids.

A satellite, airplane or unmasked bad column crosses the whole quadrant; its local maxima pass the
selector every few pixels and, seen through a 21 px cutout, look like an asteroid's trail. One such
line can add dozens of false detections to a quadrant. Asteroid trails are short (the simulator's
longest are 10 px; ZTF's main-belt and most NEO trails in 30 s are well under 100 px), and
asteroids are scattered at random, so many detections on one straight line spanning hundreds of px
are a streak. This is applied to the accepted candidates of one image, before merging.

Given the image, the veto decides on the line's features rather than its length: the line is measured
(:func:`~neocascade.detection.trails.measure_line`) and its members are kept when it is a finite trail
inside the image with a PSF-wide profile, ending where the signal stops (an asteroid moving fast), and
removed when it crosses the image, continues past its ends (dashed), or is sharper than the PSF (a column).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["StreakVeto", "finite_trail", "streak_lines", "streak_members"]


def streak_members(
    x: np.ndarray, y: np.ndarray, *, min_points: int = 6, tolerance: float = 2.5, min_span: float = 200.0
) -> np.ndarray:
    """Flag the points that lie on a long straight line together with many others.

    Parameters
    ----------
    x, y : (N,) float arrays
        Detection positions of one image in px (x = column).
    min_points : int
        Points within ``tolerance`` of one line needed to call it a streak (≥ 3). With 20 asteroids
        scattered over a quadrant, 6 collinear ones within 2.5 px over the quadrant happen in about
        one quadrant in 10^5.
    tolerance : float
        Largest distance in px of a member from the fitted line (> 0): the streak's half-width plus
        the scatter of its local maxima.
    min_span : float
        Smallest extent in px of the members along the line (≥ 0), longer than any asteroid trail
        expected, so the maxima along one long trail are never vetoed.

    Returns
    -------
    (N,) bool array
        True for the members of some streak.

    Notes
    -----
    A Hough transform of the points finds the candidate lines: angles spaced so that the points
    of one true line stay within ``tolerance`` of each other in the normal distance ``rho``, and
    two ``rho`` grids offset by half a bin so that no line is split between bins. Each bin with
    at least ``min_points`` points spanning ``min_span`` is then refitted by total least squares,
    dropping the farthest points. The refitted lines are taken greedily, most members first, each
    point going to one line only, and a line is a streak if ``min_points`` of its still free
    members lie within ``tolerance`` of it over ``min_span``. Cost: N × (number of angles) votes;
    a quadrant's few dozen detections take milliseconds.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(f"x, y: expected equal 1-D shapes, got {xs.shape} and {ys.shape}")
    _check_settings(min_points, tolerance, min_span)
    out = np.zeros(xs.size, dtype=bool)
    for members in streak_lines(xs, ys, min_points=min_points, tolerance=tolerance, min_span=min_span):
        out[members] = True
    return out


def streak_lines(
    x: np.ndarray, y: np.ndarray, *, min_points: int = 6, tolerance: float = 2.5, min_span: float = 200.0
) -> list[np.ndarray]:
    """The streaks :func:`streak_members` finds, one array of point indices per line (checked inputs assumed)."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    out: list[np.ndarray] = []
    finite = np.isfinite(xs) & np.isfinite(ys)
    if int(finite.sum()) < min_points:
        return out
    index = np.flatnonzero(finite)
    px, py = xs[index] - xs[index].mean(), ys[index] - ys[index].mean()
    radius = max(float(np.hypot(px, py).max()), tolerance)
    if 2.0 * radius < min_span:
        return out
    # Angles so that over the points' extent a line's rho drifts by <= tolerance / 2 from the nearest
    # angle; with the members' own ±tolerance the spread is <= 2.5 tolerances, which one of two grids of
    # 5-tolerance bins offset by half a bin holds whole.
    n_angles = max(int(math.ceil(math.pi * radius / tolerance)), 1)
    theta = np.arange(n_angles) * (math.pi / n_angles)
    cos, sin = np.cos(theta), np.sin(theta)
    rho = px[:, None] * cos + py[:, None] * sin  # (n, angles)
    along = -px[:, None] * sin + py[:, None] * cos
    width = 5.0 * tolerance
    n_bins = int(math.ceil(2.0 * radius / width)) + 2
    lines = []
    for offset in (0.0, 0.5 * width):
        bins = np.floor((rho + radius + offset) / width).astype(np.int64)
        key = (np.arange(n_angles) * n_bins)[None, :] + bins
        for members in _dense_cells(key, along, min_points, min_span):
            lines.append(members[_fit_line(px[members], py[members], tolerance)])
    # Best-supported lines first; a point belongs to one streak, so a few points of a streak plus an
    # unrelated point far along their line cannot form a second one.
    taken = np.zeros(px.size, dtype=bool)
    for members in sorted(lines, key=len, reverse=True):
        members = members[~taken[members]]
        if members.size < min_points:
            continue
        members = members[_fit_line(px[members], py[members], tolerance)]
        if members.size >= min_points and _span(px[members], py[members]) >= min_span:
            taken[members] = True
            out.append(index[members])
    return out


class StreakVeto:
    """Remove the detections of an image that :func:`streak_members` flags; built from ``conf/veto/streaks.yaml``."""

    def __init__(self, min_points: int = 6, tolerance: float = 2.5, min_span: float = 200.0) -> None:
        _check_settings(min_points, tolerance, min_span)
        self.min_points, self.tolerance, self.min_span = int(min_points), float(tolerance), float(min_span)

    uses_image = True  # detect_image passes the pixels, so a line can be judged by its features

    def __call__(self, x: np.ndarray, y: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
        """(N,) bool: True for the detections to keep.

        Without ``image`` every streak's members go; with it, the members of a line measured as a finite
        asteroid trail (:func:`finite_trail`) stay.
        """
        flagged = streak_members(x, y, min_points=self.min_points, tolerance=self.tolerance, min_span=self.min_span)
        if image is None or not flagged.any():
            return ~flagged
        xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        keep = np.ones(xs.size, dtype=bool)
        for members in streak_lines(xs, ys, min_points=self.min_points, tolerance=self.tolerance,
                                    min_span=self.min_span):
            keep[members] = finite_trail(image, xs[members], ys[members], tolerance=self.tolerance)
        return keep

    def __repr__(self) -> str:
        return f"StreakVeto(min_points={self.min_points}, tolerance={self.tolerance}, min_span={self.min_span})"


def finite_trail(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, tolerance: float = 2.5) -> bool:
    """True when the detections at ``x, y`` (one line) lie on an asteroid's trail: the line measured in ``image``
    ends inside the exposure (no signal continues past its ends, it does not cross the image), has a PSF-wide
    profile, and holds every detection within ``tolerance`` px plus half its width."""
    from neocascade.detection.trails import is_asteroid_trail, measure_line, point_segment_distance

    arr = np.asarray(image)
    if arr.ndim != 2 or min(arr.shape) < 32 or np.size(x) < 2:
        return False
    centre, normal = _line(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    angle = math.degrees(math.atan2(-normal[0], normal[1])) % 180.0
    half = 0.5 * _span(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    row = measure_line(arr, x=centre[0], y=centre[1], angle=angle, half_length=half + 10.0)
    if not is_asteroid_trail(row, arr.shape):
        return False
    d = point_segment_distance(x, y, row["x1"], row["y1"], row["x2"], row["y2"])
    return bool((d <= tolerance + 0.5 * row["width"] + 2.0).all())


def _check_settings(min_points: int, tolerance: float, min_span: float) -> None:
    """Validate the veto's settings (one-line errors naming the setting)."""
    if isinstance(min_points, bool) or not isinstance(min_points, (int, np.integer)) or min_points < 3:
        raise ValueError(f"min_points: must be an integer >= 3, got {min_points!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance: must be a finite number > 0 (px), got {tolerance!r}")
    if isinstance(min_span, bool) or not isinstance(min_span, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(min_span) and min_span >= 0):
        raise ValueError(f"min_span: must be a finite number >= 0 (px), got {min_span!r}")


def _dense_cells(key: np.ndarray, along: np.ndarray, min_points: int, min_span: float) -> list[np.ndarray]:
    """Point indices of each Hough cell holding ``min_points`` points spread over ``min_span`` along its line."""
    flat = key.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_keys = flat[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    counts = np.diff(np.r_[starts, flat.size])
    values = along.ravel()[order]
    low = np.minimum.reduceat(values, starts)
    high = np.maximum.reduceat(values, starts)
    dense = np.flatnonzero((counts >= min_points) & (high - low >= min_span))
    n_angles = key.shape[1]
    cells, seen = [], set()
    for cell in dense:
        members = np.sort(order[starts[cell]:starts[cell] + counts[cell]] // n_angles)
        signature = members.tobytes()
        if signature not in seen:  # one line falls in the same cell at neighbouring angles
            seen.add(signature)
            cells.append(members)
    return cells


def _fit_line(px: np.ndarray, py: np.ndarray, tolerance: float) -> np.ndarray:
    """Members within ``tolerance`` of a total-least-squares line, refitted while dropping the farthest.

    Last, each member must also lie within 1.5 ``tolerance`` of the line fitted without it (its
    deleted residual; a line fitted without the point is less certain there): an unrelated point
    far along a short run of members tilts the fit towards itself and passes the plain residual
    test, but not this one. The worst such point goes first.
    """
    kept = np.ones(px.size, dtype=bool)
    for cut in (3.0 * tolerance, 2.0 * tolerance, tolerance, tolerance):
        if kept.sum() < 2:
            return kept
        centre, normal = _line(px[kept], py[kept])
        kept = np.abs((px - centre[0]) * normal[0] + (py - centre[1]) * normal[1]) <= cut
    while kept.sum() > 3:
        index = np.flatnonzero(kept)
        residual = _deleted_residuals(px[index], py[index])
        worst = int(np.argmax(residual))
        if residual[worst] <= 1.5 * tolerance:
            break
        kept[index[worst]] = False
    return kept


def _line(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and unit normal of the total-least-squares line through the points."""
    centre = np.array([px.mean(), py.mean()])
    _, vectors = np.linalg.eigh(np.cov(np.vstack([px - centre[0], py - centre[1]])))
    return centre, vectors[:, 0]  # smallest eigenvalue: the normal


def _deleted_residuals(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Distance of each point from the total-least-squares line through all the others."""
    n = px.size
    sx, sy = px.sum() - px, py.sum() - py  # sums without each point
    sxx, syy, sxy = (px * px).sum() - px * px, (py * py).sum() - py * py, (px * py).sum() - px * py
    mx, my = sx / (n - 1), sy / (n - 1)
    cov = np.empty((n, 2, 2))
    cov[:, 0, 0] = sxx / (n - 1) - mx * mx
    cov[:, 1, 1] = syy / (n - 1) - my * my
    cov[:, 0, 1] = cov[:, 1, 0] = sxy / (n - 1) - mx * my
    _, vectors = np.linalg.eigh(cov)
    normal = vectors[:, :, 0]
    return np.abs((px - mx) * normal[:, 0] + (py - my) * normal[:, 1])


def _span(px: np.ndarray, py: np.ndarray) -> float:
    """Extent of the points along the total-least-squares line through them."""
    if px.size < 2:
        return 0.0
    centre, normal = _line(px, py)
    t = (px - centre[0]) * -normal[1] + (py - centre[1]) * normal[0]
    return float(t.max() - t.min())
