"""Tracklets: detections of several exposures of one field linked by linear motion on the sky.

The detections of one field arrive as a dict of equal-length arrays (``exposure, mjd, ra, dec, x, y,
score``; optionally ``exptime`` s, ``trail_length`` px, ``trail_angle`` deg from +x to +y, the
exposure's CD matrix ``cd1_1, cd1_2, cd2_1, cd2_2`` deg/px, ``mag``). Detections sharing a
mid-exposure time form one epoch; the 64 quadrants of one visit are one epoch.

Steps, all vectorised per pair of epochs (a night has 2-4 epochs, never a loop over detections):

1. project every position onto the tangent plane around the field centre;
2. flag *stationary* sources: a partner within ``stationary_radius`` at another epoch (KD-tree pairs);
3. seed pairs: per epoch pair a KD-tree gives every pair closer than ``max_rate * dt``, kept when the
   rate, direction and measured trails agree with the motion;
4. extend each seed to the other epochs (nearest detection to the predicted position), refit the
   motion by least squares, drop candidates whose residuals or trails disagree;
5. resolve conflicts greedily by quality (more detections, smaller residual, slower motion, higher score):
   a candidate is taken when it is the best one of each of its detections, in rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree

from neocascade.linking.sky import field_centre, from_tangent_plane, position_angle, tangent_plane

__all__ = ["REQUIRED_KEYS", "TRACKLET_COLUMNS", "LinkResult", "Linker", "link_detections", "stationary_mask"]

REQUIRED_KEYS = ("exposure", "mjd", "ra", "dec", "x", "y", "score")
CD_KEYS = ("cd1_1", "cd1_2", "cd2_1", "cd2_2")
TRACKLET_COLUMNS = ("tracklet", "n", "mjd", "ra", "dec", "rate", "pa", "rms", "score")
ARCSEC = 1.0 / 3600.0
SECONDS_PER_DAY = 86400.0
NEAREST = 3  # detections tried around each predicted position: the nearest may lie off the track


@dataclass(frozen=True)
class LinkResult:
    """What :func:`link_detections` found.

    Attributes
    ----------
    tracklet : (N,) int64 array
        Tracklet id of each detection, -1 when unlinked (also for stationary or below-threshold ones).
    stationary : (N,) bool array
        Seen within ``stationary_radius`` of a detection at another epoch.
    tracklets : dict of (T,) arrays
        :data:`TRACKLET_COLUMNS`: id, detections ``n``, reference ``mjd`` (mean of its epochs) and the
        fitted ``ra, dec`` (deg) there, ``rate`` (deg/day), position angle ``pa`` (deg east of north),
        ``rms`` residual (arcsec), mean ``score``.
    n_pairs : int
        Detection pairs the KD-trees returned (seed candidates before any cut): the cost measure.
    n_candidates : int
        Distinct candidate tracklets that passed every check, before conflict resolution.
    """

    tracklet: np.ndarray
    stationary: np.ndarray
    tracklets: dict[str, np.ndarray]
    n_pairs: int = 0
    n_candidates: int = 0
    counts: dict = field(default_factory=dict)


def link_detections(
    detections: Mapping[str, np.ndarray],
    *,
    max_rate: float = 15.0,
    min_rate: float = 0.02,
    direction_range: Sequence[float] | None = None,
    position_tolerance: float = 2.0,
    stationary_radius: float = 2.0,
    min_detections: int | None = None,
    pair_min_score: float = 0.0,
    threshold: float = 0.0,
    pixel_scale: float = 1.01,
    trail_length_tolerance: float = 3.0,
    trail_length_fraction: float = 0.3,
    trail_angle_tolerance: float = 15.0,
    min_trail_length: float = 4.0,
    time_resolution: float = 1.0,
    footprints: Mapping[str, np.ndarray] | None = None,
) -> LinkResult:
    """Link the detections of one field into tracklets and flag stationary sources.

    Parameters
    ----------
    detections : mapping of (N,) arrays
        Keys :data:`REQUIRED_KEYS` (``mjd`` mid-exposure, ``ra, dec`` deg) and optionally ``exptime``
        (s), ``trail_length`` (px, NaN = not measured), ``trail_angle`` (deg from +x to +y; needs
        the CD columns ``cd1_1, cd1_2, cd2_1, cd2_2`` in deg/px).
    max_rate, min_rate : float
        Sky rate limits in deg/day; a slower source is not a mover (stationary within the errors).
    direction_range : (lo, hi) or None
        Allowed position angles of the motion, deg east of north; ``lo > hi`` wraps through north.
    position_tolerance : float
        Arcsec a detection may lie off the fitted line across the motion; along it, plus half the trail
        (rate x ``exptime``) when ``exptime`` is given.
    stationary_radius : float
        Arcsec within which detections at two epochs are the same fixed source.
    min_detections : int or None
        Fewest detections of a tracklet (>= 2). None prefers 3 where available: 3 in a field
        observed at 3 or more epochs, 2 in a field with 2 (a chance pair of false detections has
        no third point to refute it, and their number grows with ``max_rate`` squared).
    pair_min_score : float
        A two-detection tracklet needs both scores at least this: with no third point to confirm
        the line, chance pairs of false detections are only kept out by their scores.
    threshold : float
        Detections scoring below this take no part.
    pixel_scale : float
        Arcsec/px for trail lengths when the CD columns are absent.
    trail_length_tolerance, trail_length_fraction : float
        A measured trail of L px agrees with a rate giving P px when ``|L - P| <= tolerance + fraction * P``.
    trail_angle_tolerance : float
        Deg between the trail (mod 180) and the motion, checked when both are ``>= min_trail_length`` px.
    min_trail_length : float
        Px below which a trail's direction is not measurable.
    time_resolution : float
        Seconds: mid-exposure times closer than this are one epoch.
    footprints : mapping of arrays, optional
        Where each image could see: ``mjd`` (K,) and ``ra``, ``dec`` (K, 4) corners of each image
        (convex, in order around it; shrink them by the margin the detector cannot use). With
        ``min_detections=None``, a pair in a field of 3 or more epochs is then kept when at every
        other epoch its predicted position lies outside all images: no third detection was possible.

    Returns
    -------
    LinkResult

    Raises
    ------
    ValueError
        A key missing, arrays of unequal length or non-finite, or an option out of range.

    Notes
    -----
    Empty input, or one epoch only, gives no tracklets. Cost grows with N times the density of
    detections within ``max_rate * dt``: linear in N for a fixed density.
    """
    det = _check_detections(detections)
    opts = _Options(
        max_rate=_positive("max_rate", max_rate),
        min_rate=_non_negative("min_rate", min_rate),
        direction=_check_direction(direction_range),
        tol=_positive("position_tolerance", position_tolerance) * ARCSEC,
        stationary_radius=_positive("stationary_radius", stationary_radius) * ARCSEC,
        min_detections=_check_min_detections(min_detections),
        pair_min_score=float(pair_min_score),
        pixel_scale=_positive("pixel_scale", pixel_scale) * ARCSEC,
        length_tol=_non_negative("trail_length_tolerance", trail_length_tolerance),
        length_frac=_non_negative("trail_length_fraction", trail_length_fraction),
        angle_tol=_non_negative("trail_angle_tolerance", trail_angle_tolerance),
        min_trail=_non_negative("min_trail_length", min_trail_length),
        time_resolution=_positive("time_resolution", time_resolution),
    )
    if opts.min_rate >= opts.max_rate:
        raise ValueError(f"min_rate: must be below max_rate ({opts.max_rate}), got {opts.min_rate}")
    return _link(det, opts, float(threshold), _check_footprints(footprints))


class Linker:
    """:func:`link_detections` with fixed options, built by Hydra from ``conf/link/``.

    ``threshold`` is also the single-exposure acceptance threshold the night pipeline detects with.
    """

    def __init__(self, *, threshold: float = 0.5, **options: object) -> None:
        self.threshold = _number("threshold", threshold)
        self.options = dict(options)
        link_detections(_EMPTY, threshold=self.threshold, **self.options)  # check the options once

    def __call__(self, detections: Mapping[str, np.ndarray], *, footprints: Mapping[str, np.ndarray] | None = None) -> LinkResult:
        return link_detections(detections, threshold=self.threshold, footprints=footprints, **self.options)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Linker(threshold={self.threshold!r}{', ' if opts else ''}{opts})"


def stationary_mask(xi: np.ndarray, eta: np.ndarray, epoch: np.ndarray, *, radius: float) -> np.ndarray:
    """(N,) bool: a detection has another within ``radius`` (same units as xi, eta) at a different epoch."""
    points = np.column_stack([xi, eta])
    flag = np.zeros(len(points), dtype=bool)
    if len(points) < 2:
        return flag
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    pairs = pairs[epoch[pairs[:, 0]] != epoch[pairs[:, 1]]]
    flag[pairs.ravel()] = True
    return flag


# ---------------------------------------------------------------------------------------------- core
@dataclass(frozen=True)
class _Options:
    max_rate: float
    min_rate: float
    direction: tuple[float, float] | None
    tol: float
    stationary_radius: float
    min_detections: int | None
    pair_min_score: float
    pixel_scale: float
    length_tol: float
    length_frac: float
    angle_tol: float
    min_trail: float
    time_resolution: float


@dataclass(frozen=True)
class _Field:
    """Detections taking part, on the tangent plane (deg), with their epoch index and times."""

    index: np.ndarray  # into the caller's detections
    xy: np.ndarray  # (n, 2) xi, eta
    epoch: np.ndarray
    epoch_mjd: np.ndarray
    mjd: np.ndarray
    score: np.ndarray
    exptime: np.ndarray  # days, 0 when unknown
    trail: np.ndarray  # (n, 2) measured trail vector on the sky (deg), NaN when not measured
    trail_scale: np.ndarray  # deg per px along the trail
    centre: tuple[float, float]


def _link(det: dict[str, np.ndarray], opts: _Options, threshold: float, footprints: dict | None) -> LinkResult:
    """The linking steps on validated detections."""
    n = len(det["ra"])
    tracklet = np.full(n, -1, dtype=np.int64)
    stationary = np.zeros(n, dtype=bool)
    take = np.flatnonzero(det["score"] >= threshold)
    if take.size == 0:
        return LinkResult(tracklet, stationary, _empty_tracklets())
    f = _field(det, take, opts)
    still = stationary_mask(f.xy[:, 0], f.xy[:, 1], f.epoch, radius=opts.stationary_radius)
    stationary[f.index] = still
    members, n_pairs = _candidates(f, ~still, opts)
    members, fit = _refine(f, members, opts, _epoch_footprints(f, footprints, opts))
    chosen = _resolve(members, fit["rank"], n=len(f.index))
    members = members[chosen]
    fit = {k: v[chosen] for k, v in fit.items()}
    order = np.lexsort((fit["ra"], fit["mjd"]))  # ids in a reproducible sky order
    members = members[order]
    fit = {k: v[order] for k, v in fit.items()}
    ids = np.arange(len(members), dtype=np.int64)
    rows, cols = np.nonzero(members >= 0)
    tracklet[f.index[members[rows, cols]]] = ids[rows]
    table = {
        "tracklet": ids,
        "n": (members >= 0).sum(axis=1).astype(np.int64),
        "mjd": fit["mjd"],
        "ra": fit["ra"],
        "dec": fit["dec"],
        "rate": fit["rate"],
        "pa": fit["pa"],
        "rms": fit["rms"] / ARCSEC,
        "score": fit["score"],
    }
    counts = {"epochs": len(f.epoch_mjd), "detections": int(take.size), "stationary": int(still.sum())}
    return LinkResult(tracklet, stationary, table, n_pairs=n_pairs, n_candidates=len(chosen), counts=counts)


def _field(det: dict[str, np.ndarray], take: np.ndarray, opts: _Options) -> _Field:
    """Project the detections taking part and group them into epochs by time."""
    ra, dec = det["ra"][take], det["dec"][take]
    centre = field_centre(ra, dec)
    xi, eta = tangent_plane(ra, dec, ra0=centre[0], dec0=centre[1])
    mjd = det["mjd"][take]
    tick = np.round(mjd * SECONDS_PER_DAY / opts.time_resolution)
    _, epoch = np.unique(tick, return_inverse=True)
    epoch_mjd = np.bincount(epoch, weights=mjd) / np.bincount(epoch)
    exptime = det["exptime"][take] / SECONDS_PER_DAY if "exptime" in det else np.zeros(take.size)
    trail = np.full((take.size, 2), np.nan)
    scale = np.full(take.size, opts.pixel_scale)
    if "trail_length" in det:
        length = det["trail_length"][take]
        if "trail_angle" in det:
            a = np.deg2rad(det["trail_angle"][take])
            dx, dy = length * np.cos(a), length * np.sin(a)
            cd = np.column_stack([det[k][take] for k in CD_KEYS])
            trail = np.column_stack([cd[:, 0] * dx + cd[:, 1] * dy, cd[:, 2] * dx + cd[:, 3] * dy])
            scale = np.sqrt(np.abs(cd[:, 0] * cd[:, 3] - cd[:, 1] * cd[:, 2]))
        else:
            trail = np.column_stack([length * scale, np.full(take.size, np.nan)])
    return _Field(take, np.column_stack([xi, eta]), epoch, epoch_mjd, mjd, det["score"][take], exptime, trail, scale,
                  centre)


def _candidates(f: _Field, movable: np.ndarray, opts: _Options) -> tuple[np.ndarray, int]:
    """(C, E) member matrix (field index per epoch, -1 = none) of distinct seed-and-extend candidates."""
    n_epochs = len(f.epoch_mjd)
    pool = [np.flatnonzero(movable & (f.epoch == e)) for e in range(n_epochs)]
    trees = [cKDTree(f.xy[p]) for p in pool]
    rows, n_pairs = [], 0
    for a in range(n_epochs):
        for b in range(a + 1, n_epochs):
            if pool[a].size == 0 or pool[b].size == 0:
                continue
            dt = f.epoch_mjd[b] - f.epoch_mjd[a]
            slack = opts.max_rate * float(f.exptime.max(initial=0.0)) + 2 * opts.tol  # half a trail at each end
            pairs = trees[a].sparse_distance_matrix(trees[b], opts.max_rate * dt + slack, output_type="ndarray")
            n_pairs += len(pairs)
            i, j = pool[a][pairs["i"]], pool[b][pairs["j"]]
            velocity = (f.xy[j] - f.xy[i]) / dt
            ok = _motion_ok(velocity, opts) & _trail_ok(f, i, velocity, opts) & _trail_ok(f, j, velocity, opts)
            i, j, velocity = i[ok], j[ok], velocity[ok]
            block = np.full((i.size, n_epochs), -1, dtype=np.int64)
            block[:, a], block[:, b] = i, j
            for c in range(n_epochs):
                if c in (a, b) or pool[c].size == 0 or i.size == 0:
                    continue
                predicted = f.xy[i] + velocity * (f.epoch_mjd[c] - f.epoch_mjd[a])
                half = _half_trail(f, i, velocity)
                k = min(NEAREST, pool[c].size)
                dist, nearest = trees[c].query(predicted, k=[*range(1, k + 1)],
                                               distance_upper_bound=opts.tol + float(half.max()))
                nearest = np.minimum(nearest, pool[c].size - 1)
                offset = f.xy[pool[c][nearest]] - predicted[:, None, :]
                ok = np.isfinite(dist) & _on_track(offset, velocity[:, None, :], half[:, None], opts.tol)
                hit = ok.any(axis=1)
                block[hit, c] = pool[c][nearest[hit, np.argmax(ok[hit], axis=1)]]
            rows.append(block)
    if not rows:
        return np.empty((0, n_epochs), dtype=np.int64), n_pairs
    return np.unique(np.concatenate(rows), axis=0), n_pairs


def _half_trail(f: _Field, i: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """Half the trail (deg) of detections ``i`` moving at ``velocity``: how far along the motion its
    position (the brightest pixel, anywhere on the trail) may lie from the trail centre."""
    return 0.5 * np.hypot(velocity[..., 0], velocity[..., 1]) * f.exptime[i]


def _on_track(offset: np.ndarray, velocity: np.ndarray, half: np.ndarray, tol: float) -> np.ndarray:
    """Offsets (deg) from the predicted position within ``tol`` across the motion and ``tol + half`` along it."""
    speed = np.hypot(velocity[..., 0], velocity[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ux, uy = velocity[..., 0] / speed, velocity[..., 1] / speed
    along = np.where(speed > 0, offset[..., 0] * ux + offset[..., 1] * uy, np.hypot(offset[..., 0], offset[..., 1]))
    cross = np.where(speed > 0, offset[..., 1] * ux - offset[..., 0] * uy, 0.0)
    return (np.abs(cross) <= tol) & (np.abs(along) <= tol + half)


def _unseen(model: np.ndarray, present: np.ndarray, rows: np.ndarray, footprints: list[np.ndarray]) -> np.ndarray:
    """(C,) bool: at every epoch where candidate ``rows`` have no detection, the fitted position is
    outside every image footprint of that epoch (only ``rows`` are tested; others give False)."""
    out = np.zeros(len(model), dtype=bool)
    sel = np.flatnonzero(rows)
    out[sel] = True
    for e, quads in enumerate(footprints):
        missing = sel[~present[sel, e]]
        if missing.size == 0 or quads.size == 0:
            continue
        p = model[missing, e]  # (Q, 2)
        a, b = quads, np.roll(quads, -1, axis=1)  # (K, 4, 2) edges a -> b
        cross = ((b[..., 0] - a[..., 0])[None] * (p[:, None, None, 1] - a[None, ..., 1])
                 - (b[..., 1] - a[..., 1])[None] * (p[:, None, None, 0] - a[None, ..., 0]))  # (Q, K, 4)
        inside = ((cross >= 0).all(axis=2) | (cross <= 0).all(axis=2)).any(axis=1)
        out[missing] &= ~inside
    return out


def _epoch_footprints(f: _Field, footprints: dict | None, opts: _Options) -> list[np.ndarray] | None:
    """Footprint corners (K_e, 4, 2) on the field's tangent plane for each epoch, or None."""
    if footprints is None:
        return None
    xi, eta = tangent_plane(footprints["ra"], footprints["dec"], ra0=f.centre[0], dec0=f.centre[1])
    corners = np.stack([xi, eta], axis=-1)  # (K, 4, 2)
    tick = np.round(footprints["mjd"] * SECONDS_PER_DAY / opts.time_resolution)
    epoch_tick = np.round(f.epoch_mjd * SECONDS_PER_DAY / opts.time_resolution)
    # an image without data has four equal corners: it covers nothing (not, by a zero cross product, everything)
    covers = (np.ptp(corners[..., 0], axis=1) > 0) & (np.ptp(corners[..., 1], axis=1) > 0)
    return [corners[(tick == t) & covers] for t in epoch_tick]


