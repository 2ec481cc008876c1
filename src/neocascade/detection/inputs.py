"""What ``detect.py input=...`` can read: find the files, tell their kind, and yield work units.

Kinds, told by file name first and by the first bytes when the name says nothing:

- ``npz``: a canonical npz file (:mod:`neocascade.io.npz`), one unit per image;
- ``challenge``: ``asteroid_difference_images_{k}.npz`` of the seed challenge layout, read with its
  ``asteroid_injected_information_{k}.npz`` partner (a pickle: refused unless ``allow_pickle``);
- ``fits``: a FITS difference image (``.fits``, ``.fit``, ``.fts``, ``.fz``, optionally ``.gz``),
  e.g. ZTF ``*scimrefdiffimg.fits.fz``; masked pixels from a mask HDU or NaN;
- ``avro``: ZTF alert packets, one unit per alert.

Every kind has its non-physical pixels masked (NaN) on the way in: non-finite values and those whose
absolute value reaches the saturation level (a FITS header's ``SATURATE``, else ``saturation=``).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from neocascade.errors import input_error
from neocascade.preprocess.filters import DEFAULT_SATURATION, _mask_invalid

KINDS = ("npz", "challenge", "fits", "avro")
_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz")
_CHALLENGE_IMAGES = re.compile(r"^asteroid_difference_images_(\d+)\.npz$")
_CHALLENGE_INFO = re.compile(r"^asteroid_injected_information_(\d+)\.npz$")
_MAGIC = ((b"SIMPLE  =", "fits"), (b"Obj\x01", "avro"), (b"PK\x03\x04", "npz"), (b"\x1f\x8b", "fits"))


@dataclass(frozen=True)
class ImageUnit:
    """One image to search: where it came from, its pixels (NaN = masked), its WCS and exposure time in s (or None)."""

    file: Path
    image: int
    pixels: np.ndarray
    wcs: Any = None
    exptime: float | None = None


@dataclass(frozen=True)
class AlertUnit:
    """One alert packet to score."""

    file: Path
    alert: Any


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Turn files, folders and glob patterns into a sorted, de-duplicated list of input files.

    Parameters
    ----------
    inputs : path or glob, or a list of them
        A folder stands for its readable files (by name: npz, FITS, avro); the challenge's
        information files are companions and never listed on their own.

    Raises
    ------
    InputError
        An entry matches nothing, or nothing readable was found at all.
    """
    entries = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not entries:
        raise input_error("input", "no input given", expected="a file, folder or glob")
    found: list[Path] = []
    for entry in entries:
        text = str(entry)
        path = Path(text).expanduser()
        if path.is_dir():
            listed = sorted(p for p in path.iterdir() if p.is_file() and _listable(p))
            if not listed:
                raise input_error(path, "folder holds no npz, FITS or avro file")
            found.extend(listed)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file())
            matches = [p for p in matches if not _CHALLENGE_INFO.match(p.name)]
            if not matches:
                raise input_error("input", f"pattern {text!r} matches no file")
            found.extend(matches)
        else:
            raise input_error(path, "no such file or folder")
    return list(dict.fromkeys(_challenge_partner(p) for p in found))


def input_kind(path: str | os.PathLike) -> str:
    """The kind of an input file (one of :data:`KINDS`), by name, else by its first bytes.

    Raises
    ------
    InputError
        The file cannot be opened or is of no known kind.
    """
    path = Path(path)
    name = path.name.lower()
    if _CHALLENGE_IMAGES.match(path.name):
        return "challenge"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".avro"):
        return "avro"
    if name.endswith(_FITS_SUFFIXES):
        return "fits"
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise input_error(path, f"cannot be read: {exc.strerror or exc}") from None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    raise input_error(path, "unknown input kind", expected="npz, challenge npz, FITS or avro", found=repr(head[:8]))


