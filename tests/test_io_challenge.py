"""io/challenge.py: the seed challenge's pickled layout."""

from __future__ import annotations

import pickle
import sys
import types
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from neocascade.errors import InputError
from neocascade.io.challenge import (
    Box,
    challenge_paths,
    convert_challenge,
    read_challenge,
    trail_box,
    write_challenge,
)
from neocascade.io.npz import read_canonical, write_canonical


def _data(n: int = 3, h: int = 12, w: int = 16):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(n, h, w)).astype(np.float32)
    images[0, 1, 1] = np.nan
    truth = np.array(
        [
            [0, 4.3, 5.7, 19.25, 10.0, 33.3],
            [0, 10.1, 2.2, 20.5, 3.0, -120.0],
            [2, 15.9, 11.9, 18.0, 0.0, 0.0],
        ]
    )
    return images, truth


def _write_info(path, entries):
    array = np.empty(len(entries), dtype=object)
    array[:] = entries
    np.savez(path, data=array)


def test_trail_box():
    box = trail_box(10.0, 20.0, 8.0, 90.0)
    assert box.xmin == pytest.approx(9.0) and box.xmax == pytest.approx(11.0)
    assert (box.ymin, box.ymax) == (15.0, 25.0)
    assert pickle.loads(pickle.dumps(box)) == box


