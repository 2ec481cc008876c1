"""Tests of the ZTF-like simulator: determinism, truth, noise, PSF, photometry, dead borders."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from neocascade.simulation import SimConfig, draw_conditions, simulate_file, simulate_image
from neocascade.simulation.artifacts import cosmic_rays, flux_of
from neocascade.simulation.noise import correlated_noise, correlation_kernel
from neocascade.simulation.psf import measure_fwhm
from neocascade.simulation.streaks import line_pixels, render_trail

SMALL = (256, 256)

# every nuisance off, no noise: only the asteroids remain, exactly
QUIET = dict(
    noise_rms=0.0, noise_rms_range=(0.0, 0.0), poisson=False, star_residual_rate=0.0, saturated_rate=0.0,
    cosmic_ray_rate=0.0, hot_pixel_rate=0.0, bad_column_rate=0.0, satellite_probability=0.0, transient_rate=0.0,
    dead_border_probability=0.0, masked_region_rate=0.0,
)


def test_same_seed_same_image_and_image_alone_equals_file_member():
    config = SimConfig(shape=SMALL, n_asteroids=6)
    a, ta = simulate_image(config, seed=3, file_index=2, image_index=1)
    b, tb = simulate_image(config, seed=3, file_index=2, image_index=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta, tb)
    images, truth = simulate_file(config, seed=3, file_index=2, n_images=3)
    np.testing.assert_array_equal(images[1], a)
    np.testing.assert_array_equal(truth[truth[:, 0] == 1], ta)
    c, _ = simulate_image(config, seed=3, file_index=2, image_index=2)
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(c))


def test_changing_one_rate_leaves_the_asteroids_unchanged():
    base = SimConfig(shape=SMALL, n_asteroids=6)
    busier = dataclasses.replace(base, cosmic_ray_rate=5000.0)
    _, t1 = simulate_image(base, seed=1, file_index=0, image_index=0)
    _, t2 = simulate_image(busier, seed=1, file_index=0, image_index=0)
    np.testing.assert_array_equal(t1, t2)


def test_simulate_file_fills_a_preallocated_array():
    config = SimConfig(shape=(64, 80), n_asteroids=2)
    out = np.full((2, 64, 80), -1.0, dtype=np.float32)
    images, truth = simulate_file(config, seed=0, file_index=0, n_images=2, out=out)
    assert images is out and truth.shape == (4, 6)
    np.testing.assert_array_equal(truth[:, 0], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="out: must be float32 with shape"):
        simulate_file(config, seed=0, file_index=0, n_images=3, out=out)


def test_truth_columns_and_ranges():
    config = SimConfig(shape=SMALL, n_asteroids=50)
    image, truth = simulate_image(config, seed=5, file_index=1, image_index=4)
    assert image.dtype == np.float32 and image.shape == SMALL
    assert truth.dtype == np.float64 and truth.shape == (50, 6)
    assert np.all(truth[:, 0] == 4)
    assert np.all((truth[:, 1] >= 0) & (truth[:, 1] <= SMALL[1] - 1))
    assert np.all((truth[:, 2] >= 0) & (truth[:, 2] <= SMALL[0] - 1))
    lo, hi = config.magnitude_range
    assert np.all((truth[:, 3] >= lo) & (truth[:, 3] <= hi))
    assert np.all((truth[:, 4] >= 0) & (truth[:, 4] <= config.fast_length_range[1]))
    assert np.all((truth[:, 5] >= 0) & (truth[:, 5] < 180))


def test_tiny_preset_shape_and_no_asteroids():
    image, truth = simulate_image(SimConfig(shape=SMALL, n_asteroids=6), seed=7, file_index=9, image_index=1)
    assert image.shape == SMALL and truth.shape == (6, 6)
    image, truth = simulate_image(SimConfig(shape=SMALL, n_asteroids=0), seed=7, file_index=0, image_index=0)
    assert image.shape == SMALL and truth.shape == (0, 6) and truth.dtype == np.float64


def test_noise_statistics_within_the_seed_range():
    config = SimConfig(shape=(512, 512), n_asteroids=0)
    mads = []
    for i in range(6):
        image, _ = simulate_image(config, seed=11, file_index=0, image_index=i)
        live = image[np.isfinite(image) & (image != 0)]
        mads.append(1.4826 * np.median(np.abs(live - np.median(live))))
        assert abs(np.median(live)) < 0.3
    assert np.all((np.array(mads) > 4.6) & (np.array(mads) < 7.8))
    assert np.ptp(mads) > 0.1  # the noise level differs between images


def test_correlated_noise_has_unit_variance_and_the_asked_correlation():
    taps = correlation_kernel(0.4)
    assert np.isclose((taps.astype(np.float64) ** 2).sum(), 1.0)
    noise = correlated_noise((400, 400), rng=np.random.default_rng(0), correlation=0.4, rms=6.0)
    assert noise.dtype == np.float32
    assert noise.std() == pytest.approx(6.0, rel=0.02)
    rho_x = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    rho_y = np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]
    assert rho_x == pytest.approx(0.4, abs=0.02) and rho_y == pytest.approx(0.4, abs=0.02)


@pytest.mark.parametrize("fwhm, beta", [(1.5, 2.5), (2.2, 3.0), (3.0, 4.0)])
def test_rendered_psf_has_the_configured_fwhm(fwhm, beta):
    stamp, _, _ = render_trail(40.0, 30.0, length=0.0, angle=0.0, fwhm=fwhm, beta=beta)
    assert stamp.sum() == pytest.approx(1.0, rel=1e-5)
    assert measure_fwhm(stamp, beta=beta) == pytest.approx(fwhm, rel=0.01)


def test_injected_source_fwhm_matches_the_image_conditions():
    config = SimConfig(shape=SMALL, n_asteroids=1, slow_length_max=0.0, fast_fraction=0.0, **QUIET)
    image, truth = simulate_image(config, seed=2, file_index=0, image_index=0)
    cond = draw_conditions(config, seed=2, file_index=0, image_index=0)
    x, y = np.rint(truth[0, 1:3]).astype(int)
    padded = np.pad(image, 20)
    cutout = padded[y:y + 41, x:x + 41]
    assert measure_fwhm(cutout, beta=cond.beta) == pytest.approx(cond.fwhm, rel=0.02)
    assert config.fwhm_range[0] <= cond.fwhm <= config.fwhm_range[1]


def test_source_flux_follows_the_zero_point():
    config = SimConfig(shape=(400, 400), n_asteroids=12, **QUIET)
    image, truth = simulate_image(config, seed=4, file_index=0, image_index=0)
    padded = np.pad(image, 30)
    xy = truth[:, 1:3]
    checked = 0
    for x, y, mag in truth[:, 1:4]:
        others = np.hypot(*(xy - [x, y]).T)
        if np.sort(others)[1] < 45:  # a neighbour's stamp could overlap the box
            continue
        col, row = int(np.rint(x)) + 30, int(np.rint(y)) + 30
        total = padded[row - 22:row + 23, col - 22:col + 23].sum(dtype=np.float64)
        assert total == pytest.approx(10 ** (-0.4 * (mag - config.zero_point)), rel=1e-4)
        checked += 1
    assert checked >= 3
    assert flux_of(config.zero_point, config.zero_point) == pytest.approx(1.0)


def test_dead_border_is_exact_zeros_and_masks_are_nan():
    config = SimConfig(shape=SMALL, n_asteroids=4, dead_border_probability=1.0, masked_region_rate=2000.0)
    image, _ = simulate_image(config, seed=1, file_index=0, image_index=0)
    top, bottom, left, right = draw_conditions(config, seed=1, file_index=0, image_index=0).dead_border
    assert top + bottom + left + right > 0
    border = np.zeros(SMALL, dtype=bool)
    border[:top] = border[SMALL[0] - bottom:] = True
    border[:, :left] = True
    border[:, SMALL[1] - right:] = True
    assert np.all(image[border] == 0.0)
    assert np.isnan(image[~border]).any()
    assert np.count_nonzero(image[~border] == 0.0) == 0


def test_long_streak_pixels_are_unique_and_inside():
    rows, cols, values = line_pixels((100, 120), x=10.0, y=50.0, angle=30.0, peak=100.0, fwhm=2.0)
    assert rows.min() >= 0 and rows.max() < 100 and cols.min() >= 0 and cols.max() < 120
    assert len(set(zip(rows.tolist(), cols.tolist()))) == rows.size
    assert values.max() == pytest.approx(100.0, rel=0.05)


def test_cosmic_rays_are_sharp_pixels_inside_the_image():
    hits = cosmic_rays((50, 60), rng=np.random.default_rng(0), n=30, dn_range=(100.0, 1000.0))
    assert hits.rows.size >= 30
    assert hits.rows.min() >= 0 and hits.rows.max() < 50 and hits.cols.max() < 60
    assert np.all((hits.values >= 100) & (hits.values <= 1000))


def test_bad_input_is_refused_with_the_key_named():
    with pytest.raises(ValueError, match="sim.fwhm"):
        SimConfig(fwhm=5.0)
    with pytest.raises(ValueError, match="sim.magnitude_range"):
        SimConfig(magnitude_range=(22.0, 14.0))
    with pytest.raises(ValueError, match="sim.n_asteroids"):
        SimConfig(n_asteroids=-1)
    with pytest.raises(TypeError):
        SimConfig(not_a_knob=1)
    with pytest.raises(ValueError, match="seed: must be a non-negative integer"):
        simulate_image(SimConfig(shape=SMALL), seed=-1, file_index=0, image_index=0)
    with pytest.raises(ValueError, match="config: must be a SimConfig"):
        simulate_image({"shape": SMALL}, seed=0, file_index=0, image_index=0)


def test_config_round_trips_through_its_dict():
    config = SimConfig(shape=SMALL, n_asteroids=3, fwhm=2.0)
    assert SimConfig(**config.to_dict()) == config


def _simulate_cfg(tmp_path, *overrides):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("simulate", overrides=["data=tiny", f"out_dir={tmp_path}", "files=[1]", *overrides])


def test_simulate_pipeline_writes_what_the_source_streams(tmp_path):
    from neocascade.io.npz import read_canonical
    from neocascade.pipelines.simulate import simulate_dataset

    cfg = _simulate_cfg(tmp_path)
    assert [p.name for p in simulate_dataset(cfg)] == ["images_1.npz"]
    data = read_canonical(tmp_path / "images_1.npz")
    config = SimConfig(shape=(256, 256), n_asteroids=6)
    image, truth = simulate_image(config, seed=7, file_index=1, image_index=1)
    np.testing.assert_array_equal(data.image(1), image)
    np.testing.assert_array_equal(data.truth_for(1), truth)


def test_simulate_pipeline_refuses_to_overwrite_with_exit_2(tmp_path, capsys):
    from neocascade.pipelines.simulate import run

    cfg = _simulate_cfg(tmp_path)
    assert run(cfg) == 0
    with pytest.raises(SystemExit) as stop:
        run(cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
    with pytest.raises(SystemExit):
        run(_simulate_cfg(tmp_path, "files=[10]"))
    assert "files: file numbers must be integers in 0..9" in capsys.readouterr().err
