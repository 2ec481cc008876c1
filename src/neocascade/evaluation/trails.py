"""Trail metrics: completeness by length, matched-filter SNR and surface brightness, false trails, satellites rejected.

Pure array functions over truth rows (``x, y, magnitude, length, angle``) and trail tables
(:data:`~neocascade.detection.trails.TRAIL_KEYS`).
"""

from __future__ import annotations

import numpy as np

from neocascade.detection.trails import point_segment_distance

__all__ = ["binned_completeness", "expected_snr", "match_trails", "on_line", "surface_brightness", "truth_segments",
           "visible_fraction"]


def truth_segments(x: np.ndarray, y: np.ndarray, length: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, ...]:
    """End points ``x1, y1, x2, y2`` of trails given by centre, length (px) and angle (deg from +x to +y)."""
    x, y, length, angle = (np.asarray(v, dtype=np.float64) for v in (x, y, length, angle))
    c, s = 0.5 * length * np.cos(np.deg2rad(angle)), 0.5 * length * np.sin(np.deg2rad(angle))
    return x - c, y - s, x + c, y + s


def match_trails(
    truth: tuple[np.ndarray, ...], found: dict[str, np.ndarray], *, radius: float = 6.0, max_angle: float = 10.0,
    min_length: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Match found trails to true trails.

    Parameters
    ----------
    truth : (x1, y1, x2, y2) of (M,) arrays
        True segments (any length; trails leaving the image extend past it).
    found : mapping
        Trail table with ``x, y`` (midpoint) and ``angle``.
    radius : float
        Largest distance (px) of a found midpoint from a true segment: a trail cut by the image edge or a mask
        has its visible midpoint on the true segment.
    max_angle, min_length : float
        Angles must agree within ``max_angle`` deg when the true trail is at least ``min_length`` px long
        (shorter ones have no reliable angle).

    Returns
    -------
    truth_found : (M,) bool
    found_true : (N,) bool
        A found trail that matches some true trail (any length, e.g. a slow asteroid's) is not false.
    """
    x1, y1, x2, y2 = (np.asarray(v, dtype=np.float64) for v in truth)
    fx, fy, fa = (np.asarray(found[k], dtype=np.float64) for k in ("x", "y", "angle"))
    if x1.size == 0 or fx.size == 0:
        return np.zeros(x1.size, dtype=bool), np.zeros(fx.size, dtype=bool)
    d = point_segment_distance(fx[None, :], fy[None, :], x1[:, None], y1[:, None], x2[:, None], y2[:, None])
    angle = np.degrees(np.arctan2(y2 - y1, x2 - x1)) % 180.0
    dang = np.abs((fa[None, :] - angle[:, None] + 90.0) % 180.0 - 90.0)
    length = np.hypot(x2 - x1, y2 - y1)
    hit = (d <= radius) & ((dang <= max_angle) | (length[:, None] < min_length))
    return hit.any(axis=1), hit.any(axis=0)


def on_line(found: dict[str, np.ndarray], x: float, y: float, angle: float, *, radius: float = 10.0,
            max_angle: float = 5.0) -> np.ndarray:
    """(N,) bool: found trails lying on the infinite line through (x, y) at ``angle`` (a satellite's streak)."""
    fx, fy, fa = (np.asarray(found[k], dtype=np.float64) for k in ("x", "y", "angle"))
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    d = np.abs(-(fx - x) * s + (fy - y) * c)
    dang = np.abs((fa - angle + 90.0) % 180.0 - 90.0)
    return (d <= radius) & (dang <= max_angle)


def expected_snr(flux: np.ndarray, length: np.ndarray, *, noise_rms: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
    """Matched-filter SNR of a trail in white noise: ``F / (sigma sqrt(2 sqrt(pi) s (L + 2 sqrt(pi) s)))``.

    ``s`` is the Gaussian sigma of the PSF (FWHM / 2.3548); L = 0 gives a point source's optimal SNR
    ``F / (sigma sqrt(4 pi) s)``, a long trail ``F / (sigma sqrt(2 sqrt(pi) s L))``.
    """
    s = np.asarray(fwhm, dtype=np.float64) / 2.3548
    k = 2.0 * np.sqrt(np.pi) * s
    return np.asarray(flux, dtype=np.float64) / (np.asarray(noise_rms, dtype=np.float64)
                                                 * np.sqrt(k * (np.asarray(length, dtype=np.float64) + k)))


def catalogue_matches(distance: np.ndarray, on_trail: np.ndarray, trail_found: np.ndarray, trail_true: np.ndarray, *,
                      radius: float) -> dict[str, np.ndarray | int]:
    """One image's point detections against its asteroids, alone and in the catalogue with trails.

    Parameters
    ----------
    distance : (M, D) float array
        Distance (px) of each of the D point detections from each of the M true segments.
    on_trail : (D,) bool
        Point detections lying on a found trail (merged into it in the catalogue).
    trail_found, trail_true : (M,) and (T,) bool
        :func:`match_trails` of the image's found trails.
    radius : float
        A detection within this distance of a segment finds that asteroid.

    Returns
    -------
    dict
        ``found_alone, found_with_trails`` (M,) bool; ``true_alone, detections_alone, true_with_trails,
        detections_with_trails`` counts (the catalogue: points not on a trail, then the trails).
    """
    near = np.asarray(distance, dtype=np.float64) <= radius
    kept = ~np.asarray(on_trail, dtype=bool)
    trail_true = np.asarray(trail_true, dtype=bool)
    return {
        "found_alone": near.any(axis=1),
        "found_with_trails": near[:, kept].any(axis=1) | np.asarray(trail_found, dtype=bool),
        "true_alone": int(near.any(axis=0).sum()), "detections_alone": int(near.shape[1]),
        "true_with_trails": int(near[:, kept].any(axis=0).sum()) + int(trail_true.sum()),
        "detections_with_trails": int(kept.sum()) + int(trail_true.size),
    }


def matched_filter_snr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, *, valid: np.ndarray,
                       rms: np.ndarray, correlation: float, pad: int = 16) -> float:
    """Optimal (matched-filter) SNR ``sqrt(s^T C^-1 s)`` of a noiseless model ``s`` on the image's valid pixels.

    Parameters
    ----------
    rows, cols, values : (K,) arrays
        The model's pixels (repeated pixels add up), e.g. from
        :func:`~neocascade.simulation.quadrant.trail_models`.
    valid : (H, W) bool
        Pixels that carry data (masked, saturated and dead-border pixels add nothing).
    rms : (H, W) float array
        Noise rms map; the model's flux-weighted mean is used (the map varies slowly).
    correlation : float
        Adjacent-pixel correlation of the noise, made as the simulator makes it (white noise through the
        separable 3-tap kernel of :func:`neocascade.simulation.noise.correlation_kernel`).
    pad : int
        Zero margin (px) around the model's box for the periodic Fourier sum.

    Returns
    -------
    float
        0 when nothing of the model is on valid pixels. Computed in Fourier space,
        ``sum |S(f)|^2 / (N sigma^2 |K(f)|^2)``, so the PSF's real shape and the noise correlation are both in it.
    """
    from neocascade.simulation.noise import correlation_kernel

    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    keep = valid[rows, cols] if rows.size else np.zeros(0, dtype=bool)
    rows, cols, values = rows[keep], cols[keep], values[keep]
    if rows.size == 0 or not np.any(values):
        return 0.0
    r0, c0 = rows.min() - pad, cols.min() - pad
    box = np.zeros((rows.max() - r0 + pad + 1, cols.max() - c0 + pad + 1))
    np.add.at(box, (rows - r0, cols - c0), values)
    sigma = float(np.average(rms[rows, cols].astype(np.float64), weights=np.abs(values)))
    if sigma <= 0:
        return 0.0
    e, c, _ = correlation_kernel(float(correlation))
    gain = [c + 2.0 * e * np.cos(2.0 * np.pi * np.fft.fftfreq(n)) for n in box.shape]
    power = (gain[0][:, None] * gain[1][None, :]) ** 2
    spectrum = np.abs(np.fft.fft2(box)) ** 2
    return float(np.sqrt((spectrum / power).sum() / box.size) / sigma)


def surface_brightness(magnitude: np.ndarray, length: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
    """Magnitude per px^2 of the trail's footprint (length + FWHM by FWHM): fainter is harder."""
    area = (np.asarray(length, dtype=np.float64) + np.asarray(fwhm)) * np.asarray(fwhm, dtype=np.float64)
    return np.asarray(magnitude, dtype=np.float64) + 2.5 * np.log10(area)


def binned_completeness(values: np.ndarray, found: np.ndarray, edges: np.ndarray) -> list[dict]:
    """Completeness in bins ``[edges[i], edges[i+1])`` of ``values``: rows ``{low, high, n, found, completeness}``."""
    values, found = np.asarray(values, dtype=np.float64), np.asarray(found, dtype=bool)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (values >= low) & (values < high)
        n = int(inside.sum())
        k = int(found[inside].sum())
        rows.append({"low": float(low), "high": float(high), "n": n, "found": k,
                     "completeness": k / n if n else None})
    return rows


def visible_fraction(image: np.ndarray, x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray,
                     *, step: float = 1.0) -> np.ndarray:
    """(M,) share of each segment's length over finite, non-zero pixels (not masked, not a dead border, inside).

    The segments are sampled every ``step`` px (nearest pixel); a zero-length segment is its one point.
    """
    x1, y1, x2, y2 = (np.asarray(v, dtype=np.float64) for v in (x1, y1, x2, y2))
    if x1.size == 0:
        return np.zeros(0)
    n = int(np.ceil(np.hypot(x2 - x1, y2 - y1).max() / step)) + 1
    t = np.linspace(0.0, 1.0, max(n, 2))
    px = np.rint(x1[:, None] + t[None, :] * (x2 - x1)[:, None]).astype(np.int64)
    py = np.rint(y1[:, None] + t[None, :] * (y2 - y1)[:, None]).astype(np.int64)
    h, w = image.shape
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    values = image[np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)]
    return (inside & np.isfinite(values) & (values != 0)).mean(axis=1)
