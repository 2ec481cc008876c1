"""Sim-to-real check on real ZTF alerts: score each alert's stamp, then rates per alert group.

Groups follow from the packets alone (see ``/work/shared/data/ztf_alerts/README.md``):

- known asteroid with a positive subtraction (``0 <= ssdistnr <= 5`` arcsec, ``isdiffpos`` true):
  the detector should accept them; their acceptance rate is the *recall*;
- negative subtraction (``isdiffpos`` false: the source faded): scored on the signed difference
  (science minus reference), where the source is negative; the detector should reject them;
- low real-bogus (``rb`` below a cut): likely artefacts, should be rejected;
- the other positive alerts (transients, variables): a single-epoch stamp detector cannot tell them
  from asteroids, so their positive rate is reported, not scored.

These alerts are for measurement only: nothing here trains or tunes anything.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from neocascade.detection.detector import score_stamps, stamp_centre

KNOWN_ASTEROID_ARCSEC = 5.0  # README: a known solar-system object within 5 arcsec
LOW_RB = 0.5  # below this real-bogus score an alert counts as likely bogus (none here: all rb >= 0.55)
Z95 = 1.959963984540054  # two-sided 95 % normal quantile, for Wilson intervals


def alert_table(alerts: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per-alert columns from :class:`~neocascade.io.alerts.Alert` objects.

    Returns
    -------
    dict of (N,) arrays
        ``file, candid, object_id, isdiffpos, ssdistnr, magpsf, rb, fid, xpos, ypos, ra, dec``;
        missing numeric fields are NaN (``ssdistnr`` -999 kept as stored).
    """

    def number(alert: Any, key: str) -> float:
        value = alert.candidate.get(key)
        return float("nan") if value is None else float(value)

    return {
        "file": np.array([str(a.path) for a in alerts], dtype=object),
        "candid": np.array([a.candid for a in alerts], dtype=np.int64),
        "object_id": np.array([a.object_id for a in alerts], dtype=object),
        "isdiffpos": np.array([a.isdiffpos for a in alerts], dtype=bool),
        **{key: np.array([number(a, key) for a in alerts], dtype=np.float64)
           for key in ("ssdistnr", "magpsf", "rb", "fid", "xpos", "ypos", "ra", "dec")},
    }


def score_alerts(
    alerts: Sequence[Any], cascade: Any, *, signed: bool = True, batch_size: int = 1024
) -> dict[str, np.ndarray]:
    """Score the alert position in each difference stamp.

    Parameters
    ----------
    alerts : sequence of Alert
    cascade : Cascade
    signed : bool
        True (the default) scores science minus reference (``Alert.signed_difference``); False
        scores the stamp as stored (a negative alert sign-flipped to look positive), a diagnostic
        of how much the detector relies on the sign.
    batch_size : int

    Returns
    -------
    dict of (N,) arrays
        ``row, col`` (position in the stamp), ``p1, p2, peak, snr, detected``.

    Raises
    ------
    ValueError
        A stamp is smaller than the cutout or fully masked (message names the stamp).
    """
    stamps = [a.signed_difference if signed else a.difference for a in alerts]
    centres = [
        stamp_centre(s.shape, xpos=a.candidate.get("xpos"), ypos=a.candidate.get("ypos"))
        for s, a in zip(stamps, alerts)
    ]
    return score_stamps(stamps, cascade, centres=centres, batch_size=batch_size)


def alert_masks(
    table: Mapping[str, np.ndarray], *, known_arcsec: float = KNOWN_ASTEROID_ARCSEC, low_rb: float = LOW_RB
) -> dict[str, np.ndarray]:
    """Boolean masks of the evaluation groups (see the module docstring); groups may overlap.

    Returns ``known_asteroid`` (positive subtraction only), ``negative``, ``low_rb`` and ``other``
    (positive, not a known asteroid, rb at or above the cut).
    """
    positive = np.asarray(table["isdiffpos"], dtype=bool)
    dist = np.asarray(table["ssdistnr"], dtype=np.float64)
    rb = np.asarray(table["rb"], dtype=np.float64)
    known = (dist >= 0) & (dist <= known_arcsec)
    low = rb < low_rb
    return {
        "known_asteroid": known & positive,
        "negative": ~positive,
        "low_rb": low,
        "other": positive & ~known & ~low,
    }


def rate(hits: np.ndarray) -> dict[str, Any]:
    """Fraction of True in ``hits`` with its Wilson 95 % interval; NaN rate for no alerts."""
    hits = np.asarray(hits, dtype=bool)
    n, k = int(hits.size), int(hits.sum())
    if n == 0:
        return {"n": 0, "k": 0, "rate": float("nan"), "ci95": [float("nan"), float("nan")]}
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / denom
    return {"n": n, "k": k, "rate": p, "ci95": [max(0.0, centre - half), min(1.0, centre + half)]}


def alert_metrics(
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    *,
    magpsf: np.ndarray,
    threshold1: float,
    mag_edges: Sequence[float],
) -> dict[str, Any]:
    """Rates per group, overall and by ``magpsf`` bin.

    Parameters
    ----------
    scores : mapping
        From :func:`score_alerts` (``p1``, ``detected``).
    masks : mapping
        From :func:`alert_masks`.
    magpsf : (N,) float array
    threshold1 : float
        The cascade's stage-1 threshold: ``p1 >= threshold1`` passes stage 1.
    mag_edges : increasing sequence of float
        Bin edges; alerts outside them fall in the open first/last bins.

    Returns
    -------
    dict
        ``known_asteroid_recall``, ``known_asteroid_stage1_recall``, ``negative_rejection``,
        ``low_rb_rejection``, ``other_positive_rate`` (each :func:`rate`), and ``by_magnitude``:
        a list of ``{"bin": [lo, hi], <same keys>}``.
    """
    detected = np.asarray(scores["detected"], dtype=bool)
    stage1 = np.asarray(scores["p1"], dtype=np.float64) >= threshold1
    mag = np.asarray(magpsf, dtype=np.float64)
    edges = np.asarray(mag_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 1 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"mag_edges: must be an increasing list of numbers, got {list(mag_edges)}")

    def summary(sel: np.ndarray) -> dict[str, Any]:
        return {
            "known_asteroid_recall": rate(detected[sel & masks["known_asteroid"]]),
            "known_asteroid_stage1_recall": rate(stage1[sel & masks["known_asteroid"]]),
            "negative_rejection": rate(~detected[sel & masks["negative"]]),
            "low_rb_rejection": rate(~detected[sel & masks["low_rb"]]),
            "other_positive_rate": rate(detected[sel & masks["other"]]),
        }

    result = summary(np.ones(detected.size, dtype=bool))
    bounds = np.concatenate([[-np.inf], edges, [np.inf]])
    result["by_magnitude"] = [
        {"bin": [float(lo), float(hi)], **summary((mag >= lo) & (mag < hi))}
        for lo, hi in zip(bounds[:-1], bounds[1:])
        if np.any((mag >= lo) & (mag < hi))
    ]
    return result


def scalar_alert_metrics(metrics: Mapping[str, Any], *, prefix: str = "ztf_alerts") -> dict[str, float]:
    """Flat ``<prefix>/<name>`` rates (as in the report and wandb) from :func:`alert_metrics`."""
    keys = ("known_asteroid_recall", "known_asteroid_stage1_recall", "negative_rejection", "low_rb_rejection",
            "other_positive_rate")
    return {f"{prefix}/{key}": float(metrics[key]["rate"]) for key in keys}
