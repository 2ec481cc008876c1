"""The operating point picked for the detector as deployed: the simulator's transients, the checks on cached
candidates, and train.py's precision-based threshold after them."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from neocascade.detection.reference import StarCheck
from neocascade.errors import InputError
from neocascade.pipelines.checks import image_keys, kept_by_checks, on_transients
from neocascade.simulation.config import SimConfig
from neocascade.simulation.quadrant import simulate_image, transient_sources
from neocascade.training.artifact import load_cascade
from hydra.utils import instantiate

from neocascade.pipelines.train import _scores
from neocascade.training.thresholds import threshold_for_precision
from test_train_pipeline import FAST, _compose, _train, tiny_cache  # noqa: F401  (the shared tiny candidate cache)


# ---------------------------------------------------------------------------------------------- simulated transients
def test_transient_sources_are_the_transients_painted():
    """Each listed transient changes the image at its position with its sign, and nothing else changes."""
    config = SimConfig(shape=(256, 256), n_asteroids=2, transient_rate=3000.0, transient_magnitude_range=(15.0, 17.0),
                       transient_negative_fraction=0.4)
    table = transient_sources(config, seed=5, file_index=2, image_index=1)
    image, _ = simulate_image(config, seed=5, file_index=2, image_index=1)
    plain, _ = simulate_image(dataclasses.replace(config, transient_rate=0.0), seed=5, file_index=2, image_index=1)
    assert table.shape[1] == 4 and len(table) >= 10 and set(np.unique(table[:, 3])) == {-1.0, 1.0}
    assert np.all((table[:, 2] >= 15.0) & (table[:, 2] <= 17.0))
    diff = np.nan_to_num(image - plain)
    r, c = np.rint(table[:, 1]).astype(int), np.rint(table[:, 0]).astype(int)
    live = np.isfinite(image[r, c]) & (image[r, c] != 0)  # not masked, not on a dead border
    assert live.sum() >= 5
    np.testing.assert_array_equal(np.sign(diff[r, c])[live], table[live, 3])
    far = np.ones_like(diff, dtype=bool)
    for x, y in table[:, :2]:
        far[max(int(y) - 12, 0):int(y) + 13, max(int(x) - 12, 0):int(x) + 13] = False
    assert np.abs(diff[far]).max() == 0.0
    np.testing.assert_array_equal(table, transient_sources(config, seed=5, file_index=2, image_index=1))
    assert len(transient_sources(dataclasses.replace(config, transient_rate=0.0), seed=5, file_index=2,
                                 image_index=1)) == 0


# ---------------------------------------------------------------------------------------------- checks on candidates
class _Cutouts:
    def __init__(self, stack: np.ndarray):
        self.stack = stack

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.stack[index]


class _Set(SimpleNamespace):
    def __len__(self) -> int:
        return len(self.x)


def _candidates() -> _Set:
    """Five candidates over two images of one file; their cutouts' unfiltered channel is plain."""
    return _Set(files=(3,), info={3: {"n_images": 2}}, file=np.array([3, 3, 3, 3, 3]),
                           image=np.array([0, 0, 1, 1, 1]), x=np.array([10.0, 40.0, 10.0, 40.0, 70.0]),
                           y=np.array([10.0, 40.0, 10.0, 40.0, 70.0]), label=np.array([0, 1, 0, 0, 1]),
                           cutouts=_Cutouts(np.zeros((5, 2, 21, 21), dtype=np.float32)))


def test_kept_by_checks_applies_each_check_to_its_candidates():
    cs = _candidates()
    catalogue = {0: np.array([[10.2, 10.1, 15.0]]), 1: np.array([[40.5, 40.0, 16.0], [70.0, 70.0, 19.5]])}
    stars = lambda key: catalogue[key - 9]  # noqa: E731  keys file * 3 + image
    keep = kept_by_checks(cs, np.arange(5), star_check=StarCheck(), stars=stars)
    np.testing.assert_array_equal(keep, [False, True, True, False, True])  # 19.5 mag: too faint to leave a residual
    drop_two = lambda cut: np.arange(len(cut)) % 2 == 1  # noqa: E731  a residual check keeping every other one
    np.testing.assert_array_equal(kept_by_checks(cs, np.array([1, 2, 4]), check=drop_two), [False, True, False])
    np.testing.assert_array_equal(kept_by_checks(cs, np.array([0, 1, 2, 3]), check=drop_two, star_check=StarCheck(),
                                                 stars=stars), [False, True, False, False])
    assert kept_by_checks(cs, np.arange(5)).all() and kept_by_checks(cs, np.array([], dtype=int)).size == 0
    np.testing.assert_array_equal(image_keys(cs), [9, 9, 10, 10, 10])


