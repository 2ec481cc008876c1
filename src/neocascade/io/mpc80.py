"""MPC 80-column optical astrometry (the MPC1992 format, still accepted beside ADES): write and read.

One observation is one fixed-width line (columns 1-based, as the MPC's format page numbers them):

====== =====================================================================================
1-5    packed minor-planet number (blank for a new object)
6-12   packed provisional designation, or the observer's temporary designation (<= 7 characters)
13     discovery asterisk; 14 note; 15 mode (``C`` = CCD)
16-32  UTC date ``YYYY MM DD.dddddd`` (day fraction)
33-44  RA (J2000) ``HH MM SS.sss``; 45-56 Dec ``sDD MM SS.ss``; 57-65 blank
66-70  magnitude; 71 band; 72 astrometric catalogue code; 73-77 reference (MPC-assigned)
78-80  observatory code
====== =====================================================================================

A header of 3-letter keyword lines (``COD I41`` first, then ``CON``, ``OBS``, ``MEA``, ``TEL``,
``NET``, ``ACK`` ...) precedes the observations. The observation dict is the one of
:mod:`neocascade.io.ades` (``trksub``, ``mjd``, ``ra``, ``dec``, optional ``mag``, ``band``,
``permid``); uncertainties and exposure time have no place in this format and are dropped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from neocascade.errors import input_error
from neocascade.io.ades import MJD_EPOCH, check_observations
from neocascade.utils.atomic import atomic_path

# astCat -> one-character catalogue code of column 72 (the MPC's table, as used by ADES converters)
CATALOGUE_CODES = {"UNK": " ", "UCAC3": "u", "UCAC4": "q", "PPMXL": "t", "USNOB1": "o", "2MASS": "L", "URAT1": "S",
                   "Gaia1": "U", "Gaia2": "V", "Gaia3": "W", "Gaia3E": "X", "UCAC5": "Y", "ATLAS2": "Z", "PS1_DR1": "1",
                   "PS1_DR2": "2"}
MODE_CODES = {"CCD": "C", "CMO": "B"}  # ADES mode -> column 15 (CMOS reported as B)
# ADES bands of two characters -> the one-character band of column 71
BANDS = {"Vj": "V", "VR": "V", "Rc": "R", "Ic": "I", "Bj": "B", "Uj": "U", "Sg": "g", "Sr": "r", "Si": "i", "Sz": "z",
         "Gb": "G", "Gr": "G"}
HEADER_KEYS = ("CON", "OBS", "MEA", "TEL", "NET", "BND", "COM", "NUM", "ACK", "AC2")  # after the COD line
_HEADER = re.compile(r"^([A-Z][A-Z0-9]{2}) (.*)$")
_PACK = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def write_mpc80(
    path: str | os.PathLike,
    obs: Mapping[str, Any],
    *,
    observatory: str = "I41",
    ast_cat: str = "Gaia2",
    mode: str = "CCD",
    header: Mapping[str, Any] | None = None,
    time_decimals: int = 6,
    ra_decimals: int = 3,
    dec_decimals: int = 2,
    mag_decimals: int = 2,
    overwrite: bool = False,
) -> Path:
    """Write observations as MPC 80-column lines after a ``COD`` header, atomically.

    Parameters
    ----------
    path : path
        Output file; refused if it exists unless ``overwrite``.
    obs : mapping of (N,) arrays
        As :func:`neocascade.io.ades.check_observations`, with ``trksub`` at most 7 characters (the
        width of columns 6-12); optional ``permid`` (a minor-planet number, packed into 1-5),
        ``disc`` (``"*"``), ``note`` (column 14) and ``ref`` (columns 73-77, MPC-assigned; blank
        in a submission).
    observatory : str
        3-character MPC code (ZTF: I41).
    ast_cat : str
        ADES ``astCat`` name, written as its column-72 code (``CATALOGUE_CODES``).
    mode : str
        ADES mode, written as its column-15 code (``MODE_CODES``).
    header : mapping or None
        Further header lines, keyword -> text or list of texts (keywords from ``HEADER_KEYS``,
        written in that order), e.g. ``{"OBS": "A. B", "TEL": "1.2-m f/2.4 Schmidt + CCD"}``.
    time_decimals, ra_decimals, dec_decimals, mag_decimals : int
        Digits after the point of the day (5 or 6), the RA seconds (2 or 3), the Dec arcseconds
        (1 or 2) and the magnitude (1 or 2); the defaults are the MPC's high-precision layout.

    Returns
    -------
    Path
    """
    cols = check_observations(obs, source="obs", max_trksub=7)
    n = cols["mjd"].size
    if np.any(cols["provid"] != ""):
        raise input_error("obs['provid']", "unpacked provisional designations are not packed here",
                          expected="the packed form (e.g. 'K20Q04A') as trksub")
    extra = {key: _strings(obs, key, n) for key in ("disc", "note", "ref")}
    for key, value, allowed in (("observatory", observatory, None), ("ast_cat", ast_cat, CATALOGUE_CODES),
                                ("mode", mode, MODE_CODES)):
        if allowed is not None and value not in allowed:
            raise input_error(key, "no 80-column code", expected=f"one of {sorted(allowed)}", found=repr(value))
    if not (isinstance(observatory, str) and re.match(r"^[A-Z0-9]{3}$", observatory)):
        raise input_error("observatory", "bad MPC code", expected="3 letters or digits", found=repr(observatory))
    for key, value, allowed in (("time_decimals", time_decimals, (5, 6)), ("ra_decimals", ra_decimals, (2, 3)),
                                ("dec_decimals", dec_decimals, (1, 2)), ("mag_decimals", mag_decimals, (1, 2))):
        if value not in allowed:
            raise input_error(key, "unsupported precision", expected=f"one of {list(allowed)}", found=repr(value))
    for key, width, pattern in (("disc", 1, r"^[* ]?$"), ("note", 1, r"^[A-Za-z0-9 ]?$"), ("ref", 5, r"^[ -~]{0,5}$")):
        bad = [i for i, v in enumerate(extra[key]) if not re.match(pattern, v)]
        if bad:
            raise input_error(f"obs[{key!r}] row {bad[0]}", "bad value", expected=f"{width} character(s)",
                              found=repr(extra[key][bad[0]]))
    bands = [_band(b, i) if np.isfinite(m) else " " for i, (b, m) in enumerate(zip(cols["band"], cols["mag"]))]
    dates = format_date(cols["mjd"], decimals=time_decimals)
    ras = format_ra(cols["ra"], decimals=ra_decimals)
    decs = format_dec(cols["dec"], decimals=dec_decimals)
    lines = [f"COD {observatory}", *_header_lines(header)]
    for i in range(n):
        mag = "" if not np.isfinite(cols["mag"][i]) else f"{cols['mag'][i]:.{mag_decimals}f}"
        line = (pack_number(cols["permid"][i], row=i).rjust(5) + cols["trksub"][i].ljust(7) + (extra["disc"][i] or " ")
                + (extra["note"][i] or " ") + MODE_CODES[mode] + dates[i].ljust(17) + ras[i].ljust(12)
                + decs[i].ljust(12) + " " * 9 + mag.ljust(5) + bands[i] + CATALOGUE_CODES[ast_cat]
                + extra["ref"][i].ljust(5) + observatory)
        lines.append(line)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
    return Path(path)


def _strings(obs: Mapping[str, Any], key: str, n: int) -> list[str]:
    """An optional string column (all '' when absent), checked for length."""
    if key not in obs:
        return [""] * n
    values = np.asarray(obs[key])
    if values.ndim != 1 or values.size != n:
        raise input_error(f"obs[{key!r}]", "must be a 1-D array as long as 'mjd'", expected=n, found=values.shape)
    return ["" if v is None else str(v) for v in values.tolist()]


def _band(band: str, row: int) -> str:
    """The one-character band of column 71."""
    if len(band) == 1:
        return band
    if band in BANDS:
        return BANDS[band]
    raise input_error(f"obs['band'] row {row}", "no one-character 80-column band",
                      expected=f"one character or one of {sorted(BANDS)}", found=repr(band))


def _header_lines(header: Mapping[str, Any] | None) -> list[str]:
    """Header lines in ``HEADER_KEYS`` order; values one line of printable ASCII."""
    header = dict(header or {})
    unknown = sorted(set(header) - set(HEADER_KEYS))
    if unknown:
        raise input_error("header", f"unknown keyword {unknown[0]!r}", expected=f"one of {list(HEADER_KEYS)}")
    lines = []
    for key in HEADER_KEYS:
        values = header.get(key, [])
        for value in values if isinstance(values, (list, tuple)) else [values]:
            text = str(value)
            if not re.match(r"^[ -~]{1,76}$", text):
                raise input_error(f"header[{key!r}]", "bad value", expected="1-76 printable ASCII characters",
                                  found=repr(text))
            lines.append(f"{key} {text}")
    return lines


def format_date(mjd: np.ndarray, *, decimals: int = 6) -> list[str]:
    """UTC MJD as ``YYYY MM DD.dddddd`` (the day rounded to ``decimals`` digits)."""
    scale = 10**decimals
    ticks = np.rint(np.asarray(mjd, dtype=np.float64) * scale).astype(np.int64)
    days, frac = np.divmod(ticks, scale)
    dates = np.datetime_as_string(MJD_EPOCH.astype("datetime64[D]") + days.astype("timedelta64[D]"), unit="D")
    return [f"{d[:4]} {d[5:7]} {d[8:10]}.{f:0{decimals}d}" for d, f in zip(dates.tolist(), frac.tolist())]


def format_ra(ra: np.ndarray, *, decimals: int = 3) -> list[str]:
    """RA in degrees as ``HH MM SS.sss`` (seconds of time rounded to ``decimals`` digits, wrapped at 24 h)."""
    scale = 10**decimals
    ticks = np.rint(np.asarray(ra, dtype=np.float64) / 15.0 * 3600.0 * scale).astype(np.int64) % (24 * 3600 * scale)
    hours, rest = np.divmod(ticks, 3600 * scale)
    minutes, rest = np.divmod(rest, 60 * scale)
    seconds, frac = np.divmod(rest, scale)
    return [f"{h:02d} {m:02d} {s:02d}.{f:0{decimals}d}" for h, m, s, f in
            zip(hours.tolist(), minutes.tolist(), seconds.tolist(), frac.tolist())]


def format_dec(dec: np.ndarray, *, decimals: int = 2) -> list[str]:
    """Dec in degrees as ``sDD MM SS.ss`` (arcseconds rounded to ``decimals`` digits; ``+`` for zero)."""
    scale = 10**decimals
    dec = np.asarray(dec, dtype=np.float64)
    ticks = np.rint(np.abs(dec) * 3600.0 * scale).astype(np.int64)
    degrees, rest = np.divmod(ticks, 3600 * scale)
    minutes, rest = np.divmod(rest, 60 * scale)
    seconds, frac = np.divmod(rest, scale)
    signs = np.where((dec < 0) & (ticks > 0), "-", "+")
    return [f"{g}{d:02d} {m:02d} {s:02d}.{f:0{decimals}d}" for g, d, m, s, f in
            zip(signs.tolist(), degrees.tolist(), minutes.tolist(), seconds.tolist(), frac.tolist())]


def pack_number(number: str, *, row: int = 0) -> str:
    """A minor-planet number as columns 1-5.

    5 digits below 100000, a letter and 4 digits below 620000, then ``~`` and 4 base-62 digits.
    """
    if number == "":
        return ""
    if not number.isdigit() or not 0 < int(number) < 620000 + 62**4:
        raise input_error(f"obs['permid'] row {row}", "not a packable minor-planet number",
                          expected=f"1 to {620000 + 62**4 - 1}", found=repr(number))
    value = int(number)
    if value < 100000:
        return f"{value:05d}"
    if value < 620000:
        return _PACK[value // 10000] + f"{value % 10000:04d}"
    value -= 620000
    return "~" + "".join(_PACK[(value // 62**k) % 62] for k in (3, 2, 1, 0))


def unpack_number(packed: str) -> str:
    """Columns 1-5 back to a minor-planet number string; ``""`` when blank, the text itself for a comet."""
    packed = packed.strip()
    if not packed:
        return ""
    if packed.isdigit():
        return str(int(packed))
    if len(packed) == 5 and packed[0] in _PACK[10:] and packed[1:].isdigit():
        return str(_PACK.index(packed[0]) * 10000 + int(packed[1:]))
    if len(packed) == 5 and packed[0] == "~" and all(c in _PACK for c in packed[1:]):
        return str(620000 + sum(_PACK.index(c) * 62**k for c, k in zip(packed[1:], (3, 2, 1, 0))))
    return packed


def read_mpc80(path: str | os.PathLike) -> dict[str, Any]:
    """Read an 80-column file: header lines and optical observations.

    Returns
    -------
    dict
        ``trksub`` (columns 6-12, stripped), ``permid`` (unpacked number or ``""``), ``disc``,
        ``note``, ``mode`` (ADES name of column 15, the code itself when unknown), ``band``, ``ast_cat``
        (ADES name of column 72, ``""`` when blank), ``ref``, ``stn`` (str arrays); ``mjd``, ``ra``,
        ``dec`` (deg), ``mag`` (NaN when blank) (float arrays); ``header``: keyword -> list of texts.

    Raises
    ------
    InputError
        Missing file, a line that is neither a header line nor 80 columns, an unreadable date or
        angle, a two-line record (roving, satellite or radar: not supported).
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "no such file")
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError as exc:
        raise input_error(path, f"not ASCII text: {exc}") from None
    header: dict[str, list[str]] = {}
    records: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r")
        if not text.strip():
            continue
        match = _HEADER.match(text)
        if not records and match and len(text) < 80:
            header.setdefault(match.group(1), []).append(match.group(2))
            continue
        if len(text) != 80:
            raise input_error(f"{path} line {number}", "not an 80-column observation", expected="80 characters",
                              found=len(text))
        if text[14] in "sSvVrR":
            raise input_error(f"{path} line {number}",
                              f"record type {text[14]!r} (roving, satellite or radar) is not supported")
        records.append((number, text))
    return {**_parse_records(path, records), "header": header}


