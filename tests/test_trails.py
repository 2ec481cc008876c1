"""Trail detector (issue 15): line geometry against brute force, hand-made images, catalogue rows, the veto."""

import numpy as np
import pytest

from neocascade.detection.catalogue import (
    CATALOGUE_COLUMNS, catalogue_rows, merge_trails, read_catalogue, trail_rows, write_catalogue,
)
from neocascade.detection.streaks import StreakVeto, finite_trail
from neocascade.detection.trails import (
    TRAIL_KEYS, TrailDetector, bin_image, empty_trails, find_trails, point_segment_distance, segment_chord,
    trail_rates, trail_segments,
)
from neocascade.evaluation.trails import binned_completeness, expected_snr, match_trails, truth_segments
from neocascade.simulation.fast_movers import render_long_trail
from neocascade.simulation.streaks import line_pixels

SHAPE = (512, 512)


def noise_image(seed: int = 0, shape=SHAPE, sigma: float = 6.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sigma, shape).astype(np.float32)


def add_trail(image, *, x, y, length, angle, flux, fwhm=2.2):
    p = render_long_trail(image.shape, x=x, y=y, length=length, angle=angle, flux=flux, fwhm=fwhm, beta=3.0)
    np.add.at(image, (p.rows, p.cols), p.values)
    return image


def test_point_segment_distance_matches_brute_force():
    rng = np.random.default_rng(1)
    px, py = rng.uniform(-50, 50, (2, 40))
    x1, y1, x2, y2 = rng.uniform(-30, 30, (4, 7))
    x2[0], y2[0] = x1[0], y1[0]  # a zero-length segment is its end point
    t = np.linspace(0.0, 1.0, 20001)
    sx = x1[:, None] + t[None, :] * (x2 - x1)[:, None]
    sy = y1[:, None] + t[None, :] * (y2 - y1)[:, None]
    brute = np.hypot(px[:, None, None] - sx[None], py[:, None, None] - sy[None]).min(axis=2)
    fast = point_segment_distance(px[:, None], py[:, None], x1[None, :], y1[None, :], x2[None, :], y2[None, :])
    np.testing.assert_allclose(fast, brute, atol=5e-3)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0, 179.0])
def test_segment_chord_matches_brute_force(angle):
    x, y, shape = np.array([10.0, 100.0]), np.array([20.0, 5.0]), (60, 120)
    lo, hi = segment_chord(x, y, np.full(2, angle), shape)
    t = np.linspace(-300, 300, 600001)
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    for k in range(2):
        px, py = x[k] + t * c, y[k] + t * s
        inside = t[(px >= 0) & (px <= shape[1] - 1) & (py >= 0) & (py <= shape[0] - 1)]
        assert lo[k] == pytest.approx(inside.min(), abs=2e-3) and hi[k] == pytest.approx(inside.max(), abs=2e-3)


