"""ADES astrometry in PSV (pipe-separated values): write tracklet observations, read any optical PSV file.

ADES is the IAU standard the Minor Planet Center accepts (ADES_Description, IAU-ADES/ADES-Master,
version 2022). A PSV file is UTF-8 text: a ``# version=2022`` line, an observation context
(``# observatory`` / ``! mpcCode I41`` ... lines), a keyword record naming the fields and one data
record per observation. The writer uses the standard's optional default template (Table 19: field
order, minimum widths, justification) so files line up with other producers'.

Observations are a dict of equal-length arrays (see :func:`check_observations`): ``trksub`` (the
tracklet id, ``trkSub``), ``mjd`` (UTC mid-exposure), ``ra``, ``dec`` (deg, J2000 from the WCS) and
optionally ``mag``, ``band``, ``rms_mag``, ``rms_ra``, ``rms_dec`` (arcsec, ``rmsRA`` is RA*cos(Dec)),
``exptime`` (s), ``permid``, ``provid``. NaN or ``""`` marks a value as unknown: its field is empty.
:mod:`neocascade.io.mpc80` writes the same dict in the older 80-column format.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from neocascade.errors import input_error
from neocascade.utils.atomic import atomic_path

ADES_VERSION = "2022"  # the version the MPC's submission schema accepts
MJD_EPOCH = np.datetime64("1858-11-17T00:00:00", "us")  # MJD 0, UTC
MJD_RANGE = (15020.0, 88069.0)  # 1900-01-01 to 2100-01-01: a wider time is a unit mistake, not an observation

# key in the observation dict -> ADES element, in the default template's order (Table 19).
FIELDS = {"permid": "permID", "provid": "provID", "trksub": "trkSub", "mode": "mode", "stn": "stn",
          "mjd": "obsTime", "ra": "ra", "dec": "dec", "rms_ra": "rmsRA", "rms_dec": "rmsDec", "ast_cat": "astCat",
          "mag": "mag", "rms_mag": "rmsMag", "band": "band", "exptime": "exp"}
# minimum width and justification of the default template: R/L, or D<k> for the decimal point in column k.
TEMPLATE = {"permID": (7, "R"), "provID": (11, "L"), "trkSub": (8, "R"), "mode": (4, "R"), "stn": (4, "L"),
            "prog": (4, "R"), "obsTime": (23, "L"), "ra": (11, "D4"), "dec": (11, "D4"), "rmsRA": (5, "D2"),
            "rmsDec": (6, "D2"), "rmsCorr": (7, "D3"), "astCat": (8, "R"), "mag": (5, "D3"), "rmsMag": (6, "D2"),
            "band": (4, "R"), "photCat": (8, "R"), "photAp": (6, "D3"), "logSNR": (6, "D2"), "seeing": (6, "D2"),
            "exp": (4, "R"), "notes": (5, "L"), "remarks": (0, "L")}
NUMERIC = ("ra", "dec", "rmsRA", "rmsDec", "mag", "rmsMag", "exp")  # read back as float (NaN when empty)
STRING_KEYS = ("trksub", "permid", "provid", "band")
FLOAT_KEYS = ("mjd", "ra", "dec", "mag", "rms_mag", "rms_ra", "rms_dec", "exptime")
REQUIRED = ("trksub", "mjd", "ra", "dec")

_TRKSUB = re.compile(r"^[A-Za-z0-9]{1,8}$")  # ADES trkSub: up to 8 alphanumerics (no blank: MPC 80-col rule)
_CODE = re.compile(r"^[A-Za-z0-9]{3,4}$")  # stn: 3 or 4 alphanumerics
# the standard allows 6 decimals; published 2017 examples carry 7, read to the microsecond
_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z$")
_NAME = re.compile(r"^[a-z][A-Za-z0-9]*$")  # an element name: keyword records hold only these


def check_observations(obs: Mapping[str, Any], *, source: object = "obs", max_trksub: int = 8) -> dict[str, np.ndarray]:
    """Validate an observation dict and return its columns as arrays (missing optional ones filled).

    Parameters
    ----------
    obs : mapping of (N,) arrays
        ``trksub`` (str, 1 to ``max_trksub`` letters and digits; may be ``""`` in rows that give
        ``permid`` or ``provid``), ``mjd`` (UTC, 1900-2100), ``ra``
        in [0, 360), ``dec`` in [-90, 90] (deg); optional ``mag`` (-5 to 35), ``band`` (1-3 letters or
        digits, required where ``mag`` is given), ``rms_mag``, ``rms_ra``, ``rms_dec`` (arcsec),
        ``exptime`` (s) (all positive), ``permid``, ``provid`` (str). Other keys are ignored.
    source : object
        Names the dict in error messages.
    max_trksub : int
        Longest ``trksub``: 8 for ADES, 7 for the 80-column format.

    Returns
    -------
    dict of (N,) arrays
        float64 for ``FLOAT_KEYS`` (NaN = unknown), str for ``STRING_KEYS`` (``""`` = unknown).

    Raises
    ------
    InputError
        A missing key, unequal lengths, or a bad value (the message names key and row).
    """
    if not isinstance(obs, Mapping):
        raise input_error(source, "observations must be a dict of arrays", found=type(obs).__name__)
    missing = [key for key in REQUIRED if key not in obs]
    if missing:
        found = ", ".join(map(repr, sorted(map(str, obs)))) or "no keys"
        raise input_error(source, f"missing key {missing[0]!r}", found=found)
    n = int(np.size(obs["mjd"]))
    out: dict[str, np.ndarray] = {}
    for key in FLOAT_KEYS + STRING_KEYS:
        if key not in obs:
            out[key] = np.full(n, np.nan) if key in FLOAT_KEYS else np.full(n, "", dtype=object)
            continue
        value = np.asarray(obs[key])
        if value.ndim != 1 or value.size != n:
            raise input_error(f"{source}[{key!r}]", "must be a 1-D array as long as 'mjd'", expected=n,
                              found=value.shape)
        if key in FLOAT_KEYS:
            if value.dtype.kind not in "iuf":
                raise input_error(f"{source}[{key!r}]", "must be numbers", found=value.dtype)
            out[key] = value.astype(np.float64)
        else:
            out[key] = np.array(["" if v is None else str(v).strip() for v in value.tolist()], dtype=object)
    _check_values(out, source=source, max_trksub=max_trksub)
    return out


def _check_values(cols: dict[str, np.ndarray], *, source: object, max_trksub: int) -> None:
    """Range and pattern checks of :func:`check_observations`; the first bad row is named."""
    checks = [
        ("trksub", np.array([not (_TRKSUB.match(t) and len(t) <= max_trksub) for t in cols["trksub"]], dtype=bool)
         & ((cols["trksub"] != "") | ((cols["permid"] == "") & (cols["provid"] == ""))),
         f"1 to {max_trksub} letters or digits (may be empty where permid or provid is given)"),
        ("mjd", ~((cols["mjd"] >= MJD_RANGE[0]) & (cols["mjd"] <= MJD_RANGE[1])), f"MJD in {list(MJD_RANGE)}"),
        ("ra", ~((cols["ra"] >= 0) & (cols["ra"] < 360)), "ra in [0, 360) deg"),
        ("dec", ~((cols["dec"] >= -90) & (cols["dec"] <= 90)), "dec in [-90, 90] deg"),
        ("mag", ~(np.isnan(cols["mag"]) | ((cols["mag"] >= -5) & (cols["mag"] <= 35))), "mag in [-5, 35] or NaN"),
        ("band", np.array([not re.match(r"^[A-Za-z0-9]{0,3}$", b) for b in cols["band"]], dtype=bool)
         | (np.isfinite(cols["mag"]) & (cols["band"] == "")), "a 1-3 character band where mag is given"),
        ("permid", np.array([len(v) > 25 or "|" in v for v in cols["permid"]], dtype=bool), "at most 25 characters"),
        ("provid", np.array([len(v) > 25 or "|" in v for v in cols["provid"]], dtype=bool), "at most 25 characters"),
    ]
    checks += [(key, ~(np.isnan(cols[key]) | ((cols[key] > 0) & np.isfinite(cols[key]))), "a positive number or NaN")
               for key in ("rms_mag", "rms_ra", "rms_dec", "exptime")]
    for key, bad, expected in checks:
        rows = np.flatnonzero(bad)
        if rows.size:
            i = int(rows[0])
            raise input_error(f"{source}[{key!r}] row {i}", "bad value", expected=expected, found=repr(cols[key][i]))


def mjd_to_iso(mjd: np.ndarray, *, decimals: int = 3) -> np.ndarray:
    """UTC MJD to ADES ``obsTime`` strings ``yyyy-mm-ddThh:mm:ss.sssZ``, rounded to ``decimals`` (0-6) of a second.

    Notes
    -----
    Days are 86400 s (UTC MJD as used for observation times); rounding is done in integer units,
    so 59.9996 s never prints as 60.000.
    """
    if not (isinstance(decimals, (int, np.integer)) and 0 <= decimals <= 6):
        raise ValueError(f"decimals: must be an integer 0-6 (ADES allows 6 digits), got {decimals!r}")
    ticks = np.rint(np.asarray(mjd, dtype=np.float64) * 86400.0 * 10**decimals).astype(np.int64)
    micro = ticks * 10 ** (6 - decimals)
    text = np.datetime_as_string(MJD_EPOCH + micro.astype("timedelta64[us]"), unit="us")
    cut = 19 if decimals == 0 else 20 + decimals
    return np.array([t[:cut] + "Z" for t in text.tolist()], dtype=object)


def iso_to_mjd(times: Sequence[str], *, source: object = "obsTime") -> np.ndarray:
    """ADES ``obsTime`` strings to UTC MJD; InputError naming the first malformed one."""
    stamps, fractions = [], []
    for i, text in enumerate(times):
        match = _TIME.match(str(text).strip())
        if match is None:
            raise input_error(f"{source} row {i}", "bad obsTime", expected="yyyy-mm-ddThh:mm:ss[.ssssss]Z",
                              found=repr(text))
        stamps.append(match.group(1))
        fractions.append(float(match.group(2) or 0.0))
    try:
        values = np.array(stamps, dtype="datetime64[s]")
    except ValueError as exc:
        raise input_error(source, f"bad obsTime: {exc}") from None
    micro = (values - MJD_EPOCH.astype("datetime64[s]")).astype(np.int64) * 1_000_000 + np.rint(
        np.array(fractions, dtype=np.float64) * 1e6).astype(np.int64)
    return micro / 86_400e6


def format_rms(values: np.ndarray) -> np.ndarray:
    """Uncertainties with two significant figures (the standard's advice), '' for NaN."""
    out = []
    for v in np.asarray(values, dtype=np.float64).tolist():
        if not np.isfinite(v):
            out.append("")
            continue
        digits = max(0, 1 - int(np.floor(np.log10(v))))
        out.append(f"{v:.{digits}f}")
    return np.array(out, dtype=object)


def write_ades_psv(
    path: str | os.PathLike,
    obs: Mapping[str, Any],
    *,
    observatory: str = "I41",
    ast_cat: str = "Gaia2",
    mode: str = "CCD",
    context: Mapping[str, Any] | None = None,
    decimals: int = 6,
    time_decimals: int = 3,
    overwrite: bool = False,
) -> Path:
    """Write observations as one ADES PSV obsBlock (default template), atomically.

    Parameters
    ----------
    path : path
        Output file; refused if it exists unless ``overwrite``.
    obs : mapping of (N,) arrays
        See :func:`check_observations` (``trksub`` at most 8 characters).
    observatory : str
        MPC observatory code (``stn`` and ``mpcCode``); ZTF at Palomar is I41.
    ast_cat : str
        Astrometric reference catalogue (``astCat``, MPC list), e.g. ``Gaia2``, ``Gaia3``.
    mode : str
        Instrument mode (``CCD``).
    context : mapping or None
        More obsContext: each key an element (``submitter``, ``observers``, ``measurers``,
        ``telescope``, ``software``, ``comment``, ``fundingSource`` ...) whose value is a string or a
        mapping of sub-element to string or list of strings, e.g.
        ``{"observers": {"name": ["A. B", "C. D"]}, "telescope": {"design": "Schmidt",
        "aperture": 1.2, "detector": "CCD"}}``. ``observatory`` entries add to ``mpcCode``. The
        MPC asks submissions for submitter, observers, measurers and telescope.
    decimals : int
        Digits after the point of ``ra`` and ``dec`` (6: 0.0036", enough for 0.1" astrometry).
    time_decimals : int
        Digits of the seconds of ``obsTime``.

    Returns
    -------
    Path

    Notes
    -----
    Optional columns appear only when at least one row has a value; ``band`` and ``rms_mag`` only
    where ``mag`` is given. No observations writes the context and the keyword record alone.
    """
    cols = check_observations(obs, source="obs", max_trksub=8)
    for key, value, pattern in (("observatory", observatory, _CODE),
                                ("ast_cat", ast_cat, re.compile(r"^[A-Za-z0-9_.]{1,8}$")),
                                ("mode", mode, re.compile(r"^[A-Za-z0-9]{1,3}$"))):
        if not isinstance(value, str) or not pattern.match(value):
            raise input_error(key, "bad value", expected=pattern.pattern, found=repr(value))
    if not (isinstance(decimals, int) and 0 <= decimals <= 9):
        raise input_error("decimals", "bad value", expected="an integer 0-9 (ADES allows 9)", found=repr(decimals))
    if not (isinstance(time_decimals, int) and 0 <= time_decimals <= 6):
        raise input_error("time_decimals", "bad value", expected="an integer 0-6 (ADES allows 6)",
                          found=repr(time_decimals))
    n = cols["mjd"].size
    text = {
        "permID": cols["permid"], "provID": cols["provid"], "trkSub": cols["trksub"],
        "mode": np.full(n, mode, dtype=object), "stn": np.full(n, observatory, dtype=object),
        "obsTime": mjd_to_iso(cols["mjd"], decimals=time_decimals),
        "ra": np.array([f"{v:.{decimals}f}" for v in (np.round(cols["ra"], decimals) % 360.0).tolist()], dtype=object),
        "dec": np.array([f"{v:+.{decimals}f}" for v in cols["dec"].tolist()], dtype=object),
        "rmsRA": format_rms(cols["rms_ra"]), "rmsDec": format_rms(cols["rms_dec"]),
        "astCat": np.full(n, ast_cat, dtype=object),
        "mag": np.array(["" if not np.isfinite(v) else f"{v:.2f}" for v in cols["mag"].tolist()], dtype=object),
        "rmsMag": format_rms(np.where(np.isfinite(cols["mag"]), cols["rms_mag"], np.nan)),
        "band": np.where(np.isfinite(cols["mag"]), cols["band"], ""),
        "exp": np.array(["" if not np.isfinite(v) else f"{v:g}" for v in cols["exptime"].tolist()], dtype=object),
    }
    always = {"trkSub", "mode", "stn", "obsTime", "ra", "dec", "astCat"}
    names = [name for name in FIELDS.values() if name in always or any(v != "" for v in text[name].tolist())]
    lines = [f"# version={ADES_VERSION}", *_context_lines(observatory, context)]
    lines += _records(names, [text[name] for name in names])
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def _context_lines(observatory: str, context: Mapping[str, Any] | None) -> list[str]:
    """The obsContext as ``#`` element and ``!`` sub-element lines, observatory first."""
    context = dict(context or {})
    observatory_extra = context.pop("observatory", {}) or {}
    if not isinstance(observatory_extra, Mapping):
        raise input_error("context['observatory']", "must be a mapping of sub-elements",
                          found=type(observatory_extra).__name__)
    lines = ["# observatory", f"! mpcCode {observatory}"]
    lines += _sub_lines("context['observatory']", {k: v for k, v in observatory_extra.items() if k != "mpcCode"})
    for element, value in context.items():
        _check_name("context", element)
        if isinstance(value, Mapping):
            lines.append(f"# {element}")
            lines += _sub_lines(f"context[{element!r}]", value)
        else:
            lines.append(f"# {element} {_clean(f'context[{element!r}]', value)}")
    return lines


def _sub_lines(source: str, mapping: Mapping[str, Any]) -> list[str]:
    """``! name value`` lines of one context element; a list value repeats the sub-element."""
    lines = []
    for name, value in mapping.items():
        _check_name(source, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        lines += [f"! {name} {_clean(f'{source}[{name!r}]', v)}" for v in values]
    return lines


def _check_name(source: str, name: object) -> None:
    """An ADES element name: starts lower-case, letters and digits only."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise input_error(source, "bad element name", expected="like 'telescope' or 'fRatio'", found=repr(name))


def _clean(source: str, value: object) -> str:
    """A context value as one line without the PSV delimiter."""
    text = str(value).strip()
    if not text or "|" in text or "\n" in text:
        raise input_error(source, "bad value", expected="non-empty text without '|' or line breaks", found=repr(value))
    return text


def _records(names: Sequence[str], columns: Sequence[np.ndarray]) -> list[str]:
    """The keyword record and the data records, each field padded per the default template."""
    widths = []
    for name, column in zip(names, columns):
        minimum, just = TEMPLATE.get(name, (0, "L"))
        aligned = [_justify(v, 0, just) for v in column.tolist()]
        widths.append(max([minimum, len(name), *map(len, aligned)]))
    header = "|".join(name.ljust(w) for name, w in zip(names, widths))
    rows = ["|".join(_justify(column[i], w, TEMPLATE.get(name, (0, "L"))[1])
                     for name, column, w in zip(names, columns, widths))
            for i in range(len(columns[0]) if columns else 0)]
    return [header.rstrip(), *[row.rstrip() for row in rows]]


def _justify(text: str, width: int, just: str) -> str:
    """Pad ``text`` to ``width``: right, left, or with its decimal point in column k (``D<k>``)."""
    if just == "R":
        return text.rjust(width)
    if just.startswith("D") and text:
        point = text.find(".")
        point = len(text) if point < 0 else point
        text = " " * max(0, int(just[1:]) - 1 - point) + text
    return text.ljust(width)


def read_ades_psv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the observations of an ADES PSV file (any number of blocks and keyword records).

    Returns
    -------
    dict of (N,) arrays
        ``trksub``, ``permid``, ``provid``, ``mode``, ``stn``, ``ast_cat``, ``band`` (str, ``""``
        when absent), ``mjd`` (from ``obsTime``), ``ra``, ``dec``, ``rms_ra``, ``rms_dec``,
        ``mag``, ``rms_mag``, ``exptime`` (float, NaN when absent), ``block`` (0-based obsBlock
        of each row), plus every other field present under its ADES name (str).

    Raises
    ------
    InputError
        Missing file, no ``# version`` line, a data record before any keyword record or with the
        wrong number of fields, a bad ``obsTime`` or number, ``ra``/``dec`` out of range.
    """
    rows, _ = _parse(Path(path))
    return _columns(Path(path), rows)


def read_ades_context(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The obsContext of each block of a PSV file: ``{element: value or {sub: value or [values]}}``."""
    _, contexts = _parse(Path(path))
    return contexts


def _parse(path: Path) -> tuple[list[tuple[int, int, dict[str, str]]], list[dict[str, Any]]]:
    """Rows as (line number, block, {field: text}) and the contexts, following the PSV rules."""
    if not path.is_file():
        raise input_error(path, "no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise input_error(path, f"not UTF-8 text: {exc}") from None
    content = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not content or not re.match(r"^#\s*version\s*=\s*\S+$", content[0][1]):
        raise input_error(path, "does not start with an ADES '# version=' line",
                          found=repr(content[0][1][:40]) if content else "an empty file")
    rows: list[tuple[int, int, dict[str, str]]] = []
    contexts: list[dict[str, Any]] = []
    keywords: list[str] | None = None
    block, element = -1, None
    in_context = False
    for number, line in content[1:]:
        if line.startswith("#") or line.startswith("!"):
            parts = line[1:].strip().split(None, 1)
            if not parts:
                raise input_error(f"{path} line {number}", "empty context record")
            name, value = parts[0], (parts[1] if len(parts) > 1 else "")
            if line.startswith("#"):
                if name == "observatory" or not in_context:
                    contexts.append({})
                    block, keywords, in_context = block + 1, None, True
                contexts[-1][name] = value if value else {}
                element = name
            else:
                if not in_context or element is None or not isinstance(contexts[-1].get(element), dict):
                    raise input_error(f"{path} line {number}", "'!' record outside a '#' context element")
                sub = contexts[-1][element]
                sub[name] = [*sub[name], value] if isinstance(sub.get(name), list) else (
                    [sub[name], value] if name in sub else value)
            continue
        tokens = [t.strip() for t in line.split("|")]
        if all(t and t[0].islower() for t in tokens):
            keywords, in_context = tokens, False
            if block < 0:
                block = 0
            continue
        if keywords is None:
            raise input_error(f"{path} line {number}", "data record before any keyword record")
        if len(tokens) != len(keywords):
            raise input_error(f"{path} line {number}", "wrong number of fields", expected=len(keywords),
                              found=len(tokens))
        rows.append((number, block, dict(zip(keywords, tokens))))
    return rows, contexts


def _columns(path: Path, rows: list[tuple[int, int, dict[str, str]]]) -> dict[str, np.ndarray]:
    """Per-field arrays from parsed rows, numbers and times converted and checked."""
    names = list(dict.fromkeys(name for _, _, row in rows for name in row))
    raw = {name: [row.get(name, "") for _, _, row in rows] for name in names}
    out: dict[str, np.ndarray] = {"block": np.array([b for _, b, _ in rows], dtype=np.int64)}
    lines = [n for n, _, _ in rows]
    for key, name in FIELDS.items():
        values = raw.pop(name, [""] * len(rows))
        if key == "mjd":
            missing = [i for i, v in enumerate(values) if not v]
            if missing:
                raise input_error(f"{path} line {lines[missing[0]]}", "observation without obsTime")
            out[key] = iso_to_mjd(values, source=path) if rows else np.zeros(0)
        elif name in NUMERIC:
            out[key] = _numbers(path, lines, name, values)
        else:
            out[key] = np.array(values, dtype=object)
    for name in ("ra", "dec"):
        low, high = (0.0, 360.0) if name == "ra" else (-90.0, 90.0)
        bad = np.flatnonzero(~(np.isnan(out[name]) | ((out[name] >= low) & (out[name] <= high))))
        if bad.size:
            raise input_error(f"{path} line {lines[bad[0]]}", f"{name} out of range", expected=f"[{low:g}, {high:g}]",
                              found=out[name][bad[0]])
    out.update({name: np.array(values, dtype=object) for name, values in raw.items()})
    return out


def _numbers(path: Path, lines: list[int], name: str, values: list[str]) -> np.ndarray:
    """Decimal fields to float, NaN for empty; InputError naming the line of a malformed one."""
    out = np.full(len(values), np.nan)
    for i, text in enumerate(values):
        if not text:
            continue
        try:
            out[i] = float(text)
        except ValueError:
            raise input_error(f"{path} line {lines[i]}", f"{name} is not a number", found=repr(text)) from None
        if not np.isfinite(out[i]):
            raise input_error(f"{path} line {lines[i]}", f"{name} is not finite", found=repr(text))
    return out
