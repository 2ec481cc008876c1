"""Detection pieces: catalogue columns and CSV, input kinds, stamp centres, the detector on tiny images."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from neocascade.detection.catalogue import (
    CATALOGUE_COLUMNS,
    catalogue_rows,
    empty_catalogue,
    pixel_to_sky,
    read_catalogue,
    write_catalogue,
)
from neocascade.detection.inputs import expand_inputs, input_kind
from neocascade.errors import InputError

SELECTOR = {"_target_": "neocascade.candidates.footprint.FootprintSelector", "kernel": 16, "stride": 16}


class ThresholdCascade:
    """A stand-in cascade with exact answers: P = v / (v + level) for a filtered centre value v > 0, else 0.

    So P >= 0.5 exactly when v >= ``level``, and brighter candidates score higher. Stage 2 repeats
    stage 1: ``p2 = p1`` where stage 1 accepted, NaN elsewhere.
    """

    def __init__(self, level: float = 20.0, *, cutout_size: int = 21, normalize: str = "none") -> None:
        self.level = level
        self.input_spec = {"sigma": 1.0, "selector": dict(SELECTOR), "cutout_size": cutout_size,
                           "channels": ["filtered"], "normalize": normalize}
        self.threshold1 = 0.5
        self.threshold2 = 0.5
        self.path = "threshold-cascade"
        self.calls: list[int] = []

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(x))
        c = x.shape[-1] // 2
        v = np.maximum(x[:, 0, c, c].astype(np.float64), 0.0)
        p1 = v / (v + self.level)
        p2 = np.where(p1 >= self.threshold1, p1, np.nan)
        return p1, p2

    def accept(self, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (p1 >= self.threshold1) & (p2 >= self.threshold2)


def blob_image(shape=(64, 64), sources=((20, 40),), *, amplitude=200.0, noise=1.0, seed=3) -> np.ndarray:
    """Gaussian noise plus round Gaussian sources (sigma 1.5 px) at (row, col)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, noise, size=shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for row, col in sources:
        image += amplitude * np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / (2 * 1.5**2))
    return image.astype(np.float32)


# --- catalogue -------------------------------------------------------------------------------------


def test_empty_catalogue_has_every_column_and_no_rows():
    cat = empty_catalogue()
    assert tuple(cat) == CATALOGUE_COLUMNS
    assert all(len(v) == 0 for v in cat.values())


def test_catalogue_csv_round_trip_formats_nan_as_empty(tmp_path):
    det = {"x": np.array([3.0, 10.5]), "y": np.array([4.0, 7.0]), "p1": np.array([0.9, 0.8]),
           "p2": np.array([0.95, np.nan]), "peak": np.array([50.0, 40.0]), "snr": np.array([10.0, np.nan])}
    cols = catalogue_rows(det, file="a.npz", image=2)
    path = write_catalogue(tmp_path / "cat.csv", cols)
    rows = read_catalogue(path)
    assert list(rows[0]) == list(CATALOGUE_COLUMNS)
    assert [r["x"] for r in rows] == ["3.00", "10.50"]
    assert rows[1]["p2"] == "" and rows[1]["snr"] == "" and rows[0]["ra"] == ""
    assert rows[0]["detected"] == "1" and rows[0]["file"] == "a.npz" and rows[0]["image"] == "2"


def test_catalogue_refuses_to_overwrite(tmp_path):
    path = write_catalogue(tmp_path / "cat.csv", empty_catalogue())
    with pytest.raises(InputError, match="already exists"):
        write_catalogue(path, empty_catalogue())
    write_catalogue(path, empty_catalogue(), overwrite=True)


def tan_wcs(crpix=(33.0, 17.0), crval=(150.0, 2.0)) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.crval = list(crval)
    wcs.wcs.cdelt = [-1.0 / 3600, 1.0 / 3600]
    return wcs


def test_pixel_to_sky_uses_zero_based_pixels_and_gives_nan_without_wcs():
    ra, dec = pixel_to_sky(tan_wcs(), np.array([32.0, 42.0]), np.array([16.0, 16.0]))
    np.testing.assert_allclose([ra[0], dec[0]], [150.0, 2.0], atol=1e-9)
    assert ra[1] < 150.0  # RA grows to the left (east) in the usual orientation
    ra, dec = pixel_to_sky(None, np.array([1.0]), np.array([1.0]))
    assert np.isnan(ra).all() and np.isnan(dec).all()


