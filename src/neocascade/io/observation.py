"""When and where an image was taken: mid-exposure time, exposure time and the pixel <-> sky mapping.

A WCS row is the canonical npz's compact tangent-plane (TAN) WCS: eight float64 numbers
``[crval1, crval2, crpix1, crpix2, cd1_1, cd1_2, cd2_1, cd2_2]`` (degrees, FITS 1-based ``crpix``,
degrees per pixel). Pixel coordinates here are 0-based (x = column, y = row): pixel ``(x, y)`` is
FITS pixel ``(x + 1, y + 1)``. FITS headers may carry any celestial WCS astropy reads (ZTF: TPV).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from neocascade.errors import input_error

WCS_COLUMNS = ("crval1", "crval2", "crpix1", "crpix2", "cd1_1", "cd1_2", "cd2_1", "cd2_2")
MJD_RANGE = (15020.0, 88069.0)  # 1900-01-01 .. 2100-01-01: anything outside is not an observation time
SECONDS_PER_DAY = 86400.0


def check_wcs_rows(rows: np.ndarray) -> str | None:
    """Return what is wrong with (N, 8) WCS rows, or None when they are valid.

    Checks: shape (N, 8), real and finite, ``|crval2| <= 90`` and a non-singular CD matrix.
    """
    rows = np.asarray(rows)
    if rows.dtype.kind not in "fiu":
        return f"wcs must hold real numbers (got dtype {rows.dtype})"
    if rows.ndim != 2 or rows.shape[1] != len(WCS_COLUMNS):
        return f"wcs must have shape (N, {len(WCS_COLUMNS)}) (got {rows.shape})"
    rows = rows.astype(np.float64)
    bad = ~np.isfinite(rows)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        return f"wcs row {row}: {WCS_COLUMNS[col]}={rows[row, col]} is not finite"
    dec = np.abs(rows[:, 1]) > 90.0
    if dec.any():
        row = int(np.flatnonzero(dec)[0])
        return f"wcs row {row}: crval2={rows[row, 1]} is outside [-90, 90] deg"
    det = rows[:, 4] * rows[:, 7] - rows[:, 5] * rows[:, 6]
    singular = ~(np.abs(det) > 0)
    if singular.any():
        row = int(np.flatnonzero(singular)[0])
        return f"wcs row {row}: the CD matrix is singular (determinant {det[row]:g})"
    return None


def wcs_from_row(row: np.ndarray) -> WCS:
    """Build an astropy TAN WCS from one 8-number WCS row.

    Parameters
    ----------
    row : (8,) float array
        ``[crval1, crval2, crpix1, crpix2, cd1_1, cd1_2, cd2_1, cd2_2]`` in deg, FITS pixels, deg/px.

    Returns
    -------
    astropy.wcs.WCS
        Celestial ICRS TAN WCS.

    Raises
    ------
    ValueError
        Wrong shape, non-finite numbers, ``|crval2| > 90`` or a singular CD matrix.
    """
    row = np.asarray(row, dtype=np.float64)
    problem = check_wcs_rows(row.reshape(1, -1)) if row.ndim == 1 else f"wcs row must have shape (8,) (got {row.shape})"
    if problem:
        raise ValueError(problem)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.crval = row[0:2]
    wcs.wcs.crpix = row[2:4]
    wcs.wcs.cd = row[4:8].reshape(2, 2)
    wcs.wcs.set()
    return wcs


def row_from_wcs(wcs: WCS) -> np.ndarray:
    """The 8-number row of a plain TAN WCS (no distortion); ValueError for any other projection."""
    ctype = [str(c).upper() for c in wcs.wcs.ctype]
    if ctype != ["RA---TAN", "DEC--TAN"] or wcs.has_distortion:
        raise ValueError(f"wcs: only an undistorted RA---TAN/DEC--TAN WCS fits in a row, got {ctype}")
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else np.diag(wcs.wcs.cdelt) @ wcs.wcs.get_pc()
    return np.concatenate([wcs.wcs.crval, wcs.wcs.crpix, np.asarray(cd).reshape(4)]).astype(np.float64)


@dataclass(frozen=True, eq=False)
class Observation:
    """One exposure: mid-exposure time, exposure time and its celestial WCS.

    Parameters
    ----------
    mjd : float
        Mid-exposure time, MJD (UTC).
    exptime : float
        Exposure time in s (> 0).
    wcs : (8,) WCS row or astropy.wcs.WCS
        A row is turned into a TAN WCS with :func:`wcs_from_row`; an astropy WCS (e.g. TPV from a
        ZTF header) is used as given.

    Notes
    -----
    Pixel coordinates are 0-based (x = column, y = row). Conversions are vectorised and include
    any distortion the WCS carries (``all_pix2world``); the inverse of a distorted WCS is iterative.
    """

    mjd: float
    exptime: float
    wcs: WCS = field(repr=False)

    def __post_init__(self) -> None:
        mjd, exptime = float(self.mjd), float(self.exptime)
        if not (np.isfinite(mjd) and MJD_RANGE[0] <= mjd <= MJD_RANGE[1]):
            raise ValueError(f"mjd: must be a plausible MJD in [{MJD_RANGE[0]:g}, {MJD_RANGE[1]:g}], got {mjd}")
        if not (np.isfinite(exptime) and exptime > 0):
            raise ValueError(f"exptime: must be a positive number of seconds, got {exptime}")
        wcs = self.wcs if isinstance(self.wcs, WCS) else wcs_from_row(np.asarray(self.wcs, dtype=np.float64))
        if not wcs.has_celestial:
            raise ValueError("wcs: has no celestial axes")
        object.__setattr__(self, "mjd", mjd)
        object.__setattr__(self, "exptime", exptime)
        object.__setattr__(self, "wcs", wcs.celestial)

    @property
    def start_mjd(self) -> float:
        """Shutter-open time, MJD (UTC)."""
        return self.mjd - 0.5 * self.exptime / SECONDS_PER_DAY

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sky position of 0-based pixel positions.

        Parameters
        ----------
        x, y : float arrays (any matching shape) or scalars
            Column and row, 0-based.

        Returns
        -------
        ra, dec : float64 arrays of the same shape
            Degrees; ``ra`` in [0, 360).
        """
        x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        ra, dec = self.wcs.all_pix2world(x, y, 0)
        return np.mod(ra, 360.0), dec

    def sky_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel positions (x column, y row) of sky positions in degrees; same shape as the input."""
        ra, dec = np.broadcast_arrays(np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64))
        x, y = self.wcs.all_world2pix(ra, dec, 0)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def pixel_scale(self) -> float:
        """Mean pixel scale at the reference pixel in arcsec/px."""
        return float(np.sqrt(abs(np.linalg.det(self.wcs.pixel_scale_matrix))) * 3600.0)


def observation_from_header(header: fits.Header, *, source: object = "header") -> Observation:
    """Read the mid-exposure time, exposure time and WCS of an image from its FITS header.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The image HDU's header.
    source : object
        Named in error messages (usually the file).

    Returns
    -------
    Observation

    Raises
    ------
    InputError
        One line naming ``source``: no start time (``OBSMJD``, ``MJD-OBS`` or ``DATE-OBS``), no or a
        non-positive ``EXPTIME``, an implausible time, or no celestial WCS.

    Notes
    -----
    ZTF's ``OBSMJD`` (and FITS's ``MJD-OBS``, ``DATE-OBS``) is the start of the exposure (ZTF's
    ``OBSMJD`` equals ``SHUTOPEN`` to within a second), so the mid-exposure time is
    start + ``EXPTIME`` / 2.
    """
    exptime = header.get("EXPTIME")
    if isinstance(exptime, bool) or not isinstance(exptime, (int, float)) or not np.isfinite(exptime) or exptime <= 0:
        raise input_error(source, "no usable exposure time", expected="EXPTIME > 0 s", found=repr(exptime))
    start = _start_mjd(header, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            wcs = WCS(header, naxis=2)
    except (ValueError, KeyError, MemoryError) as exc:
        raise input_error(source, f"unreadable WCS: {exc}") from None
    if not wcs.has_celestial:
        raise input_error(source, "no celestial WCS", expected="CTYPE1/2 RA/DEC", found=list(wcs.wcs.ctype))
    mjd = start + 0.5 * float(exptime) / SECONDS_PER_DAY
    try:
        return Observation(mjd=mjd, exptime=float(exptime), wcs=wcs)
    except ValueError as exc:
        raise input_error(source, str(exc)) from None


def _start_mjd(header: fits.Header, source: object) -> float:
    """Exposure start, MJD: OBSMJD (ZTF), else MJD-OBS, else DATE-OBS (ISO, UTC)."""
    for key in ("OBSMJD", "MJD-OBS"):
        value = header.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise input_error(source, f"{key} is not a number", found=repr(value))
            if not MJD_RANGE[0] <= value <= MJD_RANGE[1]:
                raise input_error(source, f"{key} is not a plausible MJD",
                                  expected=f"{MJD_RANGE[0]:g}..{MJD_RANGE[1]:g}", found=value)
            return float(value)
    date = header.get("DATE-OBS")
    if isinstance(date, str):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ERFA's "dubious year" for dates past the leap-second table
                return float(Time(date, scale="utc").mjd)
        except ValueError:
            raise input_error(source, "DATE-OBS is not an ISO time", found=repr(date)) from None
    raise input_error(source, "no exposure start time", expected="OBSMJD, MJD-OBS or DATE-OBS", found="none of them")
