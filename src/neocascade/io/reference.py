"""Reference star catalogues: read one (ra, dec, mag), place its stars on an image through the image's WCS.

The catalogue is a table of the stars in the reference images (the survey's own reference-image source list,
or Gaia / Pan-STARRS cut to the band): columns ``ra`` and ``dec`` (degrees, ICRS) and ``mag`` (the band's
calibrated magnitude). A FITS binary table (``.fits``, ``.fit``, ``.fits.gz``), a CSV or ECSV file with a
header line, or a Parquet file. Column names are matched without regard to case. The file is read as data
only (astropy's table readers); nothing in it is executed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from neocascade.errors import input_error

__all__ = ["StarCatalogue", "read_star_catalogue", "stars_on_image"]

COLUMNS = ("ra", "dec", "mag")
_FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".csv": "ascii.csv", ".ecsv": "ascii.ecsv",
            ".parquet": "parquet"}


@dataclass(frozen=True)
class StarCatalogue:
    """A checked reference catalogue: (N,) float64 ``ra``, ``dec`` (deg) and ``mag``, and the file it came from."""

    ra: np.ndarray
    dec: np.ndarray
    mag: np.ndarray
    path: Path

    def __len__(self) -> int:
        return int(self.ra.size)

    @functools.cached_property
    def tree(self) -> cKDTree:
        """A KD-tree of the stars' unit vectors, built once: each image asks only for the stars in its cone."""
        return cKDTree(_unit(self.ra, self.dec))


def _format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in _FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise input_error(path, "not a star catalogue format", expected=", ".join(_FORMATS), found=path.suffix or "none")


def read_star_catalogue(path: str | os.PathLike) -> StarCatalogue:
    """Read and check a reference star catalogue.

    Raises
    ------
    InputError
        One line naming the file: missing, unreadable, an unknown format, a missing ``ra`` / ``dec`` / ``mag``
        column, a non-numeric or non-finite value, or a coordinate out of range.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise input_error(path, "no such star catalogue")
    fmt = _format(path)
    try:
        if fmt == "fits":  # opened here, so a damaged file is closed whatever the reader raises
            from astropy.io import fits

            with open(path, "rb") as handle, fits.open(handle, memmap=False) as hdul:
                table = Table.read(hdul, format="fits")
        else:
            table = Table.read(path, format=fmt)
    except Exception as exc:  # astropy and pyarrow raise many types for damaged or foreign files
        raise input_error(path, "not a readable star catalogue", found=type(exc).__name__) from None
    names = {name.lower(): name for name in table.colnames}
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise input_error(path, f"missing column '{missing[0]}'", expected=", ".join(COLUMNS),
                          found=sorted(table.colnames))
    values = {}
    for column in COLUMNS:
        data = table[names[column]]
        try:
            arr = np.asarray(np.ma.filled(data, np.nan) if np.ma.isMaskedArray(data) else data, dtype=np.float64)
        except (TypeError, ValueError):
            raise input_error(f"{path}: column '{column}'", "must be numeric", found=str(data.dtype)) from None
        if arr.ndim != 1:
            raise input_error(f"{path}: column '{column}'", "must hold one number per row", found=f"shape {arr.shape}")
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise input_error(f"{path}: column '{column}'", "must be finite",
                              found=f"{bad.size} bad rows, first row {int(bad[0])}")
        values[column] = arr
    if np.any(np.abs(values["dec"]) > 90.0):
        raise input_error(f"{path}: column 'dec'", "must lie in [-90, 90] degrees",
                          found=float(values["dec"][np.argmax(np.abs(values["dec"]))]))
    return StarCatalogue(ra=values["ra"] % 360.0, dec=values["dec"], mag=values["mag"], path=path)


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])


def stars_on_image(catalogue: StarCatalogue, wcs: Any, shape: tuple[int, int], *, margin: float = 5.0) -> np.ndarray:
    """The catalogue's stars on one image, in its 0-based pixel frame.

    Parameters
    ----------
    catalogue : StarCatalogue
        From :func:`read_star_catalogue`.
    wcs : astropy.wcs.WCS
        The image's celestial WCS.
    shape : (rows, cols)
        The image's shape.
    margin : float
        Px beyond the edges still kept (a star just off the image can leave a residual on it).

    Returns
    -------
    (N, 3) float64
        ``x, y, mag`` (x = column) of the stars on the image or within ``margin`` of it.

    Raises
    ------
    ValueError
        ``wcs`` is None or has no celestial part.
    """
    if wcs is None or not getattr(wcs, "has_celestial", False):
        raise ValueError("the image has no celestial WCS: the reference catalogue cannot be placed on it")
    celestial = wcs.celestial
    rows, cols = int(shape[0]), int(shape[1])
    corners_x = np.array([0.0, cols - 1.0, 0.0, cols - 1.0, 0.5 * (cols - 1)])
    corners_y = np.array([0.0, 0.0, rows - 1.0, rows - 1.0, 0.5 * (rows - 1)])
    cra, cdec = celestial.pixel_to_world_values(corners_x, corners_y)
    vec = _unit(np.asarray(cra), np.asarray(cdec))
    centre = vec[4]
    # the cone through the corners, widened by the margin (1 deg covers any survey's pixel scale times the margin)
    angle = min(float(np.arccos(np.clip(np.min(vec[:4] @ centre), -1.0, 1.0))) + np.radians(1.0), np.pi)
    near = np.sort(np.asarray(catalogue.tree.query_ball_point(centre, 2.0 * np.sin(0.5 * angle)), dtype=np.int64))
    if not near.size:
        return np.zeros((0, 3))
    x, y = celestial.world_to_pixel_values(catalogue.ra[near], catalogue.dec[near])
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inside = (x >= -margin) & (x <= cols - 1 + margin) & (y >= -margin) & (y <= rows - 1 + margin)
    return np.column_stack([x[inside], y[inside], catalogue.mag[near][inside]])
