"""Lightning callbacks of the training pipeline: a stage marker in checkpoints, and a kill switch for tests."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl

MARKER_KEY = "neocascade"  # checkpoint entry: which cascade stage wrote it, and where its stage 1 lives


class StageMarker(pl.Callback):
    """Record in every checkpoint which stage wrote it, so ``ckpt_path=`` resumes the right one.

    Parameters
    ----------
    stage : {"stage1", "stage2"}
        The stage being trained.
    stage1_artifact : str, optional
        For stage 2: the one-stage artifact holding the finished stage 1 and its threshold.
    """

    def __init__(self, stage: str, *, stage1_artifact: str | None = None) -> None:
        self.stage = stage
        self.stage1_artifact = stage1_artifact

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[MARKER_KEY] = {"stage": self.stage, "stage1_artifact": self.stage1_artifact}


class KillAfter(pl.Callback):
    """Kill this process with SIGKILL after ``batches`` training batches of epoch ``epoch`` (0-based).

    For tests of resuming: nothing is saved or flushed, exactly as when a job is killed mid-epoch.
    Enable from the command line with ``+callbacks.kill._target_=neocascade.training.callbacks.KillAfter
    +callbacks.kill.epoch=1 +callbacks.kill.batches=1``.
    """

    def __init__(self, epoch: int = 1, batches: int = 1) -> None:
        self.epoch = int(epoch)
        self.batches = int(batches)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx + 1 >= self.batches:
            os.kill(os.getpid(), signal.SIGKILL)
