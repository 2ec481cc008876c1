"""The seed's random forest on flattened cutout pixels, storable as plain arrays (no pickle).

``forest_to_arrays`` flattens a fitted scikit-learn forest into a few numpy arrays, ``ArrayForest``
predicts from those arrays alone (vectorised over samples and trees), and ``RandomForestStage`` is the
cascade stage built on both: ``fit`` uses scikit-learn, everything after uses the arrays, so a forest
loaded from a checkpoint predicts exactly as the one just trained.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from neocascade.models._common import positive_int

_LEAF = -1  # scikit-learn's TREE_LEAF child index
ARRAY_KEYS = ("children_left", "children_right", "feature", "threshold", "value", "node_offsets", "classes", "n_features")
_CHUNK_CELLS = 4_000_000  # trees × samples per traversal chunk: bounds memory to ~100 MB of index arrays


def forest_to_arrays(fitted: Any) -> dict[str, np.ndarray]:
    """Flatten a fitted ``sklearn.ensemble.RandomForestClassifier`` into plain numpy arrays.

    Parameters
    ----------
    fitted : RandomForestClassifier
        A fitted single-output forest.

    Returns
    -------
    dict of numpy arrays
        ``children_left``, ``children_right`` (M,) int64: child node index *within its tree*, -1 at
        leaves; ``feature`` (M,) int64 (negative at leaves); ``threshold`` (M,) float64 (go left when
        ``x[feature] <= threshold``); ``value`` (M, K) float64 class fractions of each node (rows sum
        to 1); ``node_offsets`` (T+1,) int64: tree t owns nodes ``node_offsets[t]:node_offsets[t+1]``;
        ``classes`` (K,) int64; ``n_features`` () int64. M is the total node count of the T trees.
    """
    estimators = getattr(fitted, "estimators_", None)
    if not estimators:
        raise ValueError("fitted: must be a fitted RandomForestClassifier")
    if getattr(fitted, "n_outputs_", 1) != 1:
        raise ValueError(f"fitted: must have a single output, got {fitted.n_outputs_}")
    trees = [est.tree_ for est in estimators]
    counts = np.array([t.node_count for t in trees], dtype=np.int64)
    value = np.concatenate([t.value[:, 0, :] for t in trees]).astype(np.float64)
    totals = value.sum(axis=1, keepdims=True)
    value = value / np.where(totals == 0, 1.0, totals)
    return {
        "children_left": np.concatenate([t.children_left for t in trees]).astype(np.int64),
        "children_right": np.concatenate([t.children_right for t in trees]).astype(np.int64),
        "feature": np.concatenate([t.feature for t in trees]).astype(np.int64),
        "threshold": np.concatenate([t.threshold for t in trees]).astype(np.float64),
        "value": value,
        "node_offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "classes": np.asarray(fitted.classes_).astype(np.int64),
        "n_features": np.asarray(fitted.n_features_in_, dtype=np.int64),
    }


class ArrayForest:
    """A random forest that predicts from the arrays of :func:`forest_to_arrays` alone.

    Parameters
    ----------
    arrays : mapping of array-likes
        The keys of :func:`forest_to_arrays`; torch tensors are accepted too (as loaded from a
        ``weights_only`` checkpoint).

    Notes
    -----
    Prediction walks all trees one level at a time with flat (tree, sample) index arrays, dropping pairs
    that reached a leaf, so its Python loop runs once per tree level, never per sample or tree. Inputs are compared as float32 against
    float64 thresholds, as scikit-learn does, so probabilities match ``predict_proba`` to rounding.
    """

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        missing = [k for k in ARRAY_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"arrays: missing keys {missing}")
        a = {k: _to_numpy(arrays[k]) for k in ARRAY_KEYS}
        offsets = a["node_offsets"].astype(np.int64)
        n_nodes = int(offsets[-1]) if offsets.size else 0
        if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or np.any(np.diff(offsets) < 1):
            raise ValueError("arrays: node_offsets must start at 0 and increase")
        for key in ("children_left", "children_right", "feature", "threshold"):
            if a[key].shape != (n_nodes,):
                raise ValueError(f"arrays: {key} must have shape ({n_nodes},), got {a[key].shape}")
        if a["value"].ndim != 2 or a["value"].shape[0] != n_nodes or a["value"].shape[1] != a["classes"].size:
            raise ValueError(f"arrays: value must have shape ({n_nodes}, {a['classes'].size}), got {a['value'].shape}")
        self.arrays = a
        self.classes = a["classes"].astype(np.int64)
        self.n_features = int(a["n_features"])
        self.n_trees = offsets.size - 1
        tree_of_node = np.repeat(np.arange(self.n_trees), np.diff(offsets))
        leaf = a["children_left"] == _LEAF
        node_ids = np.arange(n_nodes)
        # global child indices; a leaf points at itself, so finished samples stay put
        self._left = np.where(leaf, node_ids, a["children_left"] + offsets[tree_of_node])
        self._right = np.where(leaf, node_ids, a["children_right"] + offsets[tree_of_node])
        self._feature = np.where(leaf, 0, a["feature"])
        if np.any(self._feature < 0) or np.any(self._feature >= max(self.n_features, 1)):
            raise ValueError(f"arrays: feature indices must lie in [0, {self.n_features})")
        if np.any((self._left <= node_ids) & ~leaf) or np.any((self._right <= node_ids) & ~leaf):
            # scikit-learn numbers children after their parent; this also rules out cycles
            raise ValueError("arrays: children must follow their parent (scikit-learn's node order)")
        self._threshold = np.where(leaf, np.inf, a["threshold"])
        self._roots = offsets[:-1]
        self._value = a["value"].astype(np.float64)
        self.max_depth = self._depth()

    def _depth(self) -> int:
        """Levels below the roots: how many traversal steps reach every leaf."""
        frontier = self._roots
        depth = 0
        while True:
            inner = frontier[self._left[frontier] != frontier]
            if inner.size == 0:
                return depth
            frontier = np.concatenate([self._left[inner], self._right[inner]])
            depth += 1

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, the mean of the trees' leaf class fractions.

        Parameters
        ----------
        X : (N, F) array
            Samples, F = ``n_features``.

        Returns
        -------
        (N, K) float64 array
            Columns in the order of ``classes``. N = 0 gives a (0, K) array.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X: must have shape (N, {self.n_features}), got {X.shape}")
        X = X.astype(np.float32, copy=False)
        out = np.empty((X.shape[0], self.classes.size), dtype=np.float64)
        chunk = max(1, _CHUNK_CELLS // max(self.n_trees, 1))
        for start in range(0, X.shape[0], chunk):
            out[start : start + chunk] = self._proba(X[start : start + chunk])
        return out

    def _proba(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        node = np.repeat(self._roots, n)  # (T·N,) global node ids, tree-major
        sample = np.tile(np.arange(n), self.n_trees)
        # only (tree, sample) pairs still at an inner node move on, so a deep branch costs only its own samples
        active = np.flatnonzero(self._left[node] != node)
        while active.size:
            at = node[active]
            go_left = X[sample[active], self._feature[at]] <= self._threshold[at]
            child = np.where(go_left, self._left[at], self._right[at])
            node[active] = child
            active = active[self._left[child] != child]
        return self._value[node].reshape(self.n_trees, n, -1).mean(axis=0)


class RandomForestStage:
    """The seed's random-forest stage: a scikit-learn forest on the flattened C·S·S cutout pixels.

    Parameters
    ----------
    in_channels, cutout_size : int, optional
        Expected input shape (C, S, S); the pipeline passes them as it does to the CNNs. When None they
        are taken from the first ``fit``.
    n_estimators : int
        Trees in the forest.
    max_depth : int or None
        Tree depth limit; None grows each tree until its leaves are pure.
    min_samples_leaf : int
        Smallest number of training samples in a leaf.
    n_jobs : int
        Parallel workers for fitting.
    random_state : int
        Seed of the bootstrap and feature draws.

    Notes
    -----
    After ``fit`` the scikit-learn object is dropped; predictions come from an :class:`ArrayForest`, the
    same code that serves a forest restored with :meth:`from_state`.
    """

    arch = "rf"

    def __init__(
        self,
        in_channels: int | None = None,
        cutout_size: int | None = None,
        *,
        n_estimators: int = 100,
        max_depth: int | None = None,
        min_samples_leaf: int = 1,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        self.in_channels = None if in_channels is None else positive_int("in_channels", in_channels)
        self.cutout_size = None if cutout_size is None else positive_int("cutout_size", cutout_size)
        self.n_estimators = positive_int("n_estimators", n_estimators)
        self.max_depth = None if max_depth is None else positive_int("max_depth", max_depth)
        self.min_samples_leaf = positive_int("min_samples_leaf", min_samples_leaf)
        self.n_jobs = int(n_jobs)
        self.random_state = int(random_state)
        self.forest: ArrayForest | None = None

    def hparams(self) -> dict:
        """Constructor arguments as plain containers: ``RandomForestStage(**stage.hparams())`` rebuilds it unfitted."""
        return {
            "in_channels": self.in_channels,
            "cutout_size": self.cutout_size,
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "min_samples_leaf": self.min_samples_leaf,
            "n_jobs": self.n_jobs,
            "random_state": self.random_state,
        }

    def _flatten(self, X: np.ndarray, *, fitting: bool) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 4 or X.shape[2] != X.shape[3]:
            raise ValueError(f"X: must have shape (N, C, S, S), got {X.shape}")
        for name, got in (("in_channels", X.shape[1]), ("cutout_size", X.shape[2])):
            want = getattr(self, name)
            if want is None and fitting:
                setattr(self, name, int(got))
            elif want != got:
                raise ValueError(f"X: {name} must be {want}, got {got} (shape {X.shape})")
        if not np.all(np.isfinite(X)):
            raise ValueError("X: must be finite (cutouts carry NaN -> 0 already)")
        return X.reshape(X.shape[0], -1)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "RandomForestStage":
        """Fit the forest.

        Parameters
        ----------
        X : (N, C, S, S) float array
            Cutouts, as the CNNs get them.
        y : (N,) int or bool array
            1 = asteroid, 0 = not; both classes must occur.

        Returns
        -------
        RandomForestStage
            ``self``, fitted.
        """
        from sklearn.ensemble import RandomForestClassifier

        flat = self._flatten(X, fitting=True)
        y = np.asarray(y)
        if y.shape != (flat.shape[0],):
            raise ValueError(f"y: must have shape ({flat.shape[0]},), got {y.shape}")
        y = y.astype(np.int64)
        if not np.array_equal(np.unique(y), [0, 1]):
            raise ValueError(f"y: must contain both classes 0 and 1, got {np.unique(y).tolist()}")
        fitted = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        ).fit(flat, y)
        self.forest = ArrayForest(forest_to_arrays(fitted))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(asteroid) for cutouts X (N, C, S, S): a (N,) float64 array in [0, 1]."""
        if self.forest is None:
            raise ValueError("RandomForestStage: not fitted; call fit or from_state first")
        flat = self._flatten(X, fitting=False)
        column = int(np.flatnonzero(self.forest.classes == 1)[0])
        return self.forest.predict_proba(flat)[:, column]

    def to_state(self, *, as_tensors: bool = False) -> dict:
        """The fitted forest as plain containers: ``{"arch", "hparams", "arrays"}``.

        ``arrays`` holds the :func:`forest_to_arrays` numpy arrays, or torch tensors with
        ``as_tensors=True`` (what ``torch.load(weights_only=True)`` accepts; it refuses numpy arrays).
        """
        if self.forest is None:
            raise ValueError("RandomForestStage: not fitted; nothing to save")
        arrays: dict[str, Any] = {k: np.array(v) for k, v in self.forest.arrays.items()}
        if as_tensors:
            import torch

            arrays = {k: torch.from_numpy(v) for k, v in arrays.items()}
        return {"arch": self.arch, "hparams": self.hparams(), "arrays": arrays}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "RandomForestStage":
        """Rebuild a fitted stage from :meth:`to_state`'s dict (numpy arrays or torch tensors)."""
        if not isinstance(state, Mapping) or state.get("arch") != cls.arch:
            found = state.get("arch") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"state: must be a random-forest state with arch 'rf', got {found!r}")
        stage = cls(**dict(state["hparams"]))
        stage.forest = ArrayForest(state["arrays"])
        if stage.in_channels is not None and stage.cutout_size is not None:
            expected = stage.in_channels * stage.cutout_size**2
            if stage.forest.n_features != expected:
                raise ValueError(
                    f"state: forest has {stage.forest.n_features} features, hparams give {expected} "
                    f"({stage.in_channels}x{stage.cutout_size}x{stage.cutout_size})"
                )
        return stage


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
