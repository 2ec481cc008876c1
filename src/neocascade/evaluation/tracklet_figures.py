"""Figures of a linked night: tracklets on the sky, completeness vs rate and vs magnitude.

Like :mod:`neocascade.evaluation.figures`, each function takes arrays and returns a matplotlib
Figure built without pyplot; the caller saves it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from neocascade.evaluation.completeness import binned_completeness
from neocascade.evaluation.figures import _errorbar_curve, _figure, completeness_vs_magnitude

__all__ = ["tracklets_on_sky", "completeness_vs_rate", "tracklet_completeness_vs_magnitude"]


def tracklets_on_sky(
    ra: np.ndarray,
    dec: np.ndarray,
    mjd: np.ndarray,
    tracklet: np.ndarray,
    *,
    stationary: np.ndarray | None = None,
    truth: Mapping[str, np.ndarray] | None = None,
    title: str = "Tracklets of one field",
) -> Figure:
    """Detections of one field on the sky, each tracklet drawn as a line through its detections.

    Parameters
    ----------
    ra, dec, mjd : (N,) float arrays
        Detection positions (deg) and times.
    tracklet : (N,) int array
        Tracklet id, -1 unlinked (grey dots).
    stationary : (N,) bool array, optional
        Stationary sources, drawn as open squares.
    truth : mapping with ``ra, dec``, optional
        True asteroid positions, drawn as small crosses under the detections.

    Notes
    -----
    RA grows to the left (east left, as on the sky). RA is unwrapped around the field's median, so
    a field across RA = 0 stays in one piece.
    """
    ra = np.asarray(ra, dtype=np.float64)
    ref = float(np.median(ra)) if ra.size else 0.0
    x = ((ra - ref + 180.0) % 360.0) - 180.0 + ref
    y = np.asarray(dec, dtype=np.float64)
    t = np.asarray(tracklet, dtype=np.int64)
    fig, ax = _figure((7.0, 6.0))
    if truth is not None and len(truth["ra"]):
        tx = ((np.asarray(truth["ra"]) - ref + 180.0) % 360.0) - 180.0 + ref
        ax.scatter(tx, truth["dec"], marker="x", s=14, color="C2", alpha=0.6, lw=0.8, label="true asteroid positions")
    free = t < 0
    ax.scatter(x[free], y[free], s=4, color="0.6", label=f"unlinked ({int(free.sum())})")
    if stationary is not None and np.any(stationary):
        s = np.asarray(stationary, dtype=bool)
        ax.scatter(x[s], y[s], s=30, marker="s", facecolors="none", edgecolors="C1",
                   label=f"stationary ({int(s.sum())})")
    linked = np.flatnonzero(~free)
    order = linked[np.lexsort((np.asarray(mjd)[linked], t[linked]))]
    same = t[order][1:] == t[order][:-1]
    segments = np.stack([np.column_stack([x[order][:-1], y[order][:-1]]),
                         np.column_stack([x[order][1:], y[order][1:]])], axis=1)[same] if order.size > 1 else np.empty((0, 2, 2))
    ax.add_collection(LineCollection(segments, colors="C0", linewidths=1.5))
    n_tracklets = np.unique(t[~free]).size
    ax.scatter(x[~free], y[~free], s=10, color="C0", label=f"in tracklets ({n_tracklets} tracklets)")
    ax.invert_xaxis()
    ax.set(xlabel="RA [deg]", ylabel="Dec [deg]", title=title)
    ax.set_aspect(1.0 / max(np.cos(np.deg2rad(np.median(y) if y.size else 0.0)), 1e-3), adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def completeness_vs_rate(
    rates: np.ndarray,
    found: np.ndarray,
    *,
    reference: Mapping[str, np.ndarray] | None = None,
    bins: int = 8,
    title: str = "Tracklet completeness vs sky rate",
) -> Figure:
    """Found fraction of findable objects in log-spaced rate bins, with Clopper–Pearson ±1σ bars.

    Parameters
    ----------
    rates : (K,) float array
        Sky rate of each findable object, deg/day (> 0).
    found : (K,) bool array
    reference : mapping of name -> (K,) bool, optional
        Other flags of the same objects (e.g. single-exposure detection).
    bins : int
        Number of log-spaced bins between the smallest and largest rate.
    """
    r = np.asarray(rates, dtype=np.float64)
    fig, ax = _figure()
    if r.size and (r > 0).all():
        lo, hi = np.log10(r.min()), np.log10(r.max())
        edges = np.logspace(lo, hi if hi > lo else lo + 0.1, int(bins) + 1)
        centres = np.sqrt(edges[1:] * edges[:-1])
        for name, flags in (reference or {}).items():
            _, _, _, frac, elo, ehi = binned_completeness(r, flags, bins=edges)
            _errorbar_curve(ax, centres, frac, elo, ehi, label=name, alpha=0.6)
        _, _, _, frac, elo, ehi = binned_completeness(r, found, bins=edges)
        _errorbar_curve(ax, centres, frac, elo, ehi, label="linked (tracklets)", color="k")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short log axis
    ax.set(xlabel="sky rate [deg/day]", ylabel="completeness (found / findable)", ylim=(-0.03, 1.05), title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return fig


def tracklet_completeness_vs_magnitude(
    mags: np.ndarray, found_linked: np.ndarray, *, reference: Mapping[str, np.ndarray] | None = None
) -> Figure:
    """Completeness vs magnitude after linking (black, with the logistic fit and m50 when it falls inside the
    data), with ``reference`` curves of the same truth rows (e.g. single-exposure detection at some threshold)."""
    fig = completeness_vs_magnitude(mags, found_linked, reference=reference,
                                    title="Completeness vs magnitude after linking")
    for text in fig.axes[0].get_legend().get_texts():
        if text.get_text() == "cascade (end to end)":
            text.set_text("linked (tracklets)")
    return fig
