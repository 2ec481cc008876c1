"""The candidate cutout cache: every candidate of every image, cut, labelled and stored once.

Layout, keyed by everything that changes the cutouts or labels::

    cache_root/<name>-<hash12>/
        key.json                    the inputs the hash was made from
        file_<k>/                   one folder per source file, written atomically
            cutouts.npy             (N, 2, S, S) cache dtype: channel 0 filtered, 1 raw; NaN -> 0
            meta.npz                per candidate: file, image, x, y, label, truth_row, peak,
                                    local_noise, image_noise
            truth.npy               (M, 6) the file's truth rows, ordered by image
            truth_info.npz          per truth row: dead, proposed, matched_candidate
            info.json               counts and the key

``hash12`` covers the source fingerprint, sigma, the selector (class and arguments), the cutout
size, the label rule (mode, radius), the cache dtype and the cache format version. A folder
``file_<k>`` only ever appears complete (temp folder + rename), so a crashed build leaves
nothing behind, concurrent builders both succeed, and an interrupted build resumes with the
files that are missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from neocascade.data.sources import _jsonable, _plain
from neocascade.errors import input_error
from neocascade.utils.atomic import atomic_dir, save_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the layout or the meaning of a stored column changes
LABEL_MODES = ("centre", "trail")
CACHE_DTYPES = ("float16", "float32")
META_COLUMNS = ("file", "image", "x", "y", "label", "truth_row", "peak", "local_noise", "image_noise")


# ---------------------------------------------------------------------------------------------
# selector configuration


def resolve_selector(selector: Any) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """The selector callable and its config dict (``_target_`` + arguments).

    ``selector`` is either a built selector object or a mapping with ``_target_`` (a Hydra node),
    which is instantiated here and returned as given. The cache key always uses
    :func:`selector_config` of the built object, so both routes share a cache.
    """
    if selector is None:
        raise input_error("data.selector", "no candidate selector configured (expected e.g. selector=footprint)")
    plain = _plain(selector)
    if isinstance(plain, Mapping):
        if "_target_" not in plain:
            raise input_error("data.selector", "a selector config needs a '_target_'", found=sorted(plain))
        from hydra.utils import instantiate

        return instantiate(dict(plain)), _jsonable(plain)
    if not callable(selector):
        raise input_error("data.selector", "must be a callable selector or a config with '_target_'", found=type(selector).__name__)
    return selector, selector_config(selector)


def selector_config(selector: Any) -> dict[str, Any]:
    """``{'_target_': 'module.Class', **arguments}`` of a built selector.

    Arguments come from ``selector.config()`` when it has one, else from its dataclass fields,
    else from its public attributes.
    """
    cls = type(selector)
    if callable(getattr(selector, "config", None)):
        params = dict(selector.config())
    elif dataclasses.is_dataclass(selector):
        params = {f.name: getattr(selector, f.name) for f in dataclasses.fields(selector)}
    else:
        params = {k: v for k, v in vars(selector).items() if not k.startswith("_")}
    params.pop("_target_", None)
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **_jsonable(params)}


# ---------------------------------------------------------------------------------------------
# loaded candidates


class CutoutStore:
    """Cutouts of several cache files addressed by one global index, memory-mapped per file.

    Pickles as paths (worker processes reopen the memory maps) unless loaded into memory.
    """

    def __init__(self, paths: Sequence[Path], *, mmap: bool = True):
        self.paths = [Path(p) for p in paths]
        self.mmap = bool(mmap)
        self._arrays: list[np.ndarray] | None = None
        arrays = self._open()
        counts = [a.shape[0] for a in arrays]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.item_shape = tuple(arrays[0].shape[1:]) if arrays else (2, 0, 0)
        self.dtype = arrays[0].dtype if arrays else np.dtype(np.float16)

    def _open(self) -> list[np.ndarray]:
        if self._arrays is None:
            arrays = [np.load(p, mmap_mode="r" if self.mmap else None, allow_pickle=False) for p in self.paths]
            if not self.mmap and len(arrays) > 1:
                arrays = [np.concatenate(arrays, axis=0)]
            self._arrays = arrays
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.mmap:
            state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.item_shape)

    def take(self, indices: Any) -> np.ndarray:
        """Cutouts at global ``indices`` (any int array), as a new (n, 2, S, S) array in the stored dtype."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"cutout index outside [0, {n})")
        idx = np.where(idx < 0, idx + n, idx)
        arrays = self._open()
        if len(arrays) == 1:
            order = np.argsort(idx, kind="stable")
            out = np.empty((idx.size, *self.item_shape), dtype=self.dtype)
            out[order] = arrays[0][idx[order]]
            return out
        out = np.empty((idx.size, *self.item_shape), dtype=self.dtype)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for f in np.unique(which):
            positions = np.flatnonzero(which == f)
            local = idx[positions] - self.offsets[f]
            order = np.argsort(local, kind="stable")
            out[positions[order]] = arrays[f][local[order]]
        return out

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, slice):
            return self.take(np.arange(len(self))[item])
        if np.ndim(item) == 0:
            return self.take([item])[0]
        return self.take(item)


