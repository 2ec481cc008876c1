"""io/observation.py: WCS rows, pixel <-> sky, and time/WCS from FITS headers (a real ZTF one included)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from neocascade.errors import InputError
from neocascade.io.observation import Observation, observation_from_header, row_from_wcs, wcs_from_row

ZTF_IMAGES = Path(os.environ.get("NEOCASCADE_ZTF_IMAGES", Path(__file__).resolve().parents[2] / "shared/data/ztf_images"))
DIDYMOS = "ztf_20221201402616_000567_zr_c10_o_q1_scimrefdiffimg_didymos_64x65.fits.fz"
SCALE = 1.0 / 3600.0  # 1 arcsec/px in deg
ROW = np.array([30.0, 10.0, 101.0, 51.0, -SCALE, 0.0, 0.0, SCALE])


def test_reference_pixel_is_crval_and_zero_based():
    obs = Observation(mjd=60000.5, exptime=30.0, wcs=ROW)
    ra, dec = obs.pixel_to_sky(100.0, 50.0)  # FITS pixel (101, 51)
    assert ra == pytest.approx(30.0, abs=1e-12) and dec == pytest.approx(10.0, abs=1e-12)
    assert obs.pixel_scale() == pytest.approx(1.0, rel=1e-9)
    assert obs.start_mjd == pytest.approx(60000.5 - 15.0 / 86400.0, abs=1e-12)


def test_gnomonic_offsets_are_exact():
    obs = Observation(mjd=60000.5, exptime=30.0, wcs=[0.0, 0.0, 1.0, 1.0, -SCALE, 0.0, 0.0, SCALE])
    ra, dec = obs.pixel_to_sky(np.array([0.0, 0.0, -3600.0]), np.array([3600.0, -3600.0, 0.0]))
    expected = np.rad2deg(np.arctan(np.deg2rad(1.0)))  # 1 deg in the tangent plane
    np.testing.assert_allclose(dec[:2], [expected, -expected], rtol=0, atol=1e-10)
    assert ra[2] == pytest.approx(expected, abs=1e-10)  # -x is east: RA grows
    assert ra[0] == pytest.approx(0.0, abs=1e-10)


def test_round_trip_vectorised_and_shape_kept():
    rng = np.random.default_rng(0)
    row = ROW.copy()
    theta = np.deg2rad(0.3)  # rotated CD
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    row[4:8] = (SCALE * np.array([[-1.0, 0.0], [0.0, 1.0]]) @ rotation).ravel()
    obs = Observation(mjd=60000.5, exptime=30.0, wcs=row)
    x, y = rng.uniform(0, 3072, (4, 5)), rng.uniform(0, 3080, (4, 5))
    ra, dec = obs.pixel_to_sky(x, y)
    assert ra.shape == (4, 5) and dec.shape == (4, 5)
    x2, y2 = obs.sky_to_pixel(ra, dec)
    np.testing.assert_allclose(x2, x, atol=1e-7)
    np.testing.assert_allclose(y2, y, atol=1e-7)
    np.testing.assert_allclose(row_from_wcs(wcs_from_row(row)), row, rtol=0, atol=1e-15)


def test_bad_rows_and_times_are_refused():
    with pytest.raises(ValueError, match="singular"):
        wcs_from_row([0, 0, 1, 1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="crval2=95"):
        wcs_from_row([0, 95, 1, 1, -SCALE, 0, 0, SCALE])
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        wcs_from_row(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="plausible MJD"):
        Observation(mjd=2459914.9, exptime=30.0, wcs=ROW)  # a JD is not an MJD
    with pytest.raises(ValueError, match="exptime"):
        Observation(mjd=60000.0, exptime=0.0, wcs=ROW)


def _header(**cards) -> fits.Header:
    header = wcs_from_row(ROW).to_header()
    for key, value in cards.items():
        header[key.replace("_", "-")] = value
    return header


def test_header_start_time_becomes_mid_exposure():
    obs = observation_from_header(_header(OBSMJD=60000.25, EXPTIME=30.0))
    assert obs.mjd == pytest.approx(60000.25 + 15.0 / 86400.0, abs=1e-10) and obs.exptime == 30.0
    assert observation_from_header(_header(MJD_OBS=60000.25, EXPTIME=60.0)).mjd == pytest.approx(
        60000.25 + 30.0 / 86400.0, abs=1e-10)
    obs = observation_from_header(_header(DATE_OBS="2023-02-25T06:00:00", EXPTIME=30.0))
    assert obs.mjd == pytest.approx(60000.25 + 15.0 / 86400.0, abs=1e-8)
    ra, dec = obs.pixel_to_sky(100.0, 50.0)
    assert (ra, dec) == pytest.approx((30.0, 10.0), abs=1e-10)


@pytest.mark.parametrize(
    "cards,message",
    [
        ({"EXPTIME": 30.0}, "no exposure start time"),
        ({"OBSMJD": 60000.0}, "no usable exposure time"),
        ({"OBSMJD": 60000.0, "EXPTIME": -1.0}, "no usable exposure time"),
        ({"OBSMJD": 2459914.9, "EXPTIME": 30.0}, "OBSMJD is not a plausible MJD"),
        ({"OBSMJD": "soon", "EXPTIME": 30.0}, "OBSMJD is not a number"),
        ({"DATE_OBS": "yesterday", "EXPTIME": 30.0}, "DATE-OBS is not an ISO time"),
    ],
)
def test_bad_headers_give_one_line(cards, message):
    with pytest.raises(InputError, match=message) as err:
        observation_from_header(_header(**cards), source="x.fits")
    assert str(err.value).startswith("x.fits: ") and "\n" not in str(err.value)


def test_header_without_celestial_wcs_is_refused():
    header = fits.Header({"OBSMJD": 60000.0, "EXPTIME": 30.0})
    with pytest.raises(InputError, match="no celestial WCS"):
        observation_from_header(header, source="x.fits")


def test_real_ztf_header_puts_didymos_where_jpl_does():
    path = ZTF_IMAGES / DIDYMOS
    if not path.is_file():
        pytest.skip(f"{path} not present")
    from neocascade.io.fits import read_fits_image

    image = read_fits_image(path)
    obs = observation_from_header(image.header, source=path.name)
    assert obs.exptime == 30.0
    assert obs.mjd == pytest.approx(59914.4026273 + 15.0 / 86400.0, abs=1e-9)  # OBSMJD is the exposure start
    assert obs.pixel_scale() == pytest.approx(1.012, abs=0.002)
    ra, dec = obs.pixel_to_sky(32.0, 31.0)  # Didymos, the brightest pixel
    offset = np.hypot((ra - 125.69364) * np.cos(np.deg2rad(dec)), dec - 20.67290) * 3600.0
    assert offset < 0.5  # arcsec; JPL's ephemeris position from the data README
    x, y = obs.sky_to_pixel(125.69364, 20.67290)  # the TPV inverse
    assert np.hypot(x - 32.0, y - 31.0) < 0.5