def test_round_trip_via_canonical(tmp_path):
    images, truth = _data()
    canonical = read_canonical(write_canonical(tmp_path / "c.npz", images, truth, {}))
    write_challenge(tmp_path / "ch", 4, canonical.images(), canonical.truth)
    data = read_challenge(tmp_path / "ch", 4, allow_pickle=True)
    assert data.n_images == 3 and data.shape == (12, 16) and len(data) == 3
    assert data.path == challenge_paths(tmp_path / "ch", 4)[0]
    assert data.meta["layout"] == "challenge" and data.meta["image_meta"][2] == {"image": 2}
    np.testing.assert_array_equal(data.images(), images)
    np.testing.assert_array_equal(data.image(0), images[0])
    np.testing.assert_allclose(data.truth[:, 1:3], truth[:, 1:3], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(data.truth[:, [0, 3, 4, 5]], truth[:, [0, 3, 4, 5]])
    np.testing.assert_array_equal(data.truth_for(1), np.empty((0, 6)))
    assert data.truth_for(2).shape == (1, 6)


def test_pickle_refused_by_default(tmp_path):
    images, truth = _data()
    write_challenge(tmp_path, 0, images, truth)
    with pytest.raises(InputError, match=r"asteroid_injected_information_0\.npz: holds pickled.*allow_pickle=true only for files you trust"):
        read_challenge(tmp_path, 0)


def test_missing_files(tmp_path):
    with pytest.raises(InputError, match=r"asteroid_difference_images_5\.npz: no such file"):
        read_challenge(tmp_path, 5, allow_pickle=True)
    with pytest.raises(InputError, match="no challenge files"):
        convert_challenge(tmp_path, tmp_path / "out", allow_pickle=True)


def test_write_refuses_overwrite(tmp_path):
    images, truth = _data()
    write_challenge(tmp_path, 1, images, truth)
    with pytest.raises(InputError, match="already exists"):
        write_challenge(tmp_path, 1, images, truth)
    write_challenge(tmp_path, 1, images, truth[:1], overwrite=True)
    assert len(read_challenge(tmp_path, 1, allow_pickle=True).truth) == 1


def test_write_validates(tmp_path):
    images, truth = _data()
    bad = truth.copy()
    bad[1, 1] = 99.0
    with pytest.raises(ValueError, match="truth row 1: x=99.0 is outside the 16-px-wide image"):
        write_challenge(tmp_path, 0, images, bad)
    with pytest.raises(ValueError, match="images: must be a float"):
        write_challenge(tmp_path, 0, images[0], truth)


def test_boxes_as_dicts_and_foreign_objects(tmp_path):
    images, _ = _data(n=2)
    np.savez(tmp_path / "asteroid_difference_images_0.npz", data=images)
    tables = [
        pd.DataFrame({"magnitude": [19.0], "length": [4.0], "angle": [0.0], "box": [{"xmin": 1, "xmax": 3, "ymin": 2, "ymax": 6}]}),
        pd.DataFrame(
            {"magnitude": [20.0], "length": [2.0], "angle": [90.0], "box": [SimpleNamespace(xmin=5, xmax=7, ymin=8, ymax=9)]}
        ),
    ]
    _write_info(tmp_path / "asteroid_injected_information_0.npz", [{"seeing": np.float32(2.0)}, tables[0], {}, tables[1]])
    data = read_challenge(tmp_path, 0, allow_pickle=True)
    np.testing.assert_array_equal(data.truth, [[0, 2, 4, 19, 4, 0], [1, 6, 8.5, 20, 2, 90]])
    assert data.meta["image_meta"][0] == {"seeing": 2.0}


def test_unknown_box_class_is_read(tmp_path, monkeypatch):
    """A box class from the challenge's own code (not importable here) still yields its attributes."""
    images, _ = _data(n=1)
    np.savez(tmp_path / "asteroid_difference_images_0.npz", data=images)
    module = types.ModuleType("challenge_code_xx")
    foreign = type("BBox", (), {"__module__": module.__name__})
    module.BBox = foreign
    box = foreign()
    box.xmin, box.xmax, box.ymin, box.ymax = 1.0, 5.0, 2.0, 4.0
    table = pd.DataFrame({"magnitude": [19.0], "length": [4.0], "angle": [0.0], "box": [box]})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    _write_info(tmp_path / "asteroid_injected_information_0.npz", [{}, table])
    monkeypatch.delitem(sys.modules, module.__name__)
    data = read_challenge(tmp_path, 0, allow_pickle=True)
    np.testing.assert_array_equal(data.truth, [[0, 3, 3, 19, 4, 0]])


def test_convert(tmp_path):
    images, truth = _data()
    write_challenge(tmp_path / "in", 0, images, truth)
    write_challenge(tmp_path / "in", 2, images[:1], truth[:2])
    paths = convert_challenge(tmp_path / "in", tmp_path / "out", allow_pickle=True)
    assert [p.name for p in paths] == ["challenge_0.npz", "challenge_2.npz"]
    second = read_canonical(paths[1])
    np.testing.assert_array_equal(second.images(), images[:1])
    np.testing.assert_allclose(second.truth, truth[:2], atol=1e-9)
    assert second.meta["k"] == 2
    with pytest.raises(InputError, match="allow_pickle=true only for files you trust"):
        convert_challenge(tmp_path / "in", tmp_path / "out2", allow_pickle=False)
    with pytest.raises(InputError, match="already exists"):
        convert_challenge(tmp_path / "in", tmp_path / "out", allow_pickle=True)


def test_bad_tables(tmp_path):
    images, _ = _data(n=1)
    np.savez(tmp_path / "asteroid_difference_images_0.npz", data=images)
    info = tmp_path / "asteroid_injected_information_0.npz"
    _write_info(info, [{}, pd.DataFrame({"magnitude": [19.0], "length": [4.0], "box": [Box(1, 2, 3, 4)]})])
    with pytest.raises(InputError, match="image 0: table lacks column 'angle' \\(found 'magnitude', 'length', 'box'\\)"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    _write_info(info, [{}, pd.DataFrame({"magnitude": [19.0], "length": [4.0], "angle": [0.0], "box": [{"xmin": 1}]})])
    with pytest.raises(InputError, match="image 0 row 0: box has no 'xmax'"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    _write_info(info, [{}, "not a table"])
    with pytest.raises(InputError, match=r"entry 1 \(image 0\) is not a table"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    _write_info(info, [{}, pd.DataFrame({"magnitude": [19.0], "length": [4.0], "angle": [0.0], "box": [Box(40, 42, 1, 3)]})])
    with pytest.raises(InputError, match=r"truth row 0: x=41.0 is outside the 16-px-wide image"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    _write_info(info, [{}, pd.DataFrame(columns=list("ab")), {}])
    with pytest.raises(InputError, match="must alternate image metadata and table"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    _write_info(info, [{}, pd.DataFrame(columns=["magnitude", "length", "angle", "box"]), {}, pd.DataFrame(columns=["magnitude", "length", "angle", "box"])])
    with pytest.raises(InputError, match=r"'data' must hold 2 entries per image \(expected 2, got 4\)"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    np.savez(info, data=np.zeros(4))
    with pytest.raises(InputError, match="'data' must be an object array"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    np.savez(info, other=np.zeros(4))
    with pytest.raises(InputError, match=r"missing key 'data' \(found 'other'\)"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    info.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot unpickle 'data'"):
        read_challenge(tmp_path, 0, allow_pickle=True)


def test_images_file_checked(tmp_path):
    _, truth = _data()
    write_challenge(tmp_path, 0, np.zeros((3, 12, 16), np.float32), truth)
    np.savez(tmp_path / "asteroid_difference_images_0.npz", data=np.zeros((3, 12, 16), np.int16))
    with pytest.raises(InputError, match="'data' must be a float32/float64 \\(N, H, W\\) stack"):
        read_challenge(tmp_path, 0, allow_pickle=True)
    np.savez(tmp_path / "asteroid_difference_images_0.npz", images=np.zeros((3, 12, 16), np.float32))
    with pytest.raises(InputError, match="asteroid_difference_images_0.npz: missing key 'data' \\(found 'images'\\)"):
        read_challenge(tmp_path, 0, allow_pickle=True)
