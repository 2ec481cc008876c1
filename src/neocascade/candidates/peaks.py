"""Local maxima above a signal-to-noise threshold on a robust local noise map (the seed's future work)."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import maximum_filter
from scipy.spatial import cKDTree

from neocascade.candidates.footprint import _check_positive_int
from neocascade.preprocess.filters import _check_image
from neocascade.preprocess.noise import _tile_noise

__all__ = ["PeakSelector", "local_maxima"]

# Above this share of the image's pixels passing the SNR cut, one dense maximum filter is cheaper than
# checking each passing pixel's neighbourhood.
_DENSE_FRACTION = 0.01
_CHUNK = 65536  # passing pixels whose neighbourhoods are gathered at once (bounds the memory)


def local_maxima(
    image: np.ndarray,
    *,
    threshold: float,
    min_distance: int,
    noise_box: int = 128,
    noise_tiles: np.ndarray | None = None,
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
    noise_tiles : (ceil(H / noise_box), ceil(W / noise_box)) array, optional
        That map's per-tile values, when the caller has already measured them on ``image``
        (:func:`~neocascade.candidates.extract.extract_candidates` does, for the candidates' SNR).

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
    if noise_tiles is not None:
        tiles = np.asarray(noise_tiles)
        expected = (-(-arr.shape[0] // int(noise_box)), -(-arr.shape[1] // int(noise_box)))
        if tiles.shape != expected:
            raise ValueError(f"noise_tiles: expected shape {expected} for noise_box {noise_box}, got {tiles.shape}")
    return _local_maxima(arr, float(threshold), int(min_distance), int(noise_box), noise_tiles)


class PeakSelector:
    """Pick candidates with :func:`local_maxima`; built by Hydra from ``conf/selector/peaks.yaml``.

    ``shares_noise_tiles``: :func:`~neocascade.candidates.extract.extract_candidates` passes the
    local noise it measures anyway (same ``noise_box``) instead of having it measured twice.
    """

    shares_noise_tiles = True

    def __init__(self, threshold: float, min_distance: int, noise_box: int = 128) -> None:
        # Validate once here, on a 1-px image, so a bad config fails when it is built.
        local_maxima(np.zeros((1, 1), np.float32), threshold=threshold, min_distance=min_distance, noise_box=noise_box)
        self.threshold, self.min_distance, self.noise_box = float(threshold), int(min_distance), int(noise_box)

    def __call__(self, image: np.ndarray, *, noise_tiles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return local_maxima(image, threshold=self.threshold, min_distance=self.min_distance, noise_box=self.noise_box,
                            noise_tiles=noise_tiles)

    def __repr__(self) -> str:
        return f"PeakSelector(threshold={self.threshold}, min_distance={self.min_distance}, noise_box={self.noise_box})"


def _local_maxima(
    arr: np.ndarray, threshold: float, min_distance: int, noise_box: int, noise_tiles: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels passing the SNR cut that are the brightest of their window, then row-major tie-breaking."""
    grid = _tile_noise(arr, noise_box) if noise_tiles is None else np.asarray(noise_tiles, dtype=np.float32)
    limit = (np.float32(threshold) * grid).astype(np.float32)  # float32, as value >= threshold * noise
    empty = np.empty(0, dtype=np.int64)
    if not np.isfinite(limit).any():
        return empty, empty.copy()
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(arr >= np.nanmin(limit))  # a superset of the pixels passing their own tile's cut
        value = arr[rows, cols]
        passing = np.isfinite(value) & (value >= limit[rows // noise_box, cols // noise_box])
    rows, cols = rows[passing], cols[passing]
    if rows.size > _DENSE_FRACTION * arr.size:
        work = np.where(np.isfinite(arr), arr, -np.inf).astype(np.float32, copy=False)
        brightest = maximum_filter(work, size=2 * min_distance + 1, mode="constant", cval=-np.inf)
        peak = work[rows, cols] == brightest[rows, cols]
    else:
        peak = _window_maxima(arr, rows, cols, min_distance)
    rows, cols = rows[peak].astype(np.int64), cols[peak].astype(np.int64)  # row-major order
    if min_distance == 0 or rows.size < 2:
        return rows, cols
    # Peaks within min_distance of each other passed the filter only if equal: keep the first.
    pairs = cKDTree(np.column_stack([rows, cols])).query_pairs(r=min_distance, p=np.inf, output_type="ndarray")
    keep = np.ones(rows.size, dtype=bool)
    keep[pairs.max(axis=1)] = False
    return rows[keep], cols[keep]


def _window_maxima(arr: np.ndarray, rows: np.ndarray, cols: np.ndarray, distance: int) -> np.ndarray:
    """Whether each (finite) pixel is the brightest finite pixel of its ``2 distance + 1`` square window.

    Offsets past the border are clipped to the border: a clipped index lands on a pixel that is
    itself inside the window, so the maximum is that of the window's in-image pixels.
    """
    height, width = arr.shape
    offsets = np.arange(-distance, distance + 1)
    out = np.empty(rows.size, dtype=bool)
    for start in range(0, rows.size, _CHUNK):
        r, c = rows[start:start + _CHUNK], cols[start:start + _CHUNK]
        rr = np.clip(r[:, None] + offsets, 0, height - 1)[:, :, None]
        cc = np.clip(c[:, None] + offsets, 0, width - 1)[:, None, :]
        hood = arr[rr, cc].reshape(r.size, -1)
        hood = np.where(np.isfinite(hood), hood, -np.inf)
        out[start:start + _CHUNK] = hood.max(axis=1) == arr[r, c]
    return out
