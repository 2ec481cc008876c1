"""Candidates on catalogued stars: the reference image's tell for residuals a difference image cannot show.

A star that did not change can still leave a point-like residual in the difference image (a PSF-matching
kernel a little too wide leaves a positive core inside a shallow ring). One exposure's pixels cannot tell
that core from an asteroid; the reference catalogue can: the residual sits on a star, and only a star
bright enough leaves a residual above the noise. :class:`StarCheck` drops a candidate within ``radius`` px
of a catalogued star brighter than ``max_mag``, as ZTF's ``distnr`` / ``magnr`` (distance to and magnitude
of the nearest reference-catalogue source) are used. The defaults are fixed from the physics, not fitted:
1.5 px covers the residual's offset from its star (misregistration <= 0.3 px plus the candidate's pixel
rounding); residuals hold at most ~10 % of a star's flux, so only stars 2.5 mag above the single-exposure
limit (~20.5) can leave one that is detected: 18.0. An asteroid is lost only where it passes within 1.5 px
of such a star (the area is ~7 px² per star: 0.1 % of a quadrant per 1,400 stars brighter than 18).
``reference_check=stars`` is the default of ``detect.py`` and ``evaluate.py``; it needs a catalogue beside each image.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["StarCheck", "build_star_check"]


class StarCheck:
    """Keep the candidates that do not sit on a catalogued star bright enough to leave a residual.

    Parameters
    ----------
    radius : float
        Px: a candidate this close to a catalogued star (centre to centre) is on it (default 1.5).
    max_mag : float
        Only stars at least this bright (magnitude <= max_mag, the catalogue's photometric system) count
        (default 18.0).
    """

    def __init__(self, radius: float = 1.5, max_mag: float = 18.0) -> None:
        for name, value, low in (("radius", radius, 0.0), ("max_mag", max_mag, None)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or (low is not None and value <= low):
                want = "a finite number > 0 (px)" if low is not None else "a finite magnitude"
                raise ValueError(f"{name}: must be {want}, got {value!r}")
        self.radius = float(radius)
        self.max_mag = float(max_mag)

    def __call__(self, x: np.ndarray, y: np.ndarray, stars: np.ndarray) -> np.ndarray:
        """(D,) bool: True for the candidates to keep.

        Parameters
        ----------
        x, y : (D,) float arrays
            Candidate positions in px (x = column).
        stars : (N, 3) float array
            The image's reference catalogue in the same pixel frame: ``x, y, magnitude`` (NaN magnitudes and
            positions are ignored).
        """
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"x, y: must have one shape, got {x.shape} and {y.shape}")
        cat = np.asarray(stars, dtype=np.float64)
        if cat.ndim != 2 or cat.shape[1] != 3:
            raise ValueError(f"stars: expected (N, 3) columns x, y, magnitude, got shape {cat.shape}")
        with np.errstate(invalid="ignore"):
            bright = cat[np.isfinite(cat).all(axis=1) & (cat[:, 2] <= self.max_mag)]
        if not bright.size or not x.size:
            return np.ones(x.size, dtype=bool)
        dist, _ = cKDTree(bright[:, :2]).query(np.column_stack([x, y]), distance_upper_bound=self.radius)
        return ~(dist <= self.radius)

    def bind(self, stars: np.ndarray) -> Any:
        """``keep(x, y)`` against one image's catalogue ``stars`` (as for ``__call__``), for
        :func:`~neocascade.detection.detector.detect_image`'s ``reference``."""
        return functools.partial(self.__call__, stars=np.asarray(stars, dtype=np.float64))

    def keep_nearest(self, distance: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
        """(D,) bool from each candidate's nearest catalogued source (an alert's ``distnr`` in px and ``magnr``);
        a negative or NaN distance (ZTF's -999: none catalogued) keeps it."""
        d = np.asarray(distance, dtype=np.float64)
        m = np.asarray(magnitude, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            on_star = (d >= 0) & (d <= self.radius) & (m <= self.max_mag)
        return ~on_star

    def __repr__(self) -> str:
        return f"StarCheck(radius={self.radius}, max_mag={self.max_mag})"


def build_star_check(config: Any) -> StarCheck | None:
    """The check a ``conf/reference_check`` config describes (a user's config, never an artifact's): None for none."""
    from neocascade.utils.instantiate import build_fixed

    return build_fixed(config, key="reference_check", cls=StarCheck, keys=("radius", "max_mag"))
