"""Detection catalogues: the columns, an empty catalogue, sky coordinates, CSV and Parquet writing.

One row per detection for images (only accepted, merged candidates), one row per alert for alert
packets (every alert, with ``detected`` saying whether the cascade accepted it), so the alert
evaluation sees every score. A Parquet catalogue is a folder partitioned Hive-style
(``catalogue/folder=<name>/part-0.parquet``) with the CSV's columns plus :data:`PROVENANCE_COLUMNS`.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from neocascade.errors import input_error
from neocascade.utils.atomic import atomic_dir, atomic_path

CATALOGUE_COLUMNS = ("file", "image", "x", "y", "ra", "dec", "p1", "p2", "peak", "snr", "detected",
                     *("kind", "x1", "y1", "x2", "y2", "length", "angle", "flux", "rate", "pa"))
"""CSV columns: source file, image index or alert ``candid``, 0-based pixel position (x = column),
sky position in degrees (empty without a celestial WCS), stage-1 and stage-2 probabilities (p2 empty
where stage 1 rejected), filtered peak in DN, SNR = peak / local noise, and the cascade's verdict;
then ``kind`` (``point`` for the cascade's detections, ``trail`` for :mod:`~neocascade.detection.trails`)
and, for trails only, end points (px), length (px), angle (deg from +x to +y), total flux (DN), rate
("/min) and position angle (deg); a trail's x, y is its midpoint and its snr the matched-filter SNR."""

TRAIL_COLUMNS = ("x1", "y1", "x2", "y2", "length", "angle", "flux", "rate", "pa")

PROVENANCE_COLUMNS = ("artifact_sha256", "config_hash")
"""Parquet only: sha256 of the cascade artifact file and the hash of the run's detection settings."""

_FLOATS = ("x", "y", "ra", "dec", "p1", "p2", "peak", "snr", *TRAIL_COLUMNS)
_FORMATS = {"x": "{:.2f}", "y": "{:.2f}", "ra": "{:.7f}", "dec": "{:.7f}", "p1": "{:.6g}", "p2": "{:.6g}",
            "peak": "{:.6g}", "snr": "{:.4g}", "x1": "{:.2f}", "y1": "{:.2f}", "x2": "{:.2f}", "y2": "{:.2f}",
            "length": "{:.2f}", "angle": "{:.2f}", "flux": "{:.6g}", "rate": "{:.4g}", "pa": "{:.2f}"}


def empty_catalogue() -> dict[str, np.ndarray]:
    """A catalogue with every column of :data:`CATALOGUE_COLUMNS` and no rows."""
    dtypes = {"file": object, "image": object, "detected": bool, "kind": object}
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
    out["kind"] = np.full(n, "point", dtype=object)
    for name in TRAIL_COLUMNS:
        out[name] = np.full(n, np.nan)
    return {name: out[name] for name in CATALOGUE_COLUMNS}


def trail_rows(
    trails: Mapping[str, np.ndarray], *, file: str, image: object, wcs: Any = None
) -> dict[str, np.ndarray]:
    """Catalogue columns of one image's trails (:func:`~neocascade.detection.trails.find_trails`), ``kind`` = trail.

    ``x, y`` is the trail's midpoint, ``snr`` its matched-filter SNR, ``peak`` its total flux; ``p1, p2`` are
    empty (no CNN scored it) and ``detected`` is 1.
    """
    n = len(np.asarray(trails["x"]))
    nan = np.full(n, np.nan)
    det = {"x": trails["x"], "y": trails["y"], "p1": nan, "p2": nan, "peak": trails["flux"], "snr": trails["snr"]}
    out = catalogue_rows(det, file=file, image=image, wcs=wcs)
    out["kind"] = np.full(n, "trail", dtype=object)
    for name in TRAIL_COLUMNS:
        out[name] = np.asarray(trails[name], dtype=np.float64)
    return out


def merge_trails(
    points: Mapping[str, np.ndarray], trails: Mapping[str, np.ndarray], on_trail: np.ndarray
) -> dict[str, np.ndarray]:
    """One image's catalogue: point rows not lying on a found trail (``on_trail`` False), then the trail rows.

    Each asteroid is reported once: a point detection the cascade made on a trail is merged into that trail.
    """
    keep = ~np.asarray(on_trail, dtype=bool)
    return {name: np.concatenate([np.asarray(points[name])[keep], np.asarray(trails[name])]).astype(
        np.asarray(points[name]).dtype) for name in CATALOGUE_COLUMNS}


def with_trail_columns(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``columns`` with ``kind`` (point) and empty trail columns added where missing (catalogues made before trails)."""
    n = len(columns["x"])
    out = dict(columns)
    out.setdefault("kind", np.full(n, "point", dtype=object))
    for name in TRAIL_COLUMNS:
        out.setdefault(name, np.full(n, np.nan))
    return out


def format_row(columns: Mapping[str, np.ndarray], index: int) -> list[str]:
    """One catalogue row as CSV strings: NaN becomes an empty field, ``detected`` is 0/1."""
    row = []
    for name in CATALOGUE_COLUMNS:
        value = columns[name][index]
        if name == "detected":
            row.append("1" if value else "0")
        elif name == "kind" and value is None:
            row.append("point")
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
        columns = with_trail_columns(columns)
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


def to_arrow(columns: Mapping[str, np.ndarray], *, provenance: Mapping[str, str] | None = None) -> Any:
    """A ``pyarrow.Table`` of catalogue columns: ``file`` string, ``image`` int64, floats, ``detected`` bool.

    ``provenance`` (values of :data:`PROVENANCE_COLUMNS`) adds one constant string column per key.
    """
    import pyarrow as pa

    columns = with_trail_columns(columns)
    n = len(columns["x"])
    arrays = {
        "file": pa.array([str(v) for v in columns["file"]], type=pa.string()),
        "image": pa.array(np.asarray(columns["image"], dtype=np.int64), type=pa.int64()),
        **{name: pa.array(np.asarray(columns[name], dtype=np.float64), type=pa.float64()) for name in _FLOATS},
        "detected": pa.array(np.asarray(columns["detected"], dtype=bool), type=pa.bool_()),
        "kind": pa.array([str(v) for v in columns["kind"]], type=pa.string()),
    }
    table = pa.table({name: arrays[name] for name in CATALOGUE_COLUMNS})
    for name, value in (provenance or {}).items():
        table = table.append_column(name, pa.array([str(value)] * n, type=pa.string()))
    return table


def from_arrow(table: Any) -> dict[str, np.ndarray]:
    """Catalogue columns (as :func:`catalogue_rows` returns them) from a table :func:`to_arrow` made."""
    out = {name: table.column(name).to_numpy(zero_copy_only=False) for name in CATALOGUE_COLUMNS}
    out["file"] = np.asarray(out["file"], dtype=object)
    out["kind"] = np.asarray(out["kind"], dtype=object)
    out["image"] = np.asarray(out["image"], dtype=np.int64).astype(object)
    return {name: out[name] for name in CATALOGUE_COLUMNS}


def write_part(path: str | os.PathLike, columns: Mapping[str, np.ndarray], *, overwrite: bool = False) -> Path:
    """Write one input unit's rows as a Parquet file, atomically (a killed writer leaves no part)."""
    import pyarrow.parquet as pq

    with atomic_path(path, overwrite=overwrite) as tmp:
        pq.write_table(to_arrow(columns), tmp)
    return Path(path)


def read_part(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read back what :func:`write_part` wrote."""
    import pyarrow.parquet as pq

    return from_arrow(pq.read_table(path))


def concat_catalogues(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows of several catalogues one after another (an empty catalogue for none)."""
    if not parts:
        return empty_catalogue()
    parts = [with_trail_columns(p) for p in parts]
    return {name: np.concatenate([np.asarray(p[name], dtype=object if name in ("file", "image", "kind") else None)
                                  for p in parts]) for name in CATALOGUE_COLUMNS}


def partition_name(value: object) -> str:
    """A partition value as a safe folder-name part: letters, digits and ``._+-`` kept, others become ``_``."""
    text = re.sub(r"[^A-Za-z0-9._+-]", "_", str(value))
    return text if text.strip("._") else "unknown"


def write_parquet_catalogue(
    path: str | os.PathLike,
    partitions: Mapping[str, Mapping[str, np.ndarray]],
    *,
    by: str | None,
    provenance: Mapping[str, str],
    overwrite: bool = False,
) -> Path:
    """Write a Parquet catalogue folder, Hive-partitioned by ``by``, atomically as a whole.

    Parameters
    ----------
    path : path
        The folder to create (``out/catalogue``).
    partitions : mapping
        Partition value -> catalogue columns; with ``by=None`` a single entry, written unpartitioned.
    by : str or None
        Partition key, e.g. ``folder``: rows of value ``v`` go to ``path/<by>=<v>/part-0.parquet``.
    provenance : mapping
        Values of :data:`PROVENANCE_COLUMNS`, stored in every row.
    overwrite : bool
        Replace an existing folder; otherwise an existing one is refused.

    Notes
    -----
    Read it back with ``pyarrow.parquet.read_table(path)``: the partition key comes back as a column.
    An empty catalogue is one empty file, so the schema is always there.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if path.exists():
        if not overwrite:
            raise input_error(path, "already exists; pass overwrite=true to replace it")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    items = list(partitions.items()) or [("unknown", empty_catalogue())]
    with atomic_dir(path) as tmp:
        for value, columns in items:
            folder = tmp if by is None else tmp / f"{by}={partition_name(value)}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(to_arrow(columns, provenance=provenance), folder / "part-0.parquet")
    return path


def read_parquet_catalogue(path: str | os.PathLike) -> Any:
    """A Parquet catalogue folder (or file) as one ``pyarrow.Table``, rows in file order within each partition."""
    import pyarrow.parquet as pq

    return pq.read_table(path)
