"""Fast movers and long-streak confusers in the simulator (issue 15); today's defaults stay bit-identical."""

import hashlib

import numpy as np
import pytest

from neocascade.simulation import artifacts as art
from neocascade.simulation.config import SimConfig
from neocascade.simulation.fast_movers import draw_fast_movers, render_long_trail, satellite_line, shape_streak
from neocascade.simulation.quadrant import _streams, simulate_image
from neocascade.simulation.streaks import line_pixels


def test_defaults_are_bit_identical_to_before_fast_movers():
    # sha256 prefixes recorded before the fast movers were added (same config, seed and indices)
    config = SimConfig(shape=(256, 256), n_asteroids=20, transient_rate=0.5, satellite_probability=1.0,
                       bad_column_rate=40.0)
    image, truth = simulate_image(config, seed=2021, file_index=3, image_index=1)
    assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == "08d45f045b288171"
    assert hashlib.sha256(truth.tobytes()).hexdigest()[:16] == "23fe3e87c46f4103"
    assert not {"fast_mover_rate", "satellite_flare_probability"} & set(SimConfig().to_dict())
    assert SimConfig(fast_mover_rate=1.0).to_dict()["fast_mover_rate"] == 1.0


def test_render_long_trail_flux_centre_and_extent():
    p = render_long_trail((400, 400), x=200.0, y=180.0, length=240.0, angle=30.0, flux=5000.0, fwhm=2.2, beta=3.0)
    v = p.values.astype(np.float64)
    assert v.sum() == pytest.approx(5000.0, rel=1e-5)
    assert np.unique(p.rows * 400 + p.cols).size == v.size
    assert np.average(p.cols, weights=v) == pytest.approx(200.0, abs=0.05)
    assert np.average(p.rows, weights=v) == pytest.approx(180.0, abs=0.05)
    u = (p.cols - 200.0) * np.cos(np.deg2rad(30.0)) + (p.rows - 180.0) * np.sin(np.deg2rad(30.0))
    assert np.sqrt(np.average(u * u, weights=v)) == pytest.approx(240.0 / np.sqrt(12.0), rel=0.02)


def test_render_long_trail_leaving_the_image_loses_its_outside_flux():
    p = render_long_trail((100, 100), x=99.0, y=50.0, length=100.0, angle=0.0, flux=1000.0, fwhm=2.0, beta=3.0)
    assert p.values.sum() == pytest.approx(500.0, rel=0.02) and p.cols.max() == 99


def test_draw_fast_movers_ranges():
    rows = draw_fast_movers((300, 200), rng=np.random.default_rng(0), n=500, length_range=(10, 300),
                            magnitude_range=(13.5, 18.5))
    assert rows.shape == (500, 5) and rows[:, 0].max() <= 199 and rows[:, 1].max() <= 299
    assert rows[:, 3].min() >= 10 and rows[:, 3].max() <= 300 and 13.5 <= rows[:, 2].min()


def test_simulate_image_appends_fast_movers_after_the_asteroids():
    base = SimConfig(shape=(512, 512), n_asteroids=5)
    fast = SimConfig(shape=(512, 512), n_asteroids=5, fast_mover_rate=300.0)
    _, t0 = simulate_image(base, seed=1, file_index=0, image_index=0)
    image, t1 = simulate_image(fast, seed=1, file_index=0, image_index=0)
    np.testing.assert_array_equal(t1[:5], t0)
    assert len(t1) > 5 and (t1[5:, 4] >= 10).all() and (t1[5:, 4] <= 300).all()


def test_shape_streak_flare_and_dash():
    pixels = art.Pixels(*line_pixels((300, 300), x=150.0, y=150.0, angle=10.0, peak=50.0, fwhm=2.0))
    same = shape_streak(pixels, rng=np.random.default_rng(0), flare_probability=0.0, dash_probability=0.0)
    assert same is pixels
    flared = shape_streak(pixels, rng=np.random.default_rng(0), flare_probability=1.0, dash_probability=0.0)
    assert flared.values.max() > 1.9 * pixels.values.max() and (flared.values >= pixels.values).all()
    dashed = shape_streak(pixels, rng=np.random.default_rng(0), flare_probability=0.0, dash_probability=1.0)
    off = dashed.values == 0
    assert 0.2 < off.mean() < 0.8


def test_satellite_line_is_the_painted_streak():
    config = SimConfig(shape=(256, 256), satellite_probability=1.0)
    line = satellite_line(config, seed=4, file_index=0, image_index=2)
    streak = art.satellites(config.shape, rng=_streams(4, 0, 2)["satellites"], probability=1.0,
                            dn_range=config.satellite_dn_range, fwhm=2.0)
    x, y, angle = line
    d = np.abs(-(streak.cols - x) * np.sin(np.deg2rad(angle)) + (streak.rows - y) * np.cos(np.deg2rad(angle)))
    assert d.max() < 3 * 2.0 * 2.0 + 1.5
    assert satellite_line(SimConfig(shape=(256, 256), satellite_probability=0.0), seed=4, file_index=0,
                          image_index=2) is None