def test_bin_image_matches_nansum_and_counts():
    image = noise_image(2, (37, 42))
    image[3, 5] = image[10:13, 20] = np.nan
    sums, counts = bin_image(image, factor=4)
    blocks = image[:36, :40].reshape(9, 4, 10, 4)
    np.testing.assert_allclose(sums, np.nansum(blocks, axis=(1, 3)), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(counts, np.isfinite(blocks).sum(axis=(1, 3)))
    with pytest.raises(ValueError, match="factor: must be a positive integer"):
        bin_image(image, factor=0)


def test_trail_rates_and_position_angle():
    # north up (+y, 90 deg), east left (180 deg): a line at 10 deg points just south of east (PA 100) or of west
    rate, pa = trail_rates(np.array([30.0]), np.array([10.0]), exptime=30.0, pixel_scale=1.0, north_angle=90.0)
    assert rate[0] == pytest.approx(60.0) and pa[0] == pytest.approx(100.0)
    _, pa = trail_rates(np.array([30.0]), np.array([135.0]), exptime=30.0, north_angle=90.0)
    assert pa[0] == pytest.approx(45.0)  # up and to the left: north-east
    rate, pa = trail_rates(np.array([30.0]), np.array([10.0]), exptime=None)
    assert np.isnan(rate).all() and np.isnan(pa).all()


@pytest.mark.parametrize("length, angle", [(120.0, 35.0), (40.0, 160.0), (250.0, 92.0)])
def test_find_trails_recovers_a_hand_made_trail(length, angle):
    image = add_trail(noise_image(3), x=250.3, y=260.7, length=length, angle=angle, flux=20000.0)
    found = find_trails(image, exptime=30.0)
    assert set(found) == set(TRAIL_KEYS) and found["x"].size == 1
    assert found["x"][0] == pytest.approx(250.3, abs=1.5) and found["y"][0] == pytest.approx(260.7, abs=1.5)
    assert found["length"][0] == pytest.approx(length, abs=4.0)
    assert abs((found["angle"][0] - angle + 90) % 180 - 90) < 1.5
    assert found["flux"][0] == pytest.approx(20000.0, rel=0.12)
    assert found["snr"][0] > 50 and found["rate"][0] == pytest.approx(found["length"][0] * 1.01 * 2.0)
    ends = trail_segments(found)[0]
    half = 0.5 * length * np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))])
    expected = np.array([[250.3, 260.7] - half, [250.3, 260.7] + half])
    if np.abs(ends - expected).sum() > np.abs(ends[::-1] - expected).sum():
        ends = ends[::-1]
    np.testing.assert_allclose(ends, expected, atol=3.0)


def test_find_trails_ignores_noise_points_columns_and_satellites():
    assert find_trails(noise_image(4))["x"].size == 0
    image = noise_image(5)
    image[200:203, 300:303] += 2000.0  # a point-like source
    image[:, 100] += 40.0  # a bright bad column (1 px wide)
    rows, cols, values = line_pixels(SHAPE, x=256.0, y=100.0, angle=20.0, peak=200.0, fwhm=3.0)
    image[rows, cols] += values  # a satellite across the image
    found = find_trails(image, return_rejected=True)
    assert found["x"].size == 0 and found["rejected"]["x"].size >= 2


def test_find_trails_trail_leaving_the_image_and_masked_pixels():
    image = add_trail(noise_image(6), x=480.0, y=200.0, length=150.0, angle=0.0, flux=15000.0)
    image[150:250, 420:425] = np.nan  # a masked strip across the trail
    found = find_trails(image)
    assert found["x"].size == 1
    assert max(found["x1"][0], found["x2"][0]) == pytest.approx(511.0, abs=2.0)  # ends at the edge
    assert min(found["x1"][0], found["x2"][0]) == pytest.approx(405.0, abs=4.0)


def test_find_trails_bad_input():
    with pytest.raises(ValueError, match="image: expected a 2-D array"):
        find_trails(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="min_snr: must be a finite number"):
        find_trails(noise_image(0), min_snr=float("nan"))
    with pytest.raises(ValueError, match="need grow_snr <= seed_snr"):
        TrailDetector(seed_snr=2.0, grow_snr=3.0)


def test_catalogue_trail_rows_and_merge(tmp_path):
    trails = {**empty_trails()}
    trails.update({k: np.array([v]) for k, v in dict(x=50.0, y=60.0, x1=10.0, y1=60.0, x2=90.0, y2=60.0, length=80.0,
                                                      angle=0.0, flux=1234.5, snr=42.0, width=2.5, rate=161.6,
                                                      pa=90.0).items()})
    points = catalogue_rows({"x": np.array([30.0, 200.0]), "y": np.array([61.0, 10.0]), "p1": np.array([0.9, 0.8]),
                             "p2": np.array([0.95, 0.85]), "peak": np.array([100.0, 90.0]),
                             "snr": np.array([20.0, 18.0])}, file="a.npz", image=3)
    assert list(points["kind"]) == ["point", "point"] and np.isnan(points["length"]).all()
    rows = trail_rows(trails, file="a.npz", image=3)
    assert tuple(rows) == CATALOGUE_COLUMNS and rows["kind"][0] == "trail" and rows["length"][0] == 80.0
    on = TrailDetector().on_trail(points["x"], points["y"], trails)
    assert on.tolist() == [True, False]
    merged = merge_trails(points, rows, on)
    assert list(merged["kind"]) == ["point", "trail"] and merged["x"].tolist() == [200.0, 50.0]
    path = write_catalogue(tmp_path / "cat.csv", merged)
    back = read_catalogue(path)
    assert back[0]["kind"] == "point" and back[0]["length"] == "" and back[0]["p1"] == "0.8"
    assert back[1]["kind"] == "trail" and back[1]["x1"] == "10.00" and back[1]["length"] == "80.00"
    assert back[1]["flux"] == "1234.5" and back[1]["p1"] == "" and back[1]["detected"] == "1"


