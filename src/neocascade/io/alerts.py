"""ZTF avro alert packets: read, validate, and decode the three image stamps.

A packet (see ``../shared/data/ztf_alerts/README.md`` beside the checkout) holds ``candid``, ``objectId``, a
``candidate`` record (``isdiffpos``, ``ssdistnr``, ``magpsf``, ``fwhm``, ``rb``, ``ndethist``,
``jdstarthist`` ...), ``prv_candidates`` (the earlier detections and upper limits at the position,
up to 30 days back; see :meth:`Alert.previous_detections`) and three cutouts, each a dict with
``fileName`` and ``stampData``: a gzip-compressed FITS image, normally 63×63 px. ``write_test_alert``
writes small synthetic packets for tests and examples.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import fastavro
import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from neocascade.errors import input_error
from neocascade.utils.atomic import atomic_path

STAMP_KEYS = {"difference": "cutoutDifference", "science": "cutoutScience", "template": "cutoutTemplate"}
KNOWN_ASTEROID_ARCSEC = 5.0  # README: known asteroid when 0 <= ssdistnr <= 5 arcsec (-999 = none nearby)

_TRUE = ("t", "1", "true")
_FALSE = ("f", "0", "false")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, eq=False)
class Alert:
    """One ZTF alert with its stamps decoded.

    Attributes
    ----------
    path : Path
        File the packet was read from.
    candid : int
        Alert (candidate) ID, unique per alert; used to de-duplicate.
    object_id : str
        ZTF object name (``objectId``), shared by alerts of the same sky position.
    candidate : dict
        The packet's ``candidate`` record as read (``magpsf``, ``fwhm``, ``rb``, ``ssdistnr`` ...).
    isdiffpos : bool
        True for a positive subtraction (science brighter than reference).
    difference : (h, w) float32 array
        Difference stamp in DN *as stored*: for a negative alert (``isdiffpos`` False) ZTF stores
        it sign-flipped (reference minus science), so its source looks positive. Use
        :attr:`signed_difference` for a consistent science-minus-reference sign. NaN kept.
    science, template : (h, w) float32 array or None
        Science and reference stamps in DN, NaN kept; None when the packet has no such cutout.
    prv_candidates : tuple of dict
        The packet's ``prv_candidates`` records as read (detections and non-detections); empty when
        the packet has none.
    """

    path: Path
    candid: int
    object_id: str
    candidate: dict[str, Any] = field(repr=False)
    isdiffpos: bool
    difference: np.ndarray = field(repr=False)
    science: np.ndarray | None = field(repr=False, default=None)
    template: np.ndarray | None = field(repr=False, default=None)
    prv_candidates: tuple[dict[str, Any], ...] = field(repr=False, default=())

    @property
    def signed_difference(self) -> np.ndarray:
        """Difference stamp as science minus reference (the stored stamp negated when ``isdiffpos`` is False)."""
        return self.difference if self.isdiffpos else -self.difference

    @property
    def ssdistnr(self) -> float | None:
        """Distance in arcsec to the nearest known solar-system object; None or -999 when there is none."""
        value = self.candidate.get("ssdistnr")
        return None if value is None else float(value)

    def previous_detections(self) -> dict[str, np.ndarray]:
        """The detections among ``prv_candidates`` (entries with a ``candid``; upper limits have none).

        Returns
        -------
        dict of (K,) arrays
            ``jd`` (days), ``ra``, ``dec`` (deg), ``magpsf`` (NaN when absent) and ``isdiffpos``
            (bool); entries without a finite ``jd``, ``ra`` and ``dec`` are left out.
        """
        rows = [p for p in self.prv_candidates if p.get("candid") is not None]

        def column(key: str) -> np.ndarray:
            return np.array([np.nan if p.get(key) is None else float(p[key]) for p in rows], dtype=np.float64)

        table = {key: column(key) for key in ("jd", "ra", "dec", "magpsf")}
        table["isdiffpos"] = np.array([str(p.get("isdiffpos")).strip().lower() in _TRUE for p in rows], dtype=bool)
        keep = np.isfinite(table["jd"]) & np.isfinite(table["ra"]) & np.isfinite(table["dec"])
        return {key: value[keep] for key, value in table.items()}

    @property
    def is_known_asteroid(self) -> bool:
        """True when a known solar-system object lies within 5 arcsec (``0 <= ssdistnr <= 5``)."""
        dist = self.ssdistnr
        return dist is not None and 0.0 <= dist <= KNOWN_ASTEROID_ARCSEC


def read_alerts(path: str | os.PathLike) -> list[Alert]:
    """Read every alert record of one avro file.

    Parameters
    ----------
    path : str or path
        An avro file holding one or more ZTF alert records.

    Returns
    -------
    list of Alert
        In file order; an avro file with no records gives an empty list.

    Raises
    ------
    InputError
        The file is missing, not avro, truncated or corrupt; a record lacks ``candid``, ``candidate``
        or ``cutoutDifference``; a stamp cannot be decoded as a 2-D FITS image.
    """
    path = Path(path)
    records = _read_records(path)
    return [_parse_record(path, record, index) for index, record in enumerate(records)]


def read_alert(path: str | os.PathLike) -> Alert:
    """Read a one-alert avro file (the ZTF distribution format: one packet per file).

    Raises
    ------
    InputError
        As :func:`read_alerts`, and when the file holds no record or more than one.
    """
    path = Path(path)
    alerts = read_alerts(path)
    if len(alerts) != 1:
        raise input_error(
            path, "expected exactly one alert record; use read_alerts for multi-record files", found=len(alerts)
        )
    return alerts[0]


def iter_alerts(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[Alert]:
    """Yield the alerts of several avro files, each ``candid`` once.

    Parameters
    ----------
    paths : path, folder, or iterable of paths
        A folder stands for its ``*.avro`` files in sorted order.

    Notes
    -----
    A repeated ``candid`` (the same packet distributed twice) is skipped after its first occurrence.
    """
    seen: set[int] = set()
    for path in _expand_paths(paths):
        for alert in read_alerts(path):
            if alert.candid in seen:
                continue
            seen.add(alert.candid)
            yield alert


def decode_stamp(data: bytes, *, source: object = "stamp") -> np.ndarray:
    """Decode a cutout's ``stampData`` (gzip-compressed, or plain, FITS) to a float32 (h, w) array.

    ``source`` names the stamp in the error message. NaN pixels are kept.
    """
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise input_error(source, "stamp has no data", expected="FITS bytes", found=type(data).__name__)
    try:
        raw = gzip.decompress(data) if data[:2] == _GZIP_MAGIC else bytes(data)
        with warnings.catch_warnings():
            # ZTF stamps carry a SIMPLE card astropy calls non-standard; the pixels are fine.
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                arrays = [hdu.data for hdu in hdul if getattr(hdu, "data", None) is not None]
                image = next((a for a in arrays if np.ndim(a) == 2), None)
                image = None if image is None else np.array(image, dtype=np.float32)
    except (OSError, EOFError, ValueError, TypeError, IndexError, zlib.error) as exc:
        raise input_error(source, f"stamp is not a decodable FITS image: {exc}") from None
    if image is None:
        raise input_error(source, "stamp holds no 2-D image", found=[np.shape(a) for a in arrays] or "no data")
    return image


def _expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Turn a file, a folder, or an iterable of files into a list of paths."""
    if isinstance(paths, (str, os.PathLike)):
        path = Path(paths)
        return sorted(path.glob("*.avro")) if path.is_dir() else [path]
    return [Path(p) for p in paths]


