"""FITS difference images (plain or tile-compressed ``.fits.fz``) with an optional bad-pixel mask."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from neocascade.errors import InputError, input_error
from neocascade.preprocess.filters import _mask_invalid

_FITS_ERRORS = (OSError, EOFError, TypeError, ValueError, IndexError, KeyError, VerifyError, MemoryError)


@dataclass(frozen=True, eq=False)
class FitsImage:
    """A 2-D FITS image ready for the pipeline.

    Attributes
    ----------
    image : (H, W) float32 array
        Pixel values in the file's units (DN for ZTF difference images), BSCALE/BZERO applied;
        NaN where the file has NaN, ±inf or BLANK, the mask flags a pixel, it equals ``bad_value``,
        or its absolute value reaches :attr:`saturation`.
    header : astropy.io.fits.Header
        Header of the HDU the image came from.
    wcs : astropy.wcs.WCS or None
        Celestial WCS of that header; None when it has none.
    path : Path
    hdu : int
        Index of the HDU the image came from.
    saturation : float or None
        The level applied, DN: the header's ``SATURATE``, else the ``saturation`` asked for.
    n_saturated : int
        Pixels masked because they reached it (or were infinite).
    """

    image: np.ndarray = field(repr=False)
    header: fits.Header = field(repr=False)
    wcs: WCS | None
    path: Path
    hdu: int = 0
    saturation: float | None = None
    n_saturated: int = 0


def read_fits_image(
    path: str | os.PathLike,
    *,
    mask_hdu: int | str | None = None,
    bad_value: float | None = None,
    saturation: float | None = None,
) -> FitsImage:
    """Read the first HDU holding a 2-D image.

    Parameters
    ----------
    path : str or path
        A FITS file; tile-compressed images (``.fits.fz``, CompImageHDU) are decompressed.
    mask_hdu : int or str, optional
        Index or EXTNAME of an HDU with a same-shape mask; nonzero pixels are bad and become NaN.
    bad_value : float, optional
        Pixel value meaning "no data" (e.g. 0 on dead borders); such pixels become NaN.
    saturation : float, optional
        Saturation level in DN used when the header has no ``SATURATE`` card; pixels with
        ``|value| >= level`` become NaN (a difference of two clipped images cannot reach it).
        None and no card: only non-finite values and those beyond
        :data:`~neocascade.preprocess.filters.ABSURD_DN` are masked.

    Returns
    -------
    FitsImage

    Raises
    ------
    InputError
        One line naming the file: missing, not FITS or truncated, no 2-D image HDU, unknown
        ``mask_hdu``, mask shape different from the image's, an unreadable WCS, a ``SATURATE``
        card that is not a positive number, or every pixel masked.

    Notes
    -----
    Astropy's header-fixing warnings (e.g. FITSFixedWarning) are silenced; a warning that the
    file may be truncated is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "no such file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AstropyWarning)
            with fits.open(path, memmap=False) as hdul:
                index, image, header = _first_image(path, hdul)
                mask = None if mask_hdu is None else _mask(path, hdul, mask_hdu, image.shape)
            wcs = _celestial_wcs(path, header)
    except InputError:
        raise
    except _FITS_ERRORS as exc:
        raise input_error(path, f"not a readable FITS file: {exc}") from None
    truncated = [w for w in caught if "truncated" in str(w.message).lower()]
    if truncated:
        raise input_error(path, f"not a readable FITS file: {truncated[0].message}")
    if mask is not None:
        image[mask] = np.nan
    if bad_value is not None:
        image[image == bad_value] = np.nan
    level = _saturation(path, header, saturation)
    nan_before = int(np.isnan(image).sum())
    image = _mask_invalid(image, False, level)
    n_saturated = int(np.isnan(image).sum()) - nan_before
    if np.isnan(image).all():
        raise input_error(path, "every pixel is masked", found=f"{image.size} NaN pixels in HDU {index}")
    return FitsImage(image=image, header=header, wcs=wcs, path=path, hdu=index, saturation=level,
                     n_saturated=n_saturated)


def _saturation(path: Path, header: fits.Header, default: float | None) -> float | None:
    """The header's ``SATURATE`` (DN) when present, else ``default``; a card that is no positive number is refused."""
    if "SATURATE" not in header:
        return default
    value = header["SATURATE"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise input_error(path, "header SATURATE must be a positive number (DN)", found=repr(value))
    return float(value)


def _first_image(path: Path, hdul: fits.HDUList) -> tuple[int, np.ndarray, fits.Header]:
    """(index, float32 copy, header copy) of the first HDU with 2-D image data."""
    shapes = []
    for index, hdu in enumerate(hdul):
        if not hdu.is_image:
            shapes.append(f"{index}: table")
            continue
        data = hdu.data
        shapes.append(f"{index}: {None if data is None else data.shape}")
        if data is not None and data.ndim == 2:
            return index, np.array(data, dtype=np.float32), hdu.header.copy()
    raise input_error(path, "no HDU holds a 2-D image", found="; ".join(shapes) or "no HDUs")


def _mask(path: Path, hdul: fits.HDUList, mask_hdu: int | str, shape: tuple[int, int]) -> np.ndarray:
    """Boolean bad-pixel mask (True = bad) from HDU ``mask_hdu``."""
    try:
        data = hdul[mask_hdu].data
    except (KeyError, IndexError):
        names = ", ".join(f"{i}: {h.name!r}" for i, h in enumerate(hdul))
        raise input_error(path, f"no mask HDU {mask_hdu!r} (found {names})") from None
    if data is None or np.shape(data) != shape:
        found = None if data is None else np.shape(data)
        raise input_error(path, f"mask HDU {mask_hdu!r} does not match the image", expected=shape, found=found)
    return np.asarray(data) != 0


def _celestial_wcs(path: Path, header: fits.Header) -> WCS | None:
    """The header's celestial WCS, or None when it has none."""
    try:
        wcs = WCS(header, naxis=2)
    except (ValueError, KeyError, MemoryError) as exc:
        raise input_error(path, f"unreadable WCS: {exc}") from None
    return wcs if wcs.has_celestial else None
