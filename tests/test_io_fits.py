"""io/fits.py: plain and compressed FITS images, masks, WCS."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from neocascade.errors import InputError
from neocascade.io.fits import FitsImage, read_fits_image


def _image(h: int = 12, w: int = 10) -> np.ndarray:
    return np.arange(h * w, dtype=np.float32).reshape(h, w) - 7.0


def _wcs_header() -> fits.Header:
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0, CRPIX1=5.0, CRPIX2=6.0,
        CD1_1=-2.8e-4, CD1_2=0.0, CD2_1=0.0, CD2_2=2.8e-4, RADESYS="ICRS",
    )
    return header


def test_plain_image_with_wcs(tmp_path):
    path = tmp_path / "d.fits"
    fits.PrimaryHDU(_image().astype(">f4"), header=_wcs_header()).writeto(path)
    result = read_fits_image(path)
    assert isinstance(result, FitsImage)
    assert result.image.dtype == np.float32 and result.image.dtype.isnative
    np.testing.assert_array_equal(result.image, _image())
    assert result.path == path and result.hdu == 0 and result.header["CRVAL1"] == 150.0
    assert result.wcs is not None and result.wcs.has_celestial


def test_no_wcs_is_none(tmp_path):
    path = tmp_path / "d.fits"
    fits.PrimaryHDU(_image()).writeto(path)
    assert read_fits_image(path).wcs is None


def test_nonstandard_header_does_not_warn(tmp_path):
    """A header astropy 'fixes' (old-style date, RADECSYS) must not raise through pytest's warnings-as-errors."""
    header = _wcs_header()
    del header["RADESYS"]
    header["RADECSYS"] = "FK5"
    header["DATE-OBS"] = "18/10/23"
    path = tmp_path / "old.fits"
    fits.PrimaryHDU(_image(), header=header).writeto(path)
    assert read_fits_image(path).wcs is not None


def test_compressed_fz(tmp_path):
    path = tmp_path / "d.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(_image(), compression_type="GZIP_2", quantize_level=0)]).writeto(path)
    result = read_fits_image(path)
    assert result.hdu == 1
    np.testing.assert_array_equal(result.image, _image())


def test_first_2d_hdu_after_table_and_cube(tmp_path):
    path = tmp_path / "m.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.zeros(3))])
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 3, 4), np.float32)), table, fits.ImageHDU(_image())]).writeto(path)
    result = read_fits_image(path)
    assert result.hdu == 2
    np.testing.assert_array_equal(result.image, _image())


def test_scaled_integer_image(tmp_path):
    path = tmp_path / "i.fits"
    hdu = fits.PrimaryHDU(np.arange(12, dtype=np.int16).reshape(3, 4))
    hdu.header["BSCALE"] = 2.0
    hdu.header["BZERO"] = 10.0
    hdu.writeto(path)
    np.testing.assert_array_equal(read_fits_image(path).image, np.arange(12).reshape(3, 4) * 2.0 + 10.0)


def test_mask_and_bad_value(tmp_path):
    image = _image() + 100.0  # no zeros except the one placed below
    image[0, 0] = 0.0
    mask = np.zeros(image.shape, np.uint8)
    mask[3, 4] = 4
    path = tmp_path / "mask.fits"
    fits.HDUList([fits.PrimaryHDU(image), fits.ImageHDU(mask, name="MASK")]).writeto(path)
    for key in ("MASK", 1):
        result = read_fits_image(path, mask_hdu=key, bad_value=0.0)
        assert np.isnan(result.image[3, 4]) and np.isnan(result.image[0, 0])
        assert np.isnan(result.image).sum() == 2
    assert np.isnan(read_fits_image(path).image).sum() == 0


def test_missing_and_not_fits(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_fits_image(tmp_path / "absent.fits")
    path = tmp_path / "junk.fits"
    path.write_text("not a fits file" * 10)
    with pytest.raises(InputError, match=r"junk\.fits: not a readable FITS file"):
        read_fits_image(path)


def test_truncated(tmp_path):
    full = tmp_path / "full.fits"
    fits.PrimaryHDU(np.zeros((200, 100), np.float32)).writeto(full)
    data = full.read_bytes()
    path = tmp_path / "cut.fits"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.fits: not a readable FITS file"):
        read_fits_image(path)


def test_no_2d_image(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 4), np.float32)).writeto(path)
    with pytest.raises(InputError, match=r"cube\.fits: no HDU holds a 2-D image \(got 0: \(2, 3, 4\)\)"):
        read_fits_image(path)


def test_all_masked(tmp_path):
    path = tmp_path / "nan.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(path)
    with pytest.raises(InputError, match=r"nan\.fits: every pixel is masked"):
        read_fits_image(path, bad_value=0.0)


def test_mask_errors(tmp_path):
    path = tmp_path / "m.fits"
    fits.HDUList([fits.PrimaryHDU(_image()), fits.ImageHDU(np.zeros((3, 3), np.uint8), name="MASK")]).writeto(path)
    with pytest.raises(InputError, match=r"m\.fits: mask HDU 'MASK' does not match the image \(expected \(12, 10\), got \(3, 3\)\)"):
        read_fits_image(path, mask_hdu="MASK")
    with pytest.raises(InputError, match=r"m\.fits: no mask HDU 'BPM' \(found 0: 'PRIMARY', 1: 'MASK'\)"):
        read_fits_image(path, mask_hdu="BPM")
    with pytest.raises(InputError, match="no mask HDU 5"):
        read_fits_image(path, mask_hdu=5)
