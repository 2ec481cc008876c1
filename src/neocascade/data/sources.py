"""Image sources: where the pixels of the candidate cache come from, one image at a time.

Every source has the same small interface, so the cache never loads a whole file of quadrants:

- ``name``: a short label for logs;
- ``file_ids``: the file indices the split refers to (``n_files`` of them);
- ``n_images(file)``: images in that file;
- ``read(file, image) -> (image float32 (H, W) in DN, truth float64 (m, 6))``: the truth rows of
  that image, columns ``image, x, y, magnitude, length, angle``;
- ``fingerprint() -> dict``: JSON-able, identifies the pixels (part of the cache key).

Sources pickle cheaply (they are shipped to joblib workers); open files are kept per process.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from neocascade.errors import input_error

TRUTH_WIDTH = 6
_SUFFIX = re.compile(r"_(\d+)$")
_GLOB_CHARS = set("*?[")


class ImageSource:
    """Shared behaviour: ``file_ids``/``n_files`` and index checks. Subclasses implement the rest."""

    name: str = "source"
    file_ids: tuple[int, ...] = ()

    @property
    def n_files(self) -> int:
        """Number of files in the source."""
        return len(self.file_ids)

    def n_images(self, file: int) -> int:
        """Number of images in ``file``."""
        raise NotImplementedError

    def read(self, file: int, image: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``image`` of ``file`` (float32 (H, W), DN) and its truth rows (m, 6) float64."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """JSON-able description that changes whenever the pixels could."""
        raise NotImplementedError

    def file_truth(self, file: int) -> np.ndarray:
        """All truth rows of ``file`` (M, 6), ordered by image (the order the cache stores them in)."""
        rows = [self.read_truth(file, i) for i in range(self.n_images(file))]
        return np.concatenate(rows, axis=0) if rows else np.empty((0, TRUTH_WIDTH))

    def read_truth(self, file: int, image: int) -> np.ndarray:
        """Truth rows of one image; sources that can avoid reading pixels override this."""
        return self.read(file, image)[1]

    def _check_file(self, file: int) -> int:
        if isinstance(file, bool) or not isinstance(file, (int, np.integer)) or int(file) not in self.file_ids:
            raise IndexError(f"file {file!r} is not in {self.name} (files {_describe_ids(self.file_ids)})")
        return int(file)

    def _check_image(self, file: int, image: int) -> int:
        n = self.n_images(file)
        if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < n:
            raise IndexError(f"image {image!r} is outside [0, {n}) in file {file} of {self.name}")
        return int(image)


class SimulatedSource(ImageSource):
    """Images generated on demand by :func:`neocascade.simulation.quadrant.simulate_image`.

    Parameters
    ----------
    seed : int
        Data-set seed; image (file k, image i) uses ``SeedSequence([seed, k, i])``, so any image
        is regenerated alone and identically.
    n_files, images_per_file : int
        File indices are ``0 .. n_files-1``, each with ``images_per_file`` images.
    shape : (rows, cols)
        Image shape in px.
    n_asteroids : int
        Asteroids injected per image.
    sim : mapping, optional
        :class:`~neocascade.simulation.config.SimConfig` overrides (``data.source.sim``).
    """

    def __init__(
        self,
        seed: int,
        n_files: int,
        images_per_file: int,
        shape: Sequence[int],
        n_asteroids: int,
        sim: Mapping[str, Any] | None = None,
    ):
        from neocascade.simulation.config import SimConfig

        self.seed = _check_int("data.source.seed", seed, low=0)
        count = _check_int("data.source.n_files", n_files, low=1)
        self.images_per_file = _check_int("data.source.images_per_file", images_per_file, low=1)
        self.sim = _plain(sim) if sim is not None else {}
        if not isinstance(self.sim, dict):
            raise input_error("data.source.sim", "must be a mapping of SimConfig overrides", found=type(sim).__name__)
        shape = tuple(_plain(shape))
        try:
            self.config = SimConfig(**self.sim, shape=shape, n_asteroids=n_asteroids)
        except (TypeError, ValueError) as exc:
            raise input_error("data.source", str(exc)) from None
        self.shape = self.config.shape
        self.n_asteroids = int(n_asteroids)
        self.file_ids = tuple(range(count))
        self.name = f"simulated-seed{self.seed}"

    def __repr__(self) -> str:
        return (
            f"SimulatedSource(seed={self.seed}, n_files={self.n_files}, images_per_file={self.images_per_file}, "
            f"shape={list(self.shape)}, n_asteroids={self.n_asteroids})"
        )

    def n_images(self, file: int) -> int:
        """Every simulated file holds ``images_per_file`` images."""
        self._check_file(file)
        return self.images_per_file

    def read(self, file: int, image: int) -> tuple[np.ndarray, np.ndarray]:
        """Simulate image ``image`` of ``file``; truth rows have ``truth[:, 0] == image``."""
        from neocascade.simulation.quadrant import simulate_image

        file = self._check_file(file)
        image = self._check_image(file, image)
        pixels, truth = simulate_image(self.config, seed=self.seed, file_index=file, image_index=image)
        return np.asarray(pixels, dtype=np.float32), _truth_rows(truth)

    def reference_stars(self, file: int, image: int) -> np.ndarray:
        """(N, 3) ``x, y, magnitude`` of the stars behind the image's residuals and saturated cores: its reference
        catalogue (:func:`neocascade.simulation.quadrant.reference_stars`)."""
        from neocascade.simulation.quadrant import reference_stars

        file = self._check_file(file)
        image = self._check_image(file, image)
        return reference_stars(self.config, seed=self.seed, file_index=file, image_index=image)

    def transients(self, file: int, image: int) -> np.ndarray:
        """(N, 4) ``x, y, magnitude, sign`` of the image's real transients
        (:func:`neocascade.simulation.quadrant.transient_sources`)."""
        from neocascade.simulation.quadrant import transient_sources

        file = self._check_file(file)
        image = self._check_image(file, image)
        return transient_sources(self.config, seed=self.seed, file_index=file, image_index=image)

    def fingerprint(self) -> dict[str, Any]:
        """Seed, shape, asteroid count, overrides, every simulator knob and the simulator version."""
        return {
            "kind": "simulated",
            "seed": self.seed,
            "images_per_file": self.images_per_file,
            "shape": list(self.shape),
            "n_asteroids": self.n_asteroids,
            "sim": _jsonable(self.sim),
            "config": _jsonable(_config_dict(self.config)),
            "simulator": _simulator_version(),
        }


class _FileSource(ImageSource):
    """A source backed by image files; subclasses say how to ``_open`` file ``k`` (an ImageStackFile)."""

    def _open(self, file: int) -> Any:
        raise NotImplementedError

    def n_images(self, file: int) -> int:
        """Images in the file (from its header; pixels are not read)."""
        return int(self._open(file).n_images)

    def read(self, file: int, image: int) -> tuple[np.ndarray, np.ndarray]:
        """One image (memory-mapped read) and its truth rows."""
        handle = self._open(file)
        image = self._check_image(file, image)
        return np.asarray(handle.image(image), dtype=np.float32), _truth_rows(handle.truth_for(image))

    def read_truth(self, file: int, image: int) -> np.ndarray:
        """Truth rows of one image, without reading pixels."""
        return _truth_rows(self._open(file).truth_for(self._check_image(file, image)))


class NpzSource(_FileSource):
    """Canonical npz files (see :mod:`neocascade.io.npz`), one image read at a time.

    Parameters
    ----------
    paths : str, path or sequence of them
        A folder (all ``*.npz`` in it), a glob pattern, one file, or a list of files.

    Notes
    -----
    File indices: when every file name ends in ``_<k>`` (``images_0.npz`` .. ``images_9.npz``)
    and the numbers are distinct, the file index is that ``k`` (sorted numerically, so
    ``images_10`` comes after ``images_9``); otherwise files are sorted by path and the index is the
    position. Splits (``data.split``) refer to these indices.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]):
        files = _resolve_paths(paths, pattern="*.npz", key="data.source.paths")
        self.paths = _index_files(files)
        self.file_ids = tuple(sorted(self.paths))
        self.name = "npz"

    def __repr__(self) -> str:
        return f"NpzSource({[str(self.paths[k]) for k in self.file_ids]!r})"

    def _open(self, file: int):
        return _open_canonical(str(self.paths[self._check_file(file)]), _mtime_key(self.paths[file]))

    def fingerprint(self) -> dict[str, Any]:
        """Resolved path, size and modification time of every file, by file index."""
        return {"kind": "npz", "files": _file_stats(self.paths)}


