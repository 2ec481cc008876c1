"""io/npz.py: the canonical npz layout."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from neocascade.errors import InputError
from neocascade.io.npz import TRUTH_COLUMNS, CanonicalFile, check_truth, read_canonical, write_canonical


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
