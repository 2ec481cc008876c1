"""Residual check after the classifier (issue 13): flux conservation tells star residuals from point sources."""

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from neocascade.detection.residuals import RingCheck, build_residual_check, ring_deficit
from neocascade.errors import InputError
from neocascade.simulation.psf import moffat

CONF = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "conf")
SIZE = 21


def _psf(fwhm: float) -> np.ndarray:
    g = np.arange(SIZE) - SIZE // 2
    p = moffat(g[None, :], g[:, None], fwhm=fwhm, beta=3.0)
    return p / p.sum()


def _cutouts(signal: np.ndarray, n: int, seed: int, sigma: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return signal[None] + rng.normal(0.0, sigma, (n, SIZE, SIZE))


def test_point_sources_pass_and_ring_residuals_fail():
    star, wider = _psf(2.2), _psf(2.2 * 1.3)
    point = _cutouts(3000.0 * star, 200, 1)  # a point source, core SNR ~60
    ring = _cutouts(6000.0 * (star - wider), 200, 2)  # star minus a wider copy: a core inside a negative ring
    assert np.median(ring_deficit(point)) > 0.0 and (ring_deficit(point) >= -3.0).all()
    assert (ring_deficit(ring) < -3.0).mean() > 0.95
    check = RingCheck(3.0)
    assert check(point).all() and check(ring).mean() < 0.05


def test_noise_alone_is_about_unit_normal_and_masks_are_left_out():
    z = ring_deficit(_cutouts(np.zeros((SIZE, SIZE)), 4000, 3))
    assert abs(float(np.mean(z))) < 0.1 and 0.85 < float(np.std(z)) < 1.15
    masked = _cutouts(3000.0 * _psf(2.2), 50, 4)
    masked[:, :, :4] = 0.0  # a dead border through the outer pixels
    masked[:, 12, 12] = np.nan
    z = ring_deficit(masked)
    assert np.isfinite(z).all() and (z >= -3.0).all()
    assert ring_deficit(np.zeros((2, SIZE, SIZE))).tolist() == [0.0, 0.0]  # nothing to measure: no verdict


def test_ring_deficit_and_check_bad_input():
    with pytest.raises(ValueError, match="cutouts: expected"):
        ring_deficit(np.zeros((3, 15, 15)))
    with pytest.raises(ValueError, match="cutouts: expected"):
        ring_deficit(np.zeros((21, 21)))
    for bad in (0.0, -1.0, float("nan"), True, "3"):
        with pytest.raises(ValueError, match="max_deficit: must be a finite number > 0"):
            RingCheck(bad)


def test_build_residual_check_from_configs():
    assert build_residual_check(None) is None
    assert build_residual_check({"_target_": None}) is None
    assert build_residual_check({"_target_": "neocascade.detection.residuals.RingCheck", "max_deficit": 2.5}).max_deficit == 2.5
    with pytest.raises(InputError, match="residual_check._target_: must be"):
        build_residual_check({"_target_": "os.system", "max_deficit": 3.0})
    with pytest.raises(InputError, match="residual_check: unknown key"):
        build_residual_check({"_target_": "neocascade.detection.residuals.RingCheck", "k": 3.0})
    with pytest.raises(InputError, match="residual_check.max_deficit: must be a finite number"):
        build_residual_check({"_target_": "neocascade.detection.residuals.RingCheck", "max_deficit": -1})


@pytest.mark.parametrize("config", ["detect", "evaluate"])
def test_residual_check_options_compose(config):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        plain = compose(config)
        ring = compose(config, overrides=["residual_check=ring"])
        off = compose(config, overrides=["residual_check=none"])
    assert repr(build_residual_check(plain.residual_check)) == "RingCheck(max_deficit=3.0)"  # the default
    assert repr(build_residual_check(ring.residual_check)) == "RingCheck(max_deficit=3.0)"
    assert build_residual_check(off.residual_check) is None


def test_detect_image_applies_the_check_to_the_unfiltered_cutouts():
    from neocascade.detection.detector import detect_image
    from neocascade.simulation import SimConfig, simulate_image
    from neocascade.training.artifact import PACKAGED, load_cascade

    image, _ = simulate_image(SimConfig(shape=(512, 512), n_asteroids=6), seed=5, file_index=0, image_index=0)
    cascade = load_cascade(PACKAGED)
    plain = detect_image(image, cascade)
    seen = []

    def drop_all(raw):
        seen.append(raw.shape)
        return np.zeros(raw.shape[0], dtype=bool)

    assert plain["x"].size > 0
    assert detect_image(image, cascade, check=drop_all)["x"].size == 0
    assert seen and seen[0][1:] == (SIZE, SIZE)
    kept = detect_image(image, cascade, check=lambda raw: np.ones(raw.shape[0], dtype=bool))
    np.testing.assert_array_equal(kept["x"], plain["x"])


def test_detect_py_applies_the_default_check_and_names_it(tmp_path):
    import json

    from neocascade.io.npz import write_canonical
    from neocascade.pipelines.detect import detect
    from neocascade.simulation import SimConfig, simulate_image

    image, truth = simulate_image(SimConfig(shape=(512, 512), n_asteroids=6), seed=5, file_index=0, image_index=0)
    data = write_canonical(tmp_path / "images.npz", image[None], truth, {"source": "test"})
    summaries = {}
    for name, extra in (("on", []), ("off", ["residual_check=none"])):
        with initialize_config_dir(config_dir=CONF, version_base=None):
            cfg = compose("detect", overrides=[f"input={data}", f"out={tmp_path / name}", "cluster=none",
                                               "progress=false", f"paths.outputs={tmp_path}", *extra])
        assert detect(cfg) == 0
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert summaries["on"]["residual_check"] == "RingCheck(max_deficit=3.0)"
    assert summaries["off"]["residual_check"] is None
