"""Candidate-level and end-to-end metrics against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from neocascade.evaluation import metrics as M


def _truth(rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


# ---------------------------------------------------------------- candidate level
def test_confusion_layout():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    preds = np.array([0, 1, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(M.confusion(labels, preds), [[1, 2], [1, 3]])


def test_classification_report_hand_computed():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    preds = np.array([0, 1, 1, 0, 1, 1, 1])
    r = M.classification_report(labels, preds)
    assert r["positive"]["precision"] == pytest.approx(3 / 5)
    assert r["positive"]["recall"] == pytest.approx(3 / 4)
    assert r["positive"]["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert r["negative"]["precision"] == pytest.approx(1 / 2)
    assert r["negative"]["recall"] == pytest.approx(1 / 3)
    assert r["positive"]["support"] == 4 and r["negative"]["support"] == 3
    assert r["accuracy"] == pytest.approx(4 / 7)
    assert r["confusion"] == [[1, 2], [1, 3]]


def test_classification_report_undefined_precision_is_nan():
    r = M.classification_report(np.array([0, 1]), np.array([0, 0]))
    assert np.isnan(r["positive"]["precision"])
    assert r["positive"]["recall"] == 0.0


def test_classification_report_rejects_bad_input():
    with pytest.raises(ValueError, match="preds"):
        M.classification_report(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="labels"):
        M.classification_report(np.array([0, 2]), np.array([0, 1]))


def test_pr_curve_and_threshold():
    probs = np.array([0.1, 0.4, 0.35, 0.8, np.nan])
    labels = np.array([0, 0, 1, 1, 1])
    precision, recall, thr = M.pr_curve(probs, labels)
    np.testing.assert_allclose(thr, [0.1, 0.35, 0.4, 0.8])
    np.testing.assert_allclose(precision, [2 / 4, 2 / 3, 1 / 2, 1.0])
    np.testing.assert_allclose(recall, [2 / 3, 2 / 3, 1 / 3, 1 / 3])  # the NaN positive is never found
    assert M.threshold_for_precision(probs, labels, target=0.6) == pytest.approx(0.35)
    assert M.threshold_for_precision(probs, labels, target=1.0) == pytest.approx(0.8)
    assert M.threshold_for_precision(np.array([0.9]), np.array([0]), target=0.5) == np.inf


# ---------------------------------------------------------------- merging
def test_merge_keeps_best_of_chain_and_respects_groups():
    x = np.array([0.0, 2.0, 4.0, 20.0, 0.5])
    y = np.zeros(5)
    score = np.array([0.5, 0.9, 0.7, 0.6, 0.99])
    group = np.array([0, 0, 0, 0, 1])
    # 0-1-2 form a chain (links of 2 px); 3 is alone; 4 is in another image
    np.testing.assert_array_equal(M.merge_detections(x, y, score, radius=2.0, group=group), [1, 3, 4])
    # without groups, 4 joins the chain and wins it
    np.testing.assert_array_equal(M.merge_detections(x, y, score, radius=2.0), [3, 4])
    np.testing.assert_array_equal(M.merge_detections(x, y, score, radius=0.0), np.arange(5))
    assert M.merge_detections(np.zeros(0), np.zeros(0), np.zeros(0), radius=3.0).size == 0


# ---------------------------------------------------------------- matching to trail segments
def test_segment_distance_hand_computed():
    # horizontal trail centred at (10, 10), length 10: from x=5 to x=15
    d = M.segment_distance(np.array([12.0, 18.0, 10.0]), np.array([13.0, 10.0, 10.0]), 10.0, 10.0, 10.0, 0.0)
    np.testing.assert_allclose(d, [3.0, 3.0, 0.0])
    # vertical trail (90 degrees): the point (10, 14) lies on it
    assert M.segment_distance(np.array(10.0), np.array(14.0), 10.0, 10.0, 10.0, 90.0) == pytest.approx(0.0)


def test_match_detections_uses_trail_segment_and_image():
    truth = _truth([
        [0, 10, 10, 19.0, 10, 0],   # horizontal trail x in [5, 15] at y = 10 in image 0
        [0, 50, 50, 20.0, 0, 0],    # point source in image 0
        [1, 10, 10, 21.0, 10, 90],  # vertical trail in image 1
    ])
    det_xy = np.array([
        [14.0, 12.0],   # 2 px from trail 0's segment (7 px from its centre): match
        [17.0, 10.0],   # 2 px beyond trail 0's end: match (duplicate of trail 0)
        [50.0, 54.0],   # 4 px from the point source: no match at radius 3
        [14.0, 10.0],   # image 1: 4 px from the vertical trail; trail 0 is in another image
    ])
    det_image = np.array([0, 0, 0, 1])
    found, matched, det_truth, dup = M.match_detections(det_xy, det_image, truth, radius=3.0)
    np.testing.assert_array_equal(found, [True, False, False])
    np.testing.assert_array_equal(matched, [True, True, False, False])
    np.testing.assert_array_equal(det_truth, [0, 0, -1, -1])
    assert dup == 1


def test_match_detections_nearest_truth_wins():
    truth = _truth([[0, 0, 0, 20, 0, 0], [0, 4, 0, 20, 0, 0]])
    found, matched, det_truth, dup = M.match_detections(np.array([[3.0, 0.0]]), np.array([0]), truth, radius=3.0)
    np.testing.assert_array_equal(found, [True, True])  # both within 3 px
    np.testing.assert_array_equal(det_truth, [1])
    assert dup == 0


def test_match_detections_empty():
    found, matched, det_truth, dup = M.match_detections(np.zeros((0, 2)), np.zeros(0, int), _truth([[0, 1, 1, 20, 0, 0]]))
    assert found.tolist() == [False] and matched.size == 0 and dup == 0
    with pytest.raises(ValueError, match="truth"):
        M.match_detections(np.zeros((1, 2)), np.zeros(1, int), np.zeros((2, 5)))


# ---------------------------------------------------------------- end to end
def test_end_to_end_counts_and_miss_breakdown():
    truth = _truth([
        [0, 10, 10, 19, 0, 0],   # found
        [0, 40, 40, 20, 0, 0],   # dead
        [0, 70, 70, 20, 0, 0],   # not proposed
        [1, 10, 10, 21, 0, 0],   # stage 1 rejected
        [1, 40, 40, 21, 0, 0],   # stage 2 rejected
        [1, 70, 70, 21, 0, 0],   # passed both stages, but its detection was merged into a neighbour's
    ])
    dead = np.array([0, 1, 0, 0, 0, 0], bool)
    proposed = np.array([1, 1, 0, 1, 1, 1], bool)
    s1 = np.array([1, 0, 0, 0, 1, 1], bool)
    s2 = np.array([1, 0, 0, 0, 0, 1], bool)
    det_x = np.array([10.5, 11.0, 100.0, 70.0, 73.5])
    det_y = np.array([10.0, 10.0, 100.0, 70.0, 71.5])
    det_image = np.array([0, 0, 0, 1, 1])
    score = np.array([0.9, 0.95, 0.8, 0.6, 0.99])
    r = M.end_to_end(det_x, det_y, det_image, score, truth, n_images=2, dead=dead, proposed=proposed,
                     stage1_pass=s1, stage2_pass=s2, match_radius=3.0, merge_radius=4.0)
    # merging: (0, 1) -> 1; (3, 4) are 3.8 px apart -> 4 (4.3 px from truth 5: no match)
    np.testing.assert_array_equal(r["kept"], [1, 2, 4])
    assert r["found"] == 1 and r["injected"] == 6 and r["missed"] == 5
    assert r["completeness"] == pytest.approx(1 / 6)
    assert r["completeness_visible"] == pytest.approx(1 / 5)
    assert r["purity"] == pytest.approx(1 / 3)
    assert r["false_detections"] == 2 and r["false_per_quadrant"] == pytest.approx(1.0)
    assert r["misses"] == {"dead": 1, "not_proposed": 1, "stage1_rejected": 1, "stage2_rejected": 1, "vetoed": 0,
                           "other": 1}
    assert sum(r["misses"].values()) == r["missed"]
    np.testing.assert_array_equal(r["miss_reason"], [-1, 0, 1, 2, 3, 5])
    # the same asteroid 5, accepted but dropped by the veto, is missed as "vetoed"
    veto_pass = np.array([1, 1, 1, 1, 1, 0], bool)
    rv = M.end_to_end(det_x, det_y, det_image, score, truth, n_images=2, dead=dead, proposed=proposed,
                      stage1_pass=s1, stage2_pass=s2, veto_pass=veto_pass, match_radius=3.0, merge_radius=4.0)
    assert rv["misses"]["vetoed"] == 1 and rv["misses"]["other"] == 0
    np.testing.assert_array_equal(rv["miss_reason"], [-1, 0, 1, 2, 3, 4])
    # without merging the detection at (70, 70) survives and finds asteroid 5
    r0 = M.end_to_end(det_x, det_y, det_image, score, truth, n_images=2, dead=dead, proposed=proposed,
                      stage1_pass=s1, stage2_pass=s2, match_radius=3.0, merge_radius=0.0)
    assert r0["found"] == 2 and r0["duplicates"] == 1
    assert sum(r0["misses"].values()) == r0["missed"] == 4


def test_dead_asteroid_found_anyway_counts_as_found():
    truth = _truth([[0, 10, 10, 19, 0, 0]])
    r = M.end_to_end(np.array([10.0]), np.array([10.0]), np.array([0]), np.array([1.0]), truth, n_images=1,
                     dead=np.array([True]), proposed=np.array([True]), stage1_pass=np.array([True]),
                     stage2_pass=np.array([True]))
    assert r["found"] == 1 and r["misses"]["dead"] == 0


def test_scalar_metrics_names():
    truth = _truth([[0, 10, 10, 19, 0, 0]])
    r = M.end_to_end(np.zeros(0), np.zeros(0), np.zeros(0, int), np.zeros(0), truth, n_images=1,
                     dead=np.array([False]), proposed=np.array([False]), stage1_pass=np.array([False]),
                     stage2_pass=np.array([False]))
    s = M.scalar_metrics(r, prefix="test")
    assert s["test/e2e_completeness"] == 0.0
    assert np.isnan(s["test/e2e_purity"])
    assert s["test/e2e_miss_not_proposed"] == 1
    assert not any(isinstance(v, np.ndarray) for v in s.values())
