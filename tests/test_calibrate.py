"""Tests of the calibration helpers on hand-made stamps (the full run is `make calibrate`)."""

from __future__ import annotations

import numpy as np
import pytest

from neocascade.pipelines import calibrate as cal


def test_peak_is_the_max_of_the_central_3x3():
    stamp = np.zeros((63, 63), dtype=np.float32)
    stamp[31, 32] = 7.0
    stamp[31, 34] = 99.0  # outside the central 3x3
    assert cal._peak3(stamp) == 7.0
    stamp[30:33, 30:33] = np.nan
    assert np.isnan(cal._peak3(stamp))


def test_robust_noise_ignores_dead_zeros_and_nan():
    values = np.array([0.0, 0.0, np.nan, -1.0, 1.0, -1.0, 1.0, 0.5])
    expected = 1.4826 * np.median(np.abs(np.array([-1, 1, -1, 1, 0.5]) - 0.5))
    assert cal.robust_noise(values) == pytest.approx(expected)
    assert np.isnan(cal.robust_noise(np.zeros(5)))


def test_stamp_noise_and_correlation_leave_the_source_out():
    rng = np.random.default_rng(0)
    stamp = rng.normal(0, 6.0, (63, 63))
    stamp[25:38, 25:38] += 1e4  # a source in the central box
    assert cal._stamp_noise(stamp) == pytest.approx(6.0, rel=0.1)
    assert abs(cal._lag1_correlation(stamp)) < 0.1


def test_cutouts_are_centred_and_nan_padded():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    out = cal._cutouts(image, np.array([0, 5]), np.array([0, 5]), 3)
    assert out.shape == (2, 3, 3)
    assert np.isnan(out[0, 0]).all() and out[0, 1, 1] == 0.0 and out[1, 1, 1] == 55.0


def test_targets_are_checked_against_their_ranges():
    report = {
        "noise_mad_dn": {"median": 6.0, "min": 5.0, "max": 7.0},
        "psf_fwhm_px": {"median": 2.2, "min": 1.4, "max": 3.0},
        "zero_point_measured": 26.3,
        "asteroid_peak_median_dn": 500.0,
        "dead_fraction": 0.1,
        "footprint_completeness": {"50": 0.95},
    }
    checked = cal.check_targets(report)
    assert checked["footprint_completeness_k50"]["ok"]
    assert not checked["dead_fraction"]["ok"]


def test_bad_image_count_is_one_line_and_exit_2(tmp_path, capsys):
    assert cal.main(["--n-images", "0", "--out-dir", str(tmp_path), "--no-alerts"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "--n-images: must be >= 1 (got 0)"


def test_one_quadrant_writes_the_required_keys_at_the_top_level(tmp_path):
    import json

    cal.calibrate(n_images=1, seed=3, out_dir=tmp_path, alert_dir=None)
    report = json.loads((tmp_path / "calibration.json").read_text())
    for key in ("noise_mad_dn", "psf_fwhm_px", "zero_point", "asteroid_peak_median_dn", "dead_fraction",
                "candidates_per_quadrant", "footprint_completeness", "completeness_by_magnitude"):
        assert key in report, key
    assert set(report["footprint_completeness"]) == {"30", "50", "70", "100"}
    assert report["candidates_per_quadrant"]["30"] > report["candidates_per_quadrant"]["100"]
    assert (tmp_path / "calibration.png").stat().st_size > 10_000


def test_existing_results_are_not_replaced_without_overwrite(tmp_path):
    from neocascade.errors import InputError

    (tmp_path / "calibration.json").write_text("{}")
    with pytest.raises(InputError, match="already exists"):
        cal.calibrate(n_images=1, seed=3, out_dir=tmp_path, alert_dir=None)
    assert (tmp_path / "calibration.json").read_text() == "{}"


def test_real_alert_stamps_carry_subtraction_residuals_on_their_sources():
    """The real-data figures `make calibrate` prints (measured, not tuned): heavy tails, sitting on template sources."""
    from pathlib import Path

    alerts = Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf_alerts"  # ../shared beside the checkout
    if not any(alerts.glob("*.avro")):
        pytest.skip(f"{alerts} not present")
    real, _ = cal.alert_statistics(alerts)
    above, below = real["asteroid_stamp_tails"]["above_4sigma"], real["asteroid_stamp_tails"]["below_4sigma"]
    assert above > 10 * 3.2e-5 and below > 10 * 3.2e-5  # far beyond a Gaussian's 4-sigma share
    res = real["subtraction_residuals"]
    assert res["tail_on_sources"] > 0.8 and res["source_pixel_share"] < 0.2
    shares = [row["rms_over_flux"] for row in res["residual_rms_over_flux"]]
    assert len(shares) >= 3 and all(0.03 < s < 0.3 for s in shares)
    report = {"simulator": "x", "seed": 0, "ztf_alerts": real,
              "sim": {"n_images": 1, "n_asteroids": 1, "candidates_per_quadrant": {str(k): 1.0 for k in cal.KERNELS},
                      "footprint_completeness": {str(k): 1.0 for k in cal.KERNELS},
                      "footprint_completeness_live": {str(k): 1.0 for k in cal.KERNELS},
                      "completeness_by_magnitude": [], "stamp_noise_mad_dn": {"median": 6.0},
                      "noise_adjacent_correlation": 0.1, "psf_fwhm_measured_px": {"median": 2.2},
                      "asteroid_peak_median_dn": 500.0, "zero_point_measured": 26.3,
                      "asteroid_stamp_tails": {"above_4sigma": 1e-4, "below_4sigma": float("nan")}},
              "targets": {}}
    table = cal.format_table(report)
    assert "asteroid stamps above +4 sigma, %" in table and "lie on template sources" in table
    assert "below -4 sigma, %" in table and " n/a" in table.split("below -4 sigma, %")[1].splitlines()[0]
