"""The Lightning DataModule: cached candidate cutouts, split by file, balanced every epoch.

Built by ``hydra.utils.instantiate(cfg.data)`` (the keys of ``conf/data/_base.yaml`` plus
``selector``) or directly with plain Python objects. ``source`` and ``selector`` may arrive built
(Hydra's default recursive instantiation) or as configs with ``_target_`` (``_recursive_: false``).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from neocascade.data.cache import CandidateSet, build_cache, cache_handle, resolve_selector
from neocascade.data.sampling import BalancedResampler
from neocascade.data.sources import _plain
from neocascade.data.splits import SPLITS, validate_split
from neocascade.data.transforms import NORMALIZATIONS, assemble_inputs, augment as augment_batch, channel_indices, fade
from neocascade.errors import input_error

log = logging.getLogger(__name__)


class CutoutDataset(Dataset):
    """Candidates of one split as model inputs, fetched a whole batch at a time.

    Parameters
    ----------
    candidates : CandidateSet
    indices : (n,) int array
        Positions in ``candidates`` this dataset covers; item ``i`` is candidate ``indices[i]``.
    channels, normalize
        See :func:`neocascade.data.transforms.assemble_inputs`.
    augment : bool
        Random flips / quarter turns per sample.
    fade : dict, optional
        Keyword arguments of :func:`neocascade.data.transforms.fade` (``probability``, ``min_scale``,
        ``min_snr``): random cutouts become fainter copies of themselves; None leaves them as cached.
    sigma : float
        The cutouts' Gaussian filter sigma in px (used by ``fade``).
    seed : int
        Seeds the augmentation (mixed with the worker's torch seed in worker processes).

    Notes
    -----
    ``__getitems__`` returns a ready batch ``(x float32 (B, C, S, S), y int64 (B,), index int64
    (B,))`` with ``index`` into ``candidates``; use :func:`collate_batch` as the loader's
    ``collate_fn``. Cutouts of 21×21 px are tiny, so per-sample fetching and collation would
    dominate the time on a CPU.
    """

    def __init__(
        self,
        candidates: CandidateSet,
        indices: np.ndarray,
        *,
        channels: Sequence[str],
        normalize: str,
        augment: bool = False,
        fade: Mapping[str, float] | None = None,
        sigma: float = 1.0,
        seed: int = 0,
    ):
        self.candidates = candidates
        self.fade = dict(fade) if fade else None
        self.sigma = float(sigma)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.channels = list(channels)
        self.normalize = normalize
        self.augment = bool(augment)
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None
        self._rng_owner: int | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_rng"] = state["_rng_owner"] = None  # each worker seeds its own generator
        return state

    def _generator(self) -> np.random.Generator:
        owner = torch.initial_seed()
        if self._rng is None or self._rng_owner != owner:
            self._rng = np.random.default_rng([self.seed, owner % (2**63)])
            self._rng_owner = owner
        return self._rng

    def batch(self, positions: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Items ``positions`` as one batch ``(x, y, index)``."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        idx = self.indices[pos]
        cs = self.candidates
        cutouts = cs.cutouts.take(idx)
        if self.fade:
            cutouts = fade(cutouts, noise=cs.image_noise[idx], sigma=self.sigma, rng=self._generator(), **self.fade)
        x = assemble_inputs(
            cutouts,
            channels=self.channels,
            normalize=self.normalize,
            image_noise=cs.image_noise[idx],
            local_noise=cs.local_noise[idx],
        )
        if self.augment:
            x = augment_batch(x, self._generator())
        x = np.ascontiguousarray(x)
        return torch.from_numpy(x), torch.from_numpy(cs.label[idx].astype(np.int64)), torch.from_numpy(idx)

    def __getitems__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.batch(positions)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, index = self.batch([position])
        return x[0], y[0], index[0]


def collate_batch(batch: Any) -> Any:
    """Pass through a batch :meth:`CutoutDataset.__getitems__` already built; collate lists of samples."""
    if isinstance(batch, tuple) and len(batch) == 3 and all(isinstance(t, torch.Tensor) for t in batch):
        return batch
    return default_collate(batch)


class CutoutDataModule(pl.LightningDataModule):
    """Candidate cutouts for training, validation, testing and scoring.

    Parameters
    ----------
    name : str
        Preset name; prefixes the cache folder.
    source : ImageSource or config with ``_target_``
        Where the images come from (:mod:`neocascade.data.sources`).
    selector : callable or config with ``_target_``
        Candidate selector (``conf/selector``); its class and arguments are part of the cache key.
    sigma : float
        Gaussian filter sigma in px.
    kernel, stride : int
        Recorded in :attr:`input_spec`; the selector config reads them as ``${data.kernel}``.
    cutout_size : int
        Cutout side in px.
    label_radius : float, label_mode : {'centre', 'trail'}
        The label rule.
    channels : list of {'filtered', 'raw'}, normalize : {'none', 'image_noise', 'local_noise', 'cutout', 'snr'}
        Model inputs (:func:`~neocascade.data.transforms.assemble_inputs`).
    augment : bool
        Random flips / quarter turns of training cutouts.
    fade : dict, optional
        Fade training cutouts to fainter copies (:func:`neocascade.data.transforms.fade` keywords
        ``probability``, ``min_scale``, ``min_snr``); None (the seed) leaves them as cached.
    neg_ratio : float, resample_each_epoch : bool
        Negatives per positive in each training epoch; fresh negatives every epoch.
    hard_negatives : dict, optional
        ``fraction`` of each epoch's negatives drawn from those with peak SNR (filtered peak / local noise)
        >= ``min_snr``: bright star residuals and artifacts, rare among the candidates, are seen more often.
        None (the seed) draws negatives alike.
    split : mapping
        ``train``, ``val``, ``test`` lists of file indices (by file, never by image).
    batch_size, num_workers : int
    seed : int
        Seeds the negative draws and the augmentation.
    cache_dir : str or path
        Parent folder of the caches.
    cache_dtype : {'float16', 'float32'}
    n_jobs : int
        Worker processes when building the cache.
    progress : bool, optional
        Progress bar while building; None shows it on a terminal only.
    mmap : bool
        Memory-map the cached cutouts (default) rather than loading them.
    val_negatives : int, optional
        Cap on the validation negatives :meth:`val_dataloader` uses during training: every (kept)
        positive plus this many negatives drawn once with ``seed``. None uses them all. Thresholds
        are always picked on the whole file (:meth:`predict_loader`).
    """

    def __init__(
        self,
        *,
        source: Any,
        selector: Any = None,
        name: str = "data",
        sigma: float = 1.0,
        kernel: int = 50,
        stride: int = 50,
        cutout_size: int = 21,
        label_radius: float = 1.0,
        label_mode: str = "centre",
        channels: Sequence[str] = ("filtered",),
        normalize: str = "none",
        augment: bool = False,
        fade: Mapping[str, float] | None = None,
        neg_ratio: float = 1.0,
        resample_each_epoch: bool = True,
        hard_negatives: Mapping[str, float] | None = None,
        split: Mapping[str, Sequence[int]] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str = "outputs/cache",
        cache_dtype: str = "float16",
        n_jobs: int = 1,
        progress: bool | None = None,
        mmap: bool = True,
        val_negatives: int | None = None,
    ):
        super().__init__()
        self.source = _build(source, "data.source")
        self.selector, self.selector_cfg = resolve_selector(selector)
        self.name = str(name)
        self.sigma = float(sigma)
        self.kernel = kernel
        self.stride = stride
        self.cutout_size = int(cutout_size)
        self.label_radius = float(label_radius)
        self.label_mode = str(label_mode)
        self.channels = list(_plain(channels)) if not isinstance(channels, str) else [channels]
        try:
            channel_indices(self.channels)
        except ValueError as exc:
            raise input_error("data.channels", str(exc).split(": ", 1)[1]) from None
        if normalize not in NORMALIZATIONS:
            raise input_error("data.normalize", f"must be one of {', '.join(NORMALIZATIONS)}", found=repr(normalize))
        self.normalize = str(normalize)
        self.augment = bool(augment)
        self.fade = _check_fade(fade, self.sigma)
        if not np.isfinite(neg_ratio) or neg_ratio < 0:
            raise input_error("data.neg_ratio", "must be a finite number >= 0", found=repr(neg_ratio))
        self.neg_ratio = float(neg_ratio)
        self.resample_each_epoch = bool(resample_each_epoch)
        self.hard_negatives = _check_hard_negatives(hard_negatives)
        self.split = validate_split(split, self.source.file_ids)
        for key, value, low in (("data.batch_size", batch_size, 1), ("data.num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise input_error(key, f"must be an integer >= {low}", found=repr(value))
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.cache_dir = str(cache_dir)
        self.cache_dtype = str(cache_dtype)
        self.n_jobs = n_jobs
        self.progress = progress
        self.mmap = bool(mmap)
        if val_negatives is not None and (isinstance(val_negatives, bool) or not isinstance(val_negatives, (int, np.integer)) or val_negatives < 0):
            raise input_error("data.val_negatives", "must be null or an integer >= 0", found=repr(val_negatives))
        self.val_negatives = None if val_negatives is None else int(val_negatives)
        self.handle = cache_handle(self.source, files=self.all_files, **self._cache_settings())
        self._sets: dict[str, CandidateSet] = {}
        self._keep: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ description

    @property
    def all_files(self) -> tuple[int, ...]:
        """Every file of the split, train then val then test."""
        return tuple(f for name in SPLITS for f in self.split[name])

    @property
    def in_channels(self) -> int:
        """Model input channels."""
        return len(self.channels)

    @property
    def input_spec(self) -> dict[str, Any]:
        """Preprocessing settings to store with a trained model (the detector rebuilds inputs from them)."""
        return {
            "sigma": self.sigma,
            "selector": dict(self.selector_cfg),
            "kernel": self.kernel,
            "stride": self.stride,
            "cutout_size": self.cutout_size,
            "channels": list(self.channels),
            "normalize": self.normalize,
            "label_mode": self.label_mode,
            "label_radius": self.label_radius,
        }

    # ------------------------------------------------------------------ Lightning hooks

    def prepare_data(self) -> None:
        """Build the cache for every file of the split (skips files already built)."""
        self._build(self.all_files)

    def setup(self, stage: str | None = None) -> None:
        """Load the candidates of the splits ``stage`` needs."""
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS)
        for name in needed:
            if self.split[name]:
                self.candidates(name)

    def train_dataloader(self) -> DataLoader:
        """All positives plus ``neg_ratio`` times as many fresh random negatives per epoch, shuffled."""
        cs = self.candidates("train")
        indices = self._indices("train")
        labels = cs.label[indices]
        if not labels.any():
            raise input_error("data.split.train", f"no positive candidates in files {list(self.split['train'])}")
        hard, fraction = None, 0.0
        if self.hard_negatives is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = cs.peak[indices].astype(np.float64) / cs.local_noise[indices].astype(np.float64)
            hard, fraction = np.nan_to_num(snr, nan=0.0) >= self.hard_negatives["min_snr"], self.hard_negatives["fraction"]
        sampler = BalancedResampler(labels, neg_ratio=self.neg_ratio, seed=self.seed, resample_each_epoch=self.resample_each_epoch,
                                    hard=hard, hard_fraction=fraction)
        dataset = self._dataset("train", indices, augment=True)
        return self._loader(dataset, sampler=sampler)

    def val_dataloader(self) -> DataLoader | list:
        """The (kept) validation candidates in order, negatives capped at ``val_negatives``; [] without files."""
        if not self.split["val"] or self.val_negatives is None:
            return self._eval_loader("val")
        return self._loader(self._dataset("val", self.val_subsample(), augment=False), shuffle=False)

    def val_subsample(self) -> np.ndarray:
        """Sorted indices of every kept validation positive and at most ``val_negatives`` kept negatives.

        The negatives are a fixed draw (seeded by ``seed``), the same every epoch and every call.
        """
        indices = self._indices("val")
        positive = self.candidates("val").label[indices] == 1
        negatives = indices[~positive]
        if self.val_negatives is not None and negatives.size > self.val_negatives:
            rng = np.random.default_rng([self.seed, 0x7A1])
            negatives = rng.choice(negatives, size=self.val_negatives, replace=False)
        return np.sort(np.concatenate([indices[positive], negatives]))

    def test_dataloader(self) -> DataLoader | list:
        """Every (kept) test candidate, in order."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Every test candidate, in order (use :meth:`predict_loader` for other splits)."""
        return self.predict_loader("test")

    # ------------------------------------------------------------------ public helpers

    def candidates(self, split: str) -> CandidateSet:
        """The split's candidates (built and loaded on first use); batch ``index`` values point into it."""
        name = self._check_split(split)
        if name not in self._sets:
            self._build(self.split[name])
            self._sets[name] = self.handle.load(self.split[name], mmap=self.mmap)
            cs = self._sets[name]
            log.info("data %s: %d candidates, %d positive, from files %s", name, len(cs), int(cs.label.sum()), list(cs.files))
        return self._sets[name]

    def get_labels(self, split: str) -> np.ndarray:
        """Labels (int64, 0/1) of every candidate of the split, restriction ignored."""
        return self.candidates(split).labels

    def restrict(self, split: str, keep: np.ndarray | None) -> None:
        """Limit a split's training / evaluation loaders to ``keep`` (bool over its candidates); None lifts it.

        The cascade's second stage trains and validates only on candidates the first stage passed.
        Batch ``index`` values still point into the whole split's :meth:`candidates`.
        """
        name = self._check_split(split)
        if keep is None:
            self._keep.pop(name, None)
            return
        keep = np.asarray(keep)
        n = len(self.candidates(name))
        if keep.dtype != bool or keep.shape != (n,):
            raise ValueError(f"keep: must be a bool array of shape ({n},) for split {name!r}, got {keep.dtype} {keep.shape}")
        self._keep[name] = np.flatnonzero(keep)

    def kept_indices(self, split: str) -> np.ndarray:
        """Candidate indices the split's loaders use (all, unless restricted)."""
        return self._indices(self._check_split(split))

    def predict_loader(self, split: str, indices: np.ndarray | None = None, *, batch_size: int | None = None) -> DataLoader:
        """Batches ``(x, y, index)`` over ``indices`` of the split (default: all, restriction ignored), in order."""
        cs = self.candidates(split)
        if indices is None:
            indices = np.arange(len(cs), dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(cs)):
            raise IndexError(f"indices: outside [0, {len(cs)}) for split {split!r}")
        dataset = self._dataset(split, indices, augment=False)
        return self._loader(dataset, shuffle=False, batch_size=batch_size)

    # ------------------------------------------------------------------ internals

    def _build(self, files: Sequence[int]) -> None:
        if files:
            build_cache(self.source, files=files, n_jobs=self.n_jobs, progress=self.progress, **self._cache_settings())

    def _cache_settings(self) -> dict[str, Any]:
        """What keys the cache (besides the source and files): one place for handle and build alike."""
        return {
            "sigma": self.sigma,
            "selector": self.selector,
            "cutout_size": self.cutout_size,
            "label_mode": self.label_mode,
            "label_radius": self.label_radius,
            "cache_root": self.cache_dir,
            "dtype": self.cache_dtype,
            "name": self.name,
        }

    def _check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"split: must be one of {list(SPLITS)}, got {split!r}")
        if not self.split[split]:
            raise input_error(f"data.split.{split}", "has no files")
        return split

    def _indices(self, split: str) -> np.ndarray:
        if split in self._keep:
            return self._keep[split]
        return np.arange(len(self.candidates(split)), dtype=np.int64)

    def _dataset(self, split: str, indices: np.ndarray, *, augment: bool) -> CutoutDataset:
        """Training batches (``augment=True``) get the flips when ``data.augment`` and the fading when ``data.fade``."""
        return CutoutDataset(
            self.candidates(split), indices, channels=self.channels, normalize=self.normalize,
            augment=augment and self.augment, fade=self.fade if augment else None, sigma=self.sigma, seed=self.seed,
        )

    def _eval_loader(self, split: str) -> DataLoader | list:
        if not self.split[split]:
            return []
        return self._loader(self._dataset(split, self._indices(split), augment=False), shuffle=False)

    def _loader(self, dataset: CutoutDataset, *, sampler: Any = None, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            sampler=sampler,
            shuffle=shuffle if sampler is None else None,
            num_workers=self.num_workers,
            collate_fn=collate_batch,
            persistent_workers=self.num_workers > 0,
        )