# --- inputs ----------------------------------------------------------------------------------------


def test_input_kind_by_name_and_by_magic_bytes(tmp_path):
    assert input_kind(tmp_path / "x.fits.fz") == "fits"
    assert input_kind(tmp_path / "images_3.npz") == "npz"
    assert input_kind(tmp_path / "asteroid_difference_images_3.npz") == "challenge"
    assert input_kind(tmp_path / "a.avro") == "avro"
    odd = tmp_path / "noext"
    odd.write_bytes(b"SIMPLE  =                    T")
    assert input_kind(odd) == "fits"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world")
    with pytest.raises(InputError, match="junk.bin: unknown input kind"):
        input_kind(junk)


def test_expand_inputs_folders_globs_and_challenge_partners(tmp_path):
    for name in ("b.fits", "a.npz", "c.avro", "notes.txt", "asteroid_difference_images_1.npz",
                 "asteroid_injected_information_1.npz"):
        (tmp_path / name).write_bytes(b"")
    names = [p.name for p in expand_inputs(tmp_path)]
    assert names == ["a.npz", "asteroid_difference_images_1.npz", "b.fits", "c.avro"]
    assert [p.name for p in expand_inputs(str(tmp_path / "*.fits"))] == ["b.fits"]
    both = expand_inputs([tmp_path / "asteroid_injected_information_1.npz", tmp_path / "asteroid_difference_images_1.npz"])
    assert [p.name for p in both] == ["asteroid_difference_images_1.npz"]
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs(str(tmp_path / "*.zzz"))
    with pytest.raises(InputError, match="no such file or folder"):
        expand_inputs(tmp_path / "missing.fits")


# --- stamps ----------------------------------------------------------------------------------------


def test_stamp_centre_full_and_edge_stamps():
    from neocascade.detection.detector import stamp_centre

    assert stamp_centre((63, 63)) == (31, 31)
    # cut at the quadrant's low edge (ypos 26.17, 1-based): 25 rows before the alert remain
    assert stamp_centre((57, 63), xpos=2659.6, ypos=26.17) == (25, 31)
    # cut at the high edge (x = 3057.5 of 3072): the alert keeps its 31 columns on the left
    assert stamp_centre((63, 47), xpos=3057.48, ypos=2219.0) == (31, 31)


# --- detector ----------------------------------------------------------------------------------------


@pytest.fixture
def detector():
    from neocascade.detection import detector

    return detector


def test_detect_image_finds_the_sources_and_merges_neighbours(detector):
    image = blob_image(sources=((20, 40), (50, 10)))
    cascade = ThresholdCascade()
    det = detector.detect_image(image, cascade, merge_radius=5.0, batch_size=4)
    order = np.argsort(det["rows"])
    assert det["rows"][order].tolist() == [20, 50] and det["cols"][order].tolist() == [40, 10]
    assert set(det) >= set(detector.DETECTION_KEYS)
    assert np.all(det["p1"] > 0.8) and np.array_equal(det["p1"], det["p2"]) and np.all(det["snr"] > 10)
    assert max(cascade.calls) <= 4  # scored in batches of batch_size


def test_detect_image_veto_drops_a_streak(detector):
    """Blobs along a line 200+ px long are dropped by the streak veto; scattered ones stay."""
    from neocascade.detection.streaks import StreakVeto

    line = [(20 + 30 * k, 20 + 31 * k) for k in range(8)]  # 8 sources over ~300 px
    image = blob_image(shape=(300, 300), sources=[*line, (250, 40), (40, 250)])
    cascade = ThresholdCascade()
    cascade.input_spec["selector"] = {"_target_": "neocascade.candidates.peaks.PeakSelector", "threshold": 5.0,
                                      "min_distance": 5, "noise_box": 64}
    every = detector.detect_image(image, cascade, merge_radius=5.0, veto=None)
    assert len(every["rows"]) == 10
    kept = detector.detect_image(image, cascade, merge_radius=5.0, veto=StreakVeto(min_span=150.0))
    assert sorted(zip(kept["rows"].tolist(), kept["cols"].tolist())) == [(40, 250), (250, 40)]
    # the default is the artifact's veto: this stand-in stores none
    assert len(detector.detect_image(image, cascade, merge_radius=5.0)["rows"]) == 10
    cascade.postprocess = {"veto": {"_target_": "neocascade.detection.streaks.StreakVeto", "min_span": 150.0}}
    assert len(detector.detect_image(image, cascade, merge_radius=5.0)["rows"]) == 2
    with pytest.raises(ValueError, match="veto: must return one bool per detection"):
        detector.detect_image(image, cascade, merge_radius=5.0, veto=lambda x, y: np.ones(1))


