"""Evaluation figures: each function takes arrays and returns a matplotlib Figure.

Figures are built with :class:`matplotlib.figure.Figure` directly (the Agg canvas, no pyplot and
no global state), so they are safe in worker processes and tests. Saving is the caller's job
(:func:`neocascade.evaluation.report.write_report` writes PNGs atomically).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.colors import LogNorm, Normalize, SymLogNorm
from matplotlib.figure import Figure

from neocascade.evaluation.completeness import (
    LogisticFit,
    binned_completeness,
    binned_miss_rate,
    binomial_interval,
    fit_logistic,
    logistic,
    magnitude_bins,
)
from neocascade.evaluation.metrics import CLASS_NAMES, MISS_REASONS

MAG_LABEL = "magnitude [mag]"
RATE_LABEL = "completeness (found / injected)"


def _figure(size: tuple[float, float] = (6.0, 4.2)) -> tuple[Figure, object]:
    """One-panel figure with a constrained layout."""
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots()


def _errorbar_curve(ax, centres, frac, lo, hi, *, label: str, **kwargs) -> None:
    """Plot a fraction with asymmetric errors, skipping empty bins."""
    ok = np.isfinite(frac)
    ax.errorbar(centres[ok], frac[ok], yerr=[lo[ok], hi[ok]], fmt="o", ms=4, capsize=2, label=label, **kwargs)


def completeness_vs_magnitude(
    mags: np.ndarray,
    found: np.ndarray,
    *,
    step: float = 0.25,
    fit: LogisticFit | None = None,
    reference: Mapping[str, np.ndarray] | None = None,
    title: str = "End-to-end completeness vs magnitude",
) -> Figure:
    """Found fraction in ``step``-mag bins with Clopper–Pearson ±1σ bars, the logistic fit and m50.

    ``fit`` defaults to :func:`fit_logistic` on the same data; ``reference`` adds curves for
    other flags of the same asteroids (e.g. ``{"proposed by the selector": proposed}``).
    """
    fig, ax = _figure()
    edges = magnitude_bins(mags, step=step)
    for name, flags in (reference or {}).items():
        c, _, _, frac, lo, hi = binned_completeness(mags, flags, bins=edges)
        _errorbar_curve(ax, c, frac, lo, hi, label=name, alpha=0.6)
    c, _, _, frac, lo, hi = binned_completeness(mags, found, bins=edges)
    _errorbar_curve(ax, c, frac, lo, hi, label="cascade (end to end)", color="k")
    fit = fit_logistic(mags, found) if fit is None else fit
    lo_m, hi_m = float(edges[0]), float(edges[-1])
    if np.isfinite(fit.m50) and lo_m <= fit.m50 <= hi_m:
        grid = np.linspace(lo_m, hi_m, 300)
        ax.plot(grid, logistic(grid, m50=fit.m50, width=fit.width, plateau=fit.plateau), color="C3",
                label=f"logistic fit: c={fit.plateau:.2f}, w={fit.width:.2f} mag")
        ax.axvline(fit.m50, color="C3", ls="--", lw=1, label=f"m50 = {fit.m50:.2f} ± {fit.m50_err:.2f} mag")
        if np.isfinite(fit.m50_err):
            ax.axvspan(max(fit.m50 - fit.m50_err, lo_m), min(fit.m50 + fit.m50_err, hi_m), color="C3", alpha=0.15)
    ax.set_xlim(lo_m, hi_m)
    ax.set(xlabel=MAG_LABEL, ylabel=RATE_LABEL, ylim=(-0.03, 1.05), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def completeness_vs_length(
    lengths: np.ndarray, found: np.ndarray, *, bins: int | np.ndarray = 10,
    title: str = "End-to-end completeness vs trail length",
) -> Figure:
    """Found fraction in bins of trail length (px) with Clopper–Pearson ±1σ bars."""
    fig, ax = _figure()
    c, k, n, frac, lo, hi = binned_completeness(lengths, found, bins=bins)
    _errorbar_curve(ax, c, frac, lo, hi, label="cascade (end to end)", color="k")
    ax.set(xlabel="trail length [px]", ylabel=RATE_LABEL, ylim=(-0.03, 1.05), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def footprint_vs_kernel(
    kernels: Sequence[int], k: np.ndarray, n: np.ndarray, *,
    candidates_per_image: np.ndarray | None = None,
    title: str = "Footprint selector: asteroids proposed vs kernel size",
) -> Figure:
    """The seed's Fig. 3: fraction of asteroids some footprint candidate matches, per kernel size.

    ``k`` and ``n`` are proposed and injected counts per kernel; the optional candidates per image
    go on a second (log) axis, the cost side of the trade-off.
    """
    kern = np.asarray(kernels, dtype=np.float64)
    k = np.asarray(k)
    n = np.asarray(n)
    fig, ax = _figure()
    lo, hi = binomial_interval(k, n)
    frac = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    ax.errorbar(kern, frac, yerr=[frac - lo, hi - frac], fmt="o-", ms=4, capsize=2, color="k",
                label="asteroids proposed")
    ax.set(xlabel="footprint kernel size [px]", ylabel="fraction of asteroids proposed", ylim=(-0.03, 1.05),
           title=title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if candidates_per_image is not None:
        ax2 = ax.twinx()
        line = ax2.plot(kern, candidates_per_image, "s--", color="C1", ms=4, label="candidates per image")
        ax2.set_yscale("log")
        ax2.set_ylabel("candidates per image", color="C1")
        handles, labels = handles + line, labels + ["candidates per image"]
    ax.legend(handles, labels, fontsize=8, loc="lower left")
    return fig


def footprint_vs_magnitude(
    mags: np.ndarray, proposed: Mapping[int, np.ndarray], *, step: float = 0.25,
    title: str = "Footprint selector: asteroids proposed vs magnitude",
) -> Figure:
    """The seed's Fig. 4: proposed fraction vs magnitude, one curve per kernel size (px)."""
    fig, ax = _figure()
    edges = magnitude_bins(mags, step=step)
    n_curves = len(proposed)
    for i, (kernel, flags) in enumerate(sorted(proposed.items())):
        c, _, _, frac, lo, hi = binned_completeness(mags, flags, bins=edges)
        ok = np.isfinite(frac)
        dodge = (i - (n_curves - 1) / 2) * 0.5 * step / max(n_curves, 1)  # side by side within a bin
        ax.errorbar(c[ok] + dodge, frac[ok], yerr=[lo[ok], hi[ok]], fmt="o-", ms=3, capsize=2, lw=1,
                    color=f"C{i % 10}", label=f"kernel {kernel} px")
    ax.set(xlabel=MAG_LABEL, ylabel="fraction of asteroids proposed", ylim=(-0.03, 1.05), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def miss_rate_vs_magnitude(
    mags: np.ndarray, found: np.ndarray, *, reasons: np.ndarray | None = None, step: float = 0.25,
    title: str = "False-negative rate vs magnitude",
) -> Figure:
    """Missed fraction per magnitude bin with ±1σ bars; ``reasons`` (from
    :func:`neocascade.evaluation.metrics.miss_reasons`) stacks the misses by cause underneath."""
    fig, ax = _figure()
    edges = magnitude_bins(mags, step=step)
    c, _, n, frac, lo, hi = binned_miss_rate(mags, found, bins=edges)
    if reasons is not None:
        r = np.asarray(reasons)
        bottom = np.zeros(c.size)
        for j, name in enumerate(MISS_REASONS):
            cnt, _ = np.histogram(np.asarray(mags)[r == j], bins=edges)
            part = np.where(n > 0, cnt / np.maximum(n, 1), 0.0)
            if part.any():
                ax.bar(c, part, width=0.9 * np.diff(edges), bottom=bottom, alpha=0.5, color=f"C{j}",
                       label=name.replace("_", " "))
            bottom += part
    _errorbar_curve(ax, c, frac, lo, hi, label="missed (all causes)", color="k")
    ax.set(xlabel=MAG_LABEL, ylabel="false-negative rate (missed / injected)", ylim=(-0.03, 1.05), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def pr_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    points: Mapping[str, tuple[float, float]] | None = None,
    target_precision: float | None = None,
    title: str = "Precision–recall (validation file)",
) -> Figure:
    """Precision–recall curves ``{name: (precision, recall)}`` with marked operating points
    ``{name: (precision, recall)}`` and an optional horizontal target-precision line."""
    fig, ax = _figure()
    for name, (precision, recall) in curves.items():
        ax.plot(recall, precision, lw=1.5, label=name)
    for i, (name, (p, r)) in enumerate((points or {}).items()):
        ax.plot([r], [p], marker="*o^sD"[i % 5], ms=10, ls="none", label=f"{name}: P={p:.3f}, R={r:.3f}")
    if target_precision is not None:
        ax.axhline(target_precision, color="grey", ls=":", lw=1, label=f"target precision {target_precision:g}")
    ax.set(xlabel="recall (candidate level)", ylabel="precision (candidate level)", xlim=(0, 1.02),
           ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def confusion_figure(cm: np.ndarray, *, title: str = "Confusion matrix") -> Figure:
    """Heatmap of a 2×2 confusion matrix (rows true, columns predicted) with a colour bar.

    Each cell shows its count and, below it, the fraction of its true class; the colour scale
    is logarithmic because negatives outnumber asteroids by orders of magnitude.
    """
    cm = np.asarray(cm, dtype=np.int64)
    fig, ax = _figure((4.8, 3.8))
    im = ax.imshow(np.maximum(cm, 1), cmap="Blues", norm=LogNorm(vmin=1, vmax=max(int(cm.max()), 10)))
    fig.colorbar(im, ax=ax, label="candidates")
    row = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    bright = np.sqrt(max(int(cm.max()), 10))
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:d}", ha="center", va="bottom", color="white" if v > bright else "black")
        ax.text(j, i, f"({v / row[i, 0]:.1%})", ha="center", va="top", fontsize=8,
                color="white" if v > bright else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
           xlabel="predicted class", ylabel="true class", title=title)
    return fig


def cutout_grid(
    cutouts: np.ndarray,
    *,
    captions: Sequence[str] | None = None,
    ncols: int = 8,
    title: str = "Cutouts",
    unit: str = "DN",
    robust: bool = True,
) -> Figure:
    """Grid of (N, S, S) stamps on one shared colour scale (the 1–99.9 % range when ``robust``),
    with a colour bar. The seed's Fig. 6 shows positives and negatives this way.

    With ``robust`` the scale runs from the 0.5 % quantile to the maximum and is linear within
    3 noise sigmas (1.4826 MAD of all pixels) and logarithmic beyond, so faint trails and bright
    stars stay visible side by side on one colour bar.
    """
    stamps = np.asarray(cutouts, dtype=np.float64)
    if stamps.ndim != 3:
        raise ValueError(f"cutouts: expected (N, S, S), got shape {stamps.shape}")
    n = max(stamps.shape[0], 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(1.3 * ncols + 1.0, 1.4 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    finite = stamps[np.isfinite(stamps)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    vmax = vmax if vmax > vmin else vmin + 1.0
    if robust and finite.size:
        vmin = min(float(np.percentile(finite, 0.5)), vmax - 1e-6)
        sigma = 1.4826 * float(np.median(np.abs(finite - np.median(finite))))
        norm = SymLogNorm(linthresh=max(3.0 * sigma, 1e-3 * (vmax - vmin)), vmin=vmin, vmax=vmax)
    else:
        norm = Normalize(vmin=vmin, vmax=vmax)
    im = None
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= stamps.shape[0]:
            ax.set_axis_off()
            continue
        im = ax.imshow(stamps[i], cmap="gray", norm=norm, origin="lower")
        if captions is not None:
            ax.set_title(captions[i], fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label=f"pixel value [{unit}]")
    fig.suptitle(title)
    fig.supxlabel(f"x [px] ({stamps.shape[-1]}-px stamps)", fontsize=8)
    fig.supylabel("y [px]", fontsize=8)
    return fig


def pixel_boxplots(
    groups: Mapping[str, np.ndarray], *, title: str = "Pixel values", unit: str = "DN", symlog: bool = True,
) -> Figure:
    """The seed's Fig. 2: box plots of pixel values, e.g. ``{"all pixels": ..., "asteroid centres": ...}``.

    Whiskers span the 1–99 % range; NaN pixels are left out. A symmetric-log axis keeps the
    noise core and the bright tail readable together.
    """
    fig, ax = _figure((max(6.0, 1.8 * len(groups)), 4.2))
    data = [np.asarray(v, dtype=np.float64).ravel() for v in groups.values()]
    data = [v[np.isfinite(v)] for v in data]
    ax.boxplot(data, whis=(1, 99), showfliers=False, tick_labels=[k.replace(" (", "\n(") for k in groups])
    if symlog:
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set(ylabel=f"pixel value [{unit}]", xlabel="pixel set", title=title)
    ax.grid(alpha=0.3, axis="y")
    return fig


def tsne_figure(embedding: np.ndarray, labels: np.ndarray, clusters: np.ndarray, *, accuracy: float) -> Figure:
    """3-D t-SNE scatter coloured by true class, with the 2-cluster k-means assignment as marker."""
    emb = np.asarray(embedding)
    y = np.asarray(labels).astype(bool)
    cl = np.asarray(clusters)
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    for lab, colour in ((False, "C0"), (True, "C3")):
        for c, marker in ((0, "o"), (1, "^")):
            sel = (y == lab) & (cl == c)
            if sel.any():
                ax.scatter(emb[sel, 0], emb[sel, 1], emb[sel, 2], s=6, c=colour, marker=marker, alpha=0.6,
                           label=f"{CLASS_NAMES[int(lab)]}, cluster {c}")
    if emb.shape[0] >= 20:  # a few far outliers would squash the rest into a dot
        lo, hi = np.percentile(emb, [0.5, 99.5], axis=0)
        pad = 0.05 * (hi - lo)
        ax.set(xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]),
               zlim=(lo[2] - pad[2], hi[2] + pad[2]))
    ax.set_xlabel("t-SNE 1 [arb.]")
    ax.set_ylabel("t-SNE 2 [arb.]")
    ax.set_zlabel("t-SNE 3 [arb.]")
    ax.set_title(f"t-SNE of cutouts; k-means (2) agrees with labels: {accuracy:.1%}")
    ax.legend(fontsize=7, loc="upper left")
    return fig
