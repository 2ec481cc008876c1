"""The LightningModule that trains any of the CNNs in ``models/`` as a cutout classifier.

Loss (cross-entropy or focal), torchmetrics per split (``train/``, ``val/``, ``test/``), the epoch's
validation probabilities for threshold picking, optional wandb plots, and checkpoint loading that checks
the stored architecture against the configured one.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryConfusionMatrix,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)

from neocascade.errors import input_error
from neocascade.models.registry import CNN_ARCHS, build_model, check_architecture

log = logging.getLogger(__name__)

LOSSES = ("ce", "focal")
SPLITS = ("train", "val", "test")
CLASS_NAMES = ("other", "asteroid")
_THRESHOLD_METRICS = ("precision", "recall", "f1")  # at P(asteroid) >= 0.5
_RANKING_METRICS = ("auroc", "ap")  # undefined unless both classes occur


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, *, gamma: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Focal loss, ``-(1 - p_t)**gamma * log p_t``, averaged like ``F.cross_entropy``.

    Parameters
    ----------
    logits : (B, K) float tensor
    target : (B,) int64 tensor
        Class of each sample.
    gamma : float
        Focusing exponent ≥ 0; 0 gives cross-entropy exactly.
    weight : (K,) float tensor, optional
        Per-class weights; the mean is weighted by ``weight[target]``, as ``F.cross_entropy`` does.

    Returns
    -------
    0-d tensor
    """
    log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    per_sample = -log_p
    if gamma > 0:
        # 1 - p_t via expm1 keeps precision for confident samples; the floor keeps gradients finite for gamma < 1
        miss = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)
        per_sample = miss.pow(gamma) * per_sample
    if weight is None:
        return per_sample.mean()
    w = weight[target]
    return (w * per_sample).sum() / w.sum()


