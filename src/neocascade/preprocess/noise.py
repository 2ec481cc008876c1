"""Robust noise estimates: the scaled median absolute deviation, image-wide and per tile."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from neocascade.preprocess.filters import _check_image

__all__ = ["MAD_TO_SIGMA", "local_noise_map", "robust_noise"]

# 1 / Phi^-1(3/4): turns a median absolute deviation into a Gaussian standard deviation.
MAD_TO_SIGMA = 1.4826


def robust_noise(image: np.ndarray) -> float:
    """Return ``1.4826 · median(|x - median(x)|)`` over the finite pixels of ``image``.

    Parameters
    ----------
    image : array of real numbers, any shape
        Pixel values in DN; NaN and ±inf pixels are ignored.

    Returns
    -------
    float
        Robust standard deviation in DN; NaN when no pixel is finite (including an empty array).
    """
    arr = np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"image: must hold real numbers, got dtype {arr.dtype}")
    return _robust_noise(arr.astype(np.float64, copy=False))


def local_noise_map(image: np.ndarray, *, box: int) -> np.ndarray:
    """Return the robust noise of each ``box`` × ``box`` tile, spread over the tile's pixels.

    Parameters
    ----------
    image : (H, W) real array
        Image in DN (measure on the image you threshold: a Gaussian-filtered image has lower noise
        than the raw one). NaN and ±inf pixels are ignored.
    box : int
        Tile side in px, ≥ 1.

    Returns
    -------
    (H, W) float32 array
        ``1.4826 · MAD`` of the tile each pixel belongs to (nearest-neighbour upsampling: constant
        on each tile, so a pixel's value is exactly the noise of its own box).

    Notes
    -----
    Tiles start at pixel (0, 0); the partial tiles at the bottom and right edges are measured on
    the pixels they hold. A tile without a finite pixel gets NaN. The median of an even count is
    the mean of the two middle values, as in :func:`robust_noise`.
    """
    arr = _check_image(image)
    if not (isinstance(box, (int, np.integer)) and not isinstance(box, bool) and box >= 1):
        raise ValueError(f"box: must be a positive integer, got {box!r}")
    return _local_noise_map(arr, int(box))


def _robust_noise(values: np.ndarray) -> float:
    """Scaled MAD of the finite entries of ``values`` (NaN if none)."""
    finite = values[np.isfinite(values)]  # a copy: partitioned and overwritten in place below
    if finite.size == 0:
        return float("nan")
    median = _median_inplace(finite)
    np.subtract(finite, finite.dtype.type(median), out=finite)
    np.abs(finite, out=finite)
    return float(MAD_TO_SIGMA * _median_inplace(finite))


def _median_inplace(values: np.ndarray) -> float:
    """Median of a 1-D array (mean of the middle two for even sizes), partitioning it in place."""
    n = values.size
    kth = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
    values.partition(kth)
    return float(values[n // 2]) if n % 2 else 0.5 * (float(values[n // 2 - 1]) + float(values[n // 2]))


def _local_noise_map(arr: np.ndarray, box: int) -> np.ndarray:
    """Per-tile scaled MAD of a float32 image, repeated back to full size."""
    height, width = arr.shape
    grid = _tile_noise(arr, box)
    return np.repeat(np.repeat(grid, box, axis=0)[:height], box, axis=1)[:, :width]


def _tile_noise(arr: np.ndarray, box: int, workers: int | None = None) -> np.ndarray:
    """Scaled MAD of each box × box tile of a float32 image, as a float32 (ceil(H/box), ceil(W/box)) grid.

    Rows of tiles are independent: they are shared out to ``workers`` threads (default: torch's
    thread count, as the Gaussian filter), numpy releasing the GIL inside each sort.
    """
    height, width = arr.shape
    n_y, n_x = -(-height // box), -(-width // box)
    out = np.empty((n_y, n_x), dtype=np.float32)
    n_workers = min(n_y, workers if workers is not None else max(1, torch.get_num_threads()))
    if n_workers <= 1:
        _tile_rows(arr, box, range(n_y), out)
        return out
    with ThreadPoolExecutor(n_workers) as pool:
        list(pool.map(lambda i: _tile_rows(arr, box, range(i, n_y, n_workers), out), range(n_workers)))
    return out


def _tile_rows(arr: np.ndarray, box: int, tile_rows: range, out: np.ndarray) -> None:
    """Fill ``out[y]`` with the scaled MAD of each tile in tile-row ``y``, for ``y`` in ``tile_rows``."""
    width = arr.shape[1]
    n_x = out.shape[1]
    padded = np.empty((box, n_x * box), dtype=np.float32)
    for y in tile_rows:
        block = arr[y * box:(y + 1) * box]
        padded.fill(np.nan)
        np.copyto(padded[: block.shape[0], :width], block)
        padded[~np.isfinite(padded)] = np.nan  # +-inf are masked like NaN
        tiles = padded.reshape(box, n_x, box).transpose(1, 0, 2).reshape(n_x, box * box)
        count = np.count_nonzero(~np.isnan(tiles), axis=1)
        median = _sorted_median(np.sort(tiles, axis=1), count)
        deviation = np.abs(tiles - median[:, None].astype(np.float32))
        out[y] = MAD_TO_SIGMA * _sorted_median(np.sort(deviation, axis=1), count)


def _sorted_median(rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median of each row of an ascending-sorted (NaN last) array with ``count`` finite entries."""
    lower = np.clip((count - 1) // 2, 0, None)
    upper = np.clip(count // 2, 0, rows.shape[1] - 1)
    low = np.take_along_axis(rows, lower[:, None], axis=1)[:, 0].astype(np.float64)
    high = np.take_along_axis(rows, upper[:, None], axis=1)[:, 0].astype(np.float64)
    return np.where(count > 0, 0.5 * (low + high), np.nan)