class ChallengeSource(_FileSource):
    """The seed challenge's folder layout, read with :func:`neocascade.io.challenge.read_challenge`.

    Parameters
    ----------
    directory : str or path
        Folder holding ``asteroid_difference_images_<k>.npz`` and ``asteroid_injected_information_<k>.npz``;
        the file indices are the ``k`` found there.
    allow_pickle : bool
        The layout stores pickled tables; they are refused unless this is true.
    """

    def __init__(self, directory: str | os.PathLike, allow_pickle: bool = False):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise input_error("data.source.directory", "no such folder", found=str(self.directory))
        self.allow_pickle = bool(allow_pickle)
        self.members = _challenge_members(self.directory)
        if not self.members:
            raise input_error(self.directory, "no challenge files named like 'asteroid_difference_images_<k>.npz'")
        self.file_ids = tuple(sorted(self.members))
        self.name = "challenge"

    def __repr__(self) -> str:
        return f"ChallengeSource({str(self.directory)!r}, allow_pickle={self.allow_pickle})"

    def _open(self, file: int):
        file = self._check_file(file)
        stamp = tuple(_mtime_key(p) for p in self.members[file])
        return _open_challenge(str(self.directory), file, self.allow_pickle, stamp)

    def fingerprint(self) -> dict[str, Any]:
        """Every challenge member file's resolved path, size and modification time."""
        stats = {}
        for k in self.file_ids:
            stats[str(k)] = [_stat(p) for p in self.members[k]]
        return {"kind": "challenge", "directory": str(self.directory.resolve()), "files": stats}


