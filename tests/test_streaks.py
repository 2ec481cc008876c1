"""The streak veto: detections lined up along a satellite streak or a bad column."""

from __future__ import annotations

import numpy as np
import pytest

from neocascade.detection.detector import apply_veto, build_veto, cascade_veto, run_veto
from neocascade.detection.streaks import StreakVeto, streak_members
from neocascade.errors import InputError

QUADRANT = (3080, 3072)


def scattered(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n positions uniform over a quadrant (x, y)."""
    return rng.uniform(0, QUADRANT[1], n), rng.uniform(0, QUADRANT[0], n)


def streak(rng: np.random.Generator, n: int, *, start=(100.0, 1500.0), angle=0.4, length=2500.0, scatter=0.8):
    """n maxima along a straight streak, with a Gaussian scatter across it."""
    t = np.sort(rng.uniform(0, length, n))
    return (start[0] + t * np.cos(angle) + rng.normal(0, scatter, n),
            start[1] + t * np.sin(angle) + rng.normal(0, scatter, n))


@pytest.mark.parametrize("angle", [0.0, 0.4, np.pi / 2, 2.7])
def test_streak_members_flags_the_streak_and_nothing_else(rng, angle):
    start = (300.0, 300.0) if angle < 2 else (2900.0, 300.0)
    ax, ay = scattered(rng, 40)
    off_line = np.abs((ax - start[0]) * np.sin(angle) - (ay - start[1]) * np.cos(angle)) > 10.0
    ax, ay = ax[off_line][:20], ay[off_line][:20]  # an asteroid on the streak's line would go with it
    sx, sy = streak(rng, 12, angle=angle, start=start)
    members = streak_members(np.r_[ax, sx], np.r_[ay, sy])
    assert members[20:].all() and not members[:20].any()


def test_scattered_points_and_short_trails_are_never_vetoed(rng):
    assert not any(streak_members(*scattered(rng, 40)).any() for _ in range(200))
    # the maxima along one long asteroid trail (every 6 px over 60 px) are collinear but short
    x = np.arange(0.0, 60.0, 6.0) + 1000.0
    assert not streak_members(x, 0.5 * x).any()
    # five points on a line are fewer than min_points
    x5, y5 = streak(rng, 5)
    assert not streak_members(x5, y5).any() and streak_members(x5, y5, min_points=5).all()


def test_streak_members_bad_column_tolerance_and_non_finite(rng):
    column_y = np.linspace(10, 3000, 8)
    x = np.r_[np.full(8, 512.0) + rng.uniform(-2.0, 2.0, 8), 600.0, np.nan]  # 600 px: off the column
    y = np.r_[column_y, 1000.0, 5.0]
    members = streak_members(x, y)
    assert members[:8].all() and not members[8:].any()
    assert not streak_members(x, y, tolerance=0.5).any()  # the column's ±2 px scatter exceeds 0.5 px
    assert streak_members(np.empty(0), np.empty(0)).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"min_points": 2}, "min_points"), ({"tolerance": 0.0}, "tolerance"), ({"min_span": float("nan")}, "min_span")],
)
def test_streak_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StreakVeto(**kwargs)
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        streak_members(np.zeros(3), np.zeros(4))


def test_apply_veto_runs_per_image(rng):
    sx, sy = streak(rng, 8)
    ax, ay = scattered(rng, 10)
    # the streak's points split over two images: four each, fewer than min_points in either
    split = np.r_[np.zeros(4), np.ones(4)]
    veto = StreakVeto()
    assert apply_veto(veto, sx, sy, split).all()
    x, y = np.r_[sx, ax], np.r_[sy, ay]
    keep = apply_veto(veto, x, y, np.r_[np.zeros(8), np.ones(10)])
    assert not keep[:8].any() and keep[8:].all()
    assert apply_veto(None, x, y, np.zeros(18)).all()


def test_build_veto_from_configs():
    assert build_veto(None) is None and build_veto({"_target_": None}) is None
    veto = build_veto({"_target_": "neocascade.detection.streaks.StreakVeto", "min_points": 7})
    assert isinstance(veto, StreakVeto) and veto.min_points == 7 and "min_points=7" in repr(veto)
    with pytest.raises(InputError, match="^veto: cannot build"):
        build_veto({"_target_": "neocascade.detection.streaks.StreakVeto", "min_points": 1})
    with pytest.raises(InputError, match="^veto: expected a config"):
        build_veto(["streaks"])

    class Old:  # an artifact written before the veto existed
        postprocess: dict = {}

    assert cascade_veto(Old()) is None

    class Shipped:
        postprocess = {"veto": {"_target_": "neocascade.detection.streaks.StreakVeto", "min_points": 8}}

    assert run_veto(None, Shipped()).min_points == 8  # no veto= given: the artifact's
    assert run_veto({"_target_": None}, Shipped()) is None  # veto=none wins over the artifact's
    assert run_veto({"_target_": "neocascade.detection.streaks.StreakVeto", "min_points": 6}, Old()).min_points == 6
