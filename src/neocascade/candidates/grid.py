"""The seed's first selector, kept for comparison: the centre pixel of every tile, whatever it holds."""

from __future__ import annotations

import numpy as np

from neocascade.candidates.footprint import EDGES, _check_positive_int, block_starts

__all__ = ["GridSelector", "grid_centres"]


def grid_centres(image: np.ndarray, *, tile: int, edge: str = "keep") -> tuple[np.ndarray, np.ndarray]:
    """Return the centre pixel of each tile × tile tile.

    Parameters
    ----------
    image : (H, W) array
        Only its shape is used: the pixel values are not looked at.
    tile : int
        Tile side in px, ≥ 1; tiles start at (0, 0) and do not overlap.
    edge : {"keep", "drop"}
        ``"keep"``: the partial tiles at the bottom and right edges are tiles of their own;
        ``"drop"``: only whole tiles (as :func:`~neocascade.candidates.footprint.footprint_peaks`).

    Returns
    -------
    rows, cols : (N,) int64 arrays
        ``start + size // 2`` of each tile along each axis (``size`` the tile's own, possibly
        truncated, extent), sorted by row then column.
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image: must be a 2-D array, got shape {arr.shape}")
    _check_positive_int("tile", tile)
    if edge not in EDGES:
        raise ValueError(f"edge: must be one of {list(EDGES)}, got {edge!r}")
    return _grid_centres(arr.shape, int(tile), edge)


class GridSelector:
    """Pick candidates with :func:`grid_centres`; built by Hydra from ``conf/selector/grid.yaml``."""

    def __init__(self, tile: int, edge: str = "keep") -> None:
        _check_positive_int("tile", tile)
        if edge not in EDGES:
            raise ValueError(f"edge: must be one of {list(EDGES)}, got {edge!r}")
        self.tile, self.edge = int(tile), edge

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return grid_centres(image, tile=self.tile, edge=self.edge)

    def __repr__(self) -> str:
        return f"GridSelector(tile={self.tile}, edge={self.edge!r})"


def _grid_centres(shape: tuple[int, int], tile: int, edge: str) -> tuple[np.ndarray, np.ndarray]:
    """Tile centres along each axis, combined into a row-major grid."""
    centres = []
    for length in shape:
        starts = block_starts(length, kernel=tile, stride=tile, edge=edge)
        centres.append(starts + (np.minimum(starts + tile, length) - starts) // 2)
    rows, cols = np.meshgrid(centres[0], centres[1], indexing="ij")
    return rows.ravel().astype(np.int64), cols.ravel().astype(np.int64)
