"""Completeness curves, binomial errors and the logistic m50 fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from neocascade.evaluation import completeness as C


def test_binomial_interval_known_cases():
    lo, hi = C.binomial_interval(np.array([0, 10, 5, 0]), np.array([10, 10, 10, 0]))
    # k = 0: lower bound 0, upper bound solves (1 - p)^10 = alpha / 2
    alpha = 1 - C.ONE_SIGMA
    assert lo[0] == 0.0 and hi[0] == pytest.approx(1 - (alpha / 2) ** (1 / 10))
    assert hi[1] == 1.0 and lo[1] == pytest.approx((alpha / 2) ** (1 / 10))
    # k = 5 of 10: symmetric about 0.5, and matching the beta quantiles
    assert lo[2] == pytest.approx(stats.beta.ppf(alpha / 2, 5, 6))
    assert lo[2] + hi[2] == pytest.approx(1.0)
    assert np.isnan(lo[3]) and np.isnan(hi[3])


def test_binned_completeness_counts():
    values = np.array([0.1, 0.2, 0.6, 0.7, 0.8, 0.95])
    found = np.array([1, 0, 1, 1, 0, 1], bool)
    centres, k, n, frac, lo, hi = C.binned_completeness(values, found, bins=np.array([0.0, 0.5, 1.0, 1.5]))
    np.testing.assert_allclose(centres, [0.25, 0.75, 1.25])
    np.testing.assert_array_equal(n, [2, 4, 0])
    np.testing.assert_array_equal(k, [1, 3, 0])
    np.testing.assert_allclose(frac[:2], [0.5, 0.75])
    assert np.isnan(frac[2])
    assert (lo[:2] > 0).all() and (hi[:2] > 0).all()
    _, k_miss, _, frac_miss, _, _ = C.binned_miss_rate(values, found, bins=np.array([0.0, 0.5, 1.0, 1.5]))
    np.testing.assert_array_equal(k_miss, [1, 1, 0])
    np.testing.assert_allclose(frac_miss[:2], [0.5, 0.25])


def test_magnitude_bins_quarter_mag():
    edges = C.magnitude_bins(np.array([18.1, 20.9]), step=0.25)
    assert edges[0] == pytest.approx(18.0) and edges[-1] == pytest.approx(21.0)
    np.testing.assert_allclose(np.diff(edges), 0.25)


def test_fit_m50_recovers_synthetic_curve():
    rng = np.random.default_rng(3)
    mags = rng.uniform(17.0, 22.0, 4000)
    truth_m50, truth_w, truth_c = 20.0, 0.3, 0.95
    found = rng.random(mags.size) < C.logistic(mags, m50=truth_m50, width=truth_w, plateau=truth_c)
    fit = C.fit_logistic(mags, found)
    assert 0 < fit.m50_err < 0.1
    assert abs(fit.m50 - truth_m50) < 3 * fit.m50_err
    assert abs(fit.width - truth_w) < 3 * fit.width_err
    assert abs(fit.plateau - truth_c) < 3 * fit.plateau_err
    m50, err, w = C.fit_m50(mags, found)
    assert (m50, err, w) == (fit.m50, fit.m50_err, fit.width)


def test_fit_m50_plateau_at_one_and_degenerate_inputs():
    rng = np.random.default_rng(4)
    mags = rng.uniform(18.0, 22.0, 2000)
    found = rng.random(mags.size) < C.logistic(mags, m50=20.5, width=0.2)
    fit = C.fit_logistic(mags, found)
    assert fit.plateau == pytest.approx(1.0, abs=0.02)
    assert abs(fit.m50 - 20.5) < 3 * fit.m50_err
    assert np.isnan(C.fit_m50(mags, np.ones(mags.size, bool))[0])
    assert np.isnan(C.fit_m50(mags[:3], np.array([1, 0, 1], bool))[0])


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="found"):
        C.binned_completeness(np.zeros(3), np.zeros(2, bool), bins=2)
    with pytest.raises(ValueError, match="values"):
        C.fit_m50(np.array([1.0, np.nan]), np.array([True, False]))


def test_fit_m50_separated_data_gives_gap_error():
    mags = np.array([18.0, 18.5, 19.0, 19.4, 20.0, 20.5, 21.0])
    found = mags < 19.7
    m50, err, width = C.fit_m50(mags, found)
    assert 19.4 <= m50 <= 20.0
    assert err == pytest.approx(0.5 * (20.0 - 19.4))
    assert width < 0.05
