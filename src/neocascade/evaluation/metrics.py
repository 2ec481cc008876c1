"""Candidate-level and asteroid-level (end-to-end) metrics: pure array functions.

Candidate level scores each cutout against its label. Asteroid level asks the question a survey
asks: of the asteroids injected into the test images, how many does the full detector (selector,
stage 1, stage 2, merging of nearby detections) report, and how many of its reports are real.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from neocascade.candidates.labels import segment_distance

CLASS_NAMES = ("negative", "positive")
MISS_REASONS = ("dead", "not_proposed", "stage1_rejected", "stage2_rejected", "vetoed", "other")


# ----------------------------------------------------------------------------- candidate level
def _binary(values: np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as a 1-D bool array, refusing anything but 0/1 or bool."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name}: expected 0/1 or bool values, got {np.unique(arr)[:5].tolist()}")
        arr = arr.astype(bool)
    return arr


def _labels_preds(labels: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check that labels and predictions are equal-length binary vectors."""
    y = _binary(labels, "labels")
    p = _binary(preds, "preds")
    if y.shape != p.shape:
        raise ValueError(f"preds: expected the length of labels ({y.size}), got {p.size}")
    return y, p


def confusion(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Return the 2×2 confusion matrix ``[[TN, FP], [FN, TP]]``.

    Parameters
    ----------
    labels, preds : (N,) bool or 0/1 arrays
        True class and predicted class of each candidate (1 = asteroid).

    Returns
    -------
    (2, 2) int64 array
        Rows are the true class, columns the predicted class, in the order negative, positive.
    """
    y, p = _labels_preds(labels, preds)
    return np.bincount(2 * y.astype(np.int64) + p, minlength=4).reshape(2, 2)


def _ratio(num: float, den: float) -> float:
    """num / den, NaN when den is 0 (an undefined rate is reported as such, never as 0)."""
    return float(num) / float(den) if den else float("nan")


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean; NaN when either part is undefined, 0 when both are 0."""
    if np.isnan(precision) or np.isnan(recall):
        return float("nan")
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def classification_report(labels: np.ndarray, preds: np.ndarray) -> dict:
    """Per-class precision, recall, F1 and support, plus accuracy.

    Parameters
    ----------
    labels, preds : (N,) bool or 0/1 arrays
        True and predicted class of each candidate (1 = asteroid).

    Returns
    -------
    dict
        ``{"negative": {"precision", "recall", "f1", "support"}, "positive": {...},
        "accuracy", "n", "confusion": [[TN, FP], [FN, TP]]}``.

    Notes
    -----
    A rate whose denominator is 0 (no predicted positives, say) is NaN, not 0.
    """
    cm = confusion(labels, preds)
    report: dict = {}
    for k, name in enumerate(CLASS_NAMES):
        tp = cm[k, k]
        precision = _ratio(tp, cm[:, k].sum())
        recall = _ratio(tp, cm[k, :].sum())
        report[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "support": int(cm[k, :].sum()),
        }
    n = int(cm.sum())
    report["accuracy"] = _ratio(np.trace(cm), n)
    report["n"] = n
    report["confusion"] = cm.tolist()
    return report


def pr_curve(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision–recall curve of a score.

    Parameters
    ----------
    probs : (N,) float array
        Score of each candidate (higher = more asteroid-like). NaN counts as rejected at every
        threshold (a candidate stage 1 never passed on).
    labels : (N,) bool or 0/1 array

    Returns
    -------
    precision, recall, thresholds : (K,) float arrays
        At threshold ``thresholds[i]`` (accept ``probs >= thresholds[i]``) the precision and
        recall are ``precision[i]`` and ``recall[i]``; thresholds are the distinct finite scores in
        increasing order, so recall falls along the arrays.

    Notes
    -----
    Recall counts every positive, NaN-scored ones included. With no positives recall is NaN.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = _binary(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"probs: expected the length of labels ({y.size}), got {p.size}")
    finite = np.isfinite(p)
    n_pos = int(y.sum())
    thresholds, inverse = np.unique(p[finite], return_inverse=True)
    # counts of positives and of all at each distinct score, summed from the top down
    pos_at = np.bincount(inverse, weights=y[finite], minlength=thresholds.size)
    all_at = np.bincount(inverse, minlength=thresholds.size)
    tp = np.cumsum(pos_at[::-1])[::-1]
    accepted = np.cumsum(all_at[::-1])[::-1]
    precision = tp / np.maximum(accepted, 1)
    recall = tp / n_pos if n_pos else np.full(thresholds.size, np.nan)
    return precision, recall, thresholds


def threshold_for_precision(probs: np.ndarray, labels: np.ndarray, *, target: float) -> float:
    """Lowest threshold whose precision reaches ``target`` (so the highest recall that does).

    Parameters
    ----------
    probs, labels : (N,) arrays
        As for :func:`pr_curve`.
    target : float in (0, 1]

    Returns
    -------
    float
        The threshold; ``inf`` when no threshold reaches the target (accept nothing).
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target: expected a precision in (0, 1], got {target}")
    precision, _, thresholds = pr_curve(probs, labels)
    ok = np.flatnonzero(precision >= target)
    return float(thresholds[ok[0]]) if ok.size else float("inf")


# ----------------------------------------------------------------------------- asteroid level
def merge_detections(
    x: np.ndarray, y: np.ndarray, score: np.ndarray, *, radius: float, group: np.ndarray | None = None
) -> np.ndarray:
    """Merge detections closer than ``radius`` and keep the highest-scoring one of each cluster.

    Parameters
    ----------
    x, y : (D,) float arrays
        Detection column and row in px.
    score : (D,) float array
        The cascade's score; the best of a cluster survives (ties: the lowest index).
    radius : float
        Link length in px. Clusters are connected components of the "closer than or at radius"
        graph, so a chain of detections along a long trail merges into one.
    group : (D,) int array, optional
        Image key; detections of different groups never merge.

    Returns
    -------
    (K,) int64 array
        Increasing indices of the kept detections.

    Notes
    -----
    ``radius <= 0`` keeps everything; no detections gives an empty array.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    if not (xs.ndim == 1 and xs.shape == ys.shape == s.shape):
        raise ValueError(f"x, y, score: expected equal 1-D shapes, got {xs.shape}, {ys.shape}, {s.shape}")
    g = np.zeros(xs.size, dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
    if g.shape != xs.shape:
        raise ValueError(f"group: expected shape {xs.shape}, got {g.shape}")
    if xs.size == 0 or radius <= 0:
        return np.arange(xs.size, dtype=np.int64)
    pairs = cKDTree(_keyed_points(xs, ys, g, radius)).query_pairs(radius, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(xs.size, xs.size))
    _, component = connected_components(graph, directed=False)
    # best of each component: sort by (component, -score, index) and take the first of each
    order = np.lexsort((np.arange(xs.size), -np.nan_to_num(s, nan=-np.inf), component))
    first = np.ones(order.size, dtype=bool)
    first[1:] = component[order[1:]] != component[order[:-1]]
    return np.sort(order[first])


def _keyed_points(x: np.ndarray, y: np.ndarray, group: np.ndarray, reach: float) -> np.ndarray:
    """Stack (x, y, group * gap) so that points of different groups are never within ``reach``."""
    span = max(np.ptp(x), np.ptp(y)) if x.size else 0.0
    gap = 2.0 * (span + reach) + 1.0
    return np.column_stack([x, y, group.astype(np.float64) * gap])


def _check_truth(truth: np.ndarray) -> np.ndarray:
    """Validate a (M, 6) truth table and return it as float64."""
    t = np.asarray(truth, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 6:
        raise ValueError(f"truth: expected shape (M, 6) [image, x, y, magnitude, length, angle], got {t.shape}")
    return t


def match_detections(
    det_xy: np.ndarray, det_image: np.ndarray, truth: np.ndarray, *, radius: float = 3.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Match final detections to injected trails.

    Parameters
    ----------
    det_xy : (D, 2) float array
        Detection (x, y) in px.
    det_image : (D,) int array
        Image key of each detection; it is compared with ``truth[:, 0]``. Across several files,
        encode file and image in one key for both (e.g. ``file * n_images + image``).
    truth : (M, 6) float array
        Columns ``image, x, y, magnitude, length, angle`` (px, degrees).
    radius : float
        A detection matches an asteroid when it lies within ``radius`` px of its trail segment.

    Returns
    -------
    truth_found : (M,) bool
        Some detection matches the asteroid.
    det_matched : (D,) bool
        The detection matches some asteroid.
    det_truth : (D,) int64
        The nearest matching asteroid (by distance to its segment), -1 when none.
    n_duplicates : int
        Matched detections beyond the first per asteroid (by ``det_truth``).
    """
    xy = np.asarray(det_xy, dtype=np.float64).reshape(-1, 2)
    img = np.asarray(det_image, dtype=np.int64)
    t = _check_truth(truth)
    if img.shape != (xy.shape[0],):
        raise ValueError(f"det_image: expected shape ({xy.shape[0]},), got {img.shape}")
    if radius < 0:
        raise ValueError(f"radius: must be >= 0, got {radius}")
    n_det, n_truth = xy.shape[0], t.shape[0]
    det_truth = np.full(n_det, -1, dtype=np.int64)
    truth_found = np.zeros(n_truth, dtype=bool)
    if n_det == 0 or n_truth == 0:
        return truth_found, np.zeros(n_det, dtype=bool), det_truth, 0
    t_img = t[:, 0].astype(np.int64)
    # candidate pairs: within radius + half the longest trail of the centre, same image
    reach = radius + 0.5 * float(np.abs(t[:, 4]).max()) + 1e-9
    all_x = np.concatenate([xy[:, 0], t[:, 1]])
    all_y = np.concatenate([xy[:, 1], t[:, 2]])
    all_g = np.concatenate([img, t_img])
    pts = _keyed_points(all_x, all_y, all_g, reach)
    pairs = cKDTree(pts[:n_det]).sparse_distance_matrix(cKDTree(pts[n_det:]), reach, output_type="ndarray")
    di, ti = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    dist = segment_distance(xy[di, 0], xy[di, 1], t[ti, 1], t[ti, 2], t[ti, 4], t[ti, 5])
    ok = dist <= radius
    di, ti, dist = di[ok], ti[ok], dist[ok]
    truth_found[ti] = True
    # nearest asteroid per detection: sort by (detection, distance), first of each detection
    order = np.lexsort((ti, dist, di))
    first = np.ones(order.size, dtype=bool)
    first[1:] = di[order[1:]] != di[order[:-1]]
    det_truth[di[order[first]]] = ti[order[first]]
    det_matched = det_truth >= 0
    per_truth = np.bincount(det_truth[det_matched], minlength=n_truth)
    n_duplicates = int(np.maximum(per_truth - 1, 0).sum())
    return truth_found, det_matched, det_truth, n_duplicates


def miss_reasons(
    found: np.ndarray,
    *,
    dead: np.ndarray,
    proposed: np.ndarray,
    stage1_pass: np.ndarray,
    stage2_pass: np.ndarray,
    veto_pass: np.ndarray | None = None,
) -> np.ndarray:
    """Why each asteroid was missed, as an index into :data:`MISS_REASONS` (-1 = found).

    The first reason that applies wins, in pipeline order: ``dead`` (centre pixel masked),
    ``not_proposed`` (no candidate of the selector matches it), ``stage1_rejected``,
    ``stage2_rejected`` (its matched candidate was rejected by that stage), ``vetoed`` (accepted,
    then dropped by the veto after the classifier; ``veto_pass`` None: no veto), ``other`` (its
    candidate was kept, yet no final detection lies within the match radius, e.g. merged into a
    brighter neighbour's detection or accepted off the trail).
    """
    f = _binary(found, "found")
    veto_pass = np.ones(f.shape, dtype=bool) if veto_pass is None else veto_pass
    named = (("dead", dead), ("proposed", proposed), ("stage1_pass", stage1_pass), ("stage2_pass", stage2_pass),
             ("veto_pass", veto_pass))
    flags = [_binary(v, k) for k, v in named]
    for (name, _), v in zip(named, flags):
        if v.shape != f.shape:
            raise ValueError(f"{name}: expected shape {f.shape}, got {v.shape}")
    d, p, s1, s2, kept = flags
    reasons = np.select([f, d, ~p, ~s1, ~s2, ~kept], [-1, 0, 1, 2, 3, 4], default=5)
    return reasons.astype(np.int64)


def end_to_end(
    det_x: np.ndarray,
    det_y: np.ndarray,
    det_image: np.ndarray,
    det_score: np.ndarray,
    truth: np.ndarray,
    *,
    n_images: int,
    dead: np.ndarray,
    proposed: np.ndarray,
    stage1_pass: np.ndarray,
    stage2_pass: np.ndarray,
    veto_pass: np.ndarray | None = None,
    match_radius: float = 3.0,
    merge_radius: float = 0.0,
) -> dict:
    """Asteroid-level completeness, purity, false detections and the breakdown of misses.

    Parameters
    ----------
    det_x, det_y, det_image, det_score : (D,) arrays
        Accepted candidates (before merging): position in px, image key (as in
        :func:`match_detections`), cascade score.
    truth : (M, 6) float array
        All injected asteroids of the evaluated images (image key in column 0).
    n_images : int
        Number of evaluated images (quadrants), for false detections per quadrant.
    dead, proposed, stage1_pass, stage2_pass : (M,) bool arrays
        Per asteroid: centre masked; some candidate matches it; its matched candidate passed
        stage 1; and stage 2.
    veto_pass : (M,) bool array, optional
        Its accepted candidate survived the veto (the detections given are the survivors); None:
        no veto.
    match_radius, merge_radius : float
        Px from a trail segment for a match; px within which detections merge (0 = no merging).

    Returns
    -------
    dict
        ``completeness`` (found / injected: dead and never-proposed asteroids count as missed),
        ``completeness_visible`` (found / not dead), ``purity`` (matched / final detections),
        ``false_per_quadrant``, ``duplicates``, counts ``injected, found, missed, detections,
        detections_raw, false_detections``, ``misses`` (count per reason in
        :data:`MISS_REASONS`; they add up to ``missed``) and the per-object arrays ``found_mask``,
        ``miss_reason``, ``kept`` (indices into the input detections), ``det_matched``,
        ``det_truth`` (over the kept detections).
    """
    if n_images <= 0:
        raise ValueError(f"n_images: must be positive, got {n_images}")
    x = np.asarray(det_x, dtype=np.float64)
    y = np.asarray(det_y, dtype=np.float64)
    g = np.asarray(det_image, dtype=np.int64)
    t = _check_truth(truth)
    kept = merge_detections(x, y, det_score, radius=merge_radius, group=g)
    found, det_matched, det_truth, n_dup = match_detections(
        np.column_stack([x[kept], y[kept]]), g[kept], t, radius=match_radius
    )
    reasons = miss_reasons(found, dead=dead, proposed=proposed, stage1_pass=stage1_pass, stage2_pass=stage2_pass,
                           veto_pass=veto_pass)
    n_truth, n_found, n_det = t.shape[0], int(found.sum()), int(kept.size)
    n_false = int((~det_matched).sum())
    visible = int((~_binary(dead, "dead")).sum())
    return {
        "completeness": _ratio(n_found, n_truth),
        "completeness_visible": _ratio(n_found, visible),
        "purity": _ratio(int(det_matched.sum()), n_det),
        "false_per_quadrant": n_false / n_images,
        "duplicates": n_dup,
        "injected": n_truth,
        "found": n_found,
        "missed": n_truth - n_found,
        "detections": n_det,
        "detections_raw": int(x.size),
        "false_detections": n_false,
        "n_images": int(n_images),
        "misses": {name: int((reasons == k).sum()) for k, name in enumerate(MISS_REASONS)},
        "found_mask": found,
        "miss_reason": reasons,
        "kept": kept,
        "det_matched": det_matched,
        "det_truth": det_truth,
    }


def scalar_metrics(result: dict, *, prefix: str) -> dict[str, float]:
    """Flatten the scalar entries of an :func:`end_to_end` result to ``{prefix/e2e_<name>: value}``.

    Misses become ``<prefix>/e2e_miss_<reason>``; arrays are left out.
    """
    out: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update({f"{prefix}/e2e_miss_{k}": v for k, v in value.items()})
        elif np.isscalar(value):
            out[f"{prefix}/e2e_{key}"] = value
    return out
