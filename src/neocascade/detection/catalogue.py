"""Detection catalogues: the columns, an empty catalogue, sky coordinates and streamed CSV writing.

One row per detection for images (only accepted, merged candidates), one row per alert for alert
packets (every alert, with ``detected`` saying whether the cascade accepted it), so the alert
evaluation sees every score.
"""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from neocascade.utils.atomic import atomic_path

CATALOGUE_COLUMNS = ("file", "image", "x", "y", "ra", "dec", "p1", "p2", "peak", "snr", "detected")
"""CSV columns: source file, image index or alert ``candid``, 0-based pixel position (x = column),
sky position in degrees (empty without a celestial WCS), stage-1 and stage-2 probabilities (p2 empty
where stage 1 rejected), filtered peak in DN, SNR = peak / local noise, and the cascade's verdict."""

_FORMATS = {"x": "{:.2f}", "y": "{:.2f}", "ra": "{:.7f}", "dec": "{:.7f}", "p1": "{:.6g}", "p2": "{:.6g}",
            "peak": "{:.6g}", "snr": "{:.4g}"}


def empty_catalogue() -> dict[str, np.ndarray]:
    """A catalogue with every column of :data:`CATALOGUE_COLUMNS` and no rows."""
    dtypes = {"file": object, "image": object, "detected": bool}
    return {name: np.empty(0, dtype=dtypes.get(name, np.float64)) for name in CATALOGUE_COLUMNS}


def pixel_to_sky(wcs: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky coordinates (degrees) of 0-based pixel positions; NaN when ``wcs`` has no celestial part.

    Parameters
    ----------
    wcs : astropy.wcs.WCS or None
        The image's WCS (FITS header); None or a non-celestial WCS gives NaN.
    x, y : (N,) float arrays
        Column and row, 0-based pixel centres (astropy's ``pixel_to_world_values`` convention).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    nan = np.full(x.shape, np.nan)
    if wcs is None or not getattr(wcs, "has_celestial", False) or x.size == 0:
        return nan, nan.copy()
    celestial = wcs.celestial
    ra, dec = celestial.pixel_to_world_values(x, y)
    return np.asarray(ra, dtype=np.float64) % 360.0, np.asarray(dec, dtype=np.float64)


def catalogue_rows(
    detections: Mapping[str, np.ndarray], *, file: str, image: object, wcs: Any = None
) -> dict[str, np.ndarray]:
    """Turn one image's detections (from :func:`~neocascade.detection.detector.detect_image`) into catalogue columns.

    Parameters
    ----------
    detections : mapping
        Arrays ``x, y, p1, p2, peak, snr`` and optionally ``detected``, ``ra``, ``dec`` (all (N,)).
    file : str
        Source file as shown to the user.
    image : object
        Image index in the file, or alert ``candid``.
    wcs : astropy.wcs.WCS or None
        Used for ``ra, dec`` when the detections carry none.
    """
    n = len(np.asarray(detections["x"]))
    out = {name: np.asarray(detections[name], dtype=np.float64) for name in ("x", "y", "p1", "p2", "peak", "snr")}
    if "ra" in detections and "dec" in detections:
        out["ra"] = np.asarray(detections["ra"], dtype=np.float64)
        out["dec"] = np.asarray(detections["dec"], dtype=np.float64)
    else:
        out["ra"], out["dec"] = pixel_to_sky(wcs, out["x"], out["y"])
    out["detected"] = np.asarray(detections.get("detected", np.ones(n, dtype=bool)), dtype=bool)
    out["file"] = np.full(n, str(file), dtype=object)
    out["image"] = np.full(n, image, dtype=object)
    return {name: out[name] for name in CATALOGUE_COLUMNS}


def format_row(columns: Mapping[str, np.ndarray], index: int) -> list[str]:
    """One catalogue row as CSV strings: NaN becomes an empty field, ``detected`` is 0/1."""
    row = []
    for name in CATALOGUE_COLUMNS:
        value = columns[name][index]
        if name == "detected":
            row.append("1" if value else "0")
        elif name in _FORMATS:
            row.append("" if not np.isfinite(value) else _FORMATS[name].format(float(value)))
        else:
            row.append(str(value))
    return row


class CatalogueWriter:
    """Stream catalogue rows into a CSV that appears (atomically) only when writing finished.

    Use through :func:`open_catalogue`; ``write(columns)`` appends the rows of a column mapping
    such as :func:`catalogue_rows` returns, ``n_rows`` counts them.
    """

    def __init__(self, handle: Any) -> None:
        self._writer = csv.writer(handle, lineterminator="\n")
        self._writer.writerow(CATALOGUE_COLUMNS)
        self.n_rows = 0

    def write(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append every row of ``columns``."""
        n = len(columns["x"])
        for i in range(n):
            self._writer.writerow(format_row(columns, i))
        self.n_rows += n


@contextlib.contextmanager
def open_catalogue(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[CatalogueWriter]:
    """Open a catalogue CSV for streamed writing; it replaces ``path`` only when the block succeeds.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is False.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="") as handle:
            yield CatalogueWriter(handle)


def write_catalogue(
    path: str | os.PathLike, columns: Mapping[str, np.ndarray], *, overwrite: bool = False
) -> Path:
    """Write a whole catalogue (column mapping) to ``path`` atomically and return the path."""
    with open_catalogue(path, overwrite=overwrite) as writer:
        writer.write(columns)
    return Path(path)


def read_catalogue(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a catalogue CSV back as a list of row dicts (strings), for checks and tests."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
