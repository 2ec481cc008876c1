"""Tracklet metrics: which objects were findable, which were found, and how clean the tracklets are.

The definitions are those of difi ("Did I Find It?", Moeyens et al.), restated for one night:

- an object is **findable** when it is visible (a truth row) in at least ``min_obs`` distinct epochs;
- a tracklet is **pure** when all its detections belong to one object, **contaminated** when one
  object holds all but at most ``contamination`` (a fraction) of them, **mixed** otherwise; a
  detection of no object (a false or transient detection) is always another object;
- an object is **found** when a pure tracklet (or a contaminated one, with ``contamination > 0``)
  holds at least ``min_obs`` of its detections.

difi itself (2.0.0) is not used: its wheel imports ``quivr``, which it does not declare, and it
takes Arrow tables with nanosecond time structs and observatory codes, built for multi-night
linkages; these few array operations give the same numbers without it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "classify_tracklets", "findable_objects", "found_objects", "object_motion", "rows_found",
    "threshold_at_purity", "tracklet_metrics",
]


def classify_tracklets(tracklet: np.ndarray, object_id: np.ndarray, *, contamination: float = 0.0) -> dict[str, np.ndarray]:
    """Classify each tracklet as pure, contaminated or mixed.

    Parameters
    ----------
    tracklet : (N,) int array
        Tracklet id of each detection, -1 when unlinked.
    object_id : (N,) int array
        Truth object of each detection, -1 for none (false detections, transients).
    contamination : float
        Largest fraction of a contaminated tracklet's detections from other objects, in [0, 1).

    Returns
    -------
    dict of (T,) arrays
        ``tracklet`` (sorted ids), ``n`` detections, ``object`` (the most frequent, -1 when that is
        none), ``n_object``, and bool ``pure``, ``contaminated``, ``mixed`` (exactly one is true).

    Notes
    -----
    Ties for the most frequent object go to the smallest id. No linked detection gives empty arrays.
    """
    t, o = _pair(tracklet, object_id)
    if not 0 <= contamination < 1:
        raise ValueError(f"contamination: must be in [0, 1), got {contamination!r}")
    linked = t >= 0
    t, o = t[linked], o[linked]
    ids, n = np.unique(t, return_counts=True)
    pairs, counts = np.unique(np.column_stack([t, o]), axis=0, return_counts=True)
    # most frequent object per tracklet: sort by tracklet, count descending, object ascending
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0])) if len(pairs) else np.empty(0, dtype=np.int64)
    first = order[np.unique(pairs[order, 0], return_index=True)[1]] if len(pairs) else order
    dominant, n_dominant = pairs[first, 1], counts[first]
    real = dominant >= 0
    pure = real & (n_dominant == n)
    contaminated = real & ~pure & ((n - n_dominant) <= contamination * n)
    return {
        "tracklet": ids.astype(np.int64),
        "n": n.astype(np.int64),
        "object": dominant.astype(np.int64),
        "n_object": n_dominant.astype(np.int64),
        "pure": pure,
        "contaminated": contaminated,
        "mixed": ~pure & ~contaminated,
    }


def findable_objects(object_id: np.ndarray, epoch: np.ndarray, *, min_obs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Objects and whether each is findable: seen in at least ``min_obs`` distinct epochs.

    Parameters
    ----------
    object_id, epoch : (M,) int arrays
        One row per visible appearance (truth rows) or per detection; rows with object -1 are ignored.
    min_obs : int

    Returns
    -------
    ids : (K,) int64 array
        Sorted object ids.
    findable : (K,) bool array
    """
    o, e = _pair(object_id, epoch)
    keep = o >= 0
    pairs = np.unique(np.column_stack([o[keep], e[keep]]), axis=0)
    ids, n = np.unique(pairs[:, 0], return_counts=True) if len(pairs) else (np.empty(0, np.int64), np.empty(0, np.int64))
    return ids.astype(np.int64), n >= int(min_obs)


