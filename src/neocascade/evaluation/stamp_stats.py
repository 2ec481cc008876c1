"""Pixel statistics of difference stamps away from their source: heavy tails and star-subtraction residuals.

Pure functions on stacks of square stamps ``(N, S, S)``; the source sits at the centre and pixels within
``inner_radius`` of it are left out. Each stamp is measured in units of its own robust noise
(median and 1.4826 MAD of its off-centre pixels). Zeros and NaN are dead pixels and never count.
Used by ``make calibrate`` to say how real ZTF difference stamps differ from simulated ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from neocascade.preprocess.noise import MAD_TO_SIGMA

FLUX_EDGES = (50.0, 200.0, 800.0, 3200.0, 12800.0, np.inf)  # science DN per pixel, above the stamp's median


def _off_centre(stamps: np.ndarray, inner_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(float64 stamps, live off-centre mask), both (N, S, S)."""
    x = np.asarray(stamps, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"stamps: must have shape (N, S, S), got {x.shape}")
    c = (x.shape[1] - 1) / 2.0
    yy, xx = np.mgrid[:x.shape[1], :x.shape[2]]
    outer = np.hypot(yy - c, xx - c) > inner_radius
    return x, np.isfinite(x) & (x != 0) & outer[None]


def robust_z(stamps: np.ndarray, *, inner_radius: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Each stamp in units of its own off-centre noise.

    Returns
    -------
    z : (N, S, S) float64
        ``(x - median) / (1.4826 MAD)`` of the stamp's live off-centre pixels; NaN where not measured
        (the centre, dead pixels, and stamps with no spread).
    sigma : (N,) float64
        Each stamp's robust noise in its own units (NaN without live pixels).
    """
    x, keep = _off_centre(stamps, inner_radius)
    v = np.where(keep, x, np.nan)
    with warnings.catch_warnings():  # a stamp without live pixels gets NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(v, axis=(1, 2))
        sigma = MAD_TO_SIGMA * np.nanmedian(np.abs(v - median[:, None, None]), axis=(1, 2))
    good = np.isfinite(sigma) & (sigma > 0)
    z = np.full(x.shape, np.nan)
    z[good] = (v[good] - median[good, None, None]) / sigma[good, None, None]
    return z, np.where(good, sigma, np.nan)


def tail_shares(stamps: np.ndarray, *, inner_radius: float = 8.0, level: float = 4.0) -> tuple[float, float]:
    """Shares of measured off-centre pixels beyond ``+level`` and below ``-level`` robust sigma.

    A Gaussian gives 3.2e-5 each at 4 sigma. NaN when no pixel is measured.
    """
    z, _ = robust_z(stamps, inner_radius=inner_radius)
    z = z[np.isfinite(z)]
    if z.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(z > level)), float(np.mean(z < -level))


def subtraction_residuals(difference: np.ndarray, science: np.ndarray, template: np.ndarray, *,
                          inner_radius: float = 8.0, level: float = 4.0, source_level: float = 3.0,
                          flux_edges: tuple[float, ...] = FLUX_EDGES) -> dict[str, Any]:
    """Where a difference image's heavy tails sit, and how large the residual of a subtracted source is.

    Parameters
    ----------
    difference, science, template : (N, S, S) arrays
        Matching stamps (a ZTF alert's three cutouts). Science and template keep their sky; their median
        is removed per stamp.
    inner_radius : float
        Pixels closer than this to the centre (the alert's own source) are left out.
    level : float
        Tail pixels: ``|difference| > level`` robust sigma.
    source_level : float
        A pixel lies on a source when the template exceeds this many of its own robust sigma.
    flux_edges : tuple of float
        Bins of science flux per pixel (DN above the stamp median) for the residual rms.

    Returns
    -------
    dict
        ``tail_on_sources``: share of tail pixels that lie on template sources; ``source_pixel_share``:
        share of measured pixels on them; ``residual_rms_over_flux``: per science-flux bin, the robust rms of
        the difference with the sky noise removed in quadrature, over the bin's median flux (a subtraction
        that leaves ``k`` of each pixel's flux gives ``k``); ``residual_adjacent_correlation``: correlation of
        horizontally adjacent differences where both pixels hold more than 300 DN of science flux (1 for a smooth
        dipole or ring, 0 for pixel-independent residuals).
    """
    shapes = {np.shape(a) for a in (difference, science, template)}
    if len(shapes) != 1:
        raise ValueError(f"difference, science, template: must have the same shape, got {sorted(shapes)}")
    zd, sigma = robust_z(difference, inner_radius=inner_radius)
    zt, _ = robust_z(template, inner_radius=inner_radius)
    sci, keep = _off_centre(science, inner_radius)
    keep &= np.isfinite(zd) & np.isfinite(zt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        flux = sci - np.nanmedian(np.where(keep, sci, np.nan), axis=(1, 2))[:, None, None]
    diff = zd * sigma[:, None, None]
    tail = keep & (np.abs(zd) > level)
    on_source = keep & (zt >= source_level)
    rows = []
    for lo, hi in zip(flux_edges[:-1], flux_edges[1:]):
        sel = keep & (flux >= lo) & (flux < hi)
        if sel.sum() < 30:
            continue
        d = diff[sel]
        rms = MAD_TO_SIGMA * np.median(np.abs(d - np.median(d)))
        sky = float(np.median(np.broadcast_to(sigma[:, None, None], diff.shape)[sel]))
        f = float(np.median(flux[sel]))
        rows.append({"flux_dn": [lo, None if np.isinf(hi) else hi], "n": int(sel.sum()), "median_flux_dn": f,
                     "rms_over_flux": float(np.sqrt(max(rms ** 2 - sky ** 2, 0.0)) / f)})
    bright = keep & (flux > 300.0)
    pair = bright[:, :, :-1] & bright[:, :, 1:]
    a, b = diff[:, :, :-1][pair], diff[:, :, 1:][pair]
    corr = float(np.corrcoef(a, b)[0, 1]) if a.size >= 30 else float("nan")
    return {
        "tail_on_sources": float(on_source[tail].mean()) if tail.any() else float("nan"),
        "source_pixel_share": float(on_source.sum() / keep.sum()) if keep.any() else float("nan"),
        "residual_rms_over_flux": rows,
        "residual_adjacent_correlation": corr,
    }
