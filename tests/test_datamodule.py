"""Splits by file, balanced per-epoch resampling and the cutout DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neocascade.candidates.footprint import FootprintSelector
from neocascade.data.datamodule import CutoutDataModule, CutoutDataset
from neocascade.data.sampling import BalancedResampler
from neocascade.data.sources import SimulatedSource
from neocascade.data.splits import validate_split
from neocascade.errors import InputError

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_SPLIT = {"train": [0, 1, 2, 3, 4, 5, 6], "val": [9], "test": [7, 8]}


# ------------------------------------------------------------------ sampler


def _labels() -> np.ndarray:
    labels = np.zeros(100, dtype=bool)
    labels[[3, 17, 42, 60, 99]] = True
    return labels


def test_every_epoch_has_all_positives_and_fresh_negatives():
    labels = _labels()
    sampler = BalancedResampler(labels, neg_ratio=1.0, seed=5)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn = np.array(list(sampler))
        assert len(drawn) == len(sampler) == 10 and len(set(drawn)) == 10
        np.testing.assert_array_equal(np.sort(drawn[labels[drawn]]), np.flatnonzero(labels))
        epochs.append(drawn)
    negatives = [set(d[~labels[d]]) for d in epochs]
    assert negatives[0] != negatives[1] != negatives[2]
    assert not np.array_equal(np.sort(epochs[0]), np.sort(epochs[1]))


def test_draw_is_reproducible_from_seed_and_epoch():
    a = BalancedResampler(_labels(), seed=5)
    b = BalancedResampler(_labels(), seed=5)
    b.set_epoch(4)
    list(b)
    b.set_epoch(2)
    a.set_epoch(2)
    np.testing.assert_array_equal(list(a), list(b))  # history does not matter
    c = BalancedResampler(_labels(), seed=6)
    c.set_epoch(2)
    assert list(c) != list(a.indices(2))


def test_without_set_epoch_iter_advances_deterministically():
    a = BalancedResampler(_labels(), seed=1)
    first, second = list(a), list(a)
    assert first != second
    np.testing.assert_array_equal(first, a.indices(0))
    np.testing.assert_array_equal(second, a.indices(1))
    resumed = BalancedResampler(_labels(), seed=1)
    resumed.set_epoch(1)  # what Lightning does after a resume
    np.testing.assert_array_equal(list(resumed), second)


def test_neg_ratio_and_too_few_negatives():
    labels = _labels()
    assert len(BalancedResampler(labels, neg_ratio=3.0)) == 5 + 15
    assert len(BalancedResampler(labels, neg_ratio=0.0)) == 5
    assert len(BalancedResampler(labels, neg_ratio=0.5)) == 5 + 2  # round(2.5) = 2
    everything = BalancedResampler(labels, neg_ratio=100.0)
    assert len(everything) == 100 and sorted(everything) == list(range(100))


def test_fixed_negatives_when_not_resampling():
    sampler = BalancedResampler(_labels(), seed=3, resample_each_epoch=False)
    labels = _labels()
    draws = [sampler.indices(e) for e in range(3)]
    assert len({frozenset(d[~labels[d]]) for d in draws}) == 1
    assert not np.array_equal(draws[0], draws[1])  # the order still changes


def test_hard_negatives_get_their_share_of_each_epoch():
    labels = np.r_[np.ones(20, dtype=bool), np.zeros(400, dtype=bool)]
    hard = np.zeros(420, dtype=bool)
    hard[20:50] = True  # 30 hard negatives of 400
    sampler = BalancedResampler(labels, neg_ratio=2.0, seed=4, hard=hard, hard_fraction=0.5)
    for epoch in range(3):
        chosen = sampler.indices(epoch)
        assert len(chosen) == 60 and len(set(chosen.tolist())) == 60 and labels[chosen].sum() == 20
        assert hard[chosen].sum() == 20  # half of the 40 negatives, against ~3 at random
    np.testing.assert_array_equal(sampler.indices(1), BalancedResampler(
        labels, neg_ratio=2.0, seed=4, hard=hard, hard_fraction=0.5).indices(1))
    few = BalancedResampler(labels, neg_ratio=2.0, hard=hard, hard_fraction=1.0)
    assert hard[few.indices(0)].sum() == 30  # all of them when fewer than asked
    plain = BalancedResampler(labels, neg_ratio=2.0, seed=4)
    np.testing.assert_array_equal(plain.indices(2), BalancedResampler(
        labels, neg_ratio=2.0, seed=4, hard=hard, hard_fraction=0.0).indices(2))  # 0 is the seed's draw
    with pytest.raises(ValueError, match="hard_fraction: must be a number in"):
        BalancedResampler(labels, hard=hard, hard_fraction=1.5)
    with pytest.raises(ValueError, match="hard: must have the labels' shape"):
        BalancedResampler(labels, hard=hard[:10], hard_fraction=0.5)


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="labels: no positive candidates"):
        BalancedResampler(np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="neg_ratio: must be a finite number >= 0"):
        BalancedResampler(_labels(), neg_ratio=-1)


def test_distributed_wrapper_shards_one_epoch_draw():
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper

    shards = []
    for rank in range(2):
        wrapper = DistributedSamplerWrapper(BalancedResampler(_labels(), seed=9), num_replicas=2, rank=rank, shuffle=False)
        wrapper.set_epoch(3)
        shards.append(list(wrapper))
    merged = sorted(shards[0] + shards[1])
    assert merged == sorted(BalancedResampler(_labels(), seed=9).indices(3).tolist())


# ------------------------------------------------------------------ splits


def test_split_is_validated_against_the_source_files():
    assert validate_split(TINY_SPLIT, range(10)) == {"train": (0, 1, 2, 3, 4, 5, 6), "val": (9,), "test": (7, 8)}
    assert validate_split({"train": [1], "test": None}, range(3)) == {"train": (1,), "val": (), "test": ()}


@pytest.mark.parametrize(
    ("split", "match"),
    [
        ({"train": [0, 1], "test": [1]}, "data.split: file 1 is listed in both train and test"),
        ({"train": [0, 0]}, "data.split: file 0 is listed twice"),
        ({"train": [0], "test": [12]}, r"data.split.test: file 12 is not in the source \(expected files 0-9, got 12\)"),
        ({"train": [0], "holdout": [1]}, "data.split: unknown split 'holdout'"),
        ({"train": "0-6"}, "data.split.train: must be a list of file indices"),
        ({"train": [0.5]}, "data.split.train: file indices must be integers"),
        (None, "data.split: missing"),
    ],
)
def test_bad_splits_give_one_line(split, match):
    with pytest.raises(InputError, match=match) as info:
        validate_split(split, range(10))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ data module


def tiny_module(cache_dir, **overrides) -> CutoutDataModule:
    """conf/data/tiny.yaml built by hand, with plain Python objects."""
    kwargs = dict(
        name="tiny",
        source=SimulatedSource(seed=7, n_files=10, images_per_file=2, shape=[256, 256], n_asteroids=6),
        selector=FootprintSelector(kernel=16, stride=16),
        sigma=1.0,
        kernel=16,
        stride=16,
        cutout_size=21,
        split=TINY_SPLIT,
        batch_size=64,
        seed=3,
        cache_dir=str(cache_dir),
        n_jobs=1,
        progress=False,
    )
    kwargs.update(overrides)
    return CutoutDataModule(**kwargs)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    tiny_module(path).prepare_data()
    return path


def test_hydra_builds_the_module_from_the_tiny_preset(cache_dir):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = ["+data=tiny", "+selector=footprint", "+seed=3", "+paths=default", f"paths.cache={cache_dir}", "+data.progress=false"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=overrides)
    dm = instantiate(cfg.data)
    assert isinstance(dm, CutoutDataModule)
    assert dm.handle.root == tiny_module(cache_dir).handle.root  # same cache as plain objects
    selector = dm.input_spec["selector"]
    assert selector["_target_"] == "neocascade.candidates.footprint.FootprintSelector"
    assert (selector["kernel"], selector["stride"]) == (16, 16)
    raw = instantiate(cfg.data, _recursive_=False)  # configs instead of built objects work too
    assert raw.handle.root == dm.handle.root


def test_batches_and_input_spec(cache_dir):
    dm = tiny_module(cache_dir, channels=["filtered", "raw"], normalize="image_noise")
    dm.setup("fit")
    assert dm.in_channels == 2
    spec = dm.input_spec
    assert spec["sigma"] == 1.0 and spec["kernel"] == 16 and spec["channels"] == ["filtered", "raw"]
    assert spec["selector"]["_target_"].endswith("FootprintSelector") and spec["normalize"] == "image_noise"
    cs = dm.candidates("train")
    assert set(np.unique(cs.file)) == set(range(7)) and len(cs) == 7 * 2 * 256
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (64, 2, 21, 21)
    assert y.dtype == torch.int64 and index.dtype == torch.int64
    idx = index.numpy()
    np.testing.assert_array_equal(y.numpy(), cs.label[idx])
    expected = cs.cutouts.take(idx).astype(np.float32) / cs.image_noise[idx, None, None, None]
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6)


def test_train_epoch_is_balanced_and_val_test_cover_everything(cache_dir):
    dm = tiny_module(cache_dir, neg_ratio=2.0)
    dm.setup("fit")
    labels = dm.get_labels("train")
    loader = dm.train_dataloader()
    index = torch.cat([b[2] for b in loader]).numpy()
    n_pos = int(labels.sum())
    assert n_pos > 0 and len(index) == 3 * n_pos and len(set(index)) == len(index)
    assert labels[index].sum() == n_pos
    val = torch.cat([b[2] for b in dm.val_dataloader()]).numpy()
    np.testing.assert_array_equal(val, np.arange(len(dm.candidates("val"))))
    dm.setup("test")
    test = torch.cat([b[1] for b in dm.test_dataloader()]).numpy()
    np.testing.assert_array_equal(test, dm.get_labels("test"))


def test_hard_negatives_are_the_bright_candidates(cache_dir):
    dm = tiny_module(cache_dir, hard_negatives={"fraction": 1.0, "min_snr": 8.0})
    dm.setup("fit")
    cs = dm.candidates("train")
    index = torch.cat([b[2] for b in dm.train_dataloader()]).numpy()
    negatives = index[cs.label[index] == 0]
    snr = cs.peak[negatives] / cs.local_noise[negatives]
    bright = int((cs.peak[cs.label == 0] / cs.local_noise[cs.label == 0] >= 8.0).sum())
    assert negatives.size > 0 and int((snr >= 8.0).sum()) == min(negatives.size, bright)


def test_restrict_limits_train_and_val(cache_dir):
    dm = tiny_module(cache_dir)
    dm.setup("fit")
    cs = dm.candidates("train")
    keep = np.zeros(len(cs), dtype=bool)
    keep[np.flatnonzero(cs.label)] = True
    keep[np.flatnonzero(~cs.label)[:50]] = True
    dm.restrict("train", keep)
    index = torch.cat([b[2] for b in dm.train_dataloader()]).numpy()
    n_pos = int(cs.label.sum())
    assert set(index) <= set(np.flatnonzero(keep)) and len(index) == n_pos + min(n_pos, 50)
    val_keep = np.zeros(len(dm.candidates("val")), dtype=bool)
    val_keep[[5, 7, 300]] = True
    dm.restrict("val", val_keep)
    np.testing.assert_array_equal(torch.cat([b[2] for b in dm.val_dataloader()]).numpy(), [5, 7, 300])
    assert len(torch.cat([b[2] for b in dm.predict_loader("val")])) == len(val_keep)  # scoring ignores it
    dm.restrict("val", None)
    assert len(torch.cat([b[2] for b in dm.val_dataloader()])) == len(val_keep)
    with pytest.raises(ValueError, match="keep: must be a bool array"):
        dm.restrict("train", keep[:10])
    dm.restrict("train", ~cs.label)
    with pytest.raises(InputError, match="data.split.train: no positive candidates"):
        dm.train_dataloader()


def test_predict_loader_over_given_indices(cache_dir):
    dm = tiny_module(cache_dir)
    x, y, index = next(iter(dm.predict_loader("test", np.array([9, 2, 400]))))
    np.testing.assert_array_equal(index.numpy(), [9, 2, 400])
    cs = dm.candidates("test")
    np.testing.assert_array_equal(x.numpy()[:, 0], cs.cutouts.take([9, 2, 400])[:, 0].astype(np.float32))


def test_augmentation_keeps_labels_and_pixel_values(cache_dir):
    dm = tiny_module(cache_dir)
    cs = dm.candidates("train")
    idx = np.arange(200)
    plain = CutoutDataset(cs, idx, channels=["filtered"], normalize="none").batch(idx)
    turned = CutoutDataset(cs, idx, channels=["filtered"], normalize="none", augment=True, seed=1).batch(idx)
    np.testing.assert_array_equal(turned[1], plain[1])
    np.testing.assert_array_equal(turned[2], plain[2])
    a, b = plain[0].numpy(), turned[0].numpy()
    np.testing.assert_array_equal(np.sort(a.reshape(200, -1), axis=1), np.sort(b.reshape(200, -1), axis=1))
    assert not np.array_equal(a, b)


def test_fading_touches_training_batches_only(cache_dir):
    """data.fade: training cutouts become fainter copies (labels kept); validation and test stay as cached."""
    dm = tiny_module(cache_dir, fade={"probability": 1.0, "min_scale": 0.2, "min_snr": 0.0})
    dm.setup("fit")
    cs = dm.candidates("train")
    x, y, index = next(iter(dm.train_dataloader()))
    idx = index.numpy()
    cached = cs.cutouts.take(idx)[:, :1].astype(np.float32)
    np.testing.assert_array_equal(y.numpy(), cs.label[idx])
    assert not np.allclose(x.numpy(), cached)
    centre = x.numpy()[:, 0, 10, 10]
    bright = cached[:, 0, 10, 10] > 20 * cs.image_noise[idx]
    assert bright.any() and (centre[bright] < cached[bright, 0, 10, 10]).all()  # bright sources always fade
    xv, _, iv = next(iter(dm.val_dataloader()))
    np.testing.assert_array_equal(xv.numpy(), dm.candidates("val").cutouts.take(iv.numpy())[:, :1].astype(np.float32))
    assert tiny_module(cache_dir, fade={"probability": 0.0}).fade is None
    matched = tiny_module(cache_dir, fade={"probability": 1.0, "match_correlation": True})
    assert matched.fade == {"probability": 1.0, "match_correlation": True}
    xm, _, _ = next(iter(matched.train_dataloader()))
    assert np.isfinite(xm.numpy()).all()


def test_dataset_pickles_for_worker_processes(cache_dir):
    import pickle

    dm = tiny_module(cache_dir)
    dataset = CutoutDataset(dm.candidates("test"), np.arange(30, 60), channels=["filtered"], normalize="cutout")
    clone = pickle.loads(pickle.dumps(dataset))
    for a, b in zip(dataset.batch(range(30)), clone.batch(range(30))):
        np.testing.assert_array_equal(a, b)
    x, y, index = next(iter(tiny_module(cache_dir, num_workers=1, normalize="cutout").predict_loader("test", np.arange(30, 60))))
    np.testing.assert_array_equal(index, np.arange(30, 60))
    np.testing.assert_array_equal(x, dataset.batch(range(30))[0])


def test_lightning_can_swap_in_a_distributed_sampler(cache_dir):
    from lightning_fabric.utilities.distributed import DistributedSamplerWrapper
    from pytorch_lightning.trainer.states import RunningStage
    from pytorch_lightning.utilities.data import _update_dataloader

    dm = tiny_module(cache_dir)
    loader = dm.train_dataloader()
    n = len(loader.sampler)
    seen = []
    for rank in range(2):
        sampler = DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=rank, shuffle=False)
        sampler.set_epoch(0)
        ddp_loader = _update_dataloader(loader, sampler, mode=RunningStage.TRAINING)
        seen.append(torch.cat([b[2] for b in ddp_loader]).numpy())
    assert sorted(np.concatenate(seen)) == sorted(BalancedResampler(dm.get_labels("train"), seed=3).indices(0)) and n % 2 == 0


def test_lightning_sets_the_sampler_epoch(cache_dir):
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(21 * 21, 2)
            self.seen: list[set] = []
            self.val_batches = 0

        def training_step(self, batch, batch_idx):
            x, y, index = batch
            if batch_idx == 0:
                self.seen.append(set())
            self.seen[-1].update(index.tolist())
            return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

        def validation_step(self, batch, batch_idx):
            self.val_batches += 1

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    dm = tiny_module(cache_dir)
    model = Recorder()
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1,
    )
    trainer.fit(model, datamodule=dm)
    sampler = BalancedResampler(dm.get_labels("train"), seed=3)
    assert model.seen[0] == set(sampler.indices(0).tolist())
    assert model.seen[1] == set(sampler.indices(1).tolist())
    assert model.val_batches > 0


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"split": {"train": [0], "test": [10]}}, "data.split.test: file 10 is not in the source"),
        ({"channels": ["filtered", "diff"]}, "data.channels: unknown channel 'diff'"),
        ({"normalize": "zscore"}, "data.normalize: must be one of"),
        ({"neg_ratio": -1.0}, "data.neg_ratio: must be a finite number >= 0"),
        ({"batch_size": 0}, "data.batch_size: must be an integer >= 1"),
        ({"selector": None}, "data.selector: no candidate selector configured"),
        ({"label_mode": "box"}, "data.label_mode: must be one of"),
        ({"fade": {"probability": 2.0}}, "data.fade: need 0 <= probability <= 1"),
        ({"fade": {"strength": 0.5}}, "data.fade: unknown key"),
        ({"fade": 0.5}, "data.fade: must be null or a mapping"),
        ({"fade": {"match_correlation": "yes"}}, "data.fade.match_correlation: must be true or false"),
        ({"fade": {"probability": "half"}}, "data.fade: probability, min_scale and min_snr must be numbers"),
        ({"hard_negatives": {"fraction": 0.5}}, "data.hard_negatives: needs exactly the keys fraction, min_snr"),
        ({"hard_negatives": {"fraction": 2.0, "min_snr": 5.0}}, "data.hard_negatives.fraction: must be a number"),
        ({"hard_negatives": {"fraction": 0.5, "min_snr": 0}}, "data.hard_negatives.min_snr: must be a number"),
        ({"hard_negatives": 0.5}, "data.hard_negatives: must be null or a mapping"),
    ],
)
def test_bad_config(tmp_path, overrides, match):
    with pytest.raises(InputError, match=match):
        tiny_module(tmp_path, **overrides)


def test_empty_split_has_no_loader(cache_dir):
    dm = tiny_module(cache_dir, split={"train": [0, 1], "val": [], "test": [2]})
    assert dm.val_dataloader() == []
    with pytest.raises(InputError, match="data.split.val: has no files"):
        dm.candidates("val")
