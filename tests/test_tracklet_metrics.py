"""Tracklet metrics (difi's findable / pure / contaminated / mixed) and their figures, on hand-made tables."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from neocascade.evaluation.tracklet_figures import (
    completeness_vs_rate, tracklet_completeness_vs_magnitude, tracklets_on_sky,
)
from neocascade.evaluation.tracklets import (
    classify_tracklets, findable_objects, found_objects, object_motion, rows_found, threshold_at_purity,
    tracklet_metrics,
)

# detections:       0  1  2 | 3  4  5 | 6  7 | 8  9 | 10  11
TRACKLET = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, -1, 3, 3])
OBJECT = np.array([5, 5, 5, 7, 7, -1, 8, 9, 8, 9, 6, 6])
EPOCH = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 0, 1])


def test_classify_pure_contaminated_mixed():
    c = classify_tracklets(TRACKLET, OBJECT)
    np.testing.assert_array_equal(c["tracklet"], [0, 1, 2, 3])
    np.testing.assert_array_equal(c["n"], [3, 3, 2, 2])
    np.testing.assert_array_equal(c["object"], [5, 7, 8, 6])  # tie 8/9 goes to the smaller id
    np.testing.assert_array_equal(c["pure"], [True, False, False, True])
    np.testing.assert_array_equal(c["mixed"], [False, True, True, False])
    loose = classify_tracklets(TRACKLET, OBJECT, contamination=0.34)
    np.testing.assert_array_equal(loose["contaminated"], [False, True, False, False])
    assert not (loose["pure"] & loose["contaminated"]).any()


def test_findable_and_found():
    ids, findable = findable_objects(np.array([5, 5, 5, 7, 7, 8, 9, 9, -1]), np.array([0, 1, 2, 0, 0, 1, 0, 2, 1]))
    np.testing.assert_array_equal(ids, [5, 7, 8, 9])
    np.testing.assert_array_equal(findable, [True, False, False, True])  # 7 twice in one epoch is not findable
    c = classify_tracklets(TRACKLET, OBJECT)
    np.testing.assert_array_equal(found_objects(c, np.array([5, 6, 7, 9])), [True, True, False, False])
    np.testing.assert_array_equal(found_objects(c, np.array([5, 6, 7, 9]), min_obs=3), [True, False, False, False])
    loose = classify_tracklets(TRACKLET, OBJECT, contamination=0.34)
    assert found_objects(loose, np.array([7]), contamination=0.34)[0]


def test_tracklet_metrics_numbers():
    truth_obj = np.array([5, 5, 5, 7, 7, 7, 8, 8, 9, 9, 6, 6, 4])
    truth_epoch = np.array([0, 1, 2, 0, 1, 2, 0, 2, 1, 2, 0, 1, 0])
    stationary = np.zeros(12, bool)
    stationary[[8, 9]] = True
    transient = np.full(12, -1)
    transient[[8, 9]] = [100, 100]
    m = tracklet_metrics(TRACKLET, OBJECT, truth_obj, truth_epoch, det_epoch=EPOCH, stationary=stationary,
                         det_transient=transient)
    assert (m["n_tracklets"], m["n_pure"], m["n_mixed"]) == (4, 2, 2)
    assert m["tracklet_purity"] == 0.5
    assert m["detection_purity"] == pytest.approx(8 / 10)  # 3 + 2 + 1 + 2 of 10 linked belong to their tracklet's object
    assert (m["n_findable"], m["n_found"]) == (5, 2)  # 4 is seen once: not findable
    assert m["completeness"] == pytest.approx(0.4)
    assert m["stationary_share"] == 1.0 and m["asteroid_stationary_share"] == pytest.approx(2 / 11)
    assert m["n_transients_seen_twice"] == 0  # both transient detections are in epoch 2
    empty = tracklet_metrics(np.full(3, -1), np.full(3, -1), np.array([1, 1]), np.array([0, 1]))
    assert empty["n_tracklets"] == 0 and np.isnan(empty["tracklet_purity"]) and empty["completeness"] == 0.0


def test_threshold_at_purity_and_rows_found():
    score = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    true = np.array([True, True, True, False, True, True, False])
    assert threshold_at_purity(score, true, purity=1.0) == 0.9
    assert threshold_at_purity(score, true, purity=0.8) == 0.6  # 5 of 6 at 0.6
    assert np.isnan(threshold_at_purity(score[3:4], true[3:4], purity=0.5))
    tied = threshold_at_purity(np.array([0.9, 0.8, 0.8]), np.array([True, True, False]), purity=0.9)
    assert tied == 0.9  # a tie is accepted or refused as a whole
    np.testing.assert_array_equal(rows_found(np.array([2, -1, 0, 2]), np.array([True, True, False, True]), 4),
                                  [False, False, True, False])


def test_object_motion():
    ids, rate = object_motion(np.array([3, 3, 1, 3]), np.array([0.0, 0.5, 0.2, 1.0]),
                              np.array([10.0, 10.1, 5.0, 10.2]), np.array([0.0, 0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(ids, [1, 3])
    assert np.isnan(rate[0]) and rate[1] == pytest.approx(0.2, rel=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match="contamination"):
        classify_tracklets(TRACKLET, OBJECT, contamination=1.0)
    with pytest.raises(ValueError, match="1-D arrays of one length"):
        classify_tracklets(TRACKLET, OBJECT[:3])
    with pytest.raises(ValueError, match="purity"):
        threshold_at_purity(np.ones(2), np.ones(2, bool), purity=0.0)


def test_figures():
    rng = np.random.default_rng(0)
    ra, dec = 150 + rng.uniform(-0.1, 0.1, 12), 20 + rng.uniform(-0.1, 0.1, 12)
    fig = tracklets_on_sky(ra, dec, EPOCH.astype(float), TRACKLET, stationary=TRACKLET < 0,
                           truth={"ra": ra[:3], "dec": dec[:3]})
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].collections[-2].get_segments()) == 2 + 2 + 1 + 1
    fig = completeness_vs_rate(np.array([0.2, 0.3, 1.0, 5.0]), np.array([True, True, False, True]),
                               reference={"single": np.array([True, False, False, True])})
    assert fig.axes[0].get_xscale() == "log"
    mags = rng.uniform(17, 21, 40)
    fig = tracklet_completeness_vs_magnitude(mags, mags < 20, reference={"single": mags < 19.5})
    legend = " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert "m50" in legend and "linked (tracklets)" in legend and "single" in legend