def test_veto_never_removes_a_finite_asteroid_trail_but_removes_a_satellite():
    image = add_trail(noise_image(7, (1024, 1024)), x=500.0, y=480.0, length=300.0, angle=25.0, flux=60000.0)
    t = np.linspace(-140, 140, 8)
    x, y = 500.0 + t * np.cos(np.deg2rad(25.0)), 480.0 + t * np.sin(np.deg2rad(25.0))
    veto = StreakVeto()
    assert not veto(x, y).any()  # without the pixels: the length rule removes them (the old behaviour)
    assert veto(x, y, image=image).all() and finite_trail(image, x, y)
    sat = noise_image(8, (1024, 1024))
    rows, cols, values = line_pixels(sat.shape, x=500.0, y=480.0, angle=25.0, peak=60.0, fwhm=2.5)
    sat[rows, cols] += values
    assert not veto(x, y, image=sat).any()


def test_evaluation_veto_reads_the_pixels_only_where_a_line_would_go():
    from neocascade.detection.detector import apply_veto

    trail = add_trail(noise_image(7, (1024, 1024)), x=500.0, y=480.0, length=300.0, angle=25.0, flux=60000.0)
    sat = noise_image(8, (1024, 1024))
    rows, cols, values = line_pixels(sat.shape, x=500.0, y=480.0, angle=25.0, peak=60.0, fwhm=2.5)
    sat[rows, cols] += values
    t = np.linspace(-140, 140, 8)
    x, y = 500.0 + t * np.cos(np.deg2rad(25.0)), 480.0 + t * np.sin(np.deg2rad(25.0))
    xs, ys = np.r_[x, x, 100.0], np.r_[y, y, 900.0]
    keys = np.r_[np.zeros(8, int), np.ones(8, int), 2]  # image 0: a trail, image 1: a satellite, image 2: one point
    asked = []

    def pixels(key):
        asked.append(key)
        return {0: trail, 1: sat}.get(key)

    keep = apply_veto(StreakVeto(), xs, ys, keys, pixels)
    assert keep[:8].all() and not keep[8:16].any() and keep[16]
    assert sorted(asked) == [0, 1]  # the lone point's image is never read
    assert not apply_veto(StreakVeto(), xs, ys, keys)[:16].any()  # without pixels: the length rule


def test_trail_metrics():
    seg = truth_segments(np.array([50.0, 200.0]), np.array([50.0, 200.0]), np.array([100.0, 5.0]),
                         np.array([0.0, 45.0]))
    found = {"x": np.array([20.0, 203.0, 400.0]), "y": np.array([51.0, 200.0, 400.0]),
             "angle": np.array([1.0, 90.0, 0.0])}
    truth_found, found_true = match_trails(seg, found)
    assert truth_found.tolist() == [True, True] and found_true.tolist() == [True, True, False]
    s = 2.2 / 2.3548
    assert expected_snr(1000.0, 0.0, noise_rms=5.0, fwhm=2.2) == pytest.approx(1000.0 / (5.0 * np.sqrt(4 * np.pi) * s))
    table = binned_completeness(np.array([1.0, 2.0, 12.0]), np.array([True, False, True]),
                                np.array([0.0, 10.0, 20.0, 30.0]))
    assert [r["completeness"] for r in table] == [0.5, 1.0, None]