def _read_records(path: Path) -> list[dict]:
    """All records of an avro file, with low-level failures turned into one-line errors."""
    if not path.is_file():
        raise input_error(path, "no such file")
    try:
        with open(path, "rb") as fh:
            return list(fastavro.reader(fh))
    except EOFError as exc:
        raise input_error(path, f"truncated avro file: {exc}") from None
    except (ValueError, OSError, IndexError, KeyError, TypeError) as exc:
        raise input_error(path, f"not a readable avro file: {exc}") from None


def _parse_record(path: Path, record: Any, index: int) -> Alert:
    """Validate one decoded avro record and build its :class:`Alert`."""
    if not isinstance(record, dict):
        raise input_error(path, f"record {index} is not an alert", expected="a record", found=type(record).__name__)
    candidate = record.get("candidate")
    if not isinstance(candidate, dict):
        raise input_error(path, f"record {index} has no 'candidate' record", found=sorted(record))
    candid = record.get("candid", candidate.get("candid"))
    if isinstance(candid, bool) or not isinstance(candid, (int, np.integer)):
        raise input_error(path, f"record {index} has no integer 'candid'", found=repr(candid))
    candid = int(candid)
    label = f"{path}: candid {candid}"
    isdiffpos = _parse_isdiffpos(label, candidate.get("isdiffpos"))
    stamps: dict[str, np.ndarray | None] = {}
    for name, key in STAMP_KEYS.items():
        cutout = record.get(key)
        data = cutout.get("stampData") if isinstance(cutout, dict) else None
        if data is None:
            if name == "difference":
                raise input_error(label, f"record has no '{key}' stamp")
            stamps[name] = None
            continue
        stamps[name] = decode_stamp(data, source=f"{label} {key}")
    object_id = record.get("objectId")
    history = record.get("prv_candidates")
    if history is None:
        history = []
    if not isinstance(history, list) or not all(isinstance(p, dict) for p in history):
        raise input_error(label, "'prv_candidates' is not a list of records", found=type(history).__name__)
    return Alert(
        path=path,
        candid=candid,
        object_id="" if object_id is None else str(object_id),
        candidate=dict(candidate),
        isdiffpos=isdiffpos,
        difference=stamps["difference"],
        science=stamps["science"],
        template=stamps["template"],
        prv_candidates=tuple(dict(p) for p in history),
    )


