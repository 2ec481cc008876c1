"""Stamp pixel statistics (make calibrate's real-vs-simulated comparison) on stamps with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from neocascade.evaluation.stamp_stats import robust_z, subtraction_residuals, tail_shares

S = 63


def _noise(n: int, sigma: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sigma, (n, S, S))


def _stars(n: int, seed: int) -> np.ndarray:
    """Science flux of a few bright round stars per stamp, away from the centre (DN per pixel)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S]
    out = np.zeros((n, S, S))
    for k in range(n):
        for _ in range(4):
            y, x = rng.choice([10, 50]), rng.uniform(5, 58)
            out[k] += rng.uniform(2e3, 2e4) / (2 * np.pi * 1.5 ** 2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5 ** 2))
    return out


def test_robust_z_leaves_out_the_centre_and_dead_pixels():
    stamps = _noise(2, 5.0, 0) + 100.0
    stamps[0, 0, :10] = 0.0
    stamps[1, 3, 3] = np.nan
    z, sigma = robust_z(stamps)
    assert np.isnan(z[:, S // 2, S // 2]).all() and np.isnan(z[0, 0, :10]).all() and np.isnan(z[1, 3, 3])
    np.testing.assert_allclose(sigma, 5.0, rtol=0.05)
    assert abs(np.nanmedian(z)) < 0.05


def test_tail_shares_count_each_sign():
    stamps = _noise(4, 1.0, 1)
    stamps = np.clip(stamps, -3.5, 3.5)  # no Gaussian tail beyond 4 sigma
    stamps[0, 2, 2:12] = 50.0  # ten positive outliers
    stamps[1, 60, 30:35] = -50.0  # five negative ones
    stamps[2, S // 2, S // 2] = 1e4  # the source itself does not count
    above, below = tail_shares(stamps)
    z, _ = robust_z(stamps)
    n = np.isfinite(z).sum()
    assert above == pytest.approx(10 / n) and below == pytest.approx(5 / n)
    with pytest.raises(ValueError, match=r"stamps: must have shape \(N, S, S\)"):
        tail_shares(np.zeros((S, S)))


def test_pixel_independent_residual_is_measured_as_its_share_of_the_flux():
    n, sky, k = 60, 6.0, 0.1
    flux = _stars(n, 2)
    rng = np.random.default_rng(3)
    science = 200.0 + flux + rng.normal(0, sky, flux.shape)
    template = 400.0 + 0.9 * flux + rng.normal(0, sky / 3, flux.shape)
    difference = rng.normal(0, sky, flux.shape) + k * flux * rng.standard_normal(flux.shape)
    out = subtraction_residuals(difference, science, template)
    bright = [row for row in out["residual_rms_over_flux"] if row["median_flux_dn"] > 200]
    assert bright and all(row["rms_over_flux"] == pytest.approx(k, rel=0.2) for row in bright)
    assert out["tail_on_sources"] > 0.9 and out["source_pixel_share"] < 0.2
    assert abs(out["residual_adjacent_correlation"]) < 0.15


def test_a_smooth_residual_correlates_and_a_clean_subtraction_leaves_no_tail_on_sources():
    n, sky = 60, 6.0
    flux = _stars(n, 4)
    rng = np.random.default_rng(5)
    science = 200.0 + flux + rng.normal(0, sky, flux.shape)
    template = 400.0 + flux + rng.normal(0, sky / 3, flux.shape)
    dipole = 0.3 * (np.roll(flux, 1, axis=2) - flux)  # misregistration by a pixel: a smooth dipole
    smooth = subtraction_residuals(rng.normal(0, sky, flux.shape) + dipole, science, template)
    assert smooth["residual_adjacent_correlation"] > 0.3
    clean = subtraction_residuals(rng.normal(0, sky, flux.shape), science, template)
    assert all(row["rms_over_flux"] < 0.02 for row in clean["residual_rms_over_flux"] if row["median_flux_dn"] > 200)
    with pytest.raises(ValueError, match="must have the same shape"):
        subtraction_residuals(np.zeros((1, S, S)), np.zeros((2, S, S)), np.zeros((1, S, S)))