@functools.lru_cache(maxsize=2)
def _open_canonical(path: str, stamp: tuple[int, int]):
    """One open canonical file per process (joblib workers reuse it across images)."""
    from neocascade.io.npz import read_canonical

    return read_canonical(path)


@functools.lru_cache(maxsize=2)
def _open_challenge(directory: str, file: int, allow_pickle: bool, stamp: tuple):
    """One open challenge file per process."""
    from neocascade.io.challenge import read_challenge

    return read_challenge(directory, file, allow_pickle=allow_pickle)


def _resolve_paths(paths: Any, *, pattern: str, key: str) -> list[Path]:
    """A folder, glob, file or list of files as a list of existing files."""
    paths = _plain(paths)
    if isinstance(paths, (str, os.PathLike)):
        text = str(paths)
        if _GLOB_CHARS & set(text):
            found = [Path(p) for p in sorted(glob.glob(text))]
            if not found:
                raise input_error(key, f"no files match '{text}'")
            return found
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob(pattern))
            if not found:
                raise input_error(path, f"no {pattern} files in this folder")
            return found
        candidates: Iterable = [path]
    elif isinstance(paths, (list, tuple)):
        candidates = [Path(str(p)) for p in paths]
        if not candidates:
            raise input_error(key, "empty list of files")
    else:
        raise input_error(key, "must be a folder, a glob pattern or a list of files", found=type(paths).__name__)
    for path in candidates:
        if not path.is_file():
            raise input_error(path, "no such file")
    return list(candidates)


def _index_files(files: list[Path]) -> dict[int, Path]:
    """File index -> path: the ``_<k>`` suffix when every name has a distinct one, else sorted position."""
    resolved = sorted({p.resolve(): p for p in files}.values(), key=lambda p: str(p))
    numbers = [_SUFFIX.search(p.stem) for p in resolved]
    if all(numbers) and len({int(m.group(1)) for m in numbers}) == len(resolved):
        return {int(m.group(1)): p for m, p in zip(numbers, resolved)}
    return dict(enumerate(resolved))


def _challenge_members(directory: Path) -> dict[int, list[Path]]:
    """File index -> (images, information) paths of every challenge file ``k`` in ``directory``."""
    from neocascade.io.challenge import IMAGES_NAME, challenge_paths

    prefix, suffix = IMAGES_NAME.split("{k}")
    members: dict[int, list[Path]] = {}
    for path in directory.glob(f"{prefix}*{suffix}"):
        stem = path.name[len(prefix) : -len(suffix)]
        if stem.isdigit():
            members[int(stem)] = [p for p in challenge_paths(directory, int(stem)) if p.exists()]
    return members


def _stat(path: Path) -> dict[str, Any]:
    """Resolved path, size and modification time (ns) of one file."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _file_stats(paths: Mapping[int, Path]) -> dict[str, Any]:
    return {str(k): _stat(paths[k]) for k in sorted(paths)}


def _mtime_key(path: Path) -> tuple[int, int]:
    """(size, mtime) so that a rewritten file is reopened rather than served from the per-process cache."""
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


def _truth_rows(truth: Any) -> np.ndarray:
    """Truth as float64 (m, 6); an empty table of any shape becomes (0, 6)."""
    truth = np.asarray(truth, dtype=np.float64)
    if truth.size == 0:
        return np.empty((0, TRUTH_WIDTH), dtype=np.float64)
    return truth.reshape(-1, TRUTH_WIDTH)


def _config_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dataclasses.asdict(config)


def _simulator_version() -> str:
    """The simulator's own version string when it has one, else the package version."""
    import neocascade
    import neocascade.simulation as simulation

    version = getattr(simulation, "SIMULATOR_VERSION", None) or getattr(simulation, "__version__", None)
    return str(version or f"neocascade-{neocascade.__version__}")


def _check_int(key: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise input_error(key, f"must be an integer >= {low}", found=repr(value))
    return int(value)


def _describe_ids(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    if ids and ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 2:
        return f"{ids[0]}-{ids[-1]}"
    return ", ".join(str(i) for i in ids) or "none"


def _plain(value: Any) -> Any:
    """OmegaConf containers as plain Python containers; anything else unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _jsonable(value: Any) -> Any:
    """Nested containers of JSON scalars (tuples as lists, numpy scalars as Python ones)."""
    value = _plain(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