def iter_units(
    path: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    mask_hdu: int | str | None = None,
    bad_value: float | None = None,
    saturation: float | None = DEFAULT_SATURATION,
) -> Iterator[ImageUnit | AlertUnit]:
    """Open one input file and yield its images (or alerts) one at a time.

    Parameters
    ----------
    path : path
        An input file (see :func:`input_kind`).
    allow_pickle : bool
        Needed for the challenge layout (its information file is a pickle).
    mask_hdu, bad_value
        FITS only: passed to :func:`neocascade.io.fits.read_fits_image`.
    saturation : float, optional
        Saturation level in DN (a FITS header's ``SATURATE`` wins): pixels with ``|value| >=``
        it become NaN, in alerts also difference pixels whose science or template pixel reaches
        it. None masks only non-finite values and those beyond
        :data:`~neocascade.preprocess.filters.ABSURD_DN`.

    Raises
    ------
    InputError
        Naming the file, when it cannot be opened or validated. Raised on the first ``next``.
    """
    path = Path(path)
    kind = input_kind(path)
    if kind == "npz":
        from neocascade.io.npz import read_canonical

        data = read_canonical(path, truth="ignore")  # detection never uses the truth (issue 17 item 9)
        for i in range(data.n_images):
            exptime = None if data.exptime is None else float(data.exptime[i])
            wcs = None if data.wcs is None else _npz_wcs(data.wcs[i])  # a night's files carry one per image
            yield ImageUnit(path, i, _mask_invalid(data.image(i), False, saturation), wcs, exptime=exptime)
    elif kind == "challenge":
        from neocascade.io.challenge import read_challenge

        k = challenge_index(path)
        data = read_challenge(path.parent, k, allow_pickle=allow_pickle)
        for i in range(data.n_images):
            yield ImageUnit(path, i, _mask_invalid(data.image(i), False, saturation))
    elif kind == "fits":
        from neocascade.io.fits import read_fits_image

        fits_image = read_fits_image(path, mask_hdu=mask_hdu, bad_value=bad_value, saturation=saturation)
        yield ImageUnit(path, 0, fits_image.image, getattr(fits_image, "wcs", None), _exptime(fits_image.header))
    else:
        from neocascade.io.alerts import read_alerts

        for alert in read_alerts(path):
            yield AlertUnit(path, _mask_alert(alert, saturation))


def challenge_index(path: Path) -> int:
    """The file number k of a challenge image file ``asteroid_difference_images_{k}.npz`` (``input_kind`` said so)."""
    return int(_CHALLENGE_IMAGES.match(Path(path).name).group(1))


def _npz_wcs(row: np.ndarray) -> Any:
    """The astropy WCS of one canonical npz WCS row (validated by the reader)."""
    from neocascade.io.observation import wcs_from_row

    return wcs_from_row(row)


def _exptime(header: Any) -> float | None:
    """A FITS header's ``EXPTIME`` in s, or None when it has no positive finite one (the rate stays unknown)."""
    value = header.get("EXPTIME") if header is not None else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        return None
    return float(value)


def _mask_alert(alert: Any, saturation: float | None) -> Any:
    """``alert`` with its difference stamp masked where it, or the science or template pixel, is non-physical."""
    difference = _mask_invalid(alert.difference, False, saturation)
    if saturation is not None:
        for stamp in (alert.science, alert.template):
            if stamp is not None and np.shape(stamp) == difference.shape:
                difference[np.asarray(stamp) >= saturation] = np.nan
    if np.array_equal(np.isnan(difference), np.isnan(alert.difference)):
        return alert
    return dataclasses.replace(alert, difference=difference)


def _listable(path: Path) -> bool:
    """Whether a folder entry is an input file (by name); challenge information files are not."""
    name = path.name.lower()
    if path.name.startswith(".") or _CHALLENGE_INFO.match(path.name):
        return False
    return name.endswith((".npz", ".avro") + _FITS_SUFFIXES)


def _challenge_partner(path: Path) -> Path:
    """A challenge information file given by name stands for its images file."""
    match = _CHALLENGE_INFO.match(path.name)
    if match is None:
        return path
    return path.with_name(f"asteroid_difference_images_{match.group(1)}.npz")
