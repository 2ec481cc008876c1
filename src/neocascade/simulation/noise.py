"""Background noise of a difference image: spatially correlated, rms varying smoothly across it."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

# Gaussian quantiles at 2**16 equally likely levels: drawing uint16 indices is ~3x faster than
# Generator.standard_normal for a full quadrant, and the correlation kernel smooths the levels out.
_GAUSS_TABLE = ndtri((np.arange(2**16, dtype=np.float64) + 0.5) / 2**16).astype(np.float32)


def correlation_kernel(correlation: float) -> np.ndarray:
    """Three-tap kernel ``[e, c, e]`` with ``c^2 + 2 e^2 = 1`` and adjacent-pixel correlation ``2 c e``.

    The 2-D kernel is its outer product, so unit-variance white noise stays at unit variance and the
    correlation between horizontal (or vertical) neighbours equals ``correlation``.
    """
    if not 0.0 <= correlation < np.sqrt(0.5):
        raise ValueError(f"correlation: must be in [0, 0.707), got {correlation}")
    e, c = correlation_weights(correlation)
    return np.array([e, c, e], dtype=np.float32)


def correlation_weights(correlation: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``(e, c)`` of :func:`correlation_kernel` for each correlation in [0, 0.707) (float64, vectorised)."""
    rho = np.asarray(correlation, dtype=np.float64)
    c2 = 0.5 * (1.0 + np.sqrt(1.0 - 2.0 * rho**2))
    return np.sqrt((1.0 - c2) / 2.0), np.sqrt(c2)


def correlated_noise(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    correlation: float,
    rms: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Zero-mean Gaussian noise whose adjacent pixels correlate by ``correlation``.

    Parameters
    ----------
    shape : (H, W)
        Output shape.
    rng : np.random.Generator
        Source of randomness.
    correlation : float
        Correlation of horizontally (and vertically) adjacent pixels, in [0, 0.707).
    rms : float or (H, W) float32 array
        Standard deviation of the output, per pixel or for all.

    Returns
    -------
    (H, W) float32
        White noise convolved with a separable 3x3 kernel (unit-variance), times ``rms``.
    """
    e, c, _ = correlation_kernel(correlation)
    h, w = int(shape[0]), int(shape[1])
    white = _GAUSS_TABLE[rng.integers(0, 2**16, size=(h + 2, w + 2), dtype=np.uint16)]
    if e == 0.0:
        out = white[1:-1, 1:-1].copy()
        out *= rms
        return out
    # (e/c) * (left + right) + centre along each axis, then one multiply by c^2 * rms.
    ratio = np.float32(e / c)
    rows = np.add(white[:-2], white[2:])
    rows *= ratio
    rows += white[1:-1]
    del white
    out = np.add(rows[:, :-2], rows[:, 2:])
    out *= ratio
    out += rows[:, 1:-1]
    del rows
    out *= np.float32(c * c) * rms if np.ndim(rms) == 0 else rms * np.float32(c * c)
    return out


def rms_map(
    shape: tuple[int, int], *, rng: np.random.Generator, rms: float, variation: float, grid: int
) -> np.ndarray:
    """Smooth map of the noise rms: a ``grid`` x ``grid`` log-normal field upsampled bilinearly.

    Parameters
    ----------
    shape : (H, W)
        Output shape.
    rng : np.random.Generator
        Source of randomness.
    rms : float
        Median of the map in DN.
    variation : float
        Relative rms of the nodes around ``rms``.
    grid : int
        Nodes per side (>= 2).

    Returns
    -------
    (H, W) float32
        Positive map whose node values have median exactly ``rms``.
    """
    nodes = np.exp(variation * rng.standard_normal((grid, grid)))
    nodes *= rms / np.median(nodes)
    return _upsample(nodes.astype(np.float32), shape)


def background_map(shape: tuple[int, int], *, rng: np.random.Generator, rms: float, grid: int) -> np.ndarray:
    """Low-frequency residual background of a difference image (imperfect sky subtraction, scattered light).

    Parameters
    ----------
    shape : (H, W)
        Output shape.
    rng : np.random.Generator
        Source of randomness.
    rms : float
        Standard deviation of the ``grid`` x ``grid`` Gaussian nodes in DN.
    grid : int
        Nodes per side (>= 2); structure scale is about ``H / (grid - 1)``.

    Returns
    -------
    (H, W) float32
        Bilinear upsampling of the nodes: smooth, zero mean in expectation, no pixel-scale structure.
    """
    if rms < 0 or grid < 2:
        raise ValueError(f"background: need rms >= 0 and grid >= 2, got {rms}, {grid}")
    nodes = (rms * rng.standard_normal((grid, grid))).astype(np.float32)
    return _upsample(nodes, shape)


def _upsample(nodes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 bilinear upsampling of a square float32 grid of nodes (corners on the image corners)."""
    grid = nodes.shape[0]
    wy = _interp_weights(int(shape[0]), grid)
    wx = _interp_weights(int(shape[1]), grid)
    return ((wy @ nodes) @ wx.T).astype(np.float32, copy=False)


def _interp_weights(n: int, grid: int) -> np.ndarray:
    """(n, grid) matrix of linear-interpolation weights from grid nodes spread over n pixels."""
    pos = np.linspace(0.0, grid - 1.0, n)
    lo = np.minimum(np.floor(pos).astype(np.int64), grid - 2)
    frac = (pos - lo).astype(np.float32)
    weights = np.zeros((n, grid), dtype=np.float32)
    weights[np.arange(n), lo] = 1.0 - frac
    weights[np.arange(n), lo + 1] = frac
    return weights
