"""The candidate cutout cache: layout, keys, reuse, resumption, atomicity and concurrent builders."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from neocascade.candidates.extract import extract_candidates
from neocascade.candidates.footprint import FootprintSelector
from neocascade.data import cache as cache_mod
from neocascade.data.cache import build_cache, cache_handle, selector_config
from neocascade.data.sources import SimulatedSource
from neocascade.errors import InputError

SIZE = 21


def tiny_source(n_files: int = 3) -> SimulatedSource:
    """conf/data/tiny.yaml's source, with fewer files."""
    return SimulatedSource(seed=7, n_files=n_files, images_per_file=2, shape=[256, 256], n_asteroids=6)


def build(root: Path, source=None, **overrides):
    kwargs = dict(
        files=None,
        sigma=1.0,
        selector=FootprintSelector(kernel=16, stride=16),
        cutout_size=SIZE,
        label_mode="centre",
        label_radius=1.0,
        cache_root=root,
        dtype="float16",
        n_jobs=1,
        progress=False,
        name="tiny",
    )
    kwargs.update(overrides)
    return build_cache(source or tiny_source(), **kwargs)


class CountingSource(SimulatedSource):
    """Counts reads; optionally sleeps (to overlap concurrent builders) or fails at one image."""

    def __init__(self, *args, delay: float = 0.0, fail_at: tuple[int, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: list[tuple[int, int]] = []
        self.delay, self.fail_at = delay, fail_at

    def read(self, file, image):
        if (file, image) == self.fail_at:
            raise RuntimeError("simulated crash")
        self.reads.append((file, image))
        time.sleep(self.delay)
        return super().read(file, image)


def counting(**kwargs) -> CountingSource:
    return CountingSource(seed=7, n_files=3, images_per_file=2, shape=[256, 256], n_asteroids=6, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return build(root)


def test_layout_and_contents(built):
    src = tiny_source()
    assert built.root.name.startswith("tiny-") and len(built.hash) == 12
    assert json.loads((built.root / "key.json").read_text())["sigma"] == 1.0
    folder = built.file_dir(1)
    assert sorted(p.name for p in folder.iterdir()) == ["cutouts.npy", "info.json", "meta.npz", "truth.npy", "truth_info.npz"]
    cut = np.load(folder / "cutouts.npy")
    assert cut.dtype == np.float16 and cut.shape == (2 * 256, 2, SIZE, SIZE)  # 16 x 16 blocks per image
    meta = np.load(folder / "meta.npz")
    assert set(meta.files) == set(cache_mod.META_COLUMNS)
    np.testing.assert_array_equal(meta["file"], 1)
    np.testing.assert_array_equal(meta["image"], np.repeat([0, 1], 256))
    truth = np.load(folder / "truth.npy")
    np.testing.assert_array_equal(truth, src.file_truth(1))
    info = json.loads((folder / "info.json").read_text())
    assert info["n_candidates"] == 512 and info["n_truth"] == 12 and info["n_positive"] == int(meta["label"].sum())

    # the cached pixels are exactly extract_candidates' (in float16) for image 1
    image, _ = src.read(1, 1)
    cand = extract_candidates(image, sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE)
    np.testing.assert_array_equal(cut[256:], cand.cutouts.astype(np.float16))
    np.testing.assert_array_equal(meta["y"][256:], cand.rows)
    np.testing.assert_array_equal(meta["x"][256:], cand.cols)


def test_labels_and_truth_table_are_consistent(built):
    cs = built.load()
    assert cs.label.sum() > 0 and len(cs) == 3 * 512
    pos = np.flatnonzero(cs.label)
    assert np.all(cs.truth_index[pos] >= 0)
    np.testing.assert_array_equal(cs.truth_index[~cs.label], -1)
    t = cs.truth[cs.truth_index[pos]]
    np.testing.assert_array_equal(t[:, 0], cs.image[pos])  # same image
    np.testing.assert_array_equal(cs.truth_file[cs.truth_index[pos]], cs.file[pos])  # same file
    assert np.all(np.hypot(cs.x[pos] - t[:, 1], cs.y[pos] - t[:, 2]) <= 1.0)
    matched = np.unique(cs.truth_index[pos])
    np.testing.assert_array_equal(np.flatnonzero(cs.truth_proposed), matched)
    hit = np.flatnonzero(cs.truth_candidate >= 0)
    np.testing.assert_array_equal(hit, matched)
    np.testing.assert_array_equal(cs.truth_index[cs.truth_candidate[hit]], hit)
    # dead: the raw pixel at the rounded centre is NaN or 0
    src = tiny_source()
    for row in range(len(cs.truth)):
        f, (i, x, y) = cs.truth_file[row], cs.truth[row, :3]
        value = src.read(int(f), int(i))[0][int(np.rint(y)), int(np.rint(x))]
        assert cs.truth_dead[row] == (not np.isfinite(value) or value == 0)


def test_load_concatenates_files_and_reads_cutouts_by_global_index(built):
    cs = built.load([2, 0])
    assert cs.files == (2, 0) and len(cs) == 1024
    np.testing.assert_array_equal(cs.file[:512], 2)
    per_file = [np.load(built.file_dir(f) / "cutouts.npy") for f in (2, 0)]
    idx = np.array([1000, 3, 511, 512, 3, 700])
    expected = np.concatenate(per_file)[idx]
    np.testing.assert_array_equal(cs.cutouts.take(idx), expected)
    in_memory = built.load([2, 0], mmap=False)
    np.testing.assert_array_equal(in_memory.cutouts.take(idx), expected)
    clone = pickle.loads(pickle.dumps(cs.cutouts))
    np.testing.assert_array_equal(clone.take(idx), expected)
    assert cs.cutouts.shape == (1024, 2, SIZE, SIZE)
    # truth_candidate points into the concatenated set
    hit = np.flatnonzero(cs.truth_candidate >= 0)
    assert np.all(cs.file[cs.truth_candidate[hit]] == cs.truth_file[hit])


def test_same_config_reuses_the_cache_without_reading_images(built):
    src = counting()
    again = build(built.root.parent, source=src)
    assert again.root == built.root and src.reads == []


def test_config_changes_move_the_cache(built):
    root = built.root.parent
    handles = {
        "sigma": cache_handle(tiny_source(), sigma=2.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, cache_root=root, name="tiny"),
        "kernel": cache_handle(tiny_source(), sigma=1.0, selector=FootprintSelector(kernel=32, stride=32), cutout_size=SIZE, cache_root=root, name="tiny"),
        "size": cache_handle(tiny_source(), sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=15, cache_root=root, name="tiny"),
        "radius": cache_handle(tiny_source(), sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, label_radius=2.0, cache_root=root, name="tiny"),
        "mode": cache_handle(tiny_source(), sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, label_mode="trail", cache_root=root, name="tiny"),
        "dtype": cache_handle(tiny_source(), sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, dtype="float32", cache_root=root, name="tiny"),
        "source": cache_handle(SimulatedSource(8, 3, 2, [256, 256], 6), sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, cache_root=root, name="tiny"),
    }
    roots = {h.root for h in handles.values()} | {built.root}
    assert len(roots) == len(handles) + 1
    same = cache_handle(tiny_source(n_files=10), files=[0, 1], sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, cache_root=root, name="tiny")
    assert same.root == built.root  # more source files do not change the cached ones


def test_selector_object_and_config_share_a_key(tmp_path):
    config = {"_target_": "neocascade.candidates.footprint.FootprintSelector", "kernel": 16, "stride": 16}
    a = cache_handle(tiny_source(), sigma=1.0, selector=config, cutout_size=SIZE, cache_root=tmp_path)
    b = cache_handle(tiny_source(), sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, cache_root=tmp_path)
    assert a.root == b.root
    assert selector_config(FootprintSelector(kernel=16, stride=16))["_target_"].endswith("FootprintSelector")


def test_missing_files_are_built_and_others_skipped(tmp_path):
    build(tmp_path)
    handle = build(tmp_path, source=counting())  # all built: nothing read
    import shutil

    shutil.rmtree(handle.file_dir(1))
    src = counting()
    build(tmp_path, source=src)
    assert src.reads == [(1, 0), (1, 1)]
    assert handle.is_built(1)


def test_crash_mid_build_leaves_no_file_folder(tmp_path):
    src = counting(fail_at=(1, 1))
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(tmp_path, source=src)
    handle = cache_handle(tiny_source(), sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, cache_root=tmp_path, name="tiny")
    assert handle.is_built(0) and not handle.file_dir(1).exists() and not handle.is_built(2)
    assert [p.name for p in handle.root.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(InputError, match="file_1: cache file not built"):
        handle.load([0, 1])
    build(tmp_path)  # resumes
    assert len(handle.load()) == 3 * 512


def test_half_built_temp_folder_is_never_read(tmp_path):
    handle = cache_handle(tiny_source(), sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=SIZE, cache_root=tmp_path, name="tiny")
    stale = handle.root / ".file_0.abc123.tmp"
    stale.mkdir(parents=True)
    (stale / "cutouts.npy").write_bytes(b"garbage")
    assert not handle.is_built(0)
    build(tmp_path)
    cs = handle.load()
    assert len(cs) == 3 * 512 and np.isfinite(cs.cutouts.take(np.arange(10)).astype(np.float32)).all()


def test_two_threads_building_the_same_cache_both_succeed(tmp_path):
    sources = [counting(delay=0.01), counting(delay=0.01)]
    handles, errors = [None, None], []

    def run(i):
        try:
            handles[i] = build(tmp_path, source=sources[i])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and handles[0].root == handles[1].root
    assert [p.name for p in handles[0].root.iterdir()] and not [p for p in handles[0].root.iterdir() if p.name.startswith(".file")]
    assert len(handles[0].load()) == 3 * 512


def _build_in_process(root: str) -> int:
    return len(build(Path(root), source=counting(delay=0.05), files=[0]).load())


def test_two_processes_building_the_same_cache_both_succeed(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        sizes = pool.map(_build_in_process, [str(tmp_path), str(tmp_path)])
    assert sizes == [512, 512]


def test_parallel_workers_give_the_same_cache(tmp_path, built):
    handle = build(tmp_path, n_jobs=2, files=[0])
    for name in ("cutouts.npy", "truth.npy"):
        np.testing.assert_array_equal(np.load(handle.file_dir(0) / name), np.load(built.file_dir(0) / name))
    a, b = np.load(handle.file_dir(0) / "meta.npz"), np.load(built.file_dir(0) / "meta.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"label_mode": "box"}, "data.label_mode: must be one of centre, trail"),
        ({"cutout_size": 20}, "data.cutout_size: must be an odd positive integer"),
        ({"dtype": "int8"}, "data.cache_dtype: must be one of"),
        ({"sigma": -1.0}, "data.sigma: must be a finite number >= 0"),
        ({"selector": None}, "data.selector: no candidate selector configured"),
        ({"files": [0, 7]}, "data.split: file 7 is not in the source"),
        ({"n_jobs": 0}, "data.n_jobs: must be a positive integer or -1"),
    ],
)
def test_bad_options(tmp_path, overrides, match):
    with pytest.raises(InputError, match=match):
        build(tmp_path, **overrides)
