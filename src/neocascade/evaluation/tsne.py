"""The seed's data check: a 3-D t-SNE of the cutouts and a 2-cluster k-means on the embedding.

If k-means on the embedding agrees with the labels far above 50 %, positives and negatives are
separable from the pixels alone (before any CNN).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.cluster import KMeans
from sklearn.manifold import TSNE


class TsneResult(NamedTuple):
    """``embedding`` (n, 3), ``clusters`` (n,) in {0, 1}, ``accuracy`` (best cluster↔label
    assignment), ``index`` (n,) rows of the input that were embedded."""

    embedding: np.ndarray
    clusters: np.ndarray
    accuracy: float
    index: np.ndarray


def cluster_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Agreement of a 2-cluster assignment with binary labels, under the better of the two pairings."""
    y = np.asarray(labels).astype(bool)
    c = np.asarray(clusters).astype(bool)
    if y.size == 0:
        return float("nan")
    agree = float((y == c).mean())
    return max(agree, 1.0 - agree)


def tsne_kmeans(
    cutouts: np.ndarray,
    labels: np.ndarray,
    *,
    n: int = 2000,
    seed: int = 0,
    perplexity: float = 30.0,
    max_iter: int = 1000,
) -> TsneResult:
    """Embed up to ``n`` cutouts in 3-D with t-SNE and split the embedding with k-means (k = 2).

    Parameters
    ----------
    cutouts : (N, ...) float array
        Stamps (any trailing shape; flattened per stamp). NaN is replaced by 0.
    labels : (N,) bool or 0/1 array
    n : int
        Subsample size, drawn without replacement with ``seed``; all N when ``n >= N``.
    seed : int
        Seeds the subsample, t-SNE and k-means.
    perplexity : float
        t-SNE perplexity; capped below the subsample size.
    max_iter : int
        t-SNE iterations (sklearn's default 1000); a 3-D embedding of a few dozen points needs more
        to pull its clusters together.

    Returns
    -------
    TsneResult
    """
    x = np.asarray(cutouts, dtype=np.float32)
    y = np.asarray(labels)
    if x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"labels: expected one label per cutout ({x.shape[0] if x.ndim else 0}), got {y.shape}")
    if n < 4:
        raise ValueError(f"n: need at least 4 cutouts for a t-SNE, got {n}")
    if x.shape[0] < 4:
        raise ValueError(f"cutouts: need at least 4 cutouts for a t-SNE, got {x.shape[0]}")
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(x.shape[0], size=n, replace=False)) if n < x.shape[0] else np.arange(x.shape[0])
    flat = np.nan_to_num(x[index].reshape(index.size, -1))
    emb = TSNE(
        n_components=3, perplexity=min(perplexity, (index.size - 1) / 3.0), init="pca", random_state=seed,
        max_iter=max_iter,
    ).fit_transform(flat)
    clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(emb)
    return TsneResult(emb, clusters.astype(np.int64), cluster_accuracy(y[index], clusters), index)