def test_sky_motion_rate_and_position_angle():
    from neocascade.detection.trails import sky_motion

    rate, pa = sky_motion(np.array([10.0, 10.0]), np.array([0.0, 0.0]), np.array([10.0, 10.0 + 1 / 60]),
                          np.array([1 / 60, 0.0]), exptime=60.0)
    np.testing.assert_allclose(rate, [60.0, 60.0], rtol=1e-6)  # 1' in 1 min
    np.testing.assert_allclose(pa, [0.0, 90.0], atol=1e-6)  # north, then east


def test_detector_rows_merge_points_on_a_trail():
    image = add_trail(noise_image(9), x=250.0, y=250.0, length=150.0, angle=60.0, flux=30000.0)
    points = catalogue_rows({"x": np.array([250.0, 40.0]), "y": np.array([250.0, 40.0]), "p1": np.ones(2),
                             "p2": np.ones(2), "peak": np.ones(2), "snr": np.ones(2)}, file="f", image=0)
    rows = TrailDetector().rows(image, points, file="f", image=0, exptime=30.0)
    assert list(rows["kind"]) == ["point", "trail"] and rows["x"][0] == 40.0
    assert rows["rate"][1] == pytest.approx(rows["length"][1] * 1.01 * 2.0)


def _compose_eval(*overrides: str):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("trails_eval", overrides=list(overrides))


@pytest.mark.parametrize("option", ["default", "none"])
def test_trails_configs_build(option):
    from neocascade.detection.trails import build_trail_detector

    built = build_trail_detector(_compose_eval(f"trails={option}").trails)
    assert (built is None) if option == "none" else isinstance(built, TrailDetector)


