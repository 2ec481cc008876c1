"""Readers and writers: read, validate, return arrays; bad input raises a one-line ``InputError``.

- ``io.npz``: canonical npz (``read_canonical``, ``write_canonical``, ``CanonicalFile``, ``TRUTH_COLUMNS``);
- ``io.challenge``: the seed challenge's pickled layout (``read_challenge``, ``write_challenge``,
  ``convert_challenge``), same interface as ``CanonicalFile``;
- ``io.fits``: ``read_fits_image`` for plain and ``.fits.fz`` images with optional masks;
- ``io.observation``: mid-exposure time, exposure and WCS of an image (``Observation``, ``wcs_from_row``,
  ``observation_from_header``), pixel <-> sky;
- ``io.alerts``: ZTF avro packets (``read_alert``, ``read_alerts``, ``iter_alerts``, ``write_test_alert``).

Submodules are not imported here, so ``import neocascade.io.npz`` does not pull in astropy or fastavro.
"""
