"""candidates: selectors, cutouts, labels and extraction against hand-made answers and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from neocascade.candidates.cutouts import cutouts
from neocascade.candidates.extract import Candidates, extract_candidates
from neocascade.candidates.footprint import FootprintSelector, footprint_peaks
from neocascade.candidates.grid import GridSelector, grid_centres
from neocascade.candidates.labels import match_centres, match_trails
from neocascade.candidates.peaks import PeakSelector, local_maxima
from neocascade.preprocess.filters import gaussian_filter
from neocascade.preprocess.noise import local_noise_map, robust_noise


def _footprint_loop(image, kernel, stride, edge):
    """Brute force: explicit block loop, np.argmax on each block with non-finite pixels as -inf."""
    h, w = image.shape
    found = set()
    def starts(n):
        if edge == "drop":
            return range(0, n - kernel + 1, stride)
        out, s = [], 0
        while True:
            out.append(s)
            if s + kernel >= n:
                return out
            s += stride
    for r0 in starts(h):
        for c0 in starts(w):
            block = image[r0 : r0 + kernel, c0 : c0 + kernel]
            work = np.where(np.isfinite(block), block, -np.inf)
            if np.isfinite(work).any():
                r, c = np.unravel_index(np.argmax(work), work.shape)
                found.add((r0 + r, c0 + c))
    found = sorted(found)
    return np.array([f[0] for f in found], dtype=np.int64), np.array([f[1] for f in found], dtype=np.int64)


# ---------------------------------------------------------------- footprint


def test_footprint_known_4x4_blocks():
    image = np.zeros((8, 8), dtype=np.float32)
    image[1, 2] = 5.0  # block (0, 0)
    image[2, 6] = 3.0  # block (0, 1)
    image[5, 1], image[6, 1] = 4.0, np.nan  # block (1, 0): NaN must not win
    image[7, 7] = -1.0  # block (1, 1) is all zeros except this: first zero (4, 4) wins
    rows, cols = footprint_peaks(image, kernel=4, stride=4)
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    assert list(zip(rows.tolist(), cols.tolist())) == [(1, 2), (2, 6), (4, 4), (5, 1)]


def test_footprint_nan_never_wins_and_all_nan_block_gives_nothing():
    image = np.full((4, 8), np.nan, dtype=np.float32)
    image[3, 0] = -100.0
    rows, cols = footprint_peaks(image, kernel=4, stride=4)
    assert rows.tolist() == [3] and cols.tolist() == [0]
    rows, cols = footprint_peaks(np.full((6, 6), np.nan), kernel=3, stride=3)
    assert rows.shape == (0,) and cols.dtype == np.int64


@pytest.mark.parametrize("shape", [(23, 17), (32, 32), (5, 40), (3, 3)])
@pytest.mark.parametrize(("kernel", "stride"), [(4, 4), (5, 3), (6, 2), (7, 7), (3, 5), (50, 50)])
@pytest.mark.parametrize("edge", ["keep", "drop"])
def test_footprint_matches_block_loop(shape, kernel, stride, edge):
    rng = np.random.default_rng(kernel * 100 + stride)
    image = rng.normal(size=shape).astype(np.float32)
    image[rng.random(shape) < 0.15] = np.nan
    image[0, :] = np.inf  # non-finite: never wins
    rows, cols = footprint_peaks(image, kernel=kernel, stride=stride, edge=edge)
    ref_rows, ref_cols = _footprint_loop(image, kernel, stride, edge)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(cols, ref_cols)


def test_footprint_ties_go_row_major_first():
    image = np.zeros((3, 3))
    image[2, 0] = image[1, 2] = 1.0
    rows, cols = footprint_peaks(image, kernel=3, stride=3)
    assert (rows.tolist(), cols.tolist()) == ([1], [2])


def test_footprint_edge_counts_on_a_quadrant_shape():
    image = np.zeros((3080, 3072), dtype=np.float32)
    assert footprint_peaks(image, kernel=50, stride=50, edge="drop")[0].size == 61 * 61
    assert footprint_peaks(image, kernel=50, stride=50, edge="keep")[0].size == 62 * 62


def test_footprint_edge_keep_reaches_the_corner():
    image = np.zeros((10, 10), dtype=np.float32)
    image[9, 9] = 1.0
    rows, cols = footprint_peaks(image, kernel=4, stride=4)
    assert (9, 9) in set(zip(rows.tolist(), cols.tolist()))
    rows, cols = footprint_peaks(image, kernel=4, stride=4, edge="drop")
    assert (9, 9) not in set(zip(rows.tolist(), cols.tolist())) and rows.size == 4


def test_footprint_overlapping_windows_share_a_peak_once():
    image = np.zeros((8, 8), dtype=np.float32)
    image[3, 3] = 9.0
    rows, cols = footprint_peaks(image, kernel=4, stride=2, edge="drop")
    assert list(zip(rows.tolist(), cols.tolist())).count((3, 3)) == 1


def test_footprint_selector_and_bad_input():
    image = np.random.default_rng(0).normal(size=(20, 20))
    sel = FootprintSelector(kernel=5, stride=5)
    for a, b in zip(sel(image), footprint_peaks(image, kernel=5, stride=5)):
        np.testing.assert_array_equal(a, b)
    assert "kernel=5" in repr(sel)
    with pytest.raises(ValueError, match="kernel: must be a positive integer"):
        footprint_peaks(image, kernel=0, stride=1)
    with pytest.raises(ValueError, match="stride: must be a positive integer"):
        FootprintSelector(kernel=3, stride=2.5)
    with pytest.raises(ValueError, match="edge: must be one of"):
        footprint_peaks(image, kernel=3, stride=3, edge="pad")
    with pytest.raises(ValueError, match="image: must be a 2-D array"):
        footprint_peaks(np.zeros(3), kernel=3, stride=3)


# ---------------------------------------------------------------- grid


def test_grid_centres():
    rows, cols = grid_centres(np.zeros((10, 7)), tile=4)
    assert sorted(set(rows.tolist())) == [2, 6, 9] and sorted(set(cols.tolist())) == [2, 5]
    assert rows.size == 6 and rows.dtype == np.int64
    rows, cols = GridSelector(tile=4, edge="drop")(np.zeros((10, 7)))
    assert rows.tolist() == [2, 6] and cols.tolist() == [2, 2]
    assert grid_centres(np.zeros((3, 3)), tile=4, edge="drop")[0].size == 0
    with pytest.raises(ValueError, match="tile: must be a positive integer"):
        GridSelector(tile=0)


# ---------------------------------------------------------------- local maxima


def _maxima_loop(image, threshold, d, noise):
    """Brute force: each pixel against its (2d+1)^2 neighbourhood; ties to the row-major first peak."""
    h, w = image.shape
    out = []
    for r in range(h):
        for c in range(w):
            v = image[r, c]
            if not np.isfinite(v) or not v >= threshold * noise[r, c]:
                continue
            hood = image[max(r - d, 0) : r + d + 1, max(c - d, 0) : c + d + 1]
            if np.nanmax(np.where(np.isfinite(hood), hood, -np.inf)) > v:
                continue
            if any(abs(r - r2) <= d and abs(c - c2) <= d and image[r2, c2] == v for r2, c2 in out):
                continue
            out.append((r, c))
    return out


def test_local_maxima_matches_brute_force():
    rng = np.random.default_rng(8)
    image = ndi.gaussian_filter(rng.normal(size=(48, 40)), 1.0).astype(np.float32)
    image[rng.random(image.shape) < 0.05] = np.nan
    image[10, 10] = image[10, 12] = 5.0  # a tie within min_distance: keep (10, 10)
    noise = local_noise_map(image, box=32)
    rows, cols = local_maxima(image, threshold=1.0, min_distance=3, noise_box=32)
    expected = _maxima_loop(image, 1.0, 3, noise)
    assert list(zip(rows.tolist(), cols.tolist())) == expected
    assert (10, 10) in expected and (10, 12) not in expected


@pytest.mark.parametrize("threshold", [3.0, 0.5, -1.0])
def test_local_maxima_sparse_and_dense_paths_agree(monkeypatch, threshold):
    """Few passing pixels are checked one by one, many go through one maximum filter: same peaks."""
    import neocascade.candidates.peaks as P

    rng = np.random.default_rng(10)
    image = ndi.gaussian_filter(rng.normal(size=(90, 70)), 1.0).astype(np.float32)
    image[rng.random(image.shape) < 0.03] = np.nan
    image[0, 5] = image[89, 69] = 9.0  # maxima on the border
    image[30, 30] = image[30, 33] = 7.0  # a tie within min_distance
    found = {}
    for name, fraction in (("sparse", 2.0), ("dense", -1.0)):
        monkeypatch.setattr(P, "_DENSE_FRACTION", fraction)
        monkeypatch.setattr(P, "_CHUNK", 7)  # several chunks of neighbourhoods
        found[name] = local_maxima(image, threshold=threshold, min_distance=3, noise_box=32)
    np.testing.assert_array_equal(found["sparse"][0], found["dense"][0])
    np.testing.assert_array_equal(found["sparse"][1], found["dense"][1])
    expected = _maxima_loop(image, threshold, 3, local_noise_map(image, box=32))
    assert list(zip(*(a.tolist() for a in found["sparse"]))) == expected


def test_shared_noise_tiles_give_the_same_candidates():
    """extract_candidates hands the peaks selector the local noise it measured; nothing changes."""
    from neocascade.preprocess.noise import _tile_noise

    rng = np.random.default_rng(11)
    image = rng.normal(size=(100, 90)).astype(np.float32)
    image[40:43, 50:53] += 40.0
    selector = PeakSelector(threshold=5.0, min_distance=4, noise_box=32)
    filtered = ndi.gaussian_filter(image, 1.0)
    tiles = _tile_noise(filtered, 32)
    for a, b in zip(selector(filtered), selector(filtered, noise_tiles=tiles)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"noise_tiles: expected shape \(4, 3\)"):
        selector(filtered, noise_tiles=tiles[:2])
    shared = extract_candidates(image, sigma=1.0, selector=selector, noise_box=32)
    alone = extract_candidates(image, sigma=1.0, selector=lambda f: selector(f), noise_box=32)
    np.testing.assert_array_equal(shared.rows, alone.rows)
    np.testing.assert_array_equal(shared.cutouts, alone.cutouts)


def test_local_maxima_snr_threshold_and_nan():
    rng = np.random.default_rng(9)
    image = rng.normal(size=(64, 64)).astype(np.float32)
    image[20, 30] = 50.0
    image[40, 40] = np.nan
    rows, cols = PeakSelector(threshold=10.0, min_distance=5, noise_box=64)(image)
    assert rows.tolist() == [20] and cols.tolist() == [30]
    rows, cols = local_maxima(np.full((8, 8), np.nan), threshold=1.0, min_distance=1)
    assert rows.shape == (0,) and rows.dtype == np.int64
    with pytest.raises(ValueError, match="min_distance"):
        PeakSelector(threshold=1.0, min_distance=-1, noise_box=8)
    with pytest.raises(ValueError, match="threshold"):
        local_maxima(image, threshold=float("nan"), min_distance=1)


# ---------------------------------------------------------------- cutouts


def test_cutouts_corner_padding_and_nan_fill():
    image = np.arange(25, dtype=np.float32).reshape(5, 5)
    image[1, 1] = np.nan
    out = cutouts(image, np.array([0, 2]), np.array([0, 2]), size=3, fill=-1.0)
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [[-1, -1, -1], [-1, 0, 1], [-1, 5, -1]])
    np.testing.assert_array_equal(out[1], [[-1, 7, 8], [11, 12, 13], [16, 17, 18]])
    assert np.isnan(image[1, 1])  # input untouched


def test_cutouts_match_padded_slicing():
    rng = np.random.default_rng(10)
    image = rng.normal(size=(30, 26)).astype(np.float32)
    image[rng.random(image.shape) < 0.1] = np.nan
    rows, cols = rng.integers(0, 30, 40), rng.integers(0, 26, 40)
    out = cutouts(image, rows, cols, size=7)
    padded = np.pad(np.nan_to_num(image, nan=0.0), 3)
    for i, (r, c) in enumerate(zip(rows, cols)):
        np.testing.assert_array_equal(out[i], padded[r : r + 7, c : c + 7])


def test_cutouts_empty_and_bad_input():
    image = np.zeros((10, 10), dtype=np.float32)
    assert cutouts(image, np.zeros(0, np.int64), np.zeros(0, np.int64), size=5).shape == (0, 5, 5)
    with pytest.raises(ValueError, match="size: must be a positive odd integer"):
        cutouts(image, np.array([1]), np.array([1]), size=4)
    with pytest.raises(ValueError, match=r"centre 1 \(row 10, col 3\) is outside the 10x10 image"):
        cutouts(image, np.array([1, 10]), np.array([1, 3]))
    with pytest.raises(ValueError, match="rows, cols: must have the same length"):
        cutouts(image, np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="rows: must hold integers"):
        cutouts(image, np.array([1.5]), np.array([1]))


# ---------------------------------------------------------------- labels


def test_match_centres_radius_boundary_and_nearest():
    truth_xy = np.array([[10.0, 20.0], [14.0, 20.0]])  # x, y
    rows = np.array([20, 23, 20, 20, 0])
    cols = np.array([10, 14, 13, 15, 0])  # exact hit; 3 px below truth 1; 1 from truth 1; 1 from truth 1; far
    label, matched = match_centres(rows, cols, truth_xy, radius=1.0)
    assert label.tolist() == [True, False, True, True, False]
    assert matched.tolist() == [0, -1, 1, 1, -1] and matched.dtype == np.int64
    label, matched = match_centres(np.array([24]), np.array([13]), np.array([[10.0, 20.0]]), radius=5.0)
    assert label.tolist() == [True] and matched.tolist() == [0]  # 3-4-5: exactly on the radius
    label, _ = match_centres(np.array([24]), np.array([13]), np.array([[10.0, 20.0]]), radius=4.999)
    assert label.tolist() == [False]


def test_match_centres_brute_force_and_empty():
    rng = np.random.default_rng(11)
    rows, cols = rng.integers(0, 50, 200), rng.integers(0, 50, 200)
    truth_xy = rng.uniform(0, 50, (15, 2))
    label, matched = match_centres(rows, cols, truth_xy, radius=3.0)
    d = np.hypot(cols[:, None] - truth_xy[None, :, 0], rows[:, None] - truth_xy[None, :, 1])
    np.testing.assert_array_equal(label, d.min(1) <= 3.0)
    np.testing.assert_array_equal(matched, np.where(d.min(1) <= 3.0, d.argmin(1), -1))
    label, matched = match_centres(rows, cols, np.zeros((0, 2)))
    assert not label.any() and (matched == -1).all()
    label, matched = match_centres(np.zeros(0, np.int64), np.zeros(0, np.int64), truth_xy)
    assert label.shape == (0,) and matched.dtype == np.int64
    with pytest.raises(ValueError, match=r"truth_xy: must have shape \(M, 2\)"):
        match_centres(rows, cols, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="radius"):
        match_centres(rows, cols, truth_xy, radius=-1.0)


def test_match_trails_point_far_along_a_long_trail():
    # image, x, y, magnitude, length, angle: a 100-px trail at 30 degrees centred on (200, 100)
    truth = np.array([[0, 200.0, 100.0, 19.0, 100.0, 30.0]])
    a = np.deg2rad(30.0)
    x, y = 200 + 45 * np.cos(a), 100 + 45 * np.sin(a)  # 45 px from the centre, on the trail
    rows, cols = np.array([round(y), round(y) + 6]), np.array([round(x), round(x)])
    label, matched = match_trails(rows, cols, truth, radius=1.5)
    assert label.tolist() == [True, False] and matched.tolist() == [0, -1]
    label, _ = match_centres(rows, cols, truth[:, 1:3], radius=1.5)
    assert not label.any()
    # Beyond the trail's end: distance is to the end point.
    ex = 200 + 50 * np.cos(a) + 2 * np.cos(a)
    ey = 100 + 50 * np.sin(a) + 2 * np.sin(a)
    label4, _ = match_trails(np.array([ey]), np.array([ex]), truth[:, [1, 2, 4, 5]], radius=1.9)
    assert label4.tolist() == [False]
    label4, _ = match_trails(np.array([ey]), np.array([ex]), truth[:, [1, 2, 4, 5]], radius=2.0 + 1e-9)
    assert label4.tolist() == [True]


def test_match_trails_brute_force_nearest_and_empty():
    rng = np.random.default_rng(12)
    n, m = 300, 12
    rows, cols = rng.integers(0, 100, n), rng.integers(0, 100, n)
    truth = np.column_stack([np.zeros(m), rng.uniform(0, 100, (m, 2)), np.full(m, 18.0),
                             rng.uniform(0, 30, m), rng.uniform(0, 180, m)])
    truth[0, 4] = 0.0  # a point source
    label, matched = match_trails(rows, cols, truth, radius=2.0)
    a = np.deg2rad(truth[:, 5])
    ux, uy = np.cos(a), np.sin(a)
    d = np.empty((n, m))
    for j in range(m):
        ts = np.linspace(-truth[j, 4] / 2, truth[j, 4] / 2, 3001)
        px, py = truth[j, 1] + ts * ux[j], truth[j, 2] + ts * uy[j]
        d[:, j] = np.hypot(cols[:, None] - px[None], rows[:, None] - py[None]).min(1)
    sure = np.abs(d.min(1) - 2.0) > 2e-2  # leave out the sampled reference's rounding band
    np.testing.assert_array_equal(label[sure], (d.min(1) <= 2.0)[sure])
    hit = label & sure
    np.testing.assert_array_equal(matched[hit], d.argmin(1)[hit])
    assert (matched[~label] == -1).all()
    label, matched = match_trails(rows, cols, np.zeros((0, 6)), radius=2.0)
    assert not label.any() and (matched == -1).all()
    label, matched = match_trails(np.zeros(0), np.zeros(0), truth, radius=2.0)
    assert label.shape == (0,) and matched.shape == (0,)
    with pytest.raises(ValueError, match=r"truth: must have shape \(M, 6\)"):
        match_trails(rows, cols, np.zeros((2, 5)), radius=1.0)


# ---------------------------------------------------------------- extract


def test_extract_candidates_pixels_and_fields():
    rng = np.random.default_rng(13)
    image = rng.normal(size=(64, 80)).astype(np.float32)
    image[:, :3] = 0.0  # dead border
    image[30, 40] = 40.0
    before = image.copy()
    cand = extract_candidates(image, sigma=1.0, selector=FootprintSelector(kernel=16, stride=16), cutout_size=9)
    masked = np.where(image == 0, np.nan, image)
    filtered = gaussian_filter(masked, sigma=1.0)
    np.testing.assert_array_equal(cand.filtered, filtered)
    np.testing.assert_array_equal(image, before)
    rows, cols = footprint_peaks(filtered, kernel=16, stride=16)
    np.testing.assert_array_equal(cand.rows, rows)
    np.testing.assert_array_equal(cand.cols, cols)
    assert cand.cutouts.shape == (len(rows), 2, 9, 9) and cand.cutouts.dtype == np.float32
    np.testing.assert_array_equal(cand.cutouts[:, 0], cutouts(filtered, rows, cols, size=9))
    np.testing.assert_array_equal(cand.cutouts[:, 1], cutouts(masked, rows, cols, size=9))
    assert np.isfinite(cand.cutouts).all()
    np.testing.assert_array_equal(cand.peak, filtered[rows, cols])
    assert cand.image_noise == pytest.approx(robust_noise(masked))
    i = int(np.flatnonzero((cand.rows == 30) & (cand.cols == 40))[0])
    assert cand.local_noise[i] == pytest.approx(robust_noise(filtered[:64, :80]), rel=1e-5)  # one 128-px box
    assert cand.cutouts[i, 1, 4, 4] == 40.0 and len(cand) == len(rows)


def test_extract_candidates_local_noise_per_box():
    image = np.random.default_rng(14).normal(size=(40, 40)).astype(np.float32)
    image[20:, 20:] *= 5
    cand = extract_candidates(image, sigma=0.0, selector=GridSelector(tile=20), cutout_size=3, noise_box=20)
    expected = [robust_noise(image[r // 20 * 20 : r // 20 * 20 + 20, c // 20 * 20 : c // 20 * 20 + 20])
                for r, c in zip(cand.rows, cand.cols)]
    np.testing.assert_allclose(cand.local_noise, expected, rtol=1e-5)


def test_extract_candidates_empty_and_bad_selector():
    image = np.ones((20, 20), dtype=np.float32)
    cand = extract_candidates(image, sigma=1.0, selector=lambda f: (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    assert isinstance(cand, Candidates) and len(cand) == 0
    assert cand.cutouts.shape == (0, 2, 21, 21) and cand.rows.dtype == np.int64
    assert cand.peak.shape == (0,) and cand.local_noise.shape == (0,)
    with pytest.raises(ValueError, match="selector: rows, cols: centre 0"):
        extract_candidates(image, sigma=1.0, selector=lambda f: (np.array([25]), np.array([0])))
    with pytest.raises(ValueError, match="selector: must be callable"):
        extract_candidates(image, sigma=1.0, selector=None)
    with pytest.raises(ValueError, match="cutout_size: must be a positive odd integer"):
        extract_candidates(image, sigma=1.0, selector=GridSelector(tile=5), cutout_size=20)
    with pytest.raises(ValueError, match="sigma"):
        extract_candidates(image, sigma=-1, selector=GridSelector(tile=5))
