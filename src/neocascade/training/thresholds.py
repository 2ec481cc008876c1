"""Decision thresholds picked on validation scores: pure array functions.

A candidate is accepted when its score is at or above the threshold (``probs >= t``), the rule the
cascade artifact applies at inference.
"""

from __future__ import annotations

import numpy as np

from neocascade.evaluation.metrics import pr_curve
from neocascade.evaluation.metrics import threshold_for_precision as _threshold_for_precision

_RECALL_SLACK = 1e-12  # recall k/n is compared with a float target: 99/100 must reach 0.99


def threshold_for_recall(probs: np.ndarray, labels: np.ndarray, *, min_recall: float) -> float:
    """Highest threshold whose recall is at least ``min_recall``.

    Parameters
    ----------
    probs : (N,) float array
        P(asteroid) of each validation candidate; NaN counts as rejected.
    labels : (N,) bool or 0/1 array
        1 = asteroid.
    min_recall : float in (0, 1]
        Fraction of the positives that ``probs >= threshold`` must keep.

    Returns
    -------
    float
        The largest distinct score t with recall(t) >= ``min_recall``; it keeps the fewest negatives
        among the thresholds that keep enough positives.

    Notes
    -----
    With P positives the threshold is the ceil(min_recall * P)-th highest positive score (ties kept).
    Raises ValueError when there is no positive, or when NaN scores make the recall unreachable.
    """
    if not 0.0 < float(min_recall) <= 1.0:
        raise ValueError(f"min_recall: expected a recall in (0, 1], got {min_recall}")
    labels = np.asarray(labels)
    if labels.ndim == 1 and labels.size and not labels.astype(bool).any():
        raise ValueError("labels: no positive candidate, so no recall can be reached")
    _, recall, thresholds = pr_curve(probs, labels)
    ok = np.flatnonzero(recall >= float(min_recall) - _RECALL_SLACK)
    if ok.size == 0:
        raise ValueError(f"probs: recall {min_recall} is unreachable (too many NaN or no positive candidate)")
    return float(thresholds[ok[-1]])


def threshold_for_precision(probs: np.ndarray, labels: np.ndarray, *, target_precision: float) -> float:
    """Lowest threshold whose precision reaches ``target_precision`` (the highest recall that does).

    Parameters
    ----------
    probs, labels : (N,) arrays
        As for :func:`threshold_for_recall`.
    target_precision : float in (0, 1]

    Returns
    -------
    float
        The threshold; ``inf`` (accept nothing) when no threshold reaches the target.
    """
    return _threshold_for_precision(probs, labels, target=target_precision)
