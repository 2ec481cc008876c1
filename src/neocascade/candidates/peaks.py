"""Local maxima above a signal-to-noise threshold on a robust local noise map (the seed's future work)."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import maximum_filter
from scipy.spatial import cKDTree

from neocascade.candidates.footprint import _check_positive_int
from neocascade.preprocess.filters import _check_image
from neocascade.preprocess.noise import _local_noise_map

__all__ = ["PeakSelector", "local_maxima"]


def local_maxima(
    image: np.ndarray, *, threshold: float, min_distance: int, noise_box: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Return the local maxima of ``image`` whose signal-to-noise ratio reaches ``threshold``.

    Parameters
    ----------
    image : (H, W) real array
        Usually the Gaussian-filtered difference image in DN. Non-finite pixels are never maxima
        and never suppress a neighbour.
    threshold : float
        Minimum ``value / noise``, where ``noise`` is
        :func:`~neocascade.preprocess.noise.local_noise_map` of ``image`` itself (a filtered image
        has lower noise than the raw one, so the ratio is measured on what is thresholded).
    min_distance : int
        A pixel is a maximum only if no pixel within ``min_distance`` px (Chebyshev distance: the
        ``2 d + 1`` square) is brighter; ≥ 0, and 0 keeps every pixel above threshold.
    noise_box : int
        Tile side in px of the local noise map.

    Returns
    -------
    rows, cols : (N,) int64 arrays
        Sorted by row then column; empty when nothing qualifies.

    Notes
    -----
    The test is ``value >= threshold * noise``, so a tile with zero noise passes any non-negative
    maximum and a tile with NaN noise (no finite pixel) passes nothing. Exact ties within
    ``min_distance`` (plateaus) keep the first pixel in row-major order. Borders are padded with
    -inf, so a maximum on the edge counts.
    """
    arr = _check_image(image)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold: must be a number, got {threshold!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold: must be finite, got {threshold!r}")
    if isinstance(min_distance, bool) or not isinstance(min_distance, (int, np.integer)) or min_distance < 0:
        raise ValueError(f"min_distance: must be an integer >= 0, got {min_distance!r}")
    _check_positive_int("noise_box", noise_box)
    return _local_maxima(arr, float(threshold), int(min_distance), int(noise_box))


class PeakSelector:
    """Pick candidates with :func:`local_maxima`; built by Hydra from ``conf/selector/peaks.yaml``."""

    def __init__(self, threshold: float, min_distance: int, noise_box: int = 128) -> None:
        # Validate once here, on a 1-px image, so a bad config fails when it is built.
        local_maxima(np.zeros((1, 1), np.float32), threshold=threshold, min_distance=min_distance, noise_box=noise_box)
        self.threshold, self.min_distance, self.noise_box = float(threshold), int(min_distance), int(noise_box)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return local_maxima(image, threshold=self.threshold, min_distance=self.min_distance, noise_box=self.noise_box)

    def __repr__(self) -> str:
        return f"PeakSelector(threshold={self.threshold}, min_distance={self.min_distance}, noise_box={self.noise_box})"


def _local_maxima(arr: np.ndarray, threshold: float, min_distance: int, noise_box: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-filter peaks, SNR cut, then row-major tie-breaking among equal neighbouring peaks."""
    finite = np.isfinite(arr)
    work = np.where(finite, arr, -np.inf).astype(np.float32, copy=False)
    size = 2 * min_distance + 1
    brightest = maximum_filter(work, size=size, mode="constant", cval=-np.inf)
    noise = _local_noise_map(arr, noise_box)
    peak = finite & (work == brightest) & (work >= threshold * noise)
    rows, cols = np.nonzero(peak)  # row-major order
    if min_distance == 0 or rows.size < 2:
        return rows.astype(np.int64), cols.astype(np.int64)
    # Peaks within min_distance of each other passed the filter only if equal: keep the first.
    pairs = cKDTree(np.column_stack([rows, cols])).query_pairs(r=min_distance, p=np.inf, output_type="ndarray")
    keep = np.ones(rows.size, dtype=bool)
    keep[pairs.max(axis=1)] = False
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)
