"""io/npz.py: the canonical npz layout."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from neocascade.errors import InputError
from neocascade.io.npz import (
    STATIONARY_COLUMNS,
    TRUTH_COLUMNS,
    TRUTH_COLUMNS_ID,
    CanonicalFile,
    check_truth,
    read_canonical,
    write_canonical,
)


def _data(n: int = 3, h: int = 8, w: int = 10):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, h, w)).astype(np.float32)
    images[1, 2, 3] = np.nan
    truth = np.array([[0, 4.5, 3.25, 19.5, 12.0, 30.0], [2, 9.9, 7.0, 20.0, 5.0, -45.0], [2, 0.0, 0.0, 18.0, 0.0, 0.0]])
    return images, truth


def _raw(path, **arrays):
    """Write an npz with exactly the given members (for malformed files)."""
    np.savez(path, **arrays)
    return path


def _valid_members():
    images, truth = _data()
    return dict(images=images, truth=truth, truth_columns=np.array(TRUTH_COLUMNS), meta=np.array(json.dumps({"a": 1})))


def test_round_trip(tmp_path):
    images, truth = _data()
    path = write_canonical(tmp_path / "sub" / "f.npz", images, truth, {"seed": np.int64(3), "note": "x"})
    data = read_canonical(path)
    assert isinstance(data, CanonicalFile)
    assert data.path == path and data.n_images == 3 and len(data) == 3 and data.shape == (8, 10)
    assert data.meta == {"seed": 3, "note": "x"}
    assert data.truth.dtype == np.float64
    np.testing.assert_array_equal(data.truth, truth)
    for i in range(3):
        image = data.image(i)
        assert image.dtype == np.float32 and image.flags.writeable
        np.testing.assert_array_equal(image, images[i])
    np.testing.assert_array_equal(data.images(), images)
    np.testing.assert_array_equal(data.truth_for(2), truth[1:])
    assert data.truth_for(1).shape == (0, 6)
    with pytest.raises(IndexError, match="outside"):
        data.image(3)


def test_image_is_memory_mapped_and_picklable(tmp_path):
    images, truth = _data()
    data = read_canonical(write_canonical(tmp_path / "f.npz", images, truth, {}))
    data.image(0)
    assert isinstance(data._stack._array, np.memmap)
    clone = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(clone.image(2), images[2])


def test_compressed_and_float64_fall_back(tmp_path):
    members = _valid_members()
    members["images"] = members["images"].astype(np.float64)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, **members)
    data = read_canonical(path)
    image = data.image(1)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, members["images"][1].astype(np.float32))


def test_empty_truth(tmp_path):
    images, _ = _data()
    data = read_canonical(write_canonical(tmp_path / "e.npz", images, np.empty((0,)), {}))
    assert data.truth.shape == (0, 6)
    assert data.truth_for(0).shape == (0, 6)


def test_refuses_overwrite(tmp_path):
    images, truth = _data()
    path = write_canonical(tmp_path / "f.npz", images, truth, {})
    with pytest.raises(InputError, match="already exists"):
        write_canonical(path, images, truth, {})
    write_canonical(path, images[:1], truth[:1], {"v": 2}, overwrite=True)
    assert read_canonical(path).meta == {"v": 2}


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_canonical(tmp_path / "absent.npz")


def test_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"hello" * 100)
    with pytest.raises(InputError, match=r"junk\.npz: not a readable npz file"):
        read_canonical(path)


def test_truncated(tmp_path):
    images, truth = _data()
    full = write_canonical(tmp_path / "full.npz", images, truth, {}).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(InputError, match=r"cut\.npz: not a readable npz file"):
        read_canonical(path)


def test_bytes_corrupted_inside_the_images_are_refused(tmp_path):
    images, truth = _data(3, 64, 64)  # larger than zipfile's read-ahead, so opening alone cannot see the damage
    path = write_canonical(tmp_path / "bad.npz", images, truth, {})
    data = bytearray(path.read_bytes())
    start = data.find(images.tobytes()[:16])  # the first image's pixels in the stored member
    assert start > 0
    data[start + 8:start + 16] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"bad\.npz: 'images' is corrupt \(its CRC-32"):
        read_canonical(path).image(0)
    np.testing.assert_array_equal(read_canonical(write_canonical(tmp_path / "ok.npz", images, truth, {})).image(2), images[2])


def test_missing_key_lists_found(tmp_path):
    members = _valid_members()
    members["imgs"] = members.pop("images")
    path = _raw(tmp_path / "images_3.npz", **members)
    with pytest.raises(InputError, match=r"images_3\.npz: missing key 'images' \(found 'truth', 'truth_columns', 'meta', 'imgs'\)$") as info:
        read_canonical(path)
    assert str(info.value) == f"{path}: missing key 'images' (found 'truth', 'truth_columns', 'meta', 'imgs')"
    members = _valid_members()
    del members["meta"]
    with pytest.raises(InputError, match="missing key 'meta'"):
        read_canonical(_raw(tmp_path / "m.npz", **members))


def test_pickled_content_refused(tmp_path):
    members = _valid_members()
    members["meta"] = np.array([{"a": 1}], dtype=object)
    with pytest.raises(InputError, match="'meta' holds pickled Python objects, which are refused"):
        read_canonical(_raw(tmp_path / "p.npz", **members))
    members = _valid_members()
    members["images"] = np.array([None, None], dtype=object)
    with pytest.raises(InputError, match="'images' holds pickled Python objects"):
        read_canonical(_raw(tmp_path / "p2.npz", **members))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 4, 4), dtype=np.int16), "'images' must be float32 or float64"),
        (np.zeros((4, 4), dtype=np.float32), r"'images' must be 3-D \(N, H, W\)"),
        (np.zeros((2, 0, 4), dtype=np.float32), "'images' must have non-empty images"),
    ],
)
def test_bad_images(tmp_path, images, message):
    members = _valid_members()
    members["images"] = images
    members["truth"] = np.empty((0, 6))
    with pytest.raises(InputError, match=message):
        read_canonical(_raw(tmp_path / "i.npz", **members))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([0, 3101.5, 1, 19, 5, 0], r"truth row 1: x=3101\.5 is outside the 10-px-wide image"),
        ([0, 1, 8.0, 19, 5, 0], r"truth row 1: y=8\.0 is outside the 8-px-high image"),
        ([0, -0.1, 1, 19, 5, 0], "truth row 1: x=-0.1 is outside"),
        ([3, 1, 1, 19, 5, 0], r"truth row 1: image=3 is outside \[0, 3\)"),
        ([0.5, 1, 1, 19, 5, 0], "truth row 1: image=0.5 is not an integer index"),
        ([0, 1, 1, np.nan, 5, 0], "truth row 1: magnitude=nan is not finite"),
        ([0, 1, 1, 19, -5, 0], "truth row 1: length=-5.0 is negative"),
    ],
)
def test_bad_truth_rows(tmp_path, row, message):
    members = _valid_members()
    members["truth"] = np.array([[0, 1, 1, 19, 5, 0], row], dtype=np.float64)
    with pytest.raises(InputError, match=message):
        read_canonical(_raw(tmp_path / "t.npz", **members))
    with pytest.raises(ValueError, match=message):
        write_canonical(tmp_path / "w.npz", members["images"], members["truth"], {})


def test_bad_truth_shape_and_columns(tmp_path):
    members = _valid_members()
    members["truth"] = np.zeros((2, 5))
    with pytest.raises(InputError, match=r"truth must have shape \(M, 6\) \(got \(2, 5\)\)"):
        read_canonical(_raw(tmp_path / "s.npz", **members))
    members = _valid_members()
    members["truth"] = np.array([["a"] * 6])
    with pytest.raises(InputError, match="truth must hold real numbers"):
        read_canonical(_raw(tmp_path / "s2.npz", **members))
    members = _valid_members()
    members["truth_columns"] = np.array(["image", "col", "row", "magnitude", "length", "angle"])
    with pytest.raises(InputError, match="'truth_columns' must be"):
        read_canonical(_raw(tmp_path / "c.npz", **members))


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (np.array("{not json"), "'meta' is not valid JSON"),
        (np.array("[1, 2]"), "'meta' must be a JSON object"),
        (np.zeros(3), "'meta' must be one JSON string"),
    ],
)
def test_bad_meta(tmp_path, meta, message):
    members = _valid_members()
    members["meta"] = meta
    with pytest.raises(InputError, match=message):
        read_canonical(_raw(tmp_path / "meta.npz", **members))


def test_write_validates_arguments(tmp_path):
    images, truth = _data()
    with pytest.raises(ValueError, match="images: must be float32 or float64"):
        write_canonical(tmp_path / "a.npz", np.zeros((3, 8, 10), dtype=np.int32), truth, {})
    with pytest.raises(ValueError, match=r"images: must be 3-D"):
        write_canonical(tmp_path / "a.npz", images[0], truth, {})
    bad = images.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="images: 1 infinite pixels"):
        write_canonical(tmp_path / "a.npz", bad, truth, {})
    with pytest.raises(ValueError, match=r"truth must have shape \(M, 6\)"):
        write_canonical(tmp_path / "a.npz", images, truth[:, :5], {})
    with pytest.raises(ValueError, match="meta: must be a dict"):
        write_canonical(tmp_path / "a.npz", images, truth, "x")
    with pytest.raises(ValueError, match="meta: not JSON-serialisable"):
        write_canonical(tmp_path / "a.npz", images, truth, {"f": object()})
    assert not (tmp_path / "a.npz").exists()


def test_check_truth_ok():
    _, truth = _data()
    assert check_truth(truth, n_images=3, shape=(8, 10)) is None


# ---- optional sequence keys (issue 14) and truth-free reading (issue 17 item 9)

SCALE = 1.0 / 3600.0


def _sequence_keys(n: int = 3) -> dict:
    wcs = np.tile([30.0, 10.0, 5.5, 4.5, -SCALE, 0.0, 0.0, SCALE], (n, 1))
    wcs[:, 0] += np.arange(n) * 1e-4  # a small pointing offset per visit
    return dict(obs_mjd=60000.2 + np.arange(n) * 0.01, exptime=np.full(n, 30.0), wcs=wcs,
                field=np.full(n, 4, dtype=np.int64), epoch=np.arange(n, dtype=np.int64),
                stationary=np.array([[0, 2.0, 3.0, 19.0, 7], [2, 2.1, 3.0, 19.4, 7]]))


def _truth_with_ids():
    _, truth = _data()
    return np.column_stack([truth, [0, 1, 1]])


def test_sequence_keys_round_trip(tmp_path):
    images, _ = _data()
    keys = _sequence_keys()
    truth = _truth_with_ids()
    data = read_canonical(write_canonical(tmp_path / "s.npz", images, truth, {}, **keys))
    assert data.truth_columns == TRUTH_COLUMNS_ID
    np.testing.assert_array_equal(data.truth, truth[:, :6])
    assert data.truth.shape == (3, 6) and data.truth_for(2).shape == (2, 6)  # consumers keep six columns
    assert data.object_id.dtype == np.int64 and data.object_id.tolist() == [0, 1, 1]
    for key in ("obs_mjd", "exptime", "wcs", "stationary"):
        np.testing.assert_array_equal(getattr(data, key), keys[key])
    assert data.field.dtype == np.int64 and data.field.tolist() == [4, 4, 4] and data.epoch.tolist() == [0, 1, 2]
    obs = data.observation(1)
    assert obs.mjd == pytest.approx(60000.21) and obs.exptime == 30.0
    assert obs.pixel_to_sky(4.5, 3.5) == pytest.approx((30.0001, 10.0), abs=1e-9)  # FITS crpix (5.5, 4.5)


def test_old_files_read_without_sequence_keys(tmp_path):
    data = read_canonical(_raw(tmp_path / "old.npz", **_valid_members()))
    assert data.truth_columns == TRUTH_COLUMNS and data.object_id is None
    assert data.obs_mjd is None and data.wcs is None and data.field is None and data.epoch is None
    assert data.stationary.shape == (0, len(STATIONARY_COLUMNS))
    with pytest.raises(InputError, match=r"old\.npz: no observation data: missing key\(s\) 'obs_mjd', 'exptime', 'wcs'"):
        data.observation(0)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("obs_mjd", np.array([60000.2, np.nan, 60000.3]), r"'obs_mjd' has non-finite values at image\(s\) \[1\]"),
        ("obs_mjd", np.array([60000.2, 2459914.9, 60000.3]), "'obs_mjd' of image 1 must be a plausible MJD"),
        ("obs_mjd", np.array([60000.2, 60000.3]), r"'obs_mjd' must have shape \(3,\), one entry per image"),
        ("exptime", np.array([30.0, 0.0, 30.0]), "'exptime' of image 1 must be > 0 s"),
        ("field", np.array([0.5, 1.0, 1.0]), "'field' must hold integers"),
        ("epoch", np.array([0, -1, 2]), "'epoch' of image 1 must be >= 0"),
        ("wcs", np.zeros((3, 7)), r"wcs must have shape \(N, 8\)"),
        ("wcs", np.tile([0, 0, 1, 1, 0, 0, 0, 0.0], (3, 1)), "wcs row 0: the CD matrix is singular"),
        ("wcs", np.tile([0, 91, 1, 1, -SCALE, 0, 0, SCALE], (3, 1)), r"crval2=91\.0 is outside \[-90, 90\]"),
        ("wcs", np.tile([0, 0, 1, 1, -SCALE, 0, 0, SCALE], (2, 1)), r"'wcs' must have shape \(3, 8\)"),
        ("stationary", np.array([[0, 2.0, 3.0, 19.0, 1.5]]), r"stationary row 0: object_id=1\.5 is not an integer >= 0"),
        ("stationary", np.array([[0, 20.0, 3.0, 19.0, 1]]), "stationary row 0: x=20.0 is outside the 10-px-wide image"),
        ("stationary", np.zeros((1, 4)), r"stationary must have shape \(M, 5\)"),
    ],
)
def test_bad_sequence_keys(tmp_path, key, value, message):
    members = _valid_members()
    members[key] = value
    with pytest.raises(InputError, match=message):
        read_canonical(_raw(tmp_path / "bad.npz", **members))
    images, truth = _data()
    with pytest.raises(ValueError, match=message):
        write_canonical(tmp_path / "w.npz", images, truth, {}, **{key: value})
    assert not (tmp_path / "w.npz").exists()


@pytest.mark.parametrize(("object_id", "message"), [(-1.0, "object_id=-1.0 is not an integer >= 0"),
                                                    (2.5, "object_id=2.5 is not an integer"),
                                                    (np.nan, "object_id=nan is not finite")])
def test_bad_object_ids(tmp_path, object_id, message):
    members = _valid_members()
    truth = _truth_with_ids()
    truth[1, 6] = object_id
    members.update(truth=truth, truth_columns=np.array(TRUTH_COLUMNS_ID))
    with pytest.raises(InputError, match=rf"truth row 1: {message}"):
        read_canonical(_raw(tmp_path / "ids.npz", **members))
    members["truth"] = truth[:, :6]
    with pytest.raises(InputError, match=r"truth must have shape \(M, 7\)"):
        read_canonical(_raw(tmp_path / "ids6.npz", **members))


def test_detection_reads_files_whose_truth_it_cannot_use(tmp_path):
    members = _valid_members()
    members["truth_columns"] = np.array(["image", "x", "y", "mag", "length", "angle"])  # issue 17 item 9
    path = _raw(tmp_path / "mag.npz", **members)
    with pytest.raises(InputError, match="'truth_columns' must be"):
        read_canonical(path)
    data = read_canonical(path, truth="ignore")
    assert data.truth.shape == (0, 6) and data.truth_for(0).shape == (0, 6) and data.n_images == 3
    np.testing.assert_array_equal(data.image(1), members["images"][1])
    del members["truth"], members["truth_columns"]
    assert read_canonical(_raw(tmp_path / "none.npz", **members), truth="ignore").n_images == 3
    with pytest.raises(ValueError, match="truth: must be one of"):
        read_canonical(path, truth="skip")


def test_detection_inputs_ignore_the_truth(tmp_path):
    from neocascade.detection.inputs import iter_units

    members = _valid_members()
    members["truth"] = np.array([[0, 99.0, 1, 19, 5, 0]])  # outside the image: refused by the full reader
    path = _raw(tmp_path / "outside.npz", **members)
    with pytest.raises(InputError, match="x=99.0 is outside"):
        read_canonical(path)
    assert [unit.image for unit in iter_units(path)] == [0, 1, 2]


def test_empty_truth_keeps_the_object_id_column(tmp_path):
    images, _ = _data()
    data = read_canonical(write_canonical(tmp_path / "e7.npz", images, np.empty((0, 7)), {}))
    assert data.truth_columns == TRUTH_COLUMNS_ID and data.object_id.shape == (0,) and data.truth.shape == (0, 6)
