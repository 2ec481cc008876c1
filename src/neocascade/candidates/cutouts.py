"""Square stamps around candidate pixels, gathered with index grids."""

from __future__ import annotations

import numpy as np

__all__ = ["check_centres", "cutouts"]


def cutouts(
    image: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, size: int = 21, fill: float = 0.0
) -> np.ndarray:
    """Cut a size × size stamp centred on each (row, col).

    Parameters
    ----------
    image : (H, W) real array
        Image in DN.
    rows, cols : (N,) integer arrays
        Stamp centres; each must lie inside the image.
    size : int
        Odd stamp side in px; the centre pixel is ``stamp[size // 2, size // 2]``.
    fill : float
        Value for non-finite pixels (NaN, ±inf) and for the parts of a stamp beyond the image.
        Constant padding rather than edge replication: a difference image's expected value is 0,
        so a stamp at the border never shows a copied source that is not there.

    Returns
    -------
    (N, size, size) float32 array
        New array; ``(0, size, size)`` when N = 0.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image: must be a 2-D array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"image: must hold real numbers, got dtype {arr.dtype}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"size: must be a positive odd integer, got {size!r}")
    if not isinstance(fill, (int, float, np.integer, np.floating)) or isinstance(fill, bool):
        raise ValueError(f"fill: must be a number, got {fill!r}")
    r, c = check_centres(rows, cols, arr.shape)
    return _cutouts(arr, r, c, int(size), float(fill))


def check_centres(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate candidate centres against an image ``shape``; return them as int64 (N,) arrays."""
    r, c = np.asarray(rows), np.asarray(cols)
    for name, v in (("rows", r), ("cols", c)):
        if v.ndim != 1:
            raise ValueError(f"{name}: must be a 1-D array, got shape {v.shape}")
        if v.size and not np.issubdtype(v.dtype, np.integer):
            raise ValueError(f"{name}: must hold integers, got dtype {v.dtype}")
    if r.size != c.size:
        raise ValueError(f"rows, cols: must have the same length, got {r.size} and {c.size}")
    r, c = r.astype(np.int64), c.astype(np.int64)
    outside = (r < 0) | (r >= shape[0]) | (c < 0) | (c >= shape[1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"rows, cols: centre {i} (row {r[i]}, col {c[i]}) is outside the {shape[0]}x{shape[1]} image"
            f" ({int(outside.sum())} centre(s) outside)"
        )
    return r, c


def _cutouts(arr: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int, fill: float) -> np.ndarray:
    """Gather stamps with clipped index grids, then blank what fell outside the image or is not finite."""
    half = size // 2
    offsets = np.arange(-half, half + 1, dtype=np.int64)
    rr = rows[:, None] + offsets[None, :]  # (N, S)
    cc = cols[:, None] + offsets[None, :]
    inside_r = (rr >= 0) & (rr < arr.shape[0])
    inside_c = (cc >= 0) & (cc < arr.shape[1])
    out = arr[np.clip(rr, 0, arr.shape[0] - 1)[:, :, None], np.clip(cc, 0, arr.shape[1] - 1)[:, None, :]]
    out = out.astype(np.float32, copy=False)
    bad = ~(inside_r[:, :, None] & inside_c[:, None, :]) | ~np.isfinite(out)
    if bad.any():
        out[bad] = fill
    return out
