"""The two-stage cascade's glue: stage-1 scores over a split, its positives as stage 2's set, test reports.

Stage 1 is tuned for recall; every candidate it passes (true and false positives) becomes stage 2's
training and validation population, through ``CutoutDataModule.restrict``. The functions here score
loaders, pick those positives and summarise decisions; the pipeline strings them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from neocascade.evaluation.metrics import classification_report
from neocascade.training.artifact import FP32_FAST, InferenceOptions, StageModel


@dataclass
class SplitScores:
    """Scores of one stage over a split's candidates, in candidate order."""

    prob: np.ndarray  # (N,) float64 P(asteroid)
    label: np.ndarray  # (N,) bool


def score_loader(
    stages: Iterable[StageModel],
    loader: Iterable,
    n: int,
    *,
    options: InferenceOptions = FP32_FAST,
    thresholds: Sequence[float | None] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Score every batch ``(x, y, index)`` of ``loader`` with each stage.

    Parameters
    ----------
    stages : StageModel sequence
        The stages to apply (each to every candidate).
    loader : iterable of (x, y, index) batches
        ``index`` points into the split's candidates, 0 <= index < n.
    n : int
        Number of candidates in the split.
    options : InferenceOptions
        Default fp32 channels-last: scores that feed threshold choices stay fp32. Where only the
        decisions at known thresholds matter (stage 2's training set), the faster bf16 default with its
        fp32 recheck near ``thresholds`` gives the same decisions.
    thresholds : sequence of float or None, optional
        Each stage's threshold for the bf16 recheck (None: no recheck for that stage).

    Returns
    -------
    probs : list of (n,) float64 arrays
        One per stage; NaN where the loader did not cover a candidate.
    label : (n,) bool array
    """
    stages = list(stages)
    thresholds = [None] * len(stages) if thresholds is None else list(thresholds)
    if len(thresholds) != len(stages):
        raise ValueError(f"thresholds: expected {len(stages)}, got {len(thresholds)}")
    probs = [np.full(n, np.nan) for _ in stages]
    label = np.zeros(n, dtype=bool)
    for x, y, index in loader:
        idx = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        label[idx] = np.asarray(y) == 1
        for out, stage, threshold in zip(probs, stages, thresholds):
            out[idx] = stage.proba(x.float(), options=options, threshold=threshold)
    return probs, label


def stage2_keep(p1: np.ndarray, threshold: float) -> np.ndarray:
    """Stage 1's positives: ``p1 >= threshold`` (NaN rejected), the candidates stage 2 sees."""
    with np.errstate(invalid="ignore"):
        return np.asarray(p1, dtype=np.float64) >= threshold


def decision_report(labels: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 of the asteroid class, and the confusion matrix ``[[TN, FP], [FN, TP]]``."""
    report = classification_report(np.asarray(labels, dtype=bool), np.asarray(preds, dtype=bool))
    positive = report["positive"]
    return {
        "precision": positive["precision"],
        "recall": positive["recall"],
        "f1": positive["f1"],
        "n": report["n"],
        "positives": positive["support"],
        "confusion": report["confusion"],
    }


def candidate_ids(meta: Any, mask: np.ndarray, *, scores: Mapping[str, np.ndarray], limit: int) -> list[dict]:
    """IDs ``{file, image, x, y}`` and scores of the candidates where ``mask`` holds, at most ``limit``."""
    rows = np.flatnonzero(mask)[: max(int(limit), 0)]
    out = []
    for i in rows:
        item = {"index": int(i), "file": int(meta.file[i]), "image": int(meta.image[i]), "x": int(meta.x[i]), "y": int(meta.y[i])}
        for name, values in scores.items():
            value = float(values[i])
            item[name] = None if math.isnan(value) else value
        out.append(item)
    return out


def split_counts(labels: np.ndarray, keep: np.ndarray | None = None) -> dict[str, int]:
    """Candidates and positives of a split, or of its ``keep`` subset."""
    labels = np.asarray(labels, dtype=bool)
    if keep is not None:
        labels = labels[np.asarray(keep, dtype=bool)]
    return {"candidates": int(labels.size), "positives": int(labels.sum())}
