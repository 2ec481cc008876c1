"""CutoutClassifier: training on random cutouts, metrics, losses, outputs, checkpoints, wandb plots."""

from __future__ import annotations

import functools
import io
import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from neocascade.errors import InputError
from neocascade.models import BaselineNet, FinalNet
from neocascade.training.classifier import (
    CutoutClassifier,
    classifier_from_checkpoint,
    cutout_grid,
    focal_loss,
)

ADAM = functools.partial(torch.optim.Adam, lr=1e-3, weight_decay=1e-5)
METRICS = ("precision", "recall", "f1", "auroc", "ap", "tp", "fp", "fn", "tn")


def _loader(n: int = 64, *, channels: int = 1, size: int = 21, seed: int = 0, batch_size: int = 32) -> DataLoader:
    """Half positives with a bright centre, as DataModule batches: (x float32, y int64, index int64)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=g)
    y = (torch.arange(n) % 2).to(torch.int64)
    x[y == 1, :, size // 2, size // 2] += 5.0
    index = torch.arange(100, 100 + n, dtype=torch.int64)
    return DataLoader(TensorDataset(x, y, index), batch_size=batch_size)


def _small_final(channels: int = 1, size: int = 21) -> FinalNet:
    return FinalNet(channels, size, widths=[4, 4, 4, 4], hidden=8)


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def test_fast_dev_run_trains_and_logs_metrics(tmp_path):
    torch.manual_seed(0)
    module = CutoutClassifier(_small_final(), ADAM)
    before = [p.detach().clone() for p in module.parameters()]
    loader = _loader()
    trainer = _trainer(tmp_path, fast_dev_run=True)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=_loader(batch_size=64))
    logged = trainer.callback_metrics
    assert "train/loss" in logged and "val/loss" in logged
    for name in METRICS:
        assert f"val/{name}" in logged and f"train/{name}" in logged
    assert float(logged["val/tp"] + logged["val/fp"] + logged["val/fn"] + logged["val/tn"]) == 64
    assert 0.0 <= float(logged["val/auroc"]) <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    out = module.val_outputs
    assert set(out) == {"prob", "label", "index"}
    np.testing.assert_array_equal(out["index"], np.arange(100, 164))
    np.testing.assert_array_equal(out["label"], np.arange(64) % 2)
    assert out["prob"].dtype == np.float32 and np.all((out["prob"] >= 0) & (out["prob"] <= 1))


def test_test_split_logs_and_keeps_outputs(tmp_path):
    module = CutoutClassifier(_small_final(2, 15), ADAM)
    trainer = _trainer(tmp_path)
    trainer.test(module, dataloaders=_loader(32, channels=2, size=15))
    assert {f"test/{n}" for n in METRICS} <= set(trainer.callback_metrics)
    assert module.test_outputs["prob"].shape == (32,)


def test_one_class_epoch_gives_nan_ranking_metrics(tmp_path):
    x = torch.randn(8, 1, 21, 21)
    loader = DataLoader(TensorDataset(x, torch.zeros(8, dtype=torch.int64), torch.arange(8)), batch_size=8)
    trainer = _trainer(tmp_path)
    trainer.validate(CutoutClassifier(_small_final(), ADAM), dataloaders=loader)
    assert np.isnan(float(trainer.callback_metrics["val/auroc"]))
    assert float(trainer.callback_metrics["val/tp"]) == 0


def test_predict_step_returns_probability_and_index():
    module = CutoutClassifier(_small_final(), None).eval()
    x, y, index = next(iter(_loader(8)))
    out = module.predict_step((x, y, index), 0)
    torch.testing.assert_close(out["prob"], torch.softmax(module(x), 1)[:, 1])
    assert torch.equal(out["index"], index)
    assert module.predict_step(x, 0)["index"] is None


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(16, 2, generator=g), torch.randint(0, 2, (16,), generator=g)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
    weight = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(
        focal_loss(logits, target, gamma=0.0, weight=weight), F.cross_entropy(logits, target, weight=weight)
    )
    module = CutoutClassifier(_small_final(), ADAM, loss="focal", focal_gamma=0.0, class_weights=[1.0, 3.0])
    torch.testing.assert_close(module.compute_loss(logits, target), F.cross_entropy(logits, target, weight=weight))


def test_focal_loss_known_value():
    # p_t = 0.8 for both samples: loss = -(0.2 ** 2) * log(0.8)
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.2, 0.8]]))
    target = torch.tensor([0, 1])
    expected = -(0.2**2) * np.log(0.8)
    assert float(focal_loss(logits, target, gamma=2.0)) == pytest.approx(expected, rel=1e-6)
    confident = torch.tensor([[40.0, -40.0]], requires_grad=True)
    focal_loss(confident, torch.tensor([0]), gamma=0.5).backward()
    assert torch.isfinite(confident.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "hinge"}, "^loss: unknown loss"),
        ({"focal_gamma": -1}, "^focal_gamma: must be >= 0"),
        ({"class_weights": [1.0]}, "^class_weights: must be 2 positive numbers"),
    ],
)
def test_bad_settings_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        CutoutClassifier(_small_final(), ADAM, **kwargs)


def test_hyperparameters_are_plain_containers():
    module = CutoutClassifier(BaselineNet(2, 21), ADAM, class_weights=(1, 2))
    hp = dict(module.hparams)
    assert json.loads(json.dumps(hp)) == hp
    assert hp["arch"] == "baseline" and hp["model_hparams"] == BaselineNet(2, 21).hparams()
    assert hp["optimizer"] == {"_target_": "torch.optim.adam.Adam", "lr": 1e-3, "weight_decay": 1e-5}
    assert hp["class_weights"] == [1.0, 2.0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A baseline classifier trained 2 steps, saved by the Trainer; returns (path, module)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    module = CutoutClassifier(BaselineNet(1, 21, widths=[4, 4, 4], hidden=[8, 4]), ADAM, loss="focal")
    trainer = _trainer(tmp, max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader())
    path = tmp / "stage1.ckpt"
    trainer.save_checkpoint(path)
    return path, module.eval()


def test_checkpoint_loads_with_weights_only(checkpoint):
    path, module = checkpoint
    raw = torch.load(path, weights_only=True)
    assert raw["hyper_parameters"]["arch"] == "baseline"
    loaded = classifier_from_checkpoint(path, "baseline", in_channels=1, cutout_size=21)
    assert not loaded.training and loaded.hparams["loss"] == "focal"
    x = next(iter(_loader(8)))[0]
    torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expected_arch": "final"}, "trained as 'baseline', config asks 'final'"),
        ({"cutout_size": 25}, "trained for cutout_size 21, config asks 25"),
        ({"in_channels": 2}, "trained for in_channels 1, config asks 2"),
    ],
)
def test_checkpoint_mismatch_raises_one_line(checkpoint, kwargs, message):
    path = checkpoint[0]
    with pytest.raises(InputError) as info:
        classifier_from_checkpoint(path, **kwargs)
    assert str(info.value) == f"{path}: {message}"


class _Evil:
    pass


def test_unsafe_or_foreign_checkpoints_are_refused(tmp_path):
    with pytest.raises(InputError, match="checkpoint not found"):
        classifier_from_checkpoint(tmp_path / "missing.ckpt")
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "obj": _Evil()}, unsafe)
    with pytest.raises(InputError, match=r"unsafe.ckpt: cannot be loaded with weights_only=True: .*_Evil"):
        classifier_from_checkpoint(unsafe)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0}}, foreign)
    with pytest.raises(InputError, match="not a CutoutClassifier checkpoint"):
        classifier_from_checkpoint(foreign)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="garbage.ckpt: "):
        classifier_from_checkpoint(garbage)


def test_cutout_grid_layout():
    images = np.stack([np.array([[0.0, 1.0], [2.0, 3.0]]), np.full((2, 2), 7.0), np.array([[5.0, 5.0], [5.0, 9.0]])])
    grid = cutout_grid(images, ncols=2, pad=1)
    assert grid.shape == (8, 8)
    np.testing.assert_allclose(grid[1:3, 1:3], [[0, 1 / 3], [2 / 3, 1]])
    np.testing.assert_array_equal(grid[1:3, 5:7], 0.5)  # constant cutout
    np.testing.assert_array_equal(grid[5:7, 1:3], [[0, 0], [0, 1]])
    np.testing.assert_array_equal(grid[5:7, 5:7], 0.0)  # blank filler tile
    assert grid[0].min() == 1.0 and grid[:, 4].min() == 1.0  # borders
    assert cutout_grid(np.zeros((0, 21, 21))).shape == (0, 0)


def test_wandb_logger_gets_plots_and_example_grids(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(mode="disabled", save_dir=str(tmp_path), project="test")
    logged: dict = {}
    original = logger.log_metrics

    def capture(metrics, step=None):
        logged.update(metrics)
        original(metrics, step)

    monkeypatch.setattr(logger, "log_metrics", capture)
    module = CutoutClassifier(_small_final(), ADAM, n_examples=4)
    trainer = _trainer(
        tmp_path, logger=logger, max_epochs=1, limit_train_batches=1, limit_val_batches=2, num_sanity_val_steps=0
    )
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader())
    assert {"val/confusion_matrix", "val/pr_curve", "val/f1"} <= set(logged)
    examples = [k for k in logged if k.startswith("val/examples_")]
    assert examples  # at least one of tp / fp / fn occurs on random weights
    n = {"tp": 0, "fp": 0, "fn": 0}
    prob, label = module.val_outputs["prob"], module.val_outputs["label"]
    n["tp"], n["fp"], n["fn"] = ((prob >= 0.5) & (label == 1)).sum(), ((prob >= 0.5) & (label == 0)).sum(), ((prob < 0.5) & (label == 1)).sum()
    assert sorted(examples) == sorted(f"val/examples_{k}" for k, v in n.items() if v > 0)