def cutout_grid(images: np.ndarray, *, ncols: int = 8, pad: int = 1) -> np.ndarray:
    """Tile cutouts into one image for display, each scaled to [0, 1] on its own.

    Parameters
    ----------
    images : (K, S, S) array
        Cutouts (one channel).
    ncols : int
        Cutouts per row; the last row is filled with blank (0) tiles.
    pad : int
        Width in px of the white (1) border around each tile.

    Returns
    -------
    (rows·(S+2·pad), ncols·(S+2·pad)) float32 array in [0, 1]
        rows = ceil(K / ncols); a (0, 0) array when K = 0. A constant cutout shows as 0.5.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images: must have shape (K, S, S), got {images.shape}")
    k, h, w = images.shape
    if k == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lo = np.nanmin(images, axis=(1, 2), keepdims=True)
    span = np.nanmax(images, axis=(1, 2), keepdims=True) - lo
    scaled = np.where(span > 0, (images - lo) / np.where(span > 0, span, 1.0), 0.5)
    scaled = np.nan_to_num(scaled, nan=0.0)
    ncols = min(ncols, k)
    rows = -(-k // ncols)
    tiles = np.zeros((rows * ncols, h, w), dtype=np.float32)
    tiles[:k] = scaled
    tiles = np.pad(tiles, ((0, 0), (pad, pad), (pad, pad)), constant_values=1.0)
    th, tw = tiles.shape[1:]
    return tiles.reshape(rows, ncols, th, tw).transpose(0, 2, 1, 3).reshape(rows * th, ncols * tw)


class CutoutClassifier(pl.LightningModule):
    """Train and evaluate a CNN that maps cutouts (B, C, S, S) to logits (B, 2), class 1 = asteroid.

    Parameters
    ----------
    model : nn.Module
        One of ``models/`` (has ``arch`` and ``hparams()``); not pickled into the hyperparameters.
    optimizer : callable params -> torch.optim.Optimizer, optional
        Usually ``hydra.utils.instantiate(cfg.optimizer)`` (``_partial_: true``). None for inference only.
    loss : {"ce", "focal"}
        Cross-entropy (the seed) or focal loss.
    focal_gamma : float
        Focal loss exponent; ignored for ``ce``.
    class_weights : 2 floats, optional
        Loss weight of class 0 (other) and class 1 (asteroid); None weighs them equally.
    example_grids : bool
        When a WandbLogger is attached, log grids of validation true positives, false positives and
        false negatives (first channel) at the end of each validation epoch.
    n_examples : int
        Most cutouts per grid.

    Notes
    -----
    Logged: ``train/loss`` (step and epoch), ``val/loss``, ``test/loss`` and, per split at epoch end,
    ``precision``, ``recall``, ``f1`` (at P ≥ 0.5), ``auroc``, ``ap`` (NaN when an epoch holds one class
    only), and the confusion counts ``tp``, ``fp``, ``fn``, ``tn``. With a WandbLogger also
    ``val/confusion_matrix``, ``val/pr_curve`` and ``val/examples_{tp,fp,fn}``.

    After each validation (not the sanity check) ``val_outputs`` holds numpy arrays ``prob`` (N,) float32
    P(asteroid), ``label`` (N,) int64 and ``index`` (N,) int64 (the batches' dataset indices);
    ``test_outputs`` likewise after testing. Under DDP they are gathered from all ranks.

    The hyperparameters hold plain containers only (``arch``, ``model_hparams``, ``optimizer``
    description, loss settings), so checkpoints load with ``torch.load(weights_only=True)``; see
    :func:`classifier_from_checkpoint`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        *,
        loss: str = "ce",
        focal_gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        example_grids: bool = True,
        n_examples: int = 16,
    ) -> None:
        super().__init__()
        arch = getattr(model, "arch", None)
        if arch not in CNN_ARCHS or not callable(getattr(model, "hparams", None)):
            raise input_error("model", "must be a CNN from neocascade.models", expected=sorted(CNN_ARCHS), found=arch)
        if loss not in LOSSES:
            raise input_error("loss", "unknown loss", expected=" | ".join(LOSSES), found=repr(loss))
        focal_gamma = float(focal_gamma)
        if not focal_gamma >= 0:
            raise input_error("focal_gamma", "must be >= 0", found=focal_gamma)
        weights = None
        if class_weights is not None:
            weights = [float(w) for w in class_weights]
            if len(weights) != 2 or not all(np.isfinite(w) and w > 0 for w in weights):
                raise input_error("class_weights", "must be 2 positive numbers (other, asteroid)", found=weights)
        self.model = model
        self.optimizer_factory = optimizer
        self.loss_name = loss
        self.focal_gamma = focal_gamma
        self.example_grids = bool(example_grids)
        self.n_examples = int(n_examples)
        self.register_buffer(
            "class_weights", None if weights is None else torch.tensor(weights, dtype=torch.float32), persistent=False
        )
        self.save_hyperparameters(
            {
                "arch": arch,
                "model_hparams": _plain(model.hparams()),
                "optimizer": describe_optimizer(optimizer),
                "loss": loss,
                "focal_gamma": focal_gamma,
                "class_weights": weights,
                "example_grids": self.example_grids,
                "n_examples": self.n_examples,
            }
        )
        # keyed "<split>_metrics": a bare "train" would shadow nn.Module.train
        self.metrics = nn.ModuleDict({f"{split}_metrics": _split_metrics() for split in SPLITS})
        self.val_outputs: dict[str, np.ndarray] | None = None
        self.test_outputs: dict[str, np.ndarray] | None = None
        self._outputs: dict[str, list[tuple[torch.Tensor, ...]]] = {"val": [], "test": []}
        self._examples: dict[str, list[torch.Tensor]] = {}

    # ---- model and loss -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2) for cutouts (B, C, S, S)."""
        return self.model(x)

    def compute_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss of logits (B, 2) against labels (B,)."""
        if self.loss_name == "ce":
            return F.cross_entropy(logits, y, weight=self.class_weights)
        return focal_loss(logits, y, gamma=self.focal_gamma, weight=self.class_weights)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            raise input_error("optimizer", "CutoutClassifier was built without an optimizer; pass one to train")
        return self.optimizer_factory(self.parameters())

    # ---- steps ----------------------------------------------------------------------------------
    def _shared_step(self, batch: Sequence[torch.Tensor], split: str) -> tuple[torch.Tensor, ...]:
        x, y, index = batch
        logits = self(x)
        loss = self.compute_loss(logits, y)
        prob = torch.softmax(logits.detach(), dim=1)[:, 1]
        metrics = self.metrics[f"{split}_metrics"]
        for metric in metrics.values():
            metric.update(prob, y)
        on_step = split == "train"
        self.log(
            f"{split}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=on_step,
            batch_size=y.shape[0],
            sync_dist=not on_step,
        )
        return x, y, index, prob, loss

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")[-1]

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        x, y, index, prob, _ = self._shared_step(batch, "val")
        if not self.trainer.sanity_checking:
            self._outputs["val"].append((prob.cpu(), y.cpu(), index.cpu()))
        if self._examples:
            self._collect_examples(x, y, prob)

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        _, y, index, prob, _ = self._shared_step(batch, "test")
        self._outputs["test"].append((prob.cpu(), y.cpu(), index.cpu()))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor | None]:
        """P(asteroid) for a batch.

        ``batch`` is ``x``, ``(x, index)`` or the DataModule's ``(x, y, index)``. Returns
        ``{"prob": (B,) float32 softmax[:, 1], "index": (B,) int64 or None when the batch has none}``.
        """
        if isinstance(batch, torch.Tensor):
            x, index = batch, None
        elif len(batch) == 3:
            x, _, index = batch
        elif len(batch) == 2:
            x, index = batch
        else:
            x, index = batch[0], None
        return {"prob": torch.softmax(self(x), dim=1)[:, 1], "index": index}

    # ---- epoch ends -----------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        self._log_split_metrics("train")

    def on_validation_epoch_start(self) -> None:
        self._outputs["val"] = []
        want = self.example_grids and not self.trainer.sanity_checking and self._wandb_logger() is not None
        self._examples = {"tp": [], "fp": [], "fn": []} if want else {}

    def on_validation_epoch_end(self) -> None:
        self._log_split_metrics("val")
        if self.trainer.sanity_checking:
            return
        self.val_outputs = self._gather_outputs("val")
        wandb_logger = self._wandb_logger()
        if wandb_logger is not None and self.trainer.is_global_zero:
            self._log_wandb_plots(wandb_logger, self.val_outputs)
        self._examples = {}

    def on_test_epoch_start(self) -> None:
        self._outputs["test"] = []

    def on_test_epoch_end(self) -> None:
        self._log_split_metrics("test")
        self.test_outputs = self._gather_outputs("test")

    def _log_split_metrics(self, split: str) -> None:
        metrics = self.metrics[f"{split}_metrics"]
        confusion = metrics["confusion"]
        if not confusion.update_called:
            return
        (tn, fp), (fn, tp) = confusion.compute().float()
        values = {f"{split}/tp": tp, f"{split}/fp": fp, f"{split}/fn": fn, f"{split}/tn": tn}
        for name in _THRESHOLD_METRICS:
            values[f"{split}/{name}"] = metrics[name].compute().float()
        both_classes = (tp + fn) > 0 and (tn + fp) > 0
        for name in _RANKING_METRICS:
            values[f"{split}/{name}"] = (
                metrics[name].compute().float() if both_classes else torch.tensor(float("nan"), device=tp.device)
            )
        # torchmetrics already synced these across ranks; sync_dist only silences Lightning's DDP advice
        self.log_dict(values, sync_dist=True)
        for metric in metrics.values():
            metric.reset()

    def _gather_outputs(self, split: str) -> dict[str, np.ndarray]:
        parts = self._outputs[split]
        self._outputs[split] = []
        if parts:
            prob, label, index = (torch.cat(column) for column in zip(*parts))
        else:
            prob, label, index = torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
        if self.trainer.world_size > 1:
            prob, label, index = (self.all_gather(t.to(self.device)).reshape(-1).cpu() for t in (prob, label, index))
            # DistributedSampler pads ranks with repeated samples; keep each dataset index once
            _, first = np.unique(index.numpy(), return_index=True)
            prob, label, index = prob[first], label[first], index[first]
        return {
            "prob": prob.float().numpy(),
            "label": label.to(torch.int64).numpy(),
            "index": index.to(torch.int64).numpy(),
        }

    # ---- wandb ----------------------------------------------------------------------------------
    def _wandb_logger(self) -> Any:
        from pytorch_lightning.loggers import WandbLogger

        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                return logger
        return None

    def _collect_examples(self, x: torch.Tensor, y: torch.Tensor, prob: torch.Tensor) -> None:
        pred = prob >= 0.5
        truth = y == 1
        for name, mask in (("tp", pred & truth), ("fp", pred & ~truth), ("fn", ~pred & truth)):
            have = sum(t.shape[0] for t in self._examples[name])
            if have < self.n_examples and bool(mask.any()):
                self._examples[name].append(x[mask][: self.n_examples - have, 0].detach().cpu())

    def _log_wandb_plots(self, logger: Any, outputs: Mapping[str, np.ndarray]) -> None:
        import wandb

        label, prob = outputs["label"], outputs["prob"]
        payload: dict[str, Any] = {}
        if label.size:
            payload["val/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=label.tolist(), preds=(prob >= 0.5).astype(int).tolist(), class_names=list(CLASS_NAMES)
            )
            if 0 < label.sum() < label.size:
                probas = np.stack([1.0 - prob, prob], axis=1)
                payload["val/pr_curve"] = wandb.plot.pr_curve(label, probas, labels=list(CLASS_NAMES))
        for name, parts in self._examples.items():
            if parts:
                grid = cutout_grid(torch.cat(parts).numpy())
                payload[f"val/examples_{name}"] = wandb.Image(grid, caption=f"{name} at P>=0.5, epoch {self.current_epoch}")
        if payload:
            logger.log_metrics(payload, step=self.global_step)


def _split_metrics() -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            "precision": BinaryPrecision(),
            "recall": BinaryRecall(),
            "f1": BinaryF1Score(),
            "auroc": BinaryAUROC(),
            "ap": BinaryAveragePrecision(),
            "confusion": BinaryConfusionMatrix(),
        }
    )


def describe_optimizer(optimizer: Any) -> dict | None:
    """A plain description of an optimizer factory: ``{"_target_": "torch.optim.adam.Adam", "lr": ...}``."""
    if optimizer is None:
        return None
    if isinstance(optimizer, functools.partial):
        func = optimizer.func
        return {"_target_": f"{func.__module__}.{func.__qualname__}", **_plain(dict(optimizer.keywords))}
    return {"_target_": f"{getattr(optimizer, '__module__', '')}.{getattr(optimizer, '__qualname__', repr(optimizer))}"}


def _plain(value: Any) -> Any:
    """``value`` as plain Python containers (OmegaConf, numpy and tuples converted; anything else as text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and hasattr(value, "__len__")):
        return [_plain(v) for v in value]
    return repr(value)