def test_on_transients_marks_unlabelled_candidates_on_brightened_transients():
    cs = _candidates()
    tables = {(3, 0): np.array([[10.5, 10.5, 16.0, 1.0], [40.0, 40.0, 16.0, 1.0]]),  # the second is under a positive
              (3, 1): np.array([[10.0, 10.0, 16.0, -1.0], [42.0, 40.0, 16.0, 1.0]])}  # a faded one; 2 px away
    source = SimpleNamespace(transients=lambda f, i: tables[(f, i)])
    np.testing.assert_array_equal(on_transients(cs, source, radius=1.5), [True, False, False, False, False])
    np.testing.assert_array_equal(on_transients(cs, source, radius=2.0), [True, False, False, True, False])
    assert on_transients(cs, object(), radius=1.5) is None  # image files: no transient truth


# ---------------------------------------------------------------------------------------------- train.py
GATED = ["model=resnet", "model.widths=[4,8]", "stage=gated", "stage.min_precision=0.2",
         "+data.source.sim.transient_rate=1500.0", "+data.source.sim.transient_magnitude_range=[15.0,17.0]"]


def test_train_picks_the_threshold_after_setting_transients_aside(tiny_cache, tmp_path):
    """With transients set aside, the stored threshold is the one the validation scores give once the candidates on
    brightened transients are left out; the network is the one the same seed trains without."""
    plain = _train(tmp_path / "plain", tiny_cache, *GATED)
    aside = _train(tmp_path / "aside", tiny_cache, *GATED, "operating_point.transients=aside")
    record = aside["operating_point"]
    assert record["transients"] == "aside" and record["aside"] > 0 and record["dropped"] == 0
    assert plain["operating_point"] == {"residual_check": None, "reference_check": None, "transients": "negative"}
    cascade = load_cascade(tmp_path / "aside" / "run" / "cascade.pt")
    other = load_cascade(tmp_path / "plain" / "run" / "cascade.pt").stage1.model.state_dict()
    assert all(np.array_equal(v.numpy(), other[k].numpy()) for k, v in cascade.stage1.model.state_dict().items())

    dm = instantiate(_compose(*FAST, f"paths.cache={tiny_cache}", *GATED).data)
    dm.prepare_data()
    dm.setup("fit")
    (p,), y = _scores(dm, "val", [cascade.stage1])
    marked = on_transients(dm.candidates("val"), dm.source, radius=float(dm.label_radius))
    assert marked.sum() == record["aside"]
    for report, probs in ((aside, np.where(marked, np.nan, p)), (plain, p)):
        assert report["thresholds"]["stage1"] == pytest.approx(threshold_for_precision(probs, y, target_precision=0.2))


def test_train_counts_only_what_the_checks_keep(tiny_cache, tmp_path):
    report = _train(tmp_path, tiny_cache, *GATED, "residual_check=ring", "reference_check=stars",
                    "reference_check.max_mag=99.0", "reference_check.radius=30.0")
    record = report["operating_point"]
    assert record["reference_check"].startswith("StarCheck(radius=30.0") and record["residual_check"].startswith("RingCheck")
    assert 0 < record["dropped"] <= record["candidates"]
    assert 0.0 <= report["thresholds"]["stage1"] <= 1.0


def test_train_refuses_a_bad_transient_mode(tiny_cache, tmp_path):
    with pytest.raises(InputError, match="operating_point.transients"):
        _train(tmp_path, tiny_cache, *GATED, "operating_point.transients=ignore")


def test_counted_leaves_out_what_the_checks_drop_and_the_transients():
    """train.py's pick on hand-made scores: a transient scored like an asteroid holds the threshold up until it is
    set aside; a candidate the checks drop is no detection at any threshold."""
    from omegaconf import OmegaConf

    from neocascade.pipelines.train import Judged, _counted, _judge, _pick_threshold1

    cs = _candidates()
    source = SimpleNamespace(transients=lambda f, i: np.array([[10.0, 10.0, 16.0, 1.0]]) if i == 0 else np.zeros((0, 4)),
                             reference_stars=lambda f, i: np.array([[40.0, 40.0, 15.0]]) if i == 1 else np.zeros((0, 3)))
    dm = SimpleNamespace(candidates=lambda split: cs, source=source, label_radius=1.5)
    p = np.array([0.99, 0.9, 0.5, 0.95, 0.8])  # labels 0 1 0 0 1: a transient, then a star residual, score highest
    stage = OmegaConf.create({"threshold": None, "min_recall": None, "min_precision": 1.0})
    y = cs.label == 1

    def pick(judged: Judged) -> tuple[float, dict]:
        counted, record = _counted(SimpleNamespace(judged=judged, dm=dm, logger=None))
        return _pick_threshold1(stage, _judge(p, counted), y), record

    assert pick(Judged()) == (float("inf"), {"residual_check": None, "reference_check": None, "transients": "negative"})
    t, record = pick(Judged(transients_aside=True))
    assert t == float("inf") and record["aside"] == 1  # the star residual at 0.95 still outscores both asteroids
    t, record = pick(Judged(star_check=StarCheck(), transients_aside=True))
    assert t == 0.8 and (record["dropped"], record["aside"]) == (1, 1)
    assert pick(Judged(star_check=StarCheck()))[0] == float("inf")  # the transient counts against
