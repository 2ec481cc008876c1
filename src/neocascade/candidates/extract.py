"""Image → candidates: the one path from pixels to cutouts, shared by the cache, detection and evaluation.

Training and inference call the same function, so the model always sees identically made pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from neocascade.candidates.cutouts import _cutouts, check_centres
from neocascade.preprocess.filters import _check_image, _gaussian_filter, _mask_invalid
from neocascade.preprocess.noise import _robust_noise, _tile_noise

__all__ = ["Candidates", "extract_candidates"]

Selector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Candidates:
    """Candidates of one image and the pixels around them.

    Attributes
    ----------
    rows, cols : (N,) int64
        Candidate pixels (y = row, x = col).
    cutouts : (N, 2, S, S) float32
        Channel 0 the filtered image, channel 1 the raw (masked) image; NaN and off-image → 0.
    peak : (N,) float32
        Filtered value at each candidate (NaN if the selector picked a masked pixel).
    local_noise : (N,) float32
        Robust noise (1.4826 · MAD) of the filtered image in the noise box holding each candidate.
    image_noise : float
        Robust noise of the raw image (finite, non-zero pixels); NaN if it has none.
    filtered : (H, W) float32
        The Gaussian-filtered image, NaN on masked pixels.
    """

    rows: np.ndarray
    cols: np.ndarray
    cutouts: np.ndarray
    peak: np.ndarray
    local_noise: np.ndarray
    image_noise: float
    filtered: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.size)


def extract_candidates(
    image: np.ndarray,
    *,
    sigma: float,
    selector: Selector,
    cutout_size: int = 21,
    noise_box: int = 128,
) -> Candidates:
    """Mask, filter, select and cut out the candidates of one difference image.

    Parameters
    ----------
    image : (H, W) real array
        Raw difference image in DN. Exact zeros (dead borders) and non-finite pixels are masked.
    sigma : float
        Gaussian filter sigma in px (≥ 0; 0 means no filtering).
    selector : callable
        ``selector(filtered) -> (rows, cols)`` integer arrays of pixels inside the image, e.g.
        :class:`~neocascade.candidates.footprint.FootprintSelector`.
    cutout_size : int
        Odd cutout side in px.
    noise_box : int
        Tile side in px of the local noise measured on the filtered image.

    Returns
    -------
    Candidates
        N = 0 (a selector that finds nothing) gives empty arrays of the right shapes.

    Notes
    -----
    Steps: :func:`~neocascade.preprocess.filters.mask_invalid` (zeros and non-finite → NaN), the
    NaN-aware :func:`~neocascade.preprocess.filters.gaussian_filter`, the local noise, ``selector``,
    then cutouts of the filtered and the masked raw image with NaN → 0. A selector with
    ``shares_noise_tiles`` and the same ``noise_box`` (the peaks selector) gets that local noise as
    ``selector(filtered, noise_tiles=...)`` rather than measuring it again.
    """
    arr = _check_image(image)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise ValueError(f"sigma: must be a number, got {sigma!r}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: must be finite and >= 0, got {sigma!r}")
    if not callable(selector):
        raise ValueError(f"selector: must be callable as selector(filtered) -> (rows, cols), got {type(selector).__name__}")
    if isinstance(cutout_size, bool) or not isinstance(cutout_size, (int, np.integer)) or cutout_size < 1 or cutout_size % 2 == 0:
        raise ValueError(f"cutout_size: must be a positive odd integer, got {cutout_size!r}")
    if isinstance(noise_box, bool) or not isinstance(noise_box, (int, np.integer)) or noise_box < 1:
        raise ValueError(f"noise_box: must be a positive integer, got {noise_box!r}")
    return _extract(arr, float(sigma), selector, int(cutout_size), int(noise_box))


def _extract(arr: np.ndarray, sigma: float, selector: Selector, size: int, noise_box: int) -> Candidates:
    """Core of :func:`extract_candidates` on a validated float32 image."""
    masked = _mask_invalid(arr, True)
    filtered = _gaussian_filter(masked, sigma, 4.0)
    tiles = _tile_noise(filtered, noise_box)
    shares = getattr(selector, "shares_noise_tiles", False) and getattr(selector, "noise_box", None) == noise_box
    picked = selector(filtered, noise_tiles=tiles) if shares else selector(filtered)
    if not (isinstance(picked, tuple) and len(picked) == 2):
        raise ValueError(f"selector: must return (rows, cols), got {type(picked).__name__}")
    try:
        rows, cols = check_centres(picked[0], picked[1], filtered.shape)
    except ValueError as exc:
        raise ValueError(f"selector: {exc}") from None
    cut = np.empty((rows.size, 2, size, size), dtype=np.float32)
    cut[:, 0] = _cutouts(filtered, rows, cols, size, 0.0)
    cut[:, 1] = _cutouts(masked, rows, cols, size, 0.0)
    return Candidates(
        rows=rows,
        cols=cols,
        cutouts=cut,
        peak=filtered[rows, cols].astype(np.float32),
        local_noise=tiles[rows // noise_box, cols // noise_box].astype(np.float32),
        image_noise=_robust_noise(masked),
        filtered=filtered,
    )