@dataclass
class CandidateSet:
    """Candidates of several cache files, concatenated in file order.

    Attributes
    ----------
    files : tuple of int
        Source file indices, in the order their candidates appear.
    cutouts : CutoutStore
        (N, 2, S, S) cutouts; ``cutouts.take(indices)`` reads a batch.
    file, image, x, y : (N,) int arrays
        Where each candidate is: x = column, y = row.
    label : (N,) bool array
    truth_row : (N,) int64 array
        Matched truth row within its file, -1 for none; ``truth_index`` is the same row in
        :attr:`truth` (across files).
    peak, local_noise, image_noise : (N,) float32 arrays
        Filtered value at the centre and the noise around it / of its image, in DN.
    truth : (M, 6) float64 array
        The files' truth rows; ``truth_file`` says which file each came from.
    truth_dead, truth_proposed : (M,) bool arrays
        Centre pixel masked or zero; some candidate matches it under the label rule.
    truth_candidate : (M,) int64 array
        Index of the matched candidate in this set (the highest peak among several), -1 for none.
    """

    files: tuple[int, ...]
    cutouts: CutoutStore
    file: np.ndarray
    image: np.ndarray
    x: np.ndarray
    y: np.ndarray
    label: np.ndarray
    truth_row: np.ndarray
    truth_index: np.ndarray
    peak: np.ndarray
    local_noise: np.ndarray
    image_noise: np.ndarray
    truth: np.ndarray
    truth_file: np.ndarray
    truth_dead: np.ndarray
    truth_proposed: np.ndarray
    truth_candidate: np.ndarray
    info: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.label.size)

    @property
    def labels(self) -> np.ndarray:
        """Labels as int64 (0 negative, 1 positive), the classifier's targets."""
        return self.label.astype(np.int64)

    @property
    def cutout_size(self) -> int:
        return int(self.cutouts.item_shape[-1])


# ---------------------------------------------------------------------------------------------
# the cache


