"""Linking: hand-made detections of one field with exact answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from neocascade.linking import (
    Linker, field_centre, from_tangent_plane, image_footprint, link_detections, position_angle, tangent_plane,
)

RA0, DEC0 = 150.0, 20.0
TIMES = 60000.3 + np.array([0.0, 20.0, 40.0]) / 1440.0  # three visits 20 min apart (MJD)
SCALE = 1.01 / 3600.0  # deg/px
EXPTIME = 30.0
CONF = Path(__file__).resolve().parents[1] / "conf"


def _mover(xi0: float, eta0: float, rate: float, pa: float, epochs=(0, 1, 2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tangent-plane track (deg) of a mover starting at (xi0, eta0), rate deg/day, pa deg east of north."""
    e = np.asarray(epochs)
    dt = TIMES[e] - TIMES[0]
    a = np.deg2rad(pa)
    return e, xi0 + rate * dt * np.sin(a), eta0 + rate * dt * np.cos(a)


def _table(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]) -> dict[str, np.ndarray]:
    """Detections from (epoch, xi, eta, score) parts, as the shared dict of arrays."""
    epoch = np.concatenate([p[0] for p in parts])
    xi = np.concatenate([p[1] for p in parts])
    eta = np.concatenate([p[2] for p in parts])
    score = np.concatenate([np.full(len(p[0]), p[3]) for p in parts])
    ra, dec = from_tangent_plane(xi, eta, ra0=RA0, dec0=DEC0)
    n = epoch.size
    return {
        "exposure": epoch.astype(np.int64), "mjd": TIMES[epoch], "ra": ra, "dec": dec,
        "x": xi / SCALE, "y": eta / SCALE, "score": score, "exptime": np.full(n, EXPTIME),
    }