def test_detect_image_on_noise_gives_empty_arrays(detector):
    det = detector.detect_image(blob_image(sources=()), ThresholdCascade(), merge_radius=5.0)
    assert all(len(det[k]) == 0 for k in detector.DETECTION_KEYS)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((64, 64), np.nan, dtype=np.float32), "every pixel is NaN"),
        (np.zeros((10, 64), dtype=np.float32), "10x64 px is smaller than the cascade's 21x21 cutouts"),
        (np.zeros((2, 64, 64), dtype=np.float32), "expected a 2-D image"),
    ],
)
def test_detect_image_refuses_bad_images(detector, image, message):
    with pytest.raises(ValueError, match=message):
        detector.detect_image(image, ThresholdCascade(), merge_radius=5.0)


def test_score_stamp_sign_decides(detector):
    stamp = blob_image(shape=(63, 63), sources=((31, 31),))
    cascade = ThresholdCascade()
    assert detector.score_stamp(stamp, cascade)["detected"] is True
    assert detector.score_stamp(-stamp, cascade)["detected"] is False
    off = detector.score_stamp(stamp, cascade, centre=(5, 5))
    assert off["detected"] is False and (off["row"], off["col"]) == (5, 5)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sigma", None, "cascade.input_spec: missing sigma"),
        ("channels", ["blue"], "cascade.input_spec.channels: unknown channel 'blue'"),
        ("normalize", "zscore", "cascade.input_spec.normalize: must be one of"),
        ("cutout_size", 0, "cascade.input_spec.cutout_size: must be a positive integer"),
    ],
)
def test_input_spec_errors_name_the_key(detector, key, value, message):
    cascade = ThresholdCascade()
    if value is None:
        del cascade.input_spec[key]
    else:
        cascade.input_spec[key] = value
    with pytest.raises(ValueError, match=message):
        detector.input_spec(cascade)


def test_unbuildable_selector_is_one_line_but_stamps_do_not_need_it(detector):
    cascade = ThresholdCascade()
    cascade.input_spec["selector"] = {"_target_": "nowhere.Selector", "kernel": 16}
    with pytest.raises(ValueError, match="cascade.input_spec.selector._target_: not one of the project's selector classes"):
        detector.input_spec(cascade)
    stamp = blob_image(shape=(63, 63), sources=((31, 31),))
    assert detector.score_stamp(stamp, cascade)["detected"] is True


def test_npz_units_carry_the_wcs_and_exposure_of_a_night_file(tmp_path):
    """A night's canonical npz gives each image its own WCS, so catalogue rows get RA/Dec."""
    from neocascade.detection.catalogue import pixel_to_sky
    from neocascade.detection.inputs import iter_units
    from neocascade.io.npz import write_canonical
    from neocascade.io.observation import wcs_from_row

    scale = 1.012 / 3600.0
    rows = np.array([[150.0, 2.0, 32.5, 32.5, -scale, 0.0, 0.0, scale],
                     [150.001, 2.0, 32.5, 32.5, -scale, 0.0, 0.0, scale]])
    path = write_canonical(tmp_path / "night.npz", np.zeros((2, 64, 64), np.float32), np.zeros((0, 6)), {},
                           obs_mjd=np.array([60310.2, 60310.22]), exptime=np.array([30.0, 30.0]), wcs=rows)
    units = list(iter_units(path))
    assert [u.exptime for u in units] == [30.0, 30.0]
    for unit, row in zip(units, rows):
        ra, dec = pixel_to_sky(unit.wcs, np.array([10.0]), np.array([20.0]))
        want = wcs_from_row(row).pixel_to_world_values(10.0, 20.0)
        np.testing.assert_allclose([ra[0], dec[0]], want, atol=1e-10)
    plain = write_canonical(tmp_path / "plain.npz", np.zeros((1, 64, 64), np.float32), np.zeros((0, 6)), {})
    assert next(iter(iter_units(plain))).wcs is None