@dataclass(frozen=True)
class CacheHandle:
    """A cache folder: which inputs it was made from and which files it holds."""

    root: Path
    key: dict[str, Any]
    files: tuple[int, ...]

    @property
    def hash(self) -> str:
        return self.root.name.rsplit("-", 1)[-1]

    def file_dir(self, file: int) -> Path:
        """The folder of source file ``file``."""
        return self.root / f"file_{int(file)}"

    def is_built(self, file: int) -> bool:
        """Whether ``file`` is complete (folders only ever appear complete)."""
        return (self.file_dir(file) / "info.json").is_file()

    def load(self, files: Iterable[int] | None = None, *, mmap: bool = True) -> CandidateSet:
        """Read the candidates of ``files`` (default: all of this handle's files).

        Parameters
        ----------
        files : iterable of int, optional
        mmap : bool
            Memory-map the cutouts per file (default); false loads them into one array.

        Raises
        ------
        InputError
            A file folder is missing (build it first) or incomplete.
        """
        files = tuple(int(f) for f in (self.files if files is None else files))
        columns: dict[str, list[np.ndarray]] = {c: [] for c in META_COLUMNS}
        truths, truth_files, dead, proposed, matched, infos, paths = [], [], [], [], [], {}, []
        n_cand = n_truth = 0
        truth_index = []
        for f in files:
            folder = self.file_dir(f)
            if not self.is_built(f):
                raise input_error(folder, "cache file not built (run prepare_data / build_cache first)")
            with np.load(folder / "meta.npz", allow_pickle=False) as meta:
                for c in META_COLUMNS:
                    columns[c].append(meta[c])
            truth = np.load(folder / "truth.npy", allow_pickle=False)
            with np.load(folder / "truth_info.npz", allow_pickle=False) as tinfo:
                dead.append(tinfo["dead"])
                proposed.append(tinfo["proposed"])
                mc = tinfo["matched_candidate"].astype(np.int64)
                matched.append(np.where(mc >= 0, mc + n_cand, -1))
            row = columns["truth_row"][-1].astype(np.int64)
            truth_index.append(np.where(row >= 0, row + n_truth, -1))
            truths.append(truth)
            truth_files.append(np.full(len(truth), f, dtype=np.int64))
            infos[f] = json.loads((folder / "info.json").read_text())
            paths.append(folder / "cutouts.npy")
            n_cand += len(row)
            n_truth += len(truth)

        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)

        return CandidateSet(
            files=files,
            cutouts=CutoutStore(paths, mmap=mmap),
            file=cat(columns["file"], np.int64),
            image=cat(columns["image"], np.int64),
            x=cat(columns["x"], np.int64),
            y=cat(columns["y"], np.int64),
            label=cat(columns["label"], bool),
            truth_row=cat(columns["truth_row"], np.int64),
            truth_index=cat(truth_index, np.int64),
            peak=cat(columns["peak"], np.float32),
            local_noise=cat(columns["local_noise"], np.float32),
            image_noise=cat(columns["image_noise"], np.float32),
            truth=np.concatenate(truths).astype(np.float64) if truths else np.empty((0, 6)),
            truth_file=cat(truth_files, np.int64),
            truth_dead=cat(dead, bool),
            truth_proposed=cat(proposed, bool),
            truth_candidate=cat(matched, np.int64),
            info=infos,
        )


def cache_key(
    source: Any, *, sigma: float, selector_cfg: Mapping[str, Any], cutout_size: int, label_mode: str, label_radius: float, dtype: str
) -> dict[str, Any]:
    """Everything that changes the cached pixels or labels, as a JSON-able dict."""
    return {
        "version": CACHE_VERSION,
        "source": _jsonable(source.fingerprint()),
        "sigma": float(sigma),
        "selector": _jsonable(selector_cfg),
        "cutout_size": int(cutout_size),
        "label": {"mode": str(label_mode), "radius": float(label_radius)},
        "dtype": str(dtype),
    }