def load_checkpoint_dict(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict:
    """Read a Lightning ``.ckpt`` with ``torch.load(weights_only=True)``; InputError naming the file when it cannot."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if "Unsupported global" in line]
        reason = lines[0] if lines else "holds objects other than tensors and plain containers"
        raise input_error(path, f"cannot be loaded with weights_only=True: {reason}") from None
    except (RuntimeError, EOFError) as err:
        raise input_error(path, f"not a readable torch checkpoint: {str(err).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise input_error(path, "not a Lightning checkpoint (no 'state_dict')")
    return ckpt


def classifier_from_checkpoint(
    path: str | os.PathLike,
    expected_arch: str | None = None,
    *,
    in_channels: int | None = None,
    cutout_size: int | None = None,
    map_location: Any = "cpu",
) -> CutoutClassifier:
    """Load a trained :class:`CutoutClassifier` from a Lightning checkpoint, safely and checked.

    Parameters
    ----------
    path : str or Path
        A ``.ckpt`` written by a Trainer fitting a CutoutClassifier.
    expected_arch : str, optional
        The configured architecture (``cfg.model``'s ``arch``: "baseline", "vgg", "final").
    in_channels, cutout_size : int, optional
        The configured input shape.
    map_location : optional
        Passed to ``torch.load``.

    Returns
    -------
    CutoutClassifier
        In eval mode, without an optimizer; its model rebuilt from the stored ``arch`` and
        ``model_hparams`` via ``models.registry``.

    Raises
    ------
    InputError
        One line naming ``path``: missing or unreadable file, not a CutoutClassifier checkpoint, or a
        mismatch such as ``stage1.ckpt: trained as 'baseline', config asks 'final'``.
    """
    ckpt = load_checkpoint_dict(path, map_location=map_location)
    hp = ckpt.get("hyper_parameters") or {}
    if "arch" not in hp or "model_hparams" not in hp:
        raise input_error(path, "not a CutoutClassifier checkpoint (no 'arch' and 'model_hparams' hyperparameters)")
    arch, model_hparams = hp["arch"], hp["model_hparams"]
    if arch not in CNN_ARCHS:
        raise input_error(path, "unknown architecture", expected=" | ".join(CNN_ARCHS), found=repr(arch))
    check_architecture(
        path, arch, model_hparams, expected_arch=expected_arch, in_channels=in_channels, cutout_size=cutout_size
    )
    try:
        model = build_model(arch, model_hparams)
    except (TypeError, ValueError) as err:
        raise input_error(path, f"stored model_hparams do not build a '{arch}': {err}") from None
    module = CutoutClassifier(
        model,
        None,
        loss=hp.get("loss", "ce"),
        focal_gamma=hp.get("focal_gamma", 2.0),
        class_weights=hp.get("class_weights"),
        example_grids=hp.get("example_grids", True),
        n_examples=hp.get("n_examples", 16),
    )
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        raise input_error(path, f"weights do not fit a '{arch}' with the stored hparams: {str(err).splitlines()[0]}") from None
    log.info("loaded %s classifier from %s (epoch %s)", arch, path, ckpt.get("epoch"))
    return module.eval()


__all__ = [
    "CutoutClassifier",
    "classifier_from_checkpoint",
    "cutout_grid",
    "describe_optimizer",
    "focal_loss",
    "load_checkpoint_dict",
]