def _parse_records(path: Path, records: list[tuple[int, str]]) -> dict[str, np.ndarray]:
    """Columns of the observation lines (1-based column ranges of the module docstring)."""
    codes = {v: k for k, v in CATALOGUE_CODES.items() if k != "UNK"}
    modes = {v: k for k, v in MODE_CODES.items()}

    def field(a: int, b: int) -> list[str]:
        return [text[a - 1:b] for _, text in records]

    out: dict[str, np.ndarray] = {
        "permid": np.array([unpack_number(v) for v in field(1, 5)], dtype=object),
        "trksub": np.array([v.strip() for v in field(6, 12)], dtype=object),
        "disc": np.array([v.strip() for v in field(13, 13)], dtype=object),
        "note": np.array([v.strip() for v in field(14, 14)], dtype=object),
        "mode": np.array([modes.get(v, v) for v in field(15, 15)], dtype=object),
        "band": np.array([v.strip() for v in field(71, 71)], dtype=object),
        "ast_cat": np.array([codes.get(v, v.strip()) for v in field(72, 72)], dtype=object),
        "ref": np.array([v.strip() for v in field(73, 77)], dtype=object),
        "stn": np.array(field(78, 80), dtype=object),
    }
    numbers = [n for n, _ in records]
    out["mjd"] = np.array([_date(path, n, v) for n, v in zip(numbers, field(16, 32))], dtype=np.float64)
    out["ra"] = 15.0 * np.array([_sexagesimal(path, n, v, "RA") for n, v in zip(numbers, field(33, 44))],
                                dtype=np.float64)
    out["dec"] = np.array([_sexagesimal(path, n, v, "Dec") for n, v in zip(numbers, field(45, 56))], dtype=np.float64)
    out["mag"] = np.array([_magnitude(path, n, v) for n, v in zip(numbers, field(66, 70))], dtype=np.float64)
    return out


