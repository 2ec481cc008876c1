"""Balanced training epochs: every positive, plus a fresh random draw of negatives each epoch."""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class BalancedResampler(Sampler[int]):
    """Yield all positive indices and ``neg_ratio`` times as many random negatives, shuffled.

    Parameters
    ----------
    labels : (N,) bool or int array
        Candidate labels (non-zero = positive); the sampler yields indices into this array.
    neg_ratio : float
        Negatives per positive drawn each epoch (the seed: 1.0). When fewer negatives exist,
        all of them are taken.
    seed : int
        With the epoch, fixes the draw: the same (seed, epoch) always yields the same indices.
    resample_each_epoch : bool
        Draw fresh negatives every epoch (the seed); if false, epoch 0's negatives are kept and
        only the order changes.
    hard : (N,) bool array, optional
        Negatives worth showing more often (bright ones: star residuals, cosmic rays); None: no such split.
    hard_fraction : float
        Share of each epoch's negatives drawn from the ``hard`` ones (all of them when fewer exist); the rest
        come from the other negatives. 0 (the seed) draws from all negatives alike.

    Notes
    -----
    Lightning calls :meth:`set_epoch` before each epoch (also through its
    ``DistributedSamplerWrapper`` under DDP, where every rank draws the same list and the wrapper
    shards it). Without ``set_epoch`` calls, each ``iter()`` uses the current epoch and then
    advances it by one, so a plain loop over epochs still draws fresh, reproducible negatives.
    The length is the same every epoch.
    """

    def __init__(self, labels: np.ndarray, *, neg_ratio: float = 1.0, seed: int = 0, resample_each_epoch: bool = True,
                 hard: np.ndarray | None = None, hard_fraction: float = 0.0):
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels: must be 1-D, got shape {labels.shape}")
        if not np.isfinite(neg_ratio) or neg_ratio < 0:
            raise ValueError(f"neg_ratio: must be a finite number >= 0, got {neg_ratio}")
        self.positives = np.flatnonzero(labels != 0)
        self.negatives = np.flatnonzero(labels == 0)
        if self.positives.size == 0:
            raise ValueError("labels: no positive candidates to balance the negatives against")
        self.neg_ratio = float(neg_ratio)
        self.seed = int(seed)
        self.resample_each_epoch = bool(resample_each_epoch)
        self.n_negatives = min(int(round(self.neg_ratio * self.positives.size)), self.negatives.size)
        if not (np.isfinite(hard_fraction) and 0.0 <= hard_fraction <= 1.0):
            raise ValueError(f"hard_fraction: must be a number in [0, 1], got {hard_fraction}")
        is_hard = np.zeros(labels.size, dtype=bool) if hard is None else np.asarray(hard, dtype=bool)
        if is_hard.shape != labels.shape:
            raise ValueError(f"hard: must have the labels' shape {labels.shape}, got {is_hard.shape}")
        self.hard = self.negatives[is_hard[self.negatives]]
        self.easy = self.negatives[~is_hard[self.negatives]]
        self.n_hard = min(int(round(float(hard_fraction) * self.n_negatives)), self.hard.size)
        if self.n_negatives - self.n_hard > self.easy.size:  # too few easy ones: more hard ones fill the epoch
            self.n_hard = self.n_negatives - self.easy.size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next ``iter()`` for this epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.positives.size + self.n_negatives)

    def indices(self, epoch: int) -> np.ndarray:
        """The shuffled indices of ``epoch`` (int64), without changing the sampler's state."""
        draw_epoch = epoch if self.resample_each_epoch else 0
        draw = np.random.default_rng([self.seed, draw_epoch, 0])
        if self.n_hard == 0:
            negatives = draw.choice(self.negatives, size=self.n_negatives, replace=False)
        else:
            negatives = np.concatenate([draw.choice(self.hard, size=self.n_hard, replace=False),
                                        draw.choice(self.easy, size=self.n_negatives - self.n_hard, replace=False)])
        order = np.random.default_rng([self.seed, epoch, 1])
        chosen = np.concatenate([self.positives, negatives]).astype(np.int64)
        return chosen[order.permutation(chosen.size)]

    def __iter__(self) -> Iterator[int]:
        chosen = self.indices(self.epoch)
        self.epoch += 1
        return iter(chosen.tolist())