def _motion_ok(velocity: np.ndarray, opts: _Options) -> np.ndarray:
    """(P,) bool: rate within the limits and direction inside ``direction_range``."""
    rate = np.hypot(velocity[:, 0], velocity[:, 1])
    ok = (rate >= opts.min_rate) & (rate <= opts.max_rate)
    if opts.direction is not None:
        lo, hi = opts.direction
        pa = position_angle(velocity[:, 0], velocity[:, 1])
        ok &= ((pa >= lo) & (pa <= hi)) if lo <= hi else ((pa >= lo) | (pa <= hi))
    return ok


def _trail_ok(f: _Field, i: np.ndarray, velocity: np.ndarray, opts: _Options) -> np.ndarray:
    """(P,) bool: detection ``i``'s measured trail agrees with ``velocity`` (true when not measured)."""
    trail = f.trail[i]
    scale = f.trail_scale[i]
    measured = np.isfinite(trail[:, 0])
    ok = np.ones(i.size, dtype=bool)
    if not measured.any():
        return ok
    has_angle = np.isfinite(trail[:, 1])
    length = np.where(has_angle, np.hypot(trail[:, 0], np.nan_to_num(trail[:, 1])), trail[:, 0]) / scale
    predicted = np.hypot(velocity[:, 0], velocity[:, 1]) * f.exptime[i] / scale
    ok &= ~measured | (np.abs(length - predicted) <= opts.length_tol + opts.length_frac * predicted)
    check_angle = measured & has_angle & (length >= opts.min_trail) & (predicted >= opts.min_trail)
    if check_angle.any():
        cos = np.abs(trail[:, 0] * velocity[:, 0] + np.nan_to_num(trail[:, 1]) * velocity[:, 1])
        norm = np.hypot(trail[:, 0], np.nan_to_num(trail[:, 1])) * np.hypot(velocity[:, 0], velocity[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            angle = np.rad2deg(np.arccos(np.clip(cos / norm, 0.0, 1.0)))
        ok &= ~check_angle | (angle <= opts.angle_tol)
    return ok


def _refine(
    f: _Field, members: np.ndarray, opts: _Options, footprints: list[np.ndarray] | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Least-squares linear motion of each candidate; keep those passing every check, with their fit."""
    present = members >= 0
    n = present.sum(axis=1)
    auto = opts.min_detections is None
    fewest = 2 if auto else opts.min_detections
    keep = n >= fewest
    members, present, n = members[keep], present[keep], n[keep]
    idx = np.where(present, members, 0)
    w = present.astype(np.float64)
    t = np.broadcast_to(f.epoch_mjd, members.shape)
    t_ref = (w * t).sum(axis=1) / n
    dt = t - t_ref[:, None]
    xy = f.xy[idx]  # (C, E, 2)
    centre = (w[..., None] * xy).sum(axis=1) / n[:, None]
    sxx = (w * dt**2).sum(axis=1)
    velocity = (w[..., None] * dt[..., None] * (xy - centre[:, None, :])).sum(axis=1) / sxx[:, None]
    model = centre[:, None, :] + velocity[:, None, :] * dt[..., None]
    resid = np.where(present, np.hypot(*(xy - model).transpose(2, 0, 1)), 0.0)
    rms = np.sqrt((resid**2).sum(axis=1) / n)
    half = _half_trail(f, idx, np.broadcast_to(velocity[:, None, :], xy.shape))
    on_track = _on_track(xy - model, velocity[:, None, :], half, opts.tol)
    ok = (on_track | ~present).all(axis=1) & _motion_ok(velocity, opts)
    for e in range(members.shape[1]):
        ok &= ~present[:, e] | _trail_ok(f, idx[:, e], velocity, opts)
    score = np.where(present, f.score[idx], 0.0)
    ok &= (n >= 3) | (np.where(present, f.score[idx], np.inf).min(axis=1) >= opts.pair_min_score)
    if auto and members.shape[1] >= 3:
        pair = n == 2
        ok &= ~pair if footprints is None else ~pair | _unseen(model, present, pair, footprints)
    mean_score = score.sum(axis=1) / n
    members, velocity, centre, t_ref, rms, n, mean_score = (
        v[ok] for v in (members, velocity, centre, t_ref, rms, n, mean_score)
    )
    speed = np.hypot(velocity[:, 0], velocity[:, 1])
    rank = np.empty(len(members), dtype=np.int64)
    # more detections first, then the smaller residual (to 0.01", below any astrometry), then the slower
    # motion (most asteroids are slow: it decides between pairs, which always fit), then the score
    rank[np.lexsort((-mean_score, speed, np.round(rms / ARCSEC, 2), -n))] = np.arange(len(members))
    ra, dec = from_tangent_plane(centre[:, 0], centre[:, 1], ra0=f.centre[0], dec0=f.centre[1])
    fit = {
        "rank": rank,
        "mjd": t_ref,
        "ra": ra,
        "dec": dec,
        "rate": np.hypot(velocity[:, 0], velocity[:, 1]),
        "pa": position_angle(velocity[:, 0], velocity[:, 1]),
        "rms": rms,
        "score": mean_score,
    }
    return members, fit


def _resolve(members: np.ndarray, rank: np.ndarray, *, n: int) -> np.ndarray:
    """Indices of the candidates greedy-by-rank conflict resolution keeps (each detection used once).

    In each round every detection points at its best live candidate; a candidate that is the best
    of all its detections is taken, and every candidate sharing a detection with it dies. This
    takes exactly what sequential greedy in rank order takes, with one vectorised pass per round.
    """
    present = members >= 0
    rows, cols = np.nonzero(present)
    det = members[rows, cols]
    alive = np.ones(len(members), dtype=bool)
    chosen = []
    while alive.any():
        live = alive[rows]
        best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, det[live], rank[rows[live]])
        is_best = best[det] == rank[rows]
        n_best = np.bincount(rows, weights=(is_best & live).astype(np.float64), minlength=len(members))
        winners = alive & (n_best == present.sum(axis=1))
        chosen.append(np.flatnonzero(winners))
        used = np.zeros(n, dtype=bool)
        used[det[winners[rows]]] = True
        touched = np.bincount(rows, weights=used[det].astype(np.float64), minlength=len(members)) > 0
        alive &= ~touched
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- checks
_EMPTY = {k: np.empty(0) for k in REQUIRED_KEYS}


def _empty_tracklets() -> dict[str, np.ndarray]:
    """A tracklet table with no rows."""
    return {k: np.empty(0, dtype=np.int64 if k in ("tracklet", "n") else np.float64) for k in TRACKLET_COLUMNS}


def _check_detections(detections: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Detections as float64 / int64 arrays of one length, with their keys checked."""
    if not isinstance(detections, Mapping):
        raise ValueError(f"detections: expected a mapping of arrays, got {type(detections).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in detections]
    if missing:
        raise ValueError(f"detections: missing {', '.join(missing)} (found {', '.join(sorted(detections)) or 'none'})")
    keys = list(REQUIRED_KEYS) + [k for k in ("exptime", "trail_length", "trail_angle", *CD_KEYS) if k in detections]
    out: dict[str, np.ndarray] = {}
    n = None
    for key in keys:
        value = np.asarray(detections[key])
        if value.ndim != 1 or (value.size and value.dtype.kind not in "biuf"):
            raise ValueError(f"detections.{key}: expected a 1-D numeric array, got dtype {value.dtype}, shape {value.shape}")
        if n is None:
            n = value.size
        elif value.size != n:
            raise ValueError(f"detections.{key}: expected {n} entries like 'exposure', got {value.size}")
        out[key] = value.astype(np.int64 if key == "exposure" else np.float64)
    for key in ("mjd", "ra", "dec", "score", "exptime", *CD_KEYS):
        if key in out and not np.isfinite(out[key]).all():
            raise ValueError(f"detections.{key}: {int((~np.isfinite(out[key])).sum())} non-finite entries")
    if "trail_angle" in out and not all(k in out for k in CD_KEYS):
        raise ValueError("detections.trail_angle: needs the exposure's CD matrix (cd1_1, cd1_2, cd2_1, cd2_2) "
                         "to compare with sky motion")
    if "trail_length" in out and "exptime" not in out:
        raise ValueError("detections.trail_length: needs 'exptime' to predict a trail length from the motion")
    if out["dec"].size and (np.abs(out["dec"]) > 90).any():
        raise ValueError(f"detections.dec: must be within [-90, 90], got {out['dec'][np.abs(out['dec']) > 90][0]}")
    return out


def _check_footprints(footprints: Mapping[str, np.ndarray] | None) -> dict | None:
    """Footprints as float64 arrays: ``mjd`` (K,), ``ra``, ``dec`` (K, 4), finite."""
    if footprints is None:
        return None
    missing = [k for k in ("mjd", "ra", "dec") if k not in footprints]
    if missing:
        raise ValueError(f"footprints: missing {', '.join(missing)}")
    out = {k: np.asarray(footprints[k], dtype=np.float64) for k in ("mjd", "ra", "dec")}
    k = out["mjd"].shape
    if len(k) != 1 or out["ra"].shape != (k[0], 4) or out["dec"].shape != (k[0], 4):
        raise ValueError(f"footprints: expected mjd (K,), ra and dec (K, 4), got {k}, {out['ra'].shape}, {out['dec'].shape}")
    if not all(np.isfinite(v).all() for v in out.values()):
        raise ValueError("footprints: must be finite")
    return out


def _positive(name: str, value: object) -> float:
    """``value`` as a finite float > 0, else ValueError naming ``name``."""
    v = _number(name, value)
    if not v > 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    return v


def _non_negative(name: str, value: object) -> float:
    """``value`` as a finite float >= 0, else ValueError naming ``name``."""
    v = _number(name, value)
    if v < 0:
        raise ValueError(f"{name}: must be >= 0, got {value!r}")
    return v


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


def _check_direction(direction: Sequence[float] | None) -> tuple[float, float] | None:
    """``(lo, hi)`` position angles in [0, 360], or None."""
    if direction is None:
        return None
    values = list(direction)
    if len(values) != 2:
        raise ValueError(f"direction_range: expected [lo, hi] in deg, got {direction!r}")
    lo, hi = (_number("direction_range", v) for v in values)
    if not (0 <= lo <= 360 and 0 <= hi <= 360):
        raise ValueError(f"direction_range: angles must be within [0, 360], got {values}")
    return lo, hi


def _check_min_detections(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise ValueError(f"min_detections: must be an integer >= 2, got {value!r}")
    return int(value)
