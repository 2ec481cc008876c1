"""Star-subtraction residuals told from point sources by flux conservation.

A star that did not change leaves a residual of about zero total flux in the difference image: a positive
core inside a negative ring (PSF matching a little off), a dipole (misregistration) or a hole. An asteroid,
like any source that was not in the reference, only adds flux. In one difference cutout the two can share
a core; the ring gives the residual away. :func:`ring_deficit` measures the flux in a ring around the
candidate in units of its noise; :class:`RingCheck` keeps candidates whose ring is not significantly
negative. It is applied after the classifier (``residual_check=ring``), by ``detect.py`` and ``evaluate.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["RING_RADII", "RingCheck", "build_residual_check", "ring_deficit"]

RING_RADII = (2.5, 7.0)  # px: the ring (a PSF core of FWHM <= ~4.5 px lies inside, its matched ring outside)
OUTER_RADIUS = 7.5  # px: pixels beyond give each cutout's background (median) and noise (robust rms)


def ring_deficit(cutouts: np.ndarray) -> np.ndarray:
    """Flux in the ring ``2.5 < r <= 7`` px around each cutout's centre, over that flux's noise.

    Parameters
    ----------
    cutouts : (N, S, S) float array
        Unfiltered difference cutouts centred on the candidates, S odd and >= 17; masked pixels as 0 or NaN
        (left out).

    Returns
    -------
    (N,) float64
        ``(sum of the n ring pixels - n * background) / noise`` with the median (background) and robust rms
        (1.4826 MAD) of the m pixels beyond 7.5 px, ``noise = rms * sqrt(n + n^2 pi / (2 m))`` (the ring's
        pixels and the background's error), so white noise alone gives a unit normal; 0 where either set has
        no valid pixel. A point source gives >= 0 (its
        wings), a residual with a negative ring around its core gives about minus its core's SNR.
    """
    arr = np.asarray(cutouts, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] % 2 == 0 or arr.shape[1] < 17:
        raise ValueError(f"cutouts: expected (N, S, S) with S odd and >= 17, got shape {arr.shape}")
    half = arr.shape[1] // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    r = np.hypot(yy, xx)
    ring = (r > RING_RADII[0]) & (r <= RING_RADII[1])
    valid = np.isfinite(arr) & (arr != 0.0)
    outer = np.where(valid[:, r > OUTER_RADIUS], arr[:, r > OUTER_RADIUS], np.nan)
    out = np.zeros(arr.shape[0])
    usable = np.isfinite(outer).sum(axis=1) >= 8
    if not usable.any():
        return out
    with np.errstate(all="ignore"):
        background = np.nanmedian(outer[usable], axis=1)
        rms = 1.4826 * np.nanmedian(np.abs(outer[usable] - background[:, None]), axis=1)
    values = arr[usable][:, ring]
    live = valid[usable][:, ring]
    n = live.sum(axis=1)
    n_outer = np.isfinite(outer[usable]).sum(axis=1)
    flux = np.where(live, values - background[:, None], 0.0).sum(axis=1)
    ok = (n > 0) & (rms > 0)
    z = np.zeros(usable.sum())
    # the ring's own noise, and the background median's (variance pi/2 sigma^2 / n_outer) taken n times
    z[ok] = flux[ok] / (rms[ok] * np.sqrt(n[ok] + n[ok] ** 2 * (0.5 * np.pi) / n_outer[ok]))
    out[usable] = z
    return out


class RingCheck:
    """Keep the candidates whose ring (:func:`ring_deficit`) is not below ``-max_deficit`` sigma.

    Parameters
    ----------
    max_deficit : float
        Largest negative ring flux, in sigma, a source may show (default 3: a 3-sigma deficit, fixed in advance;
        on the training families' validation files it drops <= 1 % of the accepted asteroids).
    """

    def __init__(self, max_deficit: float = 3.0) -> None:
        if isinstance(max_deficit, bool) or not isinstance(max_deficit, (int, float)) \
                or not (math.isfinite(max_deficit) and max_deficit > 0):
            raise ValueError(f"max_deficit: must be a finite number > 0 (sigma), got {max_deficit!r}")
        self.max_deficit = float(max_deficit)

    def __call__(self, cutouts: np.ndarray) -> np.ndarray:
        """(N,) bool: True for the candidates to keep (``cutouts`` as for :func:`ring_deficit`)."""
        return self.passes(ring_deficit(cutouts))

    def passes(self, deficit: np.ndarray) -> np.ndarray:
        """(N,) bool of already measured :func:`ring_deficit` values."""
        return np.asarray(deficit, dtype=np.float64) >= -self.max_deficit

    def __repr__(self) -> str:
        return f"RingCheck(max_deficit={self.max_deficit})"


def build_residual_check(config: Any) -> RingCheck | None:
    """The check a ``conf/residual_check`` config describes (a user's config, not an artifact's): None for none."""
    from neocascade.utils.instantiate import build_fixed

    return build_fixed(config, key="residual_check", cls=RingCheck, keys=("max_deficit",))