def _date(path: Path, number: int, text: str) -> float:
    """``YYYY MM DD.ddddd`` to UTC MJD."""
    match = re.match(r"^(\d{4}) (\d{2}) (\d{2})(\.\d*)?\s*$", text)
    if match is None:
        raise input_error(f"{path} line {number}", "bad date in columns 16-32", expected="YYYY MM DD.dddddd",
                          found=repr(text))
    try:
        day = np.datetime64(f"{match.group(1)}-{match.group(2)}-{match.group(3)}", "D")
    except ValueError:
        raise input_error(f"{path} line {number}", "bad date in columns 16-32", found=repr(text)) from None
    frac = float(match.group(4)) if match.group(4) and match.group(4) != "." else 0.0
    return float((day - MJD_EPOCH.astype("datetime64[D]")).astype(np.int64)) + frac


def _sexagesimal(path: Path, number: int, text: str, name: str) -> float:
    """``[s]AA BB CC.ccc`` to A + B/60 + C/3600 with the sign; checks the ranges."""
    match = re.match(r"^([+-]?)(\d{2}) (\d{2})(?: (\d{2}(?:\.\d*)?))?\s*$", text)
    if match is None or (name == "RA" and match.group(1)) or (name == "Dec" and not match.group(1)):
        raise input_error(f"{path} line {number}", f"bad {name}",
                          expected="HH MM SS.sss" if name == "RA" else "sDD MM SS.ss", found=repr(text))
    whole, minutes, seconds = int(match.group(2)), int(match.group(3)), float(match.group(4) or 0.0)
    value = whole + minutes / 60.0 + seconds / 3600.0
    if minutes >= 60 or seconds >= 60 or value > (24.0 if name == "RA" else 90.0):
        raise input_error(f"{path} line {number}", f"{name} out of range", found=repr(text))
    return -value if match.group(1) == "-" else value


def _magnitude(path: Path, number: int, text: str) -> float:
    """Columns 66-70 to a float; NaN when blank."""
    if not text.strip():
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise input_error(f"{path} line {number}", "bad magnitude in columns 66-70", found=repr(text)) from None