def _scene(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """3 movers, 2 stationary sources (3 and 2 epochs) and 30 noise detections; truth labels per detection."""
    parts = [
        (*_mover(0.00, 0.00, 0.25, 90.0), 0.95),   # main belt, east
        (*_mover(0.10, -0.05, 1.0, 200.0), 0.9),   # faster, south-south-west
        (*_mover(-0.12, 0.08, 5.0, 45.0), 0.97),   # near-Earth object
        (np.arange(3), np.full(3, 0.05), np.full(3, 0.05), 0.9),     # supernova in all three visits
        (np.array([0, 2]), np.full(2, -0.07), np.full(2, 0.02), 0.8),  # variable star seen twice
        (rng.integers(0, 3, 30), rng.uniform(-0.3, 0.3, 30), rng.uniform(-0.3, 0.3, 30), 0.3),
    ]
    obj = np.concatenate([np.full(len(p[0]), k) for k, p in enumerate(parts)])
    obj[obj == 5] = -1
    return _table(parts), obj, np.isin(obj, (3, 4))


def _groups(tracklet: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(np.flatnonzero(tracklet == t)) for t in np.unique(tracklet[tracklet >= 0])}


def test_three_movers_stationary_and_noise(rng):
    det, obj, still = _scene(rng)
    res = link_detections(det, pair_min_score=0.8)
    expected = {tuple(np.flatnonzero(obj == k)) for k in range(3)}
    assert _groups(res.tracklet) == expected
    np.testing.assert_array_equal(res.stationary, still)
    assert (res.tracklet[obj == -1] == -1).all()
    order = np.argsort([res.tracklets["rate"]])[0]
    np.testing.assert_allclose(res.tracklets["rate"][order], [0.25, 1.0, 5.0], rtol=1e-4)
    pa = {round(r, 2): p for r, p in zip(res.tracklets["rate"], res.tracklets["pa"])}
    assert pa[0.25] == pytest.approx(90.0, abs=0.1) and pa[5.0] == pytest.approx(45.0, abs=0.1)
    assert (res.tracklets["n"] == 3).all() and (res.tracklets["rms"] < 1e-3).all()


def test_pair_tracklet_needs_score_and_prefers_three():
    a = _mover(0.0, 0.0, 2.0, 30.0)
    b = _mover(0.05, 0.0, 1.0, 300.0, epochs=(0, 2))
    det = _table([(*a, 0.95), (*b, 0.95)])
    assert _groups(link_detections(det, pair_min_score=0.9).tracklet) == {(0, 1, 2)}  # 3 epochs: 3 detections
    res = link_detections(det, pair_min_score=0.9, min_detections=2)
    assert _groups(res.tracklet) == {(0, 1, 2), (3, 4)}
    det["score"][3:] = 0.6
    assert _groups(link_detections(det, pair_min_score=0.9, min_detections=2).tracklet) == {(0, 1, 2)}
    two_epochs = {k: v[3:] for k, v in det.items()}
    assert _groups(link_detections(two_epochs, pair_min_score=0.5).tracklet) == {(0, 1)}
    assert _groups(link_detections(det, min_detections=3, pair_min_score=0.0).tracklet) == {(0, 1, 2)}


def test_conflict_each_detection_in_one_tracklet():
    # A (3 detections) and a high-score detection X at epoch 2 that pairs with A's epoch-1 detection
    a = _mover(0.0, 0.0, 1.0, 0.0)
    e, xi, eta = _mover(0.0, 0.0, 1.0, 0.0, epochs=(1,))
    x_epoch, x_xi, x_eta = np.array([2]), xi + 3e-3, eta + 5e-3  # 1.0 deg/day-ish away from A1
    det = _table([(*a, 0.6), (x_epoch, x_xi, x_eta, 0.99)])
    res = link_detections(det, pair_min_score=0.5, min_detections=2)
    assert _groups(res.tracklet) == {(0, 1, 2)}
    assert res.tracklet[3] == -1
    assert res.n_candidates >= 1


def test_greedy_prefers_smaller_residual_for_shared_detection():
    # two candidate third points for the same pair: the one on the line wins, the other stays free
    e, xi, eta = _mover(0.0, 0.0, 3.0, 120.0)
    det = _table([(e, xi, eta, 0.9), (np.array([1]), xi[1:2] + 1.5 / 3600, eta[1:2], 0.99)])
    res = link_detections(det, pair_min_score=0.95, min_detections=2)
    assert _groups(res.tracklet) == {(0, 1, 2)}
    assert res.tracklet[3] == -1


def test_rate_and_direction_limits():
    fast = _mover(0.0, 0.0, 20.0, 10.0)
    det = _table([(*fast, 0.9)])
    assert (link_detections(det, max_rate=15.0).tracklet == -1).all()
    assert _groups(link_detections(det, max_rate=25.0).tracklet) == {(0, 1, 2)}
    assert (link_detections(det, max_rate=25.0, direction_range=[90, 180]).tracklet == -1).all()
    assert _groups(link_detections(det, max_rate=25.0, direction_range=[350, 20]).tracklet) == {(0, 1, 2)}
    slow = _table([(*_mover(0.0, 0.0, 0.1, 0.0), 0.9)])
    assert (link_detections(slow, min_rate=0.2, stationary_radius=0.5).tracklet == -1).all()


def _trailed(length: float, angle: float) -> dict[str, np.ndarray]:
    """A 5 deg/day mover at PA 45 with every detection's trail set to ``length`` px at ``angle``."""
    det = _table([(*_mover(0.0, 0.0, 5.0, 45.0), 0.9)])
    n = det["ra"].size
    det.update(trail_length=np.full(n, length), trail_angle=np.full(n, angle),
               cd1_1=np.full(n, -SCALE), cd1_2=np.zeros(n), cd2_1=np.zeros(n), cd2_2=np.full(n, SCALE))
    return det


def test_trail_must_agree_with_motion():
    predicted = 5.0 * EXPTIME / 86400 / SCALE  # px: rate x exptime / pixel scale (6.19 px)
    angle = np.rad2deg(np.arctan2(1.0, -1.0))  # RA grows towards -x: east-north motion is (-x, +y) in pixels
    assert _groups(link_detections(_trailed(predicted, angle)).tracklet) == {(0, 1, 2)}
    assert _groups(link_detections(_trailed(predicted, angle + 180.0)).tracklet) == {(0, 1, 2)}  # no head or tail
    assert (link_detections(_trailed(predicted, angle + 60.0)).tracklet == -1).all()
    assert (link_detections(_trailed(25.0, angle)).tracklet == -1).all()
    det = _trailed(predicted, angle)
    det["trail_length"][1] = np.nan  # not measured in one exposure: no check there
    assert _groups(link_detections(det).tracklet) == {(0, 1, 2)}


def test_short_trail_direction_is_not_checked():
    det = _table([(*_mover(0.0, 0.0, 0.25, 90.0), 0.9)])  # 0.09 px trail
    n = det["ra"].size
    det.update(trail_length=np.full(n, 1.0), trail_angle=np.full(n, 77.0),
               cd1_1=np.full(n, -SCALE), cd1_2=np.zeros(n), cd2_1=np.zeros(n), cd2_2=np.full(n, SCALE))
    assert _groups(link_detections(det).tracklet) == {(0, 1, 2)}


def test_candidate_pairs_grow_linearly(rng):
    def pairs(n_per_epoch: int, side: float) -> int:
        parts = [(np.full(n_per_epoch, e), rng.uniform(-side, side, n_per_epoch), rng.uniform(-side, side, n_per_epoch), 0.5)
                 for e in range(3)]
        return link_detections(_table(parts), max_rate=3.0).n_pairs

    small, large = pairs(400, 0.5), pairs(1600, 1.0)  # same density, 4x the detections
    assert 3.0 < large / small < 5.0
    assert large < 0.05 * (3 * 1600) ** 2  # far from all pairs


def test_empty_and_one_epoch():
    empty = link_detections({k: np.empty(0) for k in ("exposure", "mjd", "ra", "dec", "x", "y", "score")})
    assert empty.tracklet.size == 0 and empty.tracklets["ra"].size == 0
    one = _table([(np.zeros(4, dtype=int), np.linspace(0, 0.1, 4), np.zeros(4), 0.9)])
    res = link_detections(one)
    assert (res.tracklet == -1).all() and not res.stationary.any()
    below = link_detections(_table([(*_mover(0.0, 0.0, 1.0, 0.0), 0.2)]), threshold=0.5)
    assert (below.tracklet == -1).all()


def test_bad_input():
    det = _table([(*_mover(0.0, 0.0, 1.0, 0.0), 0.9)])
    with pytest.raises(ValueError, match="detections: missing score"):
        link_detections({k: v for k, v in det.items() if k != "score"})
    with pytest.raises(ValueError, match="detections.ra: expected 3 entries"):
        link_detections({**det, "ra": det["ra"][:2]})
    with pytest.raises(ValueError, match="detections.mjd: 1 non-finite"):
        link_detections({**det, "mjd": np.array([np.nan, 1.0, 2.0])})
    with pytest.raises(ValueError, match="trail_angle: needs the exposure's CD matrix"):
        link_detections({**det, "trail_length": np.ones(3), "trail_angle": np.ones(3)})
    with pytest.raises(ValueError, match="max_rate: must be > 0"):
        link_detections(det, max_rate=0)
    with pytest.raises(ValueError, match="min_rate: must be below max_rate"):
        link_detections(det, min_rate=20.0, max_rate=15.0)
    with pytest.raises(ValueError, match="min_detections: must be an integer >= 2"):
        Linker(min_detections=1)


def test_sky_helpers_round_trip():
    ra = np.array([359.9, 0.1, 0.0])
    dec = np.array([-1.0, 1.0, 0.0])
    ra0, dec0 = field_centre(ra, dec)
    assert ra0 == pytest.approx(0.0333, abs=1e-3) or ra0 == pytest.approx(360 - 0.0, abs=0.05)
    xi, eta = tangent_plane(ra, dec, ra0=ra0, dec0=dec0)
    back_ra, back_dec = from_tangent_plane(xi, eta, ra0=ra0, dec0=dec0)
    np.testing.assert_allclose(np.cos(np.deg2rad(back_ra - ra)), 1.0, atol=1e-12)
    np.testing.assert_allclose(back_dec, dec, atol=1e-10)
    np.testing.assert_allclose(position_angle(np.array([1.0, 0.0]), np.array([0.0, -1.0])), [90.0, 180.0])


def test_config_builds_linker():
    with initialize_config_dir(config_dir=str(CONF / "link"), version_base="1.3"):
        cfg = compose(config_name="default")
    linker = instantiate(cfg)
    assert isinstance(linker, Linker) and linker.threshold == cfg.threshold
    det, _, _ = _scene(np.random.default_rng(1))
    det["score"] = np.maximum(det["score"], cfg.threshold)  # the scene's scores (0.9-0.97) predate the 0.98 default
    assert (linker(det).tracklet >= 0).sum() == 9


def test_pair_kept_where_no_third_detection_was_possible():
    det = _table([(*_mover(0.0, 0.0, 2.0, 90.0, epochs=(0, 1)), 0.95)])
    assert _groups(link_detections(det).tracklet) == {(0, 1)}  # a field of 2 epochs: pairs are all there is
    other = _table([(np.array([2]), np.array([0.5]), np.array([0.5]), 0.9)])  # the field's third epoch
    both = {k: np.concatenate([det[k], other[k]]) for k in det}

    def square(centre_xi: float) -> dict[str, np.ndarray]:
        xi = centre_xi + np.array([-0.01, 0.01, 0.01, -0.01])
        eta = np.array([-0.01, -0.01, 0.01, 0.01])
        ra, dec = from_tangent_plane(xi, eta, ra0=RA0, dec0=DEC0)
        return {"mjd": TIMES[2:3], "ra": ra[None], "dec": dec[None]}

    assert (link_detections(both).tracklet == -1).all()  # no footprints: a third epoch exists, pairs refused
    reached = 2.0 * (TIMES[2] - TIMES[0])  # deg east at epoch 2
    assert _groups(link_detections(both, footprints=square(0.3)).tracklet) == {(0, 1)}  # epoch 2 looked elsewhere
    assert (link_detections(both, footprints=square(reached)).tracklet == -1).all()  # it was in view: not confirmed
    with pytest.raises(ValueError, match="footprints: expected"):
        link_detections(both, footprints={"mjd": TIMES, "ra": np.zeros((3, 3)), "dec": np.zeros((3, 3))})


def test_crossing_pairs_prefer_the_slower_pairing():
    # two slow movers seen at epochs 0 and 1 only, in a 2-epoch field: pairs always fit, the slower pairing wins
    a = _mover(0.0, 0.0, 0.3, 10.0, epochs=(0, 1))
    b = _mover(0.02, 0.01, 0.3, 20.0, epochs=(0, 1))
    parts = [(a[0][k:k + 1], a[1][k:k + 1], a[2][k:k + 1], s) for k, s in ((0, 0.99), (1, 0.90))]
    parts += [(b[0][k:k + 1], b[1][k:k + 1], b[2][k:k + 1], s) for k, s in ((0, 0.90), (1, 0.99))]
    det = _table(parts)  # the crossed pairs (0, 3) and (2, 1) score higher than the true ones
    assert _groups(link_detections(det, pair_min_score=0.5).tracklet) == {(0, 1), (2, 3)}


def test_image_footprint_is_the_data_box():
    image = np.ones((40, 30), dtype=np.float32)
    image[:5] = 0.0  # rows outside this visit's pointing
    image[:, 27:] = np.nan
    x, y = image_footprint(image, margin=2)
    np.testing.assert_array_equal(x, [2, 24, 24, 2])
    np.testing.assert_array_equal(y, [7, 7, 37, 37])
    x, y = image_footprint(np.zeros((10, 10)), margin=2)
    assert np.ptp(x) == 0 and np.ptp(y) == 0