def test_evaluate_trails_pipeline_on_tiny_images(tmp_path):
    import json

    from neocascade.errors import InputError
    from neocascade.pipelines.trails import evaluate_trails

    cfg = _compose_eval("data=long_trails_dev", "n_images=2", f"out={tmp_path}", "data.source.shape=[256,256]",
                        "data.source.n_asteroids=2", "+data.source.sim.fast_mover_length_range=[20.0,60.0]",
                        "data.source.sim.fast_mover_rate=700.0")
    metrics = evaluate_trails(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["images"] == 2
    assert metrics["trails_true"] > 0 and metrics["completeness_all"]["found"] > 0
    assert read_catalogue(tmp_path / "trails.csv")[0]["kind"] == "trail"
    with pytest.raises(InputError, match="already exists"):
        evaluate_trails(cfg)
    with pytest.raises(InputError, match="n_images: must be a positive integer"):
        evaluate_trails(_compose_eval("n_images=0", f"out={tmp_path / 'b'}"))


def test_visible_fraction_against_brute_force():
    from neocascade.evaluation.trails import visible_fraction

    image = np.ones((50, 60), np.float32)
    image[:, 30:] = np.nan
    image[:10] = 0.0  # a dead border
    frac = visible_fraction(image, np.array([10.0, 20.0, 5.0]), np.array([20.0, 20.0, 5.0]),
                            np.array([50.0, 20.0, 5.0]), np.array([20.0, 40.0, 5.0]))
    assert frac[0] == pytest.approx(20 / 41, abs=0.03) and frac[1] == 1.0 and frac[2] == 0.0


def test_trail_and_point_rows_survive_the_arrow_round_trip():
    from neocascade.detection.catalogue import from_arrow, to_arrow

    trails = {k: np.array([v]) for k, v in dict(x=50.0, y=60.0, x1=10.0, y1=60.0, x2=90.0, y2=60.0, length=80.0,
                                                 angle=0.0, flux=1234.5, snr=42.0, width=2.5, rate=np.nan,
                                                 pa=np.nan).items()}
    points = catalogue_rows({"x": np.array([200.0]), "y": np.array([10.0]), "p1": np.array([0.8]),
                             "p2": np.array([0.85]), "peak": np.array([90.0]), "snr": np.array([18.0])},
                            file="a.npz", image=3)
    merged = merge_trails(points, trail_rows(trails, file="a.npz", image=3), np.array([False]))
    table = to_arrow(merged)
    assert tuple(table.column_names) == CATALOGUE_COLUMNS
    back = from_arrow(table)
    assert list(back["kind"]) == ["point", "trail"] and np.isnan(back["x1"][0]) and back["x1"][1] == 10.0
    assert back["length"][1] == 80.0 and np.isnan(back["p1"][1]) and np.isnan(back["rate"]).all()
    assert tuple(to_arrow(points).column_names) == tuple(table.column_names)  # no trail: the same schema


def test_a_bright_point_on_a_trail_does_not_shorten_it():
    image = add_trail(noise_image(11), x=256.0, y=256.0, length=160.0, angle=20.0, flux=9000.0)
    c, s = np.cos(np.deg2rad(20.0)), np.sin(np.deg2rad(20.0))
    yy, xx = np.mgrid[:9, :9]
    spot = 4000.0 * np.exp(-0.5 * ((xx - 4) ** 2 + (yy - 4) ** 2) / 0.8**2)  # a cosmic ray / residual on the trail
    r0, c0 = int(round(256 + 50 * s)) - 4, int(round(256 + 50 * c)) - 4
    image[r0:r0 + 9, c0:c0 + 9] += spot.astype(np.float32)
    found = find_trails(image)
    assert found["x"].size == 1
    assert found["length"][0] == pytest.approx(160.0, abs=12.0)
    assert found["x"][0] == pytest.approx(256.0, abs=6.0) and found["y"][0] == pytest.approx(256.0, abs=6.0)


def test_a_trail_crossing_a_satellite_is_found_once_and_the_satellite_rejected():
    found_once = 0
    for seed in range(12, 24):  # SNR ~25 beside a satellite of SNR ~2,400: twelve noise draws, every one found
        image = noise_image(seed, (768, 768))
        rows, cols, values = line_pixels(image.shape, x=384.0, y=400.0, angle=2.0, fwhm=2.4, peak=400.0)
        image[rows, cols] += values
        add_trail(image, x=390.0, y=380.0, length=220.0, angle=60.0, flux=5000.0)
        found = find_trails(image, return_rejected=True)
        rejected = found.pop("rejected")
        satellite = rejected["reason"] == 1
        assert (np.abs((rejected["angle"][satellite] - 2.0 + 90.0) % 180.0 - 90.0) <= 2.0).any()
        found_once += int(found["x"].size == 1 and abs((found["angle"][0] - 60.0 + 90.0) % 180.0 - 90.0) <= 3.0)
    assert found_once == 12


def test_matched_filter_snr_white_noise_masks_and_monte_carlo():
    from neocascade.evaluation.trails import matched_filter_snr
    from neocascade.simulation.noise import correlated_noise

    shape = (160, 160)
    m = render_long_trail(shape, x=80.0, y=80.0, length=60.0, angle=30.0, flux=1500.0, fwhm=2.2, beta=3.0)
    valid, rms = np.ones(shape, dtype=bool), np.full(shape, 5.0, dtype=np.float32)
    white = matched_filter_snr(m.rows, m.cols, m.values, valid=valid, rms=rms, correlation=0.0)
    assert white == pytest.approx(np.sqrt(np.sum(m.values.astype(np.float64) ** 2)) / 5.0, rel=1e-6)
    half = valid.copy()
    half[:, 80:] = False
    masked = matched_filter_snr(m.rows, m.cols, m.values, valid=half, rms=rms, correlation=0.0)
    assert 0.6 * white < masked < 0.8 * white  # half the trail's energy: 1/sqrt(2) of the SNR
    assert matched_filter_snr(m.rows, m.cols, m.values, valid=np.zeros(shape, bool), rms=rms, correlation=0.3) == 0.0
    # correlated noise: the optimal filter's output over many noise draws has the predicted SNR
    rho = 0.3
    snr = matched_filter_snr(m.rows, m.cols, m.values, valid=valid, rms=rms, correlation=rho)
    assert snr < 0.8 * white  # correlated noise hides a smooth signal
    from neocascade.simulation.noise import correlation_kernel

    s = np.zeros(shape)
    np.add.at(s, (m.rows, m.cols), m.values)
    e, c, _ = correlation_kernel(rho)
    gain = [c + 2 * e * np.cos(2 * np.pi * np.fft.fftfreq(n)) for n in shape]
    w = np.real(np.fft.ifft2(np.fft.fft2(s) / (gain[0][:, None] * gain[1][None, :]) ** 2))
    rng = np.random.default_rng(5)
    outputs = [float((w * correlated_noise(shape, rng=rng, correlation=rho, rms=5.0)).sum()) for _ in range(400)]
    assert float((w * s).sum()) / np.std(outputs) == pytest.approx(snr, rel=0.1)


def test_trail_models_are_the_simulated_trails():
    from neocascade.simulation.config import SimConfig
    from neocascade.simulation.quadrant import simulate_image, trail_models

    config = SimConfig(shape=(400, 400), n_asteroids=3, fast_mover_rate=400.0, fast_mover_length_range=(20.0, 60.0),
                       noise_rms=0.01, noise_rms_range=(0.01, 0.01), poisson=False, cosmic_ray_rate=0.0,
                       hot_pixel_rate=0.0, star_residual_rate=0.0, saturated_rate=0.0, bad_column_rate=0.0,
                       satellite_probability=0.0, masked_region_rate=0.0, transient_rate=0.0)
    image, truth = simulate_image(config, seed=3, file_index=0, image_index=1)
    models, rms, rho = trail_models(config, seed=3, file_index=0, image_index=1)
    assert len(models) == len(truth) and len(truth) > 3
    model = np.zeros(image.shape)
    for m in models:
        np.add.at(model, (m.rows, m.cols), m.values)
    signal = np.abs(model) > 1.0
    np.testing.assert_allclose(np.nan_to_num(image)[signal], model[signal], rtol=0.02, atol=0.2)
    assert rho == config.noise_correlation and rms.shape == image.shape


def test_a_satellite_clipping_a_corner_is_not_a_trail():
    image = noise_image(14)
    rows, cols, values = line_pixels(image.shape, x=60.0, y=450.0, angle=45.0, peak=120.0, fwhm=2.6)
    image[rows, cols] += values  # visible over ~120 px only: the corner cuts it, both ends leave the image
    add_trail(image, x=300.0, y=200.0, length=120.0, angle=45.0, flux=15000.0)  # the same line length, inside
    found = find_trails(image, return_rejected=True)
    rejected = found.pop("rejected")
    assert found["x"].size == 1 and found["x"][0] == pytest.approx(300.0, abs=5.0)
    corner = (rejected["x"] < 150) & (rejected["y"] > 350)
    assert corner.any() and (rejected["reason"][corner] == 1).all()


def test_catalogue_matches_counts_points_off_trails_then_trails():
    from neocascade.evaluation.trails import catalogue_matches

    # 3 asteroids x 4 point detections: point 0 finds asteroid 0, points 1 and 2 lie on asteroid 1's found trail,
    # point 3 is false; asteroid 2 is found by nothing
    d = np.array([[1.0, 50.0, 60.0, 90.0], [40.0, 0.5, 2.0, 80.0], [70.0, 70.0, 70.0, 70.0]])
    m = catalogue_matches(d, np.array([False, True, True, False]), np.array([False, True, False]),
                          np.array([True, False]), radius=3.0)
    assert m["found_alone"].tolist() == [True, True, False]
    assert m["found_with_trails"].tolist() == [True, True, False]
    assert (m["true_alone"], m["detections_alone"]) == (3, 4)
    assert (m["true_with_trails"], m["detections_with_trails"]) == (1 + 1, 2 + 2)  # points 0 and 3, then 2 trails
