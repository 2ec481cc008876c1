"""The seed's footprint selector: the brightest pixel of every kernel × kernel block."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["EDGES", "FootprintSelector", "block_starts", "footprint_peaks"]

EDGES = ("keep", "drop")


def footprint_peaks(
    image: np.ndarray, *, kernel: int, stride: int, edge: str = "keep"
) -> tuple[np.ndarray, np.ndarray]:
    """Return the brightest pixel of each kernel × kernel block.

    Parameters
    ----------
    image : (H, W) real array
        Filtered difference image in DN. Non-finite pixels (NaN, ±inf) never win a block.
    kernel, stride : int
        Block size and step in pixels, both ≥ 1. ``stride < kernel`` gives overlapping blocks;
        ``stride > kernel`` leaves gaps between blocks that no candidate comes from.
    edge : {"keep", "drop"}
        What to do with the partial blocks at the bottom and right edges. ``"keep"``: blocks step
        on until one reaches the edge, truncated there, so every pixel belongs to a block (no
        asteroid is unreachable); a 3080×3072 quadrant at kernel = stride = 50 gives 62 × 62
        blocks, the last row of blocks 30 px tall. ``"drop"``: only whole blocks, as in the seed;
        the same quadrant gives 61 × 61 = 3,721 peaks.

    Returns
    -------
    rows, cols : (N,) int64 arrays
        Pixel of each block's maximum, sorted by row then column, each pixel once (overlapping
        blocks that share a maximum give one candidate). Empty when no block holds a finite pixel.

    Notes
    -----
    Within a block, ties go to the first pixel in row-major order, as ``np.argmax`` does. A block
    with no finite pixel gives no candidate. An image smaller than ``kernel`` is one block with
    ``"keep"`` and none with ``"drop"``.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image: must be a 2-D array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"image: must hold real numbers, got dtype {arr.dtype}")
    _check_positive_int("kernel", kernel)
    _check_positive_int("stride", stride)
    if edge not in EDGES:
        raise ValueError(f"edge: must be one of {list(EDGES)}, got {edge!r}")
    return _footprint_peaks(arr, int(kernel), int(stride), edge)


def block_starts(length: int, *, kernel: int, stride: int, edge: str = "keep") -> np.ndarray:
    """Return the first pixel of each block along an axis of ``length`` px (int64, possibly empty)."""
    if edge == "drop":
        n = (length - kernel) // stride + 1 if length >= kernel else 0
    else:
        n = -(-max(length - kernel, 0) // stride) + 1 if length > 0 else 0
    return np.arange(n, dtype=np.int64) * stride


class FootprintSelector:
    """Pick candidates with :func:`footprint_peaks`; built by Hydra from ``conf/selector/footprint.yaml``."""

    def __init__(self, kernel: int, stride: int, edge: str = "keep") -> None:
        _check_positive_int("kernel", kernel)
        _check_positive_int("stride", stride)
        if edge not in EDGES:
            raise ValueError(f"edge: must be one of {list(EDGES)}, got {edge!r}")
        self.kernel, self.stride, self.edge = int(kernel), int(stride), edge

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return footprint_peaks(image, kernel=self.kernel, stride=self.stride, edge=self.edge)

    def __repr__(self) -> str:
        return f"FootprintSelector(kernel={self.kernel}, stride={self.stride}, edge={self.edge!r})"


def _check_positive_int(name: str, value: object) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is an integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def _footprint_peaks(arr: np.ndarray, kernel: int, stride: int, edge: str) -> tuple[np.ndarray, np.ndarray]:
    """Two-stage block argmax (along rows, then down columns) on strided window views."""
    height, width = arr.shape
    starts_y = block_starts(height, kernel=kernel, stride=stride, edge=edge)
    starts_x = block_starts(width, kernel=kernel, stride=stride, edge=edge)
    if starts_y.size == 0 or starts_x.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # -inf padding makes truncated edge blocks whole; non-finite pixels become -inf so they never win.
    span_y, span_x = int(starts_y[-1]) + kernel, int(starts_x[-1]) + kernel
    work = np.full((span_y, span_x), -np.inf, dtype=np.result_type(arr.dtype, np.float32))
    rows_in, cols_in = min(height, span_y), min(width, span_x)
    part = arr[:rows_in, :cols_in]
    np.copyto(work[:rows_in, :cols_in], part, where=np.isfinite(part))

    # Stage 1: for every row, the maximum of each block's column range.
    n_y, n_x = starts_y.size, starts_x.size
    if stride == kernel:  # contiguous reshape: faster than a strided window view
        windows_x = work.reshape(span_y, n_x, kernel)
    else:
        windows_x = sliding_window_view(work, kernel, axis=1)[:, ::stride]  # (span_y, n_x, kernel)
    col_arg = windows_x.argmax(axis=2)  # (span_y, n_x)
    row_max = np.take_along_axis(windows_x, col_arg[..., None], axis=2)[..., 0]
    # Stage 2: the first row holding the block maximum, then that row's column: row-major first.
    if stride == kernel:
        windows_y = row_max.reshape(n_y, kernel, n_x).transpose(0, 2, 1)
    else:
        windows_y = sliding_window_view(row_max, kernel, axis=0)[::stride]  # (n_y, n_x, kernel)
    row_arg = windows_y.argmax(axis=2)  # (n_y, n_x)
    best = np.take_along_axis(windows_y, row_arg[..., None], axis=2)[..., 0]
    rows = starts_y[:, None] + row_arg
    cols = starts_x[None, :] + np.take_along_axis(col_arg, rows, axis=0)
    found = best > -np.inf
    rows, cols = rows[found], cols[found]
    if stride < kernel:
        linear = np.unique(rows * span_x + cols)
        return linear // span_x, linear % span_x
    order = np.lexsort((cols, rows))
    return rows[order].astype(np.int64), cols[order].astype(np.int64)
