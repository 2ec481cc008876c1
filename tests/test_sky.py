"""The randomized sky family: ranges, reproducibility, axes switched off, the unchanged default, held-out presets."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from neocascade.errors import InputError
from neocascade.simulation import SimConfig, draw_conditions, simulate_image
from neocascade.simulation.artifacts import star_residual_batch
from neocascade.simulation.noise import background_map
from neocascade.simulation.psf import PSFShape, local_fwhm, measure_fwhm, psf_profile, render_points
from neocascade.simulation.sky import AXES, SkyRanges, draw_sky

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = (160, 144)

# sha256 of simulate_image's pixels + truth computed with the simulator BEFORE the sky knobs existed
# (commit 1039b7e): the defaults must reproduce it bit for bit (shipped model, caches and tests rely on it).
BUSY = dict(shape=(256, 240), n_asteroids=8, star_residual_rate=4000.0, saturated_rate=300.0, cosmic_ray_rate=3000.0,
            hot_pixel_rate=3000.0, bad_column_rate=200.0, satellite_probability=1.0, transient_rate=2000.0,
            masked_region_rate=100.0, dead_border_probability=1.0, fast_fraction=0.5)
BEFORE = {
    ("default", 0, 0, 0): "03bc26df6f05acd2f97fb1fdf7b049ec968a5c2fa430ecdb8497dcf614260366",
    ("default", 7, 1, 3): "10b6a2a14d73fca982437b857c286b7b44335c9be7ae923a976b901361f18fef",
    ("busy", 0, 0, 0): "b8b4ebcd818f268ba0a0f2532ca7ad6cbb903feb06a5afa9014136951a401fb4",
    ("busy", 7, 1, 3): "d09a42b500d1e98595adc4484f0235793a97f54ad638188a115728da4e8a2f3e",
}
TRAINING_SEEDS = {2021, 7}  # paper / demo (and paper + sky=randomized), tiny
HELD_OUT = ("shifted", "held_crowded", "held_seeing", "held_wings", "held_bright")


def _digest(image: np.ndarray, truth: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + truth.tobytes()).hexdigest()


@pytest.mark.parametrize("key", sorted(BEFORE))
def test_default_config_is_bit_identical_to_the_simulator_before_the_sky_family(key):
    name, seed, file_index, image_index = key
    config = SimConfig(shape=SMALL, n_asteroids=5) if name == "default" else SimConfig(**BUSY)
    image, truth = simulate_image(config, seed=seed, file_index=file_index, image_index=image_index)
    assert _digest(image, truth) == BEFORE[key]


def test_default_cache_key_has_no_sky_knobs():
    keys = set(SimConfig().to_dict())
    assert not keys & {"sky", "psf_kind", "background_rms", "batch_residuals", "ellipticity_range"}
    assert SimConfig(sky={}).to_dict()["sky"]["axes"] == list(AXES)
    assert SimConfig(background_rms=1.0).to_dict()["background_rms"] == 1.0


def test_draws_stay_inside_the_ranges():
    ranges = SkyRanges()
    rng = np.random.default_rng(0)
    draws = [draw_sky(ranges, rng) for _ in range(400)]
    for key, bounds in (("fwhm", ranges.fwhm_range), ("noise_rms", ranges.noise_rms_range),
                        ("noise_correlation", ranges.noise_correlation_range),
                        ("star_residual_rate", ranges.star_residual_rate_range),
                        ("transient_rate", ranges.transient_rate_range), ("zero_point", ranges.zero_point_range),
                        ("fwhm_gradient", ranges.fwhm_gradient_range), ("halo_fraction", ranges.halo_fraction_range)):
        values = np.array([d[key] for d in draws])
        assert values.min() >= bounds[0] and values.max() <= bounds[1], key
        assert values.max() - values.min() > 0.5 * (bounds[1] - bounds[0]), key  # the range is really explored
    beta = np.array([d["moffat_beta_range"][0] for d in draws])
    ell = np.array([d["ellipticity_range"][0] for d in draws])
    assert 1.5 <= beta.min() and beta.max() <= 6.0 and 0.0 <= ell.min() and ell.max() <= 0.3
    assert {d["psf_kind"] for d in draws} == {"moffat", "gaussian", "core_halo"}
    crowded = np.array([d["star_residual_rate"] for d in draws])
    assert (crowded < 30).any() and (crowded > 3000).any()  # a few to a crowded field
    for d in draws:  # each drawn image is a valid config
        SimConfig(shape=SMALL, **d)


def test_each_axis_can_be_switched_off_without_moving_the_others():
    full = draw_sky(SkyRanges(), np.random.default_rng(3))
    owned: dict[str, set] = {}
    for axis in AXES:
        fewer = draw_sky(SkyRanges(axes=tuple(a for a in AXES if a != axis)), np.random.default_rng(3))
        owned[axis] = set(full) - set(fewer)
        assert owned[axis], axis
        assert all(fewer[k] == full[k] for k in fewer)
    assert owned["psf"] >= {"fwhm", "psf_kind"} and owned["background"] >= {"noise_rms", "noise_correlation"}
    assert "star_residual_rate" in owned["residuals"] and "transient_rate" in owned["transients"]
    assert "zero_point" in owned["brightness"] and "cosmic_ray_rate" in owned["artifacts"]
    assert draw_sky(SkyRanges(axes=()), np.random.default_rng(3)) == {}


def test_sky_images_are_reproducible_and_vary_per_image():
    config = SimConfig(shape=SMALL, n_asteroids=4, sky={})
    a, ta = simulate_image(config, seed=4, file_index=1, image_index=2)
    b, tb = simulate_image(config, seed=4, file_index=1, image_index=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta, tb)
    fwhm = {draw_conditions(config, seed=4, file_index=1, image_index=i).fwhm for i in range(6)}
    assert len(fwhm) == 6 and all(1.2 <= f <= 4.5 for f in fwhm)
    plain, _ = simulate_image(SimConfig(shape=SMALL, n_asteroids=4), seed=4, file_index=1, image_index=2)
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(plain))


def test_sky_with_every_axis_off_is_the_preset_itself():
    base = SimConfig(shape=SMALL, n_asteroids=4)
    off = dataclasses.replace(base, sky=SkyRanges(axes=()))
    for i in range(2):
        np.testing.assert_array_equal(simulate_image(off, seed=2, file_index=0, image_index=i)[0],
                                      simulate_image(base, seed=2, file_index=0, image_index=i)[0])


def test_base_fraction_mixes_the_presets_own_sky_into_the_family():
    """A share of the images keeps the preset's knobs (bit for bit the preset's image); the rest are the family's
    draws, unchanged by the mixture; the cache key of a family without a mixture does not name it."""
    base = SimConfig(shape=SMALL, n_asteroids=4)
    family = dataclasses.replace(base, sky=SkyRanges())
    mixed = dataclasses.replace(base, sky=SkyRanges(base_fraction=0.5))
    kept = 0
    for i in range(12):
        image = simulate_image(mixed, seed=2, file_index=0, image_index=i)[0]
        if np.array_equal(image, simulate_image(base, seed=2, file_index=0, image_index=i)[0], equal_nan=True):
            kept += 1
        else:
            np.testing.assert_array_equal(image, simulate_image(family, seed=2, file_index=0, image_index=i)[0])
    assert 2 <= kept <= 10
    assert "base_fraction" not in family.sky.to_dict() and mixed.sky.to_dict()["base_fraction"] == 0.5
    with pytest.raises(ValueError, match="sim.sky.base_fraction"):
        SkyRanges(base_fraction=1.0)


@pytest.mark.parametrize("bad,message", [
    ({"fwhm_range": [3.0, 2.0]}, "sim.sky.fwhm_range: must be finite"),
    ({"axes": ["psf", "weather"]}, "sim.sky.axes"),
    ({"noise_correlation_range": [0.0, 0.8]}, "sim.sky.noise_correlation_range"),
    ({"psf_kinds": ["airy"]}, "sim.sky.psf_kinds"),
    ({"fwhm": 2.0}, "sim.sky: unknown key 'fwhm'"),
])
def test_bad_ranges_are_one_line(bad, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(sky=bad)


def test_bad_sky_through_the_source_is_an_input_error():
    from neocascade.data.sources import SimulatedSource

    with pytest.raises(InputError, match="data.source: sim.sky.fwhm_range"):
        SimulatedSource(seed=1, n_files=1, images_per_file=1, shape=[64, 64], n_asteroids=1,
                        sim={"sky": {"fwhm_range": [0.0, 2.0]}})


def test_fingerprint_separates_skies():
    from neocascade.data.sources import SimulatedSource

    kw = dict(seed=1, n_files=1, images_per_file=1, shape=[64, 64], n_asteroids=1)
    plain = SimulatedSource(**kw).fingerprint()
    sky = SimulatedSource(**kw, sim={"sky": {}}).fingerprint()
    narrower = SimulatedSource(**kw, sim={"sky": {"fwhm_range": [1.2, 3.0]}}).fingerprint()
    assert plain != sky != narrower and plain != narrower


def test_gaussian_and_elliptical_profiles():
    stamps, _, _ = render_points(np.array([20.0]), np.array([20.0]), fwhm=3.0, beta=3.0, radius=20,
                                 psf=PSFShape(kind="gaussian"))
    assert measure_fwhm(stamps[0]) == pytest.approx(3.0, rel=0.02)
    grid = np.arange(-20, 21, dtype=np.float64)
    dx, dy = np.meshgrid(grid, grid)
    p = psf_profile(dx, dy, fwhm=3.0, beta=3.0, shape=PSFShape(kind="gaussian", ellipticity=0.3, angle=90.0))
    p /= p.sum()
    var_x, var_y = (p * dx**2).sum(), (p * dy**2).sum()
    assert np.sqrt(var_x / var_y) == pytest.approx(0.7, rel=0.01)  # b/a, major axis along +y
    round_ = psf_profile(dx, dy, fwhm=2.5, beta=3.0, shape=PSFShape())
    np.testing.assert_allclose(round_, psf_profile(dx, dy, fwhm=2.5, beta=3.0))


def test_core_halo_puts_its_fraction_in_the_halo():
    grid = np.arange(-200, 201, dtype=np.float64)
    dx, dy = np.meshgrid(grid, grid)
    shape = PSFShape(kind="core_halo", halo_fraction=0.25, halo_scale=3.0)
    total = psf_profile(dx, dy, fwhm=2.0, beta=4.0, shape=shape).sum()
    core = psf_profile(dx, dy, fwhm=2.0, beta=4.0, shape=dataclasses.replace(shape, halo_fraction=0.0)).sum()
    assert total == pytest.approx(1.0, rel=0.01) and core == pytest.approx(1.0, rel=0.01)
    r = np.hypot(dx, dy)
    p = psf_profile(dx, dy, fwhm=2.0, beta=4.0, shape=shape)
    alpha = 6.0 / (2.0 * np.sqrt(2.0 ** (1.0 / 4.0) - 1.0))  # the halo's Moffat core radius (FWHM 3 x 2 px)
    beyond = 0.25 * (1.0 + (6.0 / alpha) ** 2) ** (1.0 - 4.0)  # its flux outside r = 6 px; the core's is ~0
    assert p[r > 6].sum() / total == pytest.approx(beyond, rel=0.05)


def test_fwhm_gradient_varies_across_the_quadrant():
    shape = PSFShape(gradient=(1e-4, 0.0), centre=(1000.0, 1000.0))
    np.testing.assert_allclose(local_fwhm(2.0, np.array([0.0, 1000.0, 2000.0]), np.zeros(3), shape), [1.8, 2.0, 2.2])
    np.testing.assert_allclose(local_fwhm(2.0, np.array([0.0, 5.0]), np.zeros(2), None), [2.0, 2.0])
    config = SimConfig(shape=(512, 512), n_asteroids=0, fwhm_gradient=0.15)
    from neocascade.simulation.quadrant import psf_shape

    psf = psf_shape(config, np.random.default_rng(0))
    corners = local_fwhm(2.0, np.array([0.0, 511.0, 0.0, 511.0]), np.array([0.0, 0.0, 511.0, 511.0]), psf)
    assert corners.max() / corners.min() > 1.1 and np.all(np.abs(corners / 2.0 - 1.0) <= 0.15 + 1e-9)


def test_batch_residuals_are_vectorised_with_the_right_kinds():
    rng = np.random.default_rng(1)
    stamps = star_residual_batch((300, 300), rng=rng, n=1500, fwhm=2.0, beta=3.0, zero_point=26.3, gain=6.2,
                                 magnitude_range=(14.0, 20.0), fraction_range=(0.01, 0.02), shift_range=(0.1, 0.2),
                                 poisson=False, magnitude_slope=0.3, chunk=256)
    assert len(stamps) == 1500 and {s.data.shape for s in stamps} == {(17, 17)}
    sums = np.array([s.data.sum(dtype=np.float64) for s in stamps])
    absum = np.array([np.abs(s.data).sum(dtype=np.float64) for s in stamps])
    assert np.all(sums <= 0.02 * absum)  # dipoles and rings near zero (stamp-edge truncation), holes negative
    assert 0.2 < np.mean(sums < -0.5 * absum) < 0.45  # about a third are holes
    assert star_residual_batch((64, 64), rng=rng, n=0, fwhm=2.0, beta=3.0, zero_point=26.3, gain=6.2,
                               magnitude_range=(14.0, 20.0), fraction_range=(0.01, 0.02), shift_range=(0.1, 0.2),
                               poisson=True) == []


def test_star_magnitudes_follow_the_counts_slope():
    from neocascade.simulation.artifacts import _counts_magnitudes

    m = _counts_magnitudes(np.random.default_rng(0), (12.0, 20.0), 0.3, 200_000)
    counts, _ = np.histogram(m, bins=[12, 13, 19, 20])
    assert 12.0 <= m.min() and m.max() <= 20.0
    assert counts[2] / counts[0] == pytest.approx(10 ** (0.3 * 7), rel=0.1)


def test_background_map_is_smooth_and_scaled():
    bg = background_map((400, 300), rng=np.random.default_rng(0), rms=5.0, grid=5)
    assert bg.dtype == np.float32 and bg.shape == (400, 300)
    assert np.abs(np.diff(bg, axis=0)).max() < 0.2 and 1.0 < bg.std() < 10.0
    with pytest.raises(ValueError, match="background"):
        background_map((10, 10), rng=np.random.default_rng(0), rms=1.0, grid=1)


def test_background_and_psf_axes_change_only_their_own_streams():
    base = SimConfig(shape=SMALL, n_asteroids=3, **{"star_residual_rate": 0.0, "transient_rate": 0.0,
                                                     "saturated_rate": 0.0})
    a, ta = simulate_image(base, seed=5, file_index=0, image_index=0)
    b, tb = simulate_image(dataclasses.replace(base, background_rms=3.0), seed=5, file_index=0, image_index=0)
    np.testing.assert_array_equal(ta, tb)
    diff = (b - a)[np.isfinite(a)]
    step = np.diff(b - a, axis=1)[np.isfinite(a[:, 1:]) & np.isfinite(a[:, :-1])]
    assert 0.5 < np.abs(diff).max() < 20 and np.abs(step).max() < 0.5  # smooth: far below the 6 DN noise per pixel


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_sky_group_composes_with_data_presets_and_matches_the_defaults():
    cfg = _compose("data=paper", "sky=randomized")
    sky = OmegaConf.to_container(cfg.data.source.sim.sky)
    assert SkyRanges(**sky) == SkyRanges()  # the YAML spells out the dataclass defaults
    assert cfg.data.source.sim.transient_rate == 0.5
    assert "sky" not in _compose("data=paper").data.source.sim
    assert "sky" not in _compose("data=paper", "sky=none").data.source.sim
    off = _compose("data=tiny", "sky=randomized", "data.source.sim.sky.axes=[psf]")
    source = instantiate(off.data.source)
    assert source.config.sky.axes == ("psf",)


@pytest.mark.parametrize("name", HELD_OUT)
def test_held_out_presets_are_disjoint_and_outside_the_family(name):
    cfg = _compose(f"data={name}")
    sim = OmegaConf.to_container(cfg.data.source.sim)
    assert cfg.data.source.seed not in TRAINING_SEEDS and sim["transient_rate"] == 0.5
    seeds = {_compose(f"data={other}").data.source.seed for other in HELD_OUT}
    assert len(seeds) == len(HELD_OUT)
    config = SimConfig(**sim, shape=(64, 64), n_asteroids=1)
    family = SkyRanges()
    outside = {
        "shifted": config.moffat_beta_range[0] > 1.5,  # inside the family on purpose: paper's own transfer check
        "held_crowded": config.star_residual_rate > family.star_residual_rate_range[1],
        "held_seeing": config.ellipticity_range[0] > family.ellipticity_range[1],
        "held_wings": config.noise_correlation > family.noise_correlation_range[1]
        and config.moffat_beta_range[1] < family.moffat_beta_range[0],
        "held_bright": config.noise_rms_range[0] > family.noise_rms_range[1]
        and config.background_rms > family.background_rms_range[1],
    }
    assert outside[name]
    image, _ = simulate_image(config, seed=cfg.data.source.seed, file_index=0, image_index=0)
    assert image.shape == (64, 64)


def test_residual_pixel_noise_is_a_share_of_each_pixels_star_flux():
    kw = dict(n=400, fwhm=2.0, beta=3.0, zero_point=26.3, gain=6.2, magnitude_range=(14.0, 16.0),
              fraction_range=(1e-6, 1e-6), shift_range=(0.1, 0.2), poisson=False)
    plain = star_residual_batch((300, 300), rng=np.random.default_rng(4), **kw)
    same = star_residual_batch((300, 300), rng=np.random.default_rng(4), **kw, pixel_noise=0.0)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(plain, same))  # 0 draws nothing
    noisy = star_residual_batch((300, 300), rng=np.random.default_rng(4), **kw, pixel_noise=0.1)
    rng = np.random.default_rng(4)  # the same stars, to rebuild each pixel's star flux
    from neocascade.simulation.artifacts import flux_of, star_field

    x, y, mag = star_field((300, 300), rng=rng, n=400, magnitude_range=(14.0, 16.0))
    ratios = []
    for s, xi, yi, f in zip(noisy, x, y, flux_of(mag, 26.3)):
        h, w = s.data.shape
        star = psf_profile(s.col0 + np.arange(w)[None, :] - xi, s.row0 + np.arange(h)[:, None] - yi, fwhm=2.0,
                           beta=3.0, shape=PSFShape())
        star = f * star / star.sum()
        bright = star > 200.0
        ratios.append(s.data[bright] / star[bright])
    ratios = np.concatenate(ratios)
    assert ratios.std() == pytest.approx(0.1, rel=0.05) and abs(ratios.mean()) < 0.01


def test_residual_pixel_noise_range_is_drawn_last_and_checked():
    base = [draw_sky(SkyRanges(), np.random.default_rng(s)) for s in range(50)]
    ranges = SkyRanges(residual_pixel_noise_range=(0.02, 0.15))
    drawn = [draw_sky(ranges, np.random.default_rng(s)) for s in range(50)]
    assert all("residual_pixel_noise" not in b for b in base)
    assert all({k: v for k, v in d.items() if k != "residual_pixel_noise"} == b for d, b in zip(drawn, base))
    values = np.array([d["residual_pixel_noise"] for d in drawn])
    assert 0.02 <= values.min() and values.max() <= 0.15
    assert "residual_pixel_noise_range" not in SkyRanges().to_dict()
    assert ranges.to_dict()["residual_pixel_noise_range"] == [0.02, 0.15]
    SimConfig(shape=SMALL, **drawn[0])
    with pytest.raises(ValueError, match="sim.sky.residual_pixel_noise_range"):
        SkyRanges(residual_pixel_noise_range=(0.0, 1.5))
    with pytest.raises(ValueError, match="residual_pixel_noise need batch_residuals=true"):
        SimConfig(residual_pixel_noise=0.1)
    with pytest.raises(ValueError, match="sim.residual_pixel_noise: must lie in"):
        SimConfig(residual_pixel_noise=2.0, batch_residuals=True)
    assert "residual_pixel_noise" not in SimConfig().to_dict()