def _parse_isdiffpos(label: str, value: Any) -> bool:
    """Map ZTF's 't'/'1' and 'f'/'0' (or a bool) to a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise input_error(label, "unreadable 'isdiffpos'", expected="'t', 'f', '1' or '0'", found=repr(value))


# --- synthetic packets for tests and examples ------------------------------------------------------

_AVRO_TYPES = ((bool, "boolean"), (int, "long"), (float, "double"), (str, "string"))
# prv_candidates fields the synthetic packets carry (a subset of ZTF's, same names and meanings)
PRV_FIELDS = {"jd": "double", "candid": "long", "fid": "long", "ra": "double", "dec": "double",
              "magpsf": "double", "isdiffpos": "string", "diffmaglim": "double"}


def make_test_record(
    *,
    difference: np.ndarray | None,
    science: np.ndarray | None = None,
    template: np.ndarray | None = None,
    isdiffpos: bool | str = True,
    ssdistnr: float = -999.0,
    candid: int = 1,
    object_id: str = "ZTF23test",
    prv_candidates: Sequence[dict] | None = None,
    **candidate_fields: Any,
) -> dict:
    """Build one minimal alert record (a plain dict) for :func:`write_test_alerts`.

    Parameters
    ----------
    difference, science, template : (h, w) float array or None
        Stamps in DN, stored as gzip-compressed FITS. None writes a null cutout (``difference=None``
        gives a packet readers must refuse).
    isdiffpos : bool or str
        A bool is stored as ZTF does, ``'t'`` or ``'f'``; a string is stored verbatim. Like ZTF, pass the difference *as stored*
        (already sign-flipped for a negative alert).
    ssdistnr : float
        Arcsec to the nearest known solar-system object; -999 for none.
    candid : int
        Alert ID, also stored in the candidate record.
    prv_candidates : sequence of dict or None
        Earlier detections (give ``candid``) and upper limits (``candid`` None) with the keys of
        ``PRV_FIELDS`` (missing keys are stored as null); None stores a null list.
    **candidate_fields
        Extra or overriding candidate fields (bool, int, float or str values); defaults give
        ``magpsf=19.0``, ``fwhm=2.0``, ``rb=0.9``, ``jd=2460236.0``, ``fid=2``.
    """
    candidate: dict[str, Any] = {
        "candid": int(candid),
        "jd": 2460236.0,
        "fid": 2,
        "isdiffpos": isdiffpos if isinstance(isdiffpos, str) else ("t" if isdiffpos else "f"),
        "ssdistnr": float(ssdistnr),
        "magpsf": 19.0,
        "fwhm": 2.0,
        "rb": 0.9,
    }
    candidate.update(candidate_fields)
    record: dict[str, Any] = {"candid": int(candid), "objectId": object_id, "candidate": candidate,
                              "prv_candidates": None if prv_candidates is None else
                              [{key: p.get(key) for key in PRV_FIELDS} for p in prv_candidates]}
    for name, key in STAMP_KEYS.items():
        stamp = {"difference": difference, "science": science, "template": template}[name]
        record[key] = None if stamp is None else {"fileName": f"candid{candid}_{name}.fits.gz", "stampData": _encode_stamp(stamp)}
    return record


def write_test_alerts(path: str | os.PathLike, records: Sequence[dict], *, overwrite: bool = False) -> Path:
    """Write records from :func:`make_test_record` to one avro file (atomically) and return its path.

    The schema is derived from the first record's candidate fields; every field is nullable.
    """
    if len(records) == 0:
        raise ValueError("records: need at least one record")
    schema = _test_schema(records[0]["candidate"])
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fastavro.writer(fh, schema, list(records))
    return Path(path)


def write_test_alert(
    path: str | os.PathLike,
    *,
    difference: np.ndarray | None,
    science: np.ndarray | None = None,
    template: np.ndarray | None = None,
    isdiffpos: bool | str = True,
    ssdistnr: float = -999.0,
    candid: int = 1,
    prv_candidates: Sequence[dict] | None = None,
    overwrite: bool = False,
    **candidate_fields: Any,
) -> Path:
    """Write a one-alert avro file for tests and examples; see :func:`make_test_record` for the arguments."""
    record = make_test_record(
        difference=difference,
        science=science,
        template=template,
        isdiffpos=isdiffpos,
        ssdistnr=ssdistnr,
        candid=candid,
        prv_candidates=prv_candidates,
        **candidate_fields,
    )
    return write_test_alerts(path, [record], overwrite=overwrite)


def _encode_stamp(stamp: np.ndarray) -> bytes:
    """A 2-D array as gzip-compressed FITS bytes (big-endian float32, as ZTF stores it)."""
    array = np.asarray(stamp, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"stamp: must be a 2-D array, got shape {array.shape}")
    buf = io.BytesIO()
    fits.PrimaryHDU(array).writeto(buf)
    return gzip.compress(buf.getvalue())


def _test_schema(candidate: dict[str, Any]) -> dict:
    """A minimal ZTF-like avro schema for :func:`write_test_alerts`."""
    fields = []
    for name, value in candidate.items():
        avro_type = next((t for py, t in _AVRO_TYPES if isinstance(value, py)), None)
        if avro_type is None:
            raise ValueError(f"candidate field {name!r}: unsupported type {type(value).__name__}")
        fields.append({"name": name, "type": ["null", avro_type], "default": None})
    cutout = {
        "type": "record",
        "name": "cutout",
        "fields": [{"name": "fileName", "type": "string"}, {"name": "stampData", "type": "bytes"}],
    }
    return {
        "type": "record",
        "name": "alert",
        "namespace": "neocascade.test",
        "fields": [
            {"name": "candid", "type": "long"},
            {"name": "objectId", "type": "string"},
            {"name": "candidate", "type": {"type": "record", "name": "candidate", "fields": fields}},
            {"name": "prv_candidates", "default": None, "type": ["null", {"type": "array", "items": {
                "type": "record", "name": "prv_candidate",
                "fields": [{"name": k, "type": ["null", t], "default": None} for k, t in PRV_FIELDS.items()]}}]},
            {"name": "cutoutScience", "type": ["null", cutout], "default": None},
            {"name": "cutoutTemplate", "type": ["null", "cutout"], "default": None},
            {"name": "cutoutDifference", "type": ["null", "cutout"], "default": None},
        ],
    }
