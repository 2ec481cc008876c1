"""Sim-to-real check on real ZTF alerts: score each alert's stamp, then rates per alert group.

Groups follow from the packets alone (see ``../shared/data/ztf_alerts/README.md`` beside the checkout):

- known asteroid with a positive subtraction (``0 <= ssdistnr <= 5`` arcsec, ``isdiffpos`` true):
  the detector should accept them; their acceptance rate is the *recall*;
- negative subtraction (``isdiffpos`` false: the source faded): scored on the signed difference
  (science minus reference), where the source is negative; the detector should reject them;
- low real-bogus (``rb`` below a cut): likely artefacts, should be rejected;
- the other positive alerts (transients, variables): a single-epoch stamp detector cannot tell them
  from asteroids, so their positive rate is reported, not scored.

The packet's own history at the position adds what one stamp cannot know: an asteroid moving at
least ``MIN_RATE_ARCSEC_PER_HOUR`` leaves a ``HISTORY_MATCH_ARCSEC`` circle within
``match / rate`` (30 min), so a source already detected there earlier than that is stationary
(:func:`stationary_by_history`). Both numbers come from motion physics and ZTF's association radius,
fixed before looking at any alert; the known-object fields (``ssdistnr``, ``ssnamenr``, ``ssmagnr``)
are labels and never an input.

These alerts are for measurement only: nothing here trains or tunes anything.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from neocascade.detection.detector import score_stamps, stamp_centre

KNOWN_ASTEROID_ARCSEC = 5.0  # README: a known solar-system object within 5 arcsec
LOW_RB = 0.5  # below this real-bogus score an alert counts as likely bogus (none here: all rb >= 0.55)
HISTORY_MATCH_ARCSEC = 1.5  # ZTF's radius for ndethist/jdstarthist (alert schema); prv_candidates matched alike
# Slowest motion the detector targets: main-belt asteroids move ~30"/h near opposition (NEOs faster) and drop to
# a few "/h only briefly around their stationary points; Centaurs and TNOs (1-4"/h) are out of scope.
# 1.5" / 3"/h = a 30 min window.
MIN_RATE_ARCSEC_PER_HOUR = 3.0
Z95 = 1.959963984540054  # two-sided 95 % normal quantile, for Wilson intervals


def alert_table(alerts: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per-alert columns from :class:`~neocascade.io.alerts.Alert` objects.

    Returns
    -------
    dict of (N,) arrays
        ``file, candid, object_id, isdiffpos, ssdistnr, magpsf, rb, fid, xpos, ypos, ra, dec, jd,
        jdstarthist, ndethist, distnr, magnr``; missing numeric fields are NaN (``ssdistnr`` and ``distnr`` -999
        kept as stored).
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
           for key in ("ssdistnr", "magpsf", "rb", "fid", "xpos", "ypos", "ra", "dec", "jd", "jdstarthist",
                       "ndethist", "distnr", "magnr")},
    }


def previous_detections(alerts: Sequence[Any]) -> dict[str, np.ndarray]:
    """The earlier detections of every alert (``Alert.previous_detections``) as flat columns.

    Returns
    -------
    dict of (K,) arrays
        ``alert`` (index into ``alerts``), ``jd`` (days), ``ra``, ``dec`` (deg).
    """
    parts = [a.previous_detections() for a in alerts]
    counts = np.array([p["jd"].size for p in parts], dtype=np.int64)
    index = np.repeat(np.arange(len(parts), dtype=np.int64), counts)

    def flat(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts]) if parts else np.zeros(0, dtype=np.float64)

    return {"alert": index, "jd": flat("jd"), "ra": flat("ra"), "dec": flat("dec")}


def stationary_by_history(
    table: Mapping[str, np.ndarray],
    previous: Mapping[str, np.ndarray],
    *,
    match_arcsec: float = HISTORY_MATCH_ARCSEC,
    min_rate_arcsec_per_hour: float = MIN_RATE_ARCSEC_PER_HOUR,
) -> dict[str, np.ndarray]:
    """Flag alerts whose position already held a detection too long ago for a moving object.

    Parameters
    ----------
    table : mapping of (N,) arrays
        ``jd`` (days), ``ra``, ``dec`` (deg) and ``jdstarthist`` (days; NaN when absent): the
        earliest detection within ZTF's 1.5" of the position, this one included.
    previous : mapping of (K,) arrays
        From :func:`previous_detections`: ``alert`` index, ``jd``, ``ra``, ``dec``.
    match_arcsec : float
        Radius that counts as the same position.
    min_rate_arcsec_per_hour : float
        Slowest sky motion of a target asteroid; with the radius it fixes the window
        ``match / rate`` beyond which an asteroid cannot still be at the position.

    Returns
    -------
    dict of (N,) arrays
        ``history_span_min``: minutes from the earliest detection at the position (``jdstarthist``
        or a matched previous detection) to this one, 0 when there is none; ``stationary``: that
        span exceeds the window.

    Notes
    -----
    No history (a missing ``jdstarthist``, no previous detection) is no evidence: not stationary.
    A history later than the alert (clock or schema oddities) does not count either.
    """
    if not (match_arcsec > 0 and min_rate_arcsec_per_hour > 0):
        raise ValueError(f"match_arcsec, min_rate_arcsec_per_hour: must be positive, got "
                         f"{match_arcsec}, {min_rate_arcsec_per_hour}")
    jd = np.asarray(table["jd"], dtype=np.float64)
    start = np.asarray(table["jdstarthist"], dtype=np.float64)
    span = np.where(np.isfinite(start) & np.isfinite(jd), jd - start, 0.0)
    index = np.asarray(previous["alert"], dtype=np.int64)
    if index.size:
        ra0 = np.asarray(table["ra"], dtype=np.float64)[index]
        dec0 = np.asarray(table["dec"], dtype=np.float64)[index]
        sep = _separation_arcsec(ra0, dec0, np.asarray(previous["ra"]), np.asarray(previous["dec"]))
        dt = np.where(sep <= match_arcsec, jd[index] - np.asarray(previous["jd"], dtype=np.float64), 0.0)
        np.maximum.at(span, index, np.nan_to_num(dt))
    span_min = np.maximum(span, 0.0) * 1440.0
    window_min = match_arcsec / min_rate_arcsec_per_hour * 60.0
    return {"history_span_min": span_min, "stationary": span_min > window_min}


def _separation_arcsec(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray) -> np.ndarray:
    """Great-circle separation (haversine) in arcsec between positions in degrees."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))) * 3600.0


def score_alerts(
    alerts: Sequence[Any], cascade: Any, *, signed: bool = True, batch_size: int = 1024, check: Any = None
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
    check : RingCheck, optional
        The residual check ``detected`` also needs (``residual_check=ring``).

    Returns
    -------
    dict of (N,) arrays
        ``row, col`` (position in the stamp), ``p1, p2, peak, snr, ring, detected``.

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
    return score_stamps(stamps, cascade, centres=centres, batch_size=batch_size, check=check)


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
