"""Image sources: simulated, canonical npz files and the challenge layout share one interface."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from neocascade.data.sources import ChallengeSource, NpzSource, SimulatedSource
from neocascade.errors import InputError
from neocascade.io.challenge import write_challenge
from neocascade.io.npz import write_canonical


def _sim(**overrides) -> SimulatedSource:
    kwargs = dict(seed=7, n_files=3, images_per_file=2, shape=[64, 64], n_asteroids=3, sim=None)
    kwargs.update(overrides)
    return SimulatedSource(**kwargs)


def _file(k: int, n_images: int = 2, shape=(8, 10)) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixels encode (file, image) and one truth row per image."""
    images = np.stack([np.full(shape, 100 * k + i, dtype=np.float32) for i in range(n_images)])
    truth = np.array([[i, 1.0 + i, 2.0, 18.0, 1.0, 30.0] for i in range(n_images)])
    return images, truth


def test_simulated_source_streams_reproducible_images():
    src = _sim()
    assert src.n_files == 3 and src.file_ids == (0, 1, 2) and src.n_images(1) == 2
    image, truth = src.read(1, 1)
    assert image.dtype == np.float32 and image.shape == (64, 64)
    assert truth.shape == (3, 6) and np.all(truth[:, 0] == 1)
    again, truth_again = _sim().read(1, 1)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(truth, truth_again)
    other, _ = src.read(2, 1)
    assert not np.array_equal(np.nan_to_num(image), np.nan_to_num(other))
    assert src.file_truth(1).shape == (6, 6)
    np.testing.assert_array_equal(src.file_truth(1)[:, 0], [0, 0, 0, 1, 1, 1])


def test_simulated_fingerprint_identifies_the_pixels():
    fp = _sim().fingerprint()
    json.dumps(fp)
    assert fp["seed"] == 7 and fp["shape"] == [64, 64] and fp["n_asteroids"] == 3 and fp["simulator"]
    assert _sim(n_files=5).fingerprint() == fp  # more files do not change the existing ones
    assert _sim(seed=8).fingerprint() != fp
    assert _sim(sim={"noise_rms": 7.0}).fingerprint() != fp
    assert _sim(n_asteroids=4).fingerprint() != fp


def test_simulated_source_pickles():
    src = _sim()
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(0, 0)[0], src.read(0, 0)[0])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"n_files": 0}, "data.source.n_files: must be an integer >= 1"),
        ({"images_per_file": 1.5}, "data.source.images_per_file: must be an integer >= 1"),
        ({"sim": {"no_such_knob": 1}}, "data.source: .*no_such_knob"),
        ({"shape": [8, 8]}, "data.source: sim.shape"),
    ],
)
def test_simulated_source_bad_config(overrides, match):
    with pytest.raises(InputError, match=match):
        _sim(**overrides)


def test_out_of_range_indices():
    src = _sim()
    with pytest.raises(IndexError, match="file 3 is not in"):
        src.read(3, 0)
    with pytest.raises(IndexError, match=r"image 2 is outside \[0, 2\)"):
        src.read(0, 2)


def test_npz_source_numbers_files_by_suffix(tmp_path):
    for k in (2, 10, 9):
        write_canonical(tmp_path / f"images_{k}.npz", *_file(k), meta={})
    for spec in (tmp_path, str(tmp_path / "images_*.npz"), [tmp_path / f"images_{k}.npz" for k in (10, 2, 9)]):
        src = NpzSource(spec)
        assert src.file_ids == (2, 9, 10)
        image, truth = src.read(10, 1)
        np.testing.assert_array_equal(image, np.full((8, 10), 1001, dtype=np.float32))
        np.testing.assert_array_equal(truth, [[1, 2.0, 2.0, 18.0, 1.0, 30.0]])
        assert src.n_images(9) == 2


def test_npz_source_without_suffixes_uses_sorted_position(tmp_path):
    write_canonical(tmp_path / "b.npz", *_file(1), meta={})
    write_canonical(tmp_path / "a.npz", *_file(0), meta={})
    src = NpzSource(tmp_path)
    assert src.file_ids == (0, 1)
    assert src.read(1, 0)[0][0, 0] == 100  # b.npz


def test_npz_fingerprint_changes_when_a_file_is_rewritten(tmp_path):
    write_canonical(tmp_path / "images_0.npz", *_file(0), meta={})
    src = NpzSource(tmp_path)
    fp = src.fingerprint()
    json.dumps(fp)
    assert fp["files"]["0"]["path"] == str((tmp_path / "images_0.npz").resolve())
    images, truth = _file(0)
    write_canonical(tmp_path / "images_0.npz", images + 1, truth, meta={}, overwrite=True)
    stat = os.stat(tmp_path / "images_0.npz")
    os.utime(tmp_path / "images_0.npz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert NpzSource(tmp_path).fingerprint() != fp
    assert src.read(0, 0)[0][0, 0] == 1  # the reopened file, not a stale handle


def test_npz_source_bad_paths(tmp_path):
    with pytest.raises(InputError, match="no \\*.npz files in this folder"):
        NpzSource(tmp_path)
    with pytest.raises(InputError, match="data.source.paths: no files match"):
        NpzSource(str(tmp_path / "*.npz"))
    with pytest.raises(InputError, match="missing.npz: no such file"):
        NpzSource([tmp_path / "missing.npz"])


def test_challenge_source(tmp_path):
    for k in (0, 1):
        write_challenge(tmp_path, k, *_file(k))
    with pytest.raises(InputError, match="allow_pickle"):
        ChallengeSource(tmp_path).read(0, 0)
    src = ChallengeSource(tmp_path, allow_pickle=True)
    assert src.file_ids == (0, 1) and src.n_images(1) == 2
    image, truth = src.read(1, 1)
    assert image[0, 0] == 101
    np.testing.assert_allclose(truth[:, :3], [[1, 2.0, 2.0]], atol=1e-6)
    fp = src.fingerprint()
    json.dumps(fp)
    assert len(fp["files"]["0"]) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no challenge files"):
        ChallengeSource(tmp_path / "empty")