def _check_fade(value: Any, sigma: float) -> dict | None:
    """``data.fade`` as plain keyword arguments of :func:`fade`, or None when off; InputError when malformed."""
    if value is None or value is False:
        return None
    if not isinstance(value, Mapping):
        raise input_error("data.fade", "must be null or a mapping of probability, min_scale, min_snr", found=repr(value))
    raw = {str(k): v for k, v in dict(value).items()}
    unknown = sorted(set(raw) - {"probability", "min_scale", "min_snr", "match_correlation"})
    if unknown:
        raise input_error("data.fade", "unknown key", expected="probability, min_scale, min_snr, match_correlation",
                          found=unknown)
    if not isinstance(raw.get("match_correlation", False), bool):
        raise input_error("data.fade.match_correlation", "must be true or false", found=repr(raw["match_correlation"]))
    try:
        kwargs = {k: v if k == "match_correlation" else float(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise input_error("data.fade", "probability, min_scale and min_snr must be numbers", found=raw) from None
    try:
        fade(np.zeros((1, 2, 3, 3), np.float32), noise=np.ones(1), sigma=sigma, rng=np.random.default_rng(0), **kwargs)
    except ValueError as exc:
        raise input_error("data.fade", str(exc).split(": ", 1)[1]) from None
    return kwargs if kwargs.get("probability", 0.5) > 0 else None


def _check_hard_negatives(value: Any) -> dict | None:
    """``data.hard_negatives``: None, or ``fraction`` in [0, 1] and ``min_snr`` > 0."""
    if value is None:
        return None
    value = _plain(value)
    if not isinstance(value, Mapping):
        raise input_error("data.hard_negatives", "must be null or a mapping of fraction, min_snr", found=repr(value))
    if set(value) != {"fraction", "min_snr"}:
        raise input_error("data.hard_negatives", "needs exactly the keys fraction, min_snr", found=sorted(value))
    out = {}
    for key, low, high in (("fraction", 0.0, 1.0), ("min_snr", 0.0, np.inf)):
        v = value[key]
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and np.isfinite(v) and low <= v <= high
        if not ok or (key == "min_snr" and v <= 0):
            raise input_error(f"data.hard_negatives.{key}", f"must be a number in {'[0, 1]' if key == 'fraction' else '(0, inf)'}", found=repr(v))
        out[key] = float(v)
    return out


def _build(obj: Any, key: str) -> Any:
    """Instantiate a config with ``_target_``; pass a built object through."""
    plain = _plain(obj)
    if isinstance(plain, Mapping):
        if "_target_" not in plain:
            raise input_error(key, "a config needs a '_target_'", found=sorted(plain))
        from hydra.utils import instantiate

        return instantiate(dict(plain))
    if obj is None:
        raise input_error(key, "missing")
    return obj