def found_objects(
    classes: dict[str, np.ndarray], ids: np.ndarray, *, min_obs: int = 2, contamination: float = 0.0
) -> np.ndarray:
    """(K,) bool: object ``ids[k]`` has a pure (or, with ``contamination > 0``, contaminated) tracklet
    holding at least ``min_obs`` of its detections; ``classes`` from :func:`classify_tracklets`."""
    good = classes["pure"] | (classes["contaminated"] if contamination > 0 else False)
    good &= classes["n_object"] >= int(min_obs)
    return np.isin(np.asarray(ids, dtype=np.int64), classes["object"][good])


def object_motion(
    object_id: np.ndarray, mjd: np.ndarray, ra: np.ndarray, dec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sky rate of each object from its first and last appearance.

    Parameters
    ----------
    object_id : (M,) int array
    mjd, ra, dec : (M,) float arrays
        Time (MJD) and position (deg) of each appearance.

    Returns
    -------
    ids : (K,) int64 array
    rate : (K,) float64 array
        Great-circle distance over time in deg/day; NaN for objects seen at one time only.
    """
    o = np.asarray(object_id, dtype=np.int64)
    t = np.asarray(mjd, dtype=np.float64)
    order = np.lexsort((t, o))
    o, t = o[order], t[order]
    r, d = np.deg2rad(np.asarray(ra, dtype=np.float64)[order]), np.deg2rad(np.asarray(dec, dtype=np.float64)[order])
    ids, first, count = np.unique(o, return_index=True, return_counts=True)
    last = first + count - 1
    cos = np.sin(d[first]) * np.sin(d[last]) + np.cos(d[first]) * np.cos(d[last]) * np.cos(r[last] - r[first])
    dist = np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))
    dt = t[last] - t[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(dt > 0, dist / np.where(dt > 0, dt, 1.0), np.nan)
    return ids.astype(np.int64), rate


def threshold_at_purity(score: np.ndarray, is_true: np.ndarray, *, purity: float = 0.98) -> float:
    """Lowest score threshold whose accepted detections (score >= threshold) reach ``purity``.

    Parameters
    ----------
    score : (N,) float array
    is_true : (N,) bool array
        The detection matches a real asteroid.
    purity : float
        Target fraction of true detections among the accepted ones, in (0, 1].

    Returns
    -------
    float
        The threshold; NaN when no threshold reaches the purity (or N = 0).

    Notes
    -----
    The lowest threshold maximises completeness; purity need not fall monotonically with it, so
    every distinct score is tried.
    """
    s, y = np.asarray(score, dtype=np.float64), np.asarray(is_true, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"is_true: expected shape {s.shape}, got {y.shape}")
    if not 0 < purity <= 1:
        raise ValueError(f"purity: must be in (0, 1], got {purity!r}")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    precision = np.cumsum(y) / np.arange(1, s.size + 1)
    boundary = np.r_[s[1:] < s[:-1], True] if s.size else np.empty(0, dtype=bool)  # last of a run of ties
    ok = np.flatnonzero(boundary & (precision >= purity))
    return float(s[ok[-1]]) if ok.size else float("nan")


def rows_found(matched_row: np.ndarray, keep: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows,) bool: a truth row is found when a kept detection matches it (``matched_row`` -1 = none)."""
    row = np.asarray(matched_row, dtype=np.int64)
    found = np.zeros(int(n_rows), dtype=bool)
    found[row[np.asarray(keep, dtype=bool) & (row >= 0)]] = True
    return found


def tracklet_metrics(
    tracklet: np.ndarray,
    det_object: np.ndarray,
    truth_object: np.ndarray,
    truth_epoch: np.ndarray,
    *,
    det_epoch: np.ndarray | None = None,
    stationary: np.ndarray | None = None,
    det_transient: np.ndarray | None = None,
    min_obs: int = 2,
    contamination: float = 0.0,
) -> dict[str, float | int]:
    """Night-level linking metrics (see the module docstring for the definitions).

    Parameters
    ----------
    tracklet : (N,) int array
        Tracklet of each detection, -1 unlinked.
    det_object : (N,) int array
        Asteroid each detection matches, -1 none.
    truth_object, truth_epoch : (M,) int arrays
        Object and epoch of every visible truth appearance (findability).
    det_epoch : (N,) int array, optional
        Epoch of each detection: adds the completeness over objects *detected* in ``min_obs`` epochs
        (what the linker alone could do).
    stationary : (N,) bool array, optional
        The linker's stationary flag; with ``det_transient`` gives the shares flagged.
    det_transient : (N,) int array, optional
        Stationary transient each detection matches, -1 none.

    Returns
    -------
    dict
        ``n_tracklets, n_pure, n_contaminated, n_mixed, tracklet_purity, n_linked, detection_purity``
        (linked detections of their tracklet's object), ``n_findable, n_found, completeness``, and
        optionally ``n_detected_findable, completeness_detected``, ``stationary_share`` (transient
        detections flagged), ``transients_flagged`` (transients detected in >= 2 epochs with a
        flagged detection, as a share), ``asteroid_stationary_share`` (asteroid detections flagged).
        Ratios with an empty denominator are NaN.
    """
    classes = classify_tracklets(tracklet, det_object, contamination=contamination)
    ids, findable = findable_objects(truth_object, truth_epoch, min_obs=min_obs)
    found = found_objects(classes, ids[findable], min_obs=min_obs, contamination=contamination)
    t = np.asarray(tracklet, dtype=np.int64)
    o = np.asarray(det_object, dtype=np.int64)
    linked = t >= 0
    dominant = np.full(t.size, -2, dtype=np.int64)
    dominant[linked] = classes["object"][np.searchsorted(classes["tracklet"], t[linked])]
    out: dict[str, float | int] = {
        "n_tracklets": int(classes["tracklet"].size),
        "n_pure": int(classes["pure"].sum()),
        "n_contaminated": int(classes["contaminated"].sum()),
        "n_mixed": int(classes["mixed"].sum()),
        "tracklet_purity": _ratio(classes["pure"].sum(), classes["tracklet"].size),
        "n_linked": int(linked.sum()),
        "detection_purity": _ratio((linked & (o >= 0) & (o == dominant)).sum(), linked.sum()),
        "n_findable": int(findable.sum()),
        "n_found": int(found.sum()),
        "completeness": _ratio(found.sum(), findable.sum()),
    }
    if det_epoch is not None:
        det_ids, det_findable = findable_objects(o, det_epoch, min_obs=min_obs)
        det_found = found_objects(classes, det_ids[det_findable], min_obs=min_obs, contamination=contamination)
        out.update(n_detected_findable=int(det_findable.sum()), completeness_detected=_ratio(det_found.sum(), det_findable.sum()))
    if stationary is not None and det_transient is not None:
        flag = np.asarray(stationary, dtype=bool)
        tr = np.asarray(det_transient, dtype=np.int64)
        out["stationary_share"] = _ratio((flag & (tr >= 0)).sum(), (tr >= 0).sum())
        out["asteroid_stationary_share"] = _ratio((flag & (o >= 0)).sum(), (o >= 0).sum())
        if det_epoch is not None:
            tr_ids, seen_twice = findable_objects(tr, det_epoch, min_obs=2)
            flagged = np.isin(tr_ids[seen_twice], tr[flag & (tr >= 0)])
            out["n_transients_seen_twice"] = int(seen_twice.sum())
            out["transients_flagged"] = _ratio(flagged.sum(), seen_twice.sum())
    return out


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-D integer arrays of one length."""
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"expected two 1-D arrays of one length, got shapes {x.shape} and {y.shape}")
    return x.astype(np.int64), y.astype(np.int64)


def _ratio(k: float, n: float) -> float:
    """k / n as a float, NaN when n is 0."""
    return float(k) / float(n) if n else float("nan")