def key_hash(key: Mapping[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of the key's canonical JSON."""
    text = json.dumps(_jsonable(key), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_handle(
    source: Any,
    *,
    files: Iterable[int] | None = None,
    sigma: float,
    selector: Any,
    cutout_size: int,
    label_mode: str = "centre",
    label_radius: float = 1.0,
    cache_root: str | Path,
    dtype: str = "float16",
    name: str | None = None,
) -> CacheHandle:
    """The handle of the cache these settings map to, without building anything."""
    _check_options(sigma=sigma, cutout_size=cutout_size, label_mode=label_mode, label_radius=label_radius, dtype=dtype)
    select, _ = resolve_selector(selector)
    key = cache_key(
        source, sigma=sigma, selector_cfg=selector_config(select), cutout_size=cutout_size, label_mode=label_mode, label_radius=label_radius, dtype=dtype
    )
    files = tuple(source.file_ids if files is None else (int(f) for f in files))
    missing = [f for f in files if f not in source.file_ids]
    if missing:
        raise input_error("data.split", f"file {missing[0]} is not in the source", found=f"files {list(source.file_ids)}")
    label = _safe_name(name or source.name)
    return CacheHandle(root=Path(cache_root) / f"{label}-{key_hash(key)}", key=key, files=files)


def build_cache(
    source: Any,
    *,
    files: Iterable[int] | None = None,
    sigma: float,
    selector: Any,
    cutout_size: int = 21,
    label_mode: str = "centre",
    label_radius: float = 1.0,
    cache_root: str | Path,
    dtype: str = "float16",
    n_jobs: int = 1,
    progress: bool | None = None,
    name: str | None = None,
) -> CacheHandle:
    """Extract, cut and label every candidate of ``files``, one image at a time; skip built files.

    Parameters
    ----------
    source : ImageSource
        Where the images come from (see :mod:`neocascade.data.sources`).
    files : iterable of int, optional
        Source file indices to build (default: all).
    sigma : float
        Gaussian filter sigma in px.
    selector : callable or mapping with ``_target_``
        Candidate selector, ``selector(filtered) -> (rows, cols)``.
    cutout_size : int
        Cutout side in px (odd).
    label_mode : {'centre', 'trail'}, label_radius : float
        A candidate is positive within ``label_radius`` px of an asteroid's centre (``centre``)
        or of its trail segment (``trail``).
    cache_root : str or path
        Parent of the cache folder ``<name>-<hash12>``.
    dtype : {'float16', 'float32'}
        Storage type of the cutouts.
    n_jobs : int
        Worker processes over images (joblib); 1 runs in this process.
    progress : bool, optional
        Show a progress bar; None shows it only on a terminal.
    name : str, optional
        Folder label (default: the source's name).

    Returns
    -------
    CacheHandle

    Notes
    -----
    Memory: images are read, filtered and cut one at a time (per worker); a file's cutouts are
    gathered (about 6.5 MB per 3080×3072 quadrant in float16) and written once the file is done.
    """
    handle = cache_handle(
        source,
        files=files,
        sigma=sigma,
        selector=selector,
        cutout_size=cutout_size,
        label_mode=label_mode,
        label_radius=label_radius,
        cache_root=cache_root,
        dtype=dtype,
        name=name,
    )
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise input_error("data.n_jobs", "must be a positive integer or -1 (all cores)", found=repr(n_jobs))
    todo = [f for f in handle.files if not handle.is_built(f)]
    if not todo:
        log.info("cache %s: all %d files already built", handle.root, len(handle.files))
        return handle
    select, _ = resolve_selector(selector)
    handle.root.mkdir(parents=True, exist_ok=True)
    if not (handle.root / "key.json").is_file():
        save_json(handle.root / "key.json", handle.key, overwrite=True)
    settings = dict(sigma=float(sigma), selector=select, cutout_size=int(cutout_size), label_mode=label_mode, label_radius=float(label_radius), dtype=dtype)
    from tqdm.auto import tqdm

    total = sum(source.n_images(f) for f in todo)
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with tqdm(total=total, desc=f"cache {handle.root.name}", unit="image", disable=disable) as bar:
        for f in todo:
            n_images = source.n_images(f)
            if handle.is_built(f):  # another process finished it while we built earlier files
                bar.update(n_images)
                continue
            results = []
            for result in _run_images(source, f, n_images, settings, n_jobs=int(n_jobs)):
                results.append(result)
                bar.update(1)
            if handle.is_built(f):
                log.info("cache %s: file %d was built by another process meanwhile", handle.root, f)
                continue
            with atomic_dir(handle.file_dir(f)) as tmp:
                _write_file(tmp, f, results, key_hash=handle.hash, cutout_size=int(cutout_size), dtype=dtype)
            del results
            log.info("cache %s: built file %d (%d images)", handle.root, f, n_images)
    return handle


# ---------------------------------------------------------------------------------------------
# per image (runs in worker processes)


@dataclass
class _ImageResult:
    cutouts: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    label: np.ndarray
    matched: np.ndarray
    peak: np.ndarray
    local_noise: np.ndarray
    image_noise: float
    truth: np.ndarray
    dead: np.ndarray


def _run_images(source: Any, file: int, n_images: int, settings: dict[str, Any], *, n_jobs: int) -> Iterator[_ImageResult]:
    """Results of every image of ``file`` in image order, in this process or in joblib workers."""
    if n_jobs == 1 or n_images == 1:
        for i in range(n_images):
            yield _process_image(source, file, i, **settings)
        return
    from joblib import Parallel, delayed

    tasks = (delayed(_process_image)(source, file, i, **settings) for i in range(n_images))
    yield from Parallel(n_jobs=n_jobs, return_as="generator")(tasks)


def _process_image(
    source: Any, file: int, image: int, *, sigma: float, selector: Any, cutout_size: int, label_mode: str, label_radius: float, dtype: str
) -> _ImageResult:
    """Read, filter, select, cut and label one image."""
    from neocascade.candidates.extract import extract_candidates

    pixels, truth = source.read(file, image)
    cand = extract_candidates(pixels, sigma=sigma, selector=selector, cutout_size=cutout_size)
    rows = np.asarray(cand.rows, dtype=np.int64)
    cols = np.asarray(cand.cols, dtype=np.int64)
    label, matched = label_candidates(rows, cols, truth, mode=label_mode, radius=label_radius)
    n = rows.size
    return _ImageResult(
        cutouts=np.asarray(cand.cutouts).astype(dtype),
        rows=rows,
        cols=cols,
        label=label,
        matched=matched,
        peak=np.broadcast_to(np.asarray(cand.peak, dtype=np.float32), (n,)).copy(),
        local_noise=np.broadcast_to(np.asarray(cand.local_noise, dtype=np.float32), (n,)).copy(),
        image_noise=float(cand.image_noise),
        truth=np.asarray(truth, dtype=np.float64).reshape(-1, 6),
        dead=dead_truth(pixels, truth),
    )


def label_candidates(rows: np.ndarray, cols: np.ndarray, truth: np.ndarray, *, mode: str, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels (bool (N,)) and matched truth rows (int64 (N,), -1 none) under the label rule."""
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 6)
    if truth.shape[0] == 0 or rows.size == 0:
        return np.zeros(rows.size, dtype=bool), np.full(rows.size, -1, dtype=np.int64)
    from neocascade.candidates import labels

    if mode == "centre":
        label, matched = labels.match_centres(rows, cols, truth[:, 1:3], radius=radius)
    elif mode == "trail":
        label, matched = labels.match_trails(rows, cols, truth, radius=radius)
    else:
        raise ValueError(f"mode: must be one of {list(LABEL_MODES)}, got {mode!r}")
    return np.asarray(label, dtype=bool), np.asarray(matched, dtype=np.int64)


def dead_truth(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per truth row: the raw pixel at the rounded centre is NaN or 0, or the centre is off the image."""
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 6)
    rows = np.rint(truth[:, 2]).astype(np.int64)
    cols = np.rint(truth[:, 1]).astype(np.int64)
    height, width = image.shape
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    values = np.full(len(truth), np.nan, dtype=np.float64)
    values[inside] = image[rows[inside], cols[inside]]
    return ~np.isfinite(values) | (values == 0)


def _write_file(folder: Path, file: int, results: list[_ImageResult], *, key_hash: str, cutout_size: int, dtype: str) -> None:
    """Write one file's folder from its per-image results (gathered in image order)."""
    counts = np.array([r.rows.size for r in results], dtype=np.int64)
    truth_counts = np.array([len(r.truth) for r in results], dtype=np.int64)
    truth_offsets = np.concatenate([[0], np.cumsum(truth_counts)])[:-1]
    n = int(counts.sum())
    cutouts = np.lib.format.open_memmap(folder / "cutouts.npy", mode="w+", dtype=np.dtype(dtype), shape=(n, 2, cutout_size, cutout_size))
    start = 0
    for r in results:
        cutouts[start : start + r.rows.size] = r.cutouts
        start += r.rows.size
        r.cutouts = np.empty(0, dtype=dtype)  # release as we go: peak memory stays at one copy
    cutouts.flush()
    del cutouts

    matched_local = [np.where(r.matched >= 0, r.matched + off, -1) for r, off in zip(results, truth_offsets)]
    truth_row = _cat(matched_local, np.int64)
    peak = _cat([r.peak for r in results], np.float32)
    meta = {
        "file": np.full(n, file, dtype=np.int32),
        "image": np.repeat(np.arange(len(results), dtype=np.int32), counts),
        "x": _cat([r.cols for r in results], np.int32),
        "y": _cat([r.rows for r in results], np.int32),
        "label": _cat([r.label for r in results], bool),
        "truth_row": truth_row,
        "peak": peak,
        "local_noise": _cat([r.local_noise for r in results], np.float32),
        "image_noise": np.repeat(np.array([r.image_noise for r in results], dtype=np.float32), counts),
    }
    _write_npz(folder / "meta.npz", meta)
    truth = np.concatenate([r.truth for r in results]) if results else np.empty((0, 6))
    np.save(folder / "truth.npy", truth.astype(np.float64))
    dead = _cat([r.dead for r in results], bool)
    proposed, matched_candidate = _truth_matches(truth_row, peak, len(truth))
    _write_npz(folder / "truth_info.npz", {"dead": dead, "proposed": proposed, "matched_candidate": matched_candidate})
    info = {
        "file": int(file),
        "key_hash": key_hash,
        "n_images": len(results),
        "n_candidates": n,
        "n_positive": int(meta["label"].sum()),
        "n_truth": int(len(truth)),
        "n_dead": int(dead.sum()),
        "n_proposed": int(proposed.sum()),
        "cutout_size": int(cutout_size),
        "dtype": str(dtype),
        "candidates_per_image": counts.tolist(),
    }
    (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")


def _truth_matches(truth_row: np.ndarray, peak: np.ndarray, n_truth: int) -> tuple[np.ndarray, np.ndarray]:
    """Per truth row: matched by any candidate, and the matched candidate with the highest peak."""
    proposed = np.zeros(n_truth, dtype=bool)
    matched_candidate = np.full(n_truth, -1, dtype=np.int64)
    hits = np.flatnonzero(truth_row >= 0)
    if hits.size:
        score = np.nan_to_num(peak[hits].astype(np.float64), nan=-np.inf)
        order = hits[np.lexsort((-score, truth_row[hits]))]
        rows = truth_row[order]
        first = np.concatenate([[True], rows[1:] != rows[:-1]])
        proposed[rows] = True
        matched_candidate[rows[first]] = order[first]
    return proposed, matched_candidate


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed npz (``np.savez`` cannot take a key named ``file``)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)


def _check_options(*, sigma: float, cutout_size: int, label_mode: str, label_radius: float, dtype: str) -> None:
    """One-line InputErrors naming the data.* key."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.number)) or not np.isfinite(sigma) or sigma < 0:
        raise input_error("data.sigma", "must be a finite number >= 0", found=repr(sigma))
    if isinstance(cutout_size, bool) or not isinstance(cutout_size, (int, np.integer)) or cutout_size < 1 or cutout_size % 2 == 0:
        raise input_error("data.cutout_size", "must be an odd positive integer", found=repr(cutout_size))
    if label_mode not in LABEL_MODES:
        raise input_error("data.label_mode", f"must be one of {', '.join(LABEL_MODES)}", found=repr(label_mode))
    if isinstance(label_radius, bool) or not isinstance(label_radius, (int, float, np.number)) or not np.isfinite(label_radius) or label_radius < 0:
        raise input_error("data.label_radius", "must be a finite number >= 0", found=repr(label_radius))
    if dtype not in CACHE_DTYPES:
        raise input_error("data.cache_dtype", f"must be one of {', '.join(CACHE_DTYPES)}", found=repr(dtype))


def _safe_name(name: str) -> str:
    """A folder-safe version of a preset name."""
    text = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)).strip(".")
    return text or "cache"
