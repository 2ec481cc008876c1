"""simulation/revisits.py: a field seen several times; the simulate.py night presets; simulate_image unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from neocascade.io.observation import Observation
from neocascade.simulation import SimConfig, simulate_image
from neocascade.simulation.revisits import (
    ID_STRIDE,
    RevisitConfig,
    asteroid_sky,
    draw_scene,
    ecliptic_to_equatorial,
    render_epoch,
    simulate_revisits,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = SimConfig(shape=(128, 160), n_asteroids=5, transient_rate=3000.0)  # ~6 transients in a small image
REVISITS = RevisitConfig(interval_range=(15.0, 30.0), pointing_sigma=3.0, rotation_sigma=0.05)
ARCSEC_PER_DAY = 3600.0 / 86400.0  # deg/day -> arcsec/s


def _sep_arcsec(ra1, dec1, ra2, dec2):
    """Great-circle separation in arcsec (haversine)."""
    a1, d1, a2, d2 = (np.deg2rad(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((a2 - a1) / 2) ** 2
    return np.rad2deg(2 * np.arcsin(np.sqrt(h))) * 3600.0


def _visits(seq):
    return [Observation(mjd=m, exptime=e, wcs=w) for m, e, w in zip(seq.obs_mjd, seq.exptime, seq.wcs)]


@pytest.fixture(scope="module")
def seq():
    return simulate_revisits(SMALL, REVISITS, seed=3, field_index=2, n_epochs=3)


def test_simulate_image_is_bit_identical_to_before_the_revisit_split():
    # sha256 of simulate_image's pixels + truth computed with the code before quadrant.py was split into
    # background / sources / detector artifacts (the shipped model and the caches depend on these pixels).
    cases = {
        ("tiny", 7, 3, 1): "afff3e201387ccebd78594e16d68861068d88fcb2449cb248ad42e7e5f518a60",
        ("t12", 2021, 1, 2): "5ecae9ad2ded9a304778dd7c6b8aefb3ff5d832a3e90255eb2a7172dc59dde4b",
        ("paper", 7, 0, 0): "c9cb82a412c4d0d231cb5c92ec6c37203ee426abd5debcd13cfe0edcd11230ed",
    }
    configs = {
        "tiny": SimConfig(shape=(256, 256), n_asteroids=6),
        "t12": SimConfig(shape=(300, 280), n_asteroids=4, transient_rate=12.0, satellite_probability=1.0,
                         dead_border_probability=1.0),
        "paper": SimConfig(shape=(512, 512), n_asteroids=20, transient_rate=0.5),
    }
    for (name, seed, f, i), expected in cases.items():
        image, truth = simulate_image(configs[name], seed=seed, file_index=f, image_index=i)
        assert hashlib.sha256(image.tobytes() + truth.tobytes()).hexdigest() == expected, name


def test_shapes_ids_times_and_wcs(seq):
    n = 3
    assert seq.images.shape == (n, 128, 160) and seq.images.dtype == np.float32
    assert seq.truth.shape[1] == 7 and seq.stationary.shape[1] == 5 and len(seq.stationary) > 0
    assert seq.field.tolist() == [2, 2, 2] and seq.epoch.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(seq.exptime, 30.0)
    gaps = np.diff(seq.obs_mjd) * 24 * 60
    assert ((gaps >= 15.0) & (gaps <= 30.0)).all()
    first = 2 * ID_STRIDE  # ids are unique over the night's fields
    assert set(seq.truth[:, 6] - first) <= set(range(SMALL.n_asteroids))
    assert seq.stationary[:, 4].min() >= first + SMALL.n_asteroids  # transient ids follow the asteroid ids
    assert seq.objects["object_id"] == list(range(first, first + SMALL.n_asteroids))
    visits = _visits(seq)
    assert all(v.pixel_scale() == pytest.approx(1.012, rel=1e-6) for v in visits)
    ra, dec = visits[0].pixel_to_sky(80.0, 64.0)
    moved = [np.hypot(*(np.array(v.sky_to_pixel(ra, dec)) - [80.0, 64.0])) for v in visits[1:]]
    assert max(moved) > 0.5  # pointing offsets: the same sky position falls on other pixels


def test_same_seed_same_field_alone(seq):
    again = simulate_revisits(SMALL, REVISITS, seed=3, field_index=2, n_epochs=3)
    np.testing.assert_array_equal(again.images, seq.images)
    np.testing.assert_array_equal(again.truth, seq.truth)
    scene = draw_scene(SMALL, REVISITS, seed=3, field_index=2, n_epochs=3)
    image, truth, stationary, _ = render_epoch(SMALL, REVISITS, scene, 1, seed=3)
    np.testing.assert_array_equal(image, seq.images[1])
    np.testing.assert_array_equal(truth, seq.truth[seq.truth[:, 0] == 1])
    np.testing.assert_array_equal(stationary, seq.stationary[seq.stationary[:, 0] == 1])
    other = simulate_revisits(SMALL, REVISITS, seed=3, field_index=3, n_epochs=3)
    assert not np.array_equal(other.obs_mjd, seq.obs_mjd)
    single, _ = simulate_image(SMALL, seed=3, file_index=2, image_index=1)
    assert not np.array_equal(np.nan_to_num(single), np.nan_to_num(seq.images[1]))  # streams never shared


def test_trails_follow_the_sky_motion(seq):
    visits = _visits(seq)
    rates = dict(zip(seq.objects["object_id"], seq.objects["rate_deg_per_day"]))
    truth = seq.truth
    checked = 0
    for oid in np.unique(truth[:, 6]).astype(int):
        rows = truth[truth[:, 6] == oid]
        for a, b in zip(rows[:-1], rows[1:]):
            ea, eb = int(a[0]), int(b[0])
            ra_a, dec_a = visits[ea].pixel_to_sky(a[1], a[2])
            ra_b, dec_b = visits[eb].pixel_to_sky(b[1], b[2])
            dt = seq.obs_mjd[eb] - seq.obs_mjd[ea]
            assert _sep_arcsec(ra_a, dec_a, ra_b, dec_b) / 3600.0 / dt == pytest.approx(rates[oid], rel=1e-4)
            xb, yb = visits[ea].sky_to_pixel(ra_b, dec_b)  # where the object goes, in visit a's pixels
            direction = np.rad2deg(np.arctan2(yb - a[2], xb - a[1])) % 180.0
            assert min(abs(direction - a[5]), 180 - abs(direction - a[5])) < 0.05
            checked += 1
        expected = rates[oid] * ARCSEC_PER_DAY * 30.0 / 1.012  # px in a 30 s exposure
        np.testing.assert_allclose(rows[:, 4], expected, rtol=2e-3)
    assert checked >= 4


def test_stationary_sources_stay_on_the_sky(seq):
    visits = _visits(seq)
    st = seq.stationary
    repeated = 0
    for oid in np.unique(st[:, 4]):
        rows = st[st[:, 4] == oid]
        sky = np.array([visits[int(r[0])].pixel_to_sky(r[1], r[2]) for r in rows])
        assert np.ptp(sky[:, 0]) * 3600 < 1e-6 and np.ptp(sky[:, 1]) * 3600 < 1e-6
        repeated += len(rows) > 1
    assert repeated >= 1
    single = set(np.array(seq.transients["object_id"])[np.array(seq.transients["single_epoch"], dtype=bool)])
    counts = {int(k): int((st[:, 4] == k).sum()) for k in np.unique(st[:, 4])}
    assert all(counts.get(k, 0) <= 1 for k in single)


def test_sources_are_painted_where_the_truth_says():
    quiet = SimConfig(shape=(96, 96), n_asteroids=3, magnitude_mean=14.0, magnitude_sigma=0.1,
                      magnitude_range=(13.8, 14.2), transient_rate=2000.0, transient_magnitude_range=(14.0, 14.5),
                      transient_negative_fraction=0.0, star_residual_rate=0.0, saturated_rate=0.0, cosmic_ray_rate=0.0,
                      hot_pixel_rate=0.0, bad_column_rate=0.0, satellite_probability=0.0, masked_region_rate=0.0,
                      dead_border_probability=0.0)
    seq = simulate_revisits(quiet, RevisitConfig(transient_variability=0.0, single_epoch_fraction=0.0),
                            seed=1, field_index=0, n_epochs=2)
    for table in (seq.truth, seq.stationary):
        assert len(table)
        for row in table:
            image = seq.images[int(row[0])]
            r, c = int(round(row[2])), int(round(row[1]))
            patch = image[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3]
            assert np.nanmax(patch) > 100.0  # a 14th-magnitude source peaks at thousands of DN; noise ~6 DN


def test_populations_rates_and_directions():
    from astropy import units as u
    from astropy.coordinates import BarycentricMeanEcliptic, SkyCoord

    pops = {"slow": {"fraction": 1.0, "rate_range": [0.15, 0.35], "direction_sigma": 0.0, "isotropic_fraction": 0.0},
            "fast": {"fraction": 1.0, "rate_range": [1.0, 12.0], "log_uniform": True}}
    revisits = RevisitConfig(populations=pops)
    scene = draw_scene(SimConfig(shape=(64, 64), n_asteroids=400), revisits, seed=5, field_index=0, n_epochs=3)
    ast = scene.asteroids
    slow, fast = ast["population"] == 0, ast["population"] == 1
    assert 150 < slow.sum() < 250
    assert ((ast["rate"][slow] >= 0.15) & (ast["rate"][slow] <= 0.35)).all()
    assert ((ast["rate"][fast] >= 1.0) & (ast["rate"][fast] <= 12.0)).all() and ast["rate"][fast].max() > 8.0
    ra0, dec0 = asteroid_sky(scene, scene.reference_mjd)
    ra1, dec1 = asteroid_sky(scene, scene.reference_mjd + 0.05)
    e0 = SkyCoord(ra0[slow] * u.deg, dec0[slow] * u.deg).transform_to(BarycentricMeanEcliptic())
    e1 = SkyCoord(ra1[slow] * u.deg, dec1[slow] * u.deg).transform_to(BarycentricMeanEcliptic())
    dlon = (e1.lon.deg - e0.lon.deg + 180) % 360 - 180
    dlat = e1.lat.deg - e0.lat.deg
    assert np.abs(dlat).max() < 0.02 * np.abs(dlon).min()  # slow movers run along the ecliptic
    assert (dlon < 0).mean() > 0.6  # mostly retrograde, as near opposition


def test_ecliptic_conversion_matches_astropy():
    from astropy import units as u
    from astropy.coordinates import BarycentricMeanEcliptic, SkyCoord

    lon, lat = np.array([0.0, 75.0, 200.0, 310.0]), np.array([0.0, 5.0, -8.0, 30.0])
    ra, dec = ecliptic_to_equatorial(lon, lat)
    ref = SkyCoord(lon * u.deg, lat * u.deg, frame=BarycentricMeanEcliptic()).icrs
    assert _sep_arcsec(ra, dec, ref.ra.deg, ref.dec.deg).max() < 0.1  # frame bias and precession are below 0.1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_range": (0.0, 30.0)}, "revisits.interval_range"),
        ({"exptime": 0.0}, "revisits.exptime: must be > 0"),
        ({"night_mjd": 2460000.5}, "revisits.night_mjd"),
        ({"single_epoch_fraction": 1.5}, "revisits.single_epoch_fraction"),
        ({"populations": {}}, "revisits.populations"),
        ({"populations": {"neo": {"fraction": 1.0, "rate_range": [0.0, 5.0], "log_uniform": True}}},
         "revisits.populations.neo.rate_range: log-uniform rates need low > 0"),
        ({"populations": {"mb": {"fraction": 1.0, "rate_range": [0.2, 0.3], "speed": 1}}}, "revisits.populations"),
    ],
)
def test_bad_revisit_knobs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RevisitConfig(**kwargs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_epochs: must be an integer >= 1"):
        draw_scene(SMALL, REVISITS, seed=1, field_index=0, n_epochs=0)
    scene = draw_scene(SMALL, REVISITS, seed=1, field_index=0, n_epochs=2)
    with pytest.raises(ValueError, match="epoch: must be < 2"):
        render_epoch(SMALL, REVISITS, scene, 2, seed=1)
    with pytest.raises(ValueError, match="seed: must be an integer >= 0"):
        simulate_revisits(SMALL, REVISITS, seed=-1, field_index=0, n_epochs=2)


def _simulate_cfg(tmp_path, preset, *overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("simulate", overrides=[f"data={preset}", f"out_dir={tmp_path}", *overrides])


def test_night_tiny_preset_writes_readable_sequences(tmp_path):
    from neocascade.io.npz import TRUTH_COLUMNS_ID, read_canonical
    from neocascade.pipelines.simulate import simulate_dataset

    paths = simulate_dataset(_simulate_cfg(tmp_path, "night_tiny", "files=[1]"))
    assert [p.name for p in paths] == ["images_1.npz"]
    data = read_canonical(paths[0])
    assert data.n_images == 3 and data.shape == (256, 256) and data.truth_columns == TRUTH_COLUMNS_ID
    assert data.field.tolist() == [1, 1, 1] and data.epoch.tolist() == [0, 1, 2]
    assert data.meta["field"] == 1 and len(data.meta["conditions"]) == 3
    assert sorted(data.meta["objects"]) == ["dec_deg", "magnitude", "object_id", "population", "position_angle_deg",
                                            "ra_deg", "rate_deg_per_day", "reference_mjd"]
    config = SimConfig(shape=(256, 256), n_asteroids=6, transient_rate=800.0)
    revisits = RevisitConfig(**data.meta["revisits"])
    seq = simulate_revisits(config, revisits, seed=14, field_index=1, n_epochs=3)
    np.testing.assert_array_equal(data.images(), seq.images)
    np.testing.assert_array_equal(data.truth, seq.truth[:, :6])
    np.testing.assert_array_equal(data.object_id, seq.truth[:, 6].astype(np.int64))
    np.testing.assert_array_equal(data.stationary, seq.stationary)
    np.testing.assert_array_equal(data.wcs, seq.wcs)
    assert data.observation(2).mjd == seq.obs_mjd[2]


def test_night_preset_composes_full_quadrants_at_the_realistic_transient_rate(tmp_path):
    from hydra.utils import instantiate

    from neocascade.pipelines.simulate import _revisit_config

    cfg = _simulate_cfg(tmp_path, "night")
    source = instantiate(cfg.data.source, seed=cfg.seed)
    assert source.config.shape == (3080, 3072) and source.config.transient_rate == 12.0
    assert source.images_per_file == 3 and source.n_files == 8
    revisits = _revisit_config(cfg)
    assert revisits.interval_range[1] * (source.images_per_file - 1) <= 60.0  # 3 visits within an hour
    assert {p.name for p in revisits.populations} == {"main_belt", "hilda", "trojan", "neo"}


def test_bad_revisit_options_exit_2_with_one_line(tmp_path, capsys):
    from neocascade.pipelines.simulate import run

    with pytest.raises(SystemExit) as stop:
        run(_simulate_cfg(tmp_path, "night_tiny", "data.revisits.exptime=-3"))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.revisits.exptime: must be > 0" in err[0]
    with pytest.raises(SystemExit):
        run(_simulate_cfg(tmp_path, "night_tiny", "layout=challenge"))
    assert "sequences (data.revisits) are written only as canonical npz" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.npz"))
