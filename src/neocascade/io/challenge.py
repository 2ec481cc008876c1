"""The seed challenge's original layout, read through the same interface as canonical files.

File ``k`` of the challenge is a pair in one folder:

- ``asteroid_difference_images_{k}.npz``: key ``data``, float (N, H, W) difference images in DN
  (N = 100, 3080×3072 in the challenge);
- ``asteroid_injected_information_{k}.npz``: key ``data``, an object array of length 2N whose
  entry 2i is image i's metadata and entry 2i+1 a pandas DataFrame with columns ``magnitude``,
  ``length`` (px), ``angle`` (deg) and ``box`` (objects with ``xmin, xmax, ymin, ymax``; the
  asteroid's position is the box centre, x = column).

The information file is a pickle, so reading it can run arbitrary code: it is refused unless
``allow_pickle=True``. :func:`convert_challenge` turns the pair into one canonical npz so the
pickle is touched once.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neocascade.errors import InputError, input_error
from neocascade.io.npz import TRUTH_COLUMNS, ImageStackFile, NpyMember, check_truth, write_canonical
from neocascade.utils.atomic import atomic_path, check_writable

IMAGES_NAME = "asteroid_difference_images_{k}.npz"
INFO_NAME = "asteroid_injected_information_{k}.npz"
TABLE_COLUMNS = ("magnitude", "length", "angle", "box")
BOX_MARGIN_PX = 1.0  # box half-extents exceed the trail's by one pixel on each side

_UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    ImportError,
    zlib.error,
)


@dataclass
class Box:
    """Bounding box of an injected trail in pixels (x = column, y = row), as the challenge stores it."""

    xmin: float
    xmax: float
    ymin: float
    ymax: float


def trail_box(x: float, y: float, length: float, angle: float) -> Box:
    """Box around a trail of ``length`` px at ``angle`` degrees centred on (x, y), one pixel of margin."""
    half_x = abs(0.5 * length * np.cos(np.deg2rad(angle))) + BOX_MARGIN_PX
    half_y = abs(0.5 * length * np.sin(np.deg2rad(angle))) + BOX_MARGIN_PX
    return Box(xmin=float(x - half_x), xmax=float(x + half_x), ymin=float(y - half_y), ymax=float(y + half_y))


class ChallengeFile(ImageStackFile):
    """One challenge file pair with the :class:`~neocascade.io.npz.CanonicalFile` interface.

    Use :func:`read_challenge` to build it. Attributes ``path`` (the images file), ``info_path``,
    ``k``, ``n_images``, ``shape`` (H, W), ``meta`` (dict: ``layout``, ``k``, ``image_meta``) and
    ``truth`` (M, 6) float64 with columns :data:`TRUTH_COLUMNS`; methods ``image(i)``,
    ``truth_for(i)`` and ``images()``.

    Notes
    -----
    Per-image metadata is made JSON-compatible: numpy scalars become numbers and any other
    non-JSON value its ``str``.
    """

    def __init__(self, images_path: Path, info_path: Path, k: int, truth: np.ndarray, image_meta: list[Any]):
        self.path = images_path
        self.info_path = info_path
        self.k = k
        self._stack = NpyMember(images_path, "data")
        dtype, shape = self._stack.dtype, self._stack.shape
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)) or len(shape) != 3 or 0 in shape[1:]:
            raise input_error(images_path, "'data' must be a float32/float64 (N, H, W) stack", found=f"{dtype} {shape}")
        self.n_images = int(shape[0])
        self.shape = (int(shape[1]), int(shape[2]))
        if len(image_meta) != self.n_images:
            raise input_error(
                info_path, "'data' must hold 2 entries per image", expected=2 * self.n_images, found=2 * len(image_meta)
            )
        problem = check_truth(truth, n_images=self.n_images, shape=self.shape)
        if problem:
            raise input_error(info_path, problem)
        self.truth = truth
        self.meta = {"layout": "challenge", "k": k, "image_meta": [_jsonable(m) for m in image_meta]}
        self._truth_image = truth[:, 0].astype(np.int64)

    def __repr__(self) -> str:
        return f"ChallengeFile({str(self.path)!r}, n_images={self.n_images}, shape={self.shape}, n_truth={len(self.truth)})"



def challenge_paths(directory: str | os.PathLike, k: int) -> tuple[Path, Path]:
    """The (images, information) file paths of challenge file ``k``."""
    directory = Path(directory)
    return directory / IMAGES_NAME.format(k=k), directory / INFO_NAME.format(k=k)


def read_challenge(directory: str | os.PathLike, k: int, *, allow_pickle: bool = False) -> ChallengeFile:
    """Open challenge file ``k`` in ``directory``.

    Parameters
    ----------
    directory : str or path
        Folder holding ``asteroid_difference_images_{k}.npz`` and ``asteroid_injected_information_{k}.npz``.
    k : int
        File number.
    allow_pickle : bool
        The information file is a pickle; unpickling a file can run code, so it is refused unless
        this is True. Pass True only for files you trust.

    Returns
    -------
    ChallengeFile
        Same interface as :class:`~neocascade.io.npz.CanonicalFile`; images are memory-mapped
        when stored uncompressed. Truth x, y are box centres; magnitude, length (px) and angle
        (deg) as stored.

    Raises
    ------
    InputError
        A file is missing or unreadable, pickles are not allowed, the table lacks a column, a box
        lacks a coordinate, or a truth row falls outside the images.
    """
    images_path, info_path = challenge_paths(directory, k)
    for path in (images_path, info_path):
        if not path.is_file():
            raise input_error(path, "no such file")
    if not allow_pickle:
        raise input_error(
            info_path,
            "holds pickled Python objects, refused by default; pass allow_pickle=true only for files you trust",
        )
    entries = _load_info(info_path)
    image_meta, rows = [], []
    for i in range(len(entries) // 2):
        image_meta.append(entries[2 * i])
        rows.append(_table_truth(info_path, i, entries[2 * i + 1]))
    truth = np.concatenate(rows) if rows else np.empty((0, len(TRUTH_COLUMNS)))
    return ChallengeFile(images_path, info_path, k, truth, image_meta)


def write_challenge(
    directory: str | os.PathLike,
    k: int,
    images: np.ndarray,
    truth: np.ndarray,
    *,
    image_meta: Sequence[dict] | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write images and truth in the challenge layout (for the simulator and round-trip tests).

    Parameters
    ----------
    directory : str or path
        Created if absent.
    k : int
        File number in the two file names.
    images : (N, H, W) float array
        Stored as float32 under key ``data``, uncompressed.
    truth : (M, 6) array
        Columns :data:`TRUTH_COLUMNS`; each row becomes a table row with a :class:`Box` from
        :func:`trail_box`.
    image_meta : sequence of N dicts, optional
        Entry 2i of the information array; default ``{"image": i}``.
    overwrite : bool
        Replace existing files; otherwise either file existing raises :class:`InputError`.

    Returns
    -------
    (images_path, info_path)
    """
    import pandas as pd  # only this layout needs pandas

    images = np.asarray(images)
    if images.ndim != 3 or images.dtype.kind != "f":
        raise ValueError(f"images: must be a float (N, H, W) array, got {images.dtype} {images.shape}")
    truth = np.asarray(truth, dtype=np.float64)
    if truth.size == 0:
        truth = np.empty((0, len(TRUTH_COLUMNS)))
    problem = check_truth(truth, n_images=images.shape[0], shape=images.shape[1:])
    if problem:
        raise ValueError(problem)
    n_images = images.shape[0]
    if image_meta is None:
        image_meta = [{"image": i} for i in range(n_images)]
    if len(image_meta) != n_images:
        raise ValueError(f"image_meta: need one entry per image ({n_images}), got {len(image_meta)}")
    images_path, info_path = challenge_paths(directory, k)
    for path in (images_path, info_path):
        check_writable(path, overwrite=overwrite)
    entries = np.empty(2 * n_images, dtype=object)
    for i in range(n_images):
        rows = truth[truth[:, 0] == i]
        entries[2 * i] = dict(image_meta[i])
        entries[2 * i + 1] = pd.DataFrame(
            {
                "magnitude": rows[:, 3],
                "length": rows[:, 4],
                "angle": rows[:, 5],
                "box": [trail_box(x, y, length, angle) for _, x, y, _, length, angle in rows],
            }
        )
    with atomic_path(images_path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, data=images.astype(np.float32, copy=False))
    with atomic_path(info_path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, data=entries)
    return images_path, info_path


def convert_challenge(
    directory: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    allow_pickle: bool,
    overwrite: bool = False,
) -> list[Path]:
    """Convert every challenge file pair in ``directory`` to a canonical npz in ``out_dir``.

    Parameters
    ----------
    directory : str or path
        Folder with ``asteroid_difference_images_{k}.npz`` / ``asteroid_injected_information_{k}.npz`` pairs.
    out_dir : str or path
        Receives ``challenge_{k}.npz`` per pair; created if absent.
    allow_pickle : bool
        Required True (see :func:`read_challenge`).
    overwrite : bool
        Replace existing outputs.

    Returns
    -------
    list of Path
        The written files, in order of k.

    Notes
    -----
    Loads one file's images whole at a time (3.8 GB for a challenge file).
    """
    directory = Path(directory)
    ks = sorted(_file_numbers(directory))
    if not ks:
        raise input_error(directory, "no challenge files", expected=IMAGES_NAME.format(k="<k>"))
    written = []
    for k in ks:
        source = read_challenge(directory, k, allow_pickle=allow_pickle)
        meta = dict(source.meta, source=str(source.path))
        target = Path(out_dir) / f"challenge_{k}.npz"
        written.append(write_canonical(target, source.images(), source.truth, meta, overwrite=overwrite))
    return written


def _file_numbers(directory: Path) -> list[int]:
    """The k of every ``asteroid_difference_images_{k}.npz`` in ``directory``."""
    prefix, suffix = IMAGES_NAME.split("{k}")
    numbers = []
    for path in directory.glob(f"{prefix}*{suffix}"):
        stem = path.name[len(prefix) : -len(suffix)]
        if stem.isdigit():
            numbers.append(int(stem))
    return numbers


class _StandIn:
    """Placeholder for a pickled class that cannot be imported here; keeps its attributes."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.__dict__.update(kwargs)
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) from __reduce_ex__
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


class _LenientUnpickler(pickle.Unpickler):
    """Unpickler that replaces classes missing here (the challenge's own box class) with :class:`_StandIn`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_StandIn,), {"__module__": module})


def _load_info(path: Path) -> np.ndarray:
    """The information file's ``data`` object array, unpickled (the caller has allowed pickles)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "data.npy" not in names:
                found = ", ".join(repr(n.removesuffix(".npy")) for n in names) or "no keys"
                raise input_error(path, f"missing key 'data' (found {found})")
            with zf.open("data.npy") as fp:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                if not dtype.hasobject:
                    raise input_error(path, "'data' must be an object array", found=f"dtype {dtype}")
                entries = _LenientUnpickler(fp).load()
    except InputError:
        raise
    except _UNPICKLE_ERRORS as exc:
        raise input_error(path, f"cannot unpickle 'data': {type(exc).__name__}: {exc}") from None
    entries = np.asarray(entries, dtype=object).reshape(-1)
    if len(entries) % 2:
        raise input_error(path, "'data' must alternate image metadata and table", expected="an even length", found=len(entries))
    return entries


def _table_truth(path: Path, i: int, table: Any) -> np.ndarray:
    """Truth rows (k, 6) of image ``i`` from its injected-asteroid DataFrame."""
    columns = getattr(table, "columns", None)
    if columns is None:
        raise input_error(path, f"entry {2 * i + 1} (image {i}) is not a table", found=type(table).__name__)
    missing = [c for c in TABLE_COLUMNS if c not in list(columns)]
    if missing:
        found = ", ".join(repr(str(c)) for c in columns) or "no columns"
        raise input_error(path, f"image {i}: table lacks column '{missing[0]}' (found {found})")
    try:
        values = [np.asarray(table[c], dtype=np.float64) for c in ("magnitude", "length", "angle")]
    except (TypeError, ValueError) as exc:
        raise input_error(path, f"image {i}: non-numeric magnitude, length or angle: {exc}") from None
    boxes = list(table["box"])
    centres = np.array([_box_centre(path, i, row, box) for row, box in enumerate(boxes)]).reshape(-1, 2)
    rows = np.empty((len(boxes), len(TRUTH_COLUMNS)), dtype=np.float64)
    rows[:, 0] = i
    rows[:, 1:3] = centres
    rows[:, 3], rows[:, 4], rows[:, 5] = values
    return rows


def _box_centre(path: Path, i: int, row: int, box: Any) -> tuple[float, float]:
    """(x, y) centre of a box object or dict with ``xmin, xmax, ymin, ymax``."""
    coords = []
    for name in ("xmin", "xmax", "ymin", "ymax"):
        value = box.get(name) if isinstance(box, dict) else getattr(box, name, None)
        if value is None:
            raise input_error(path, f"image {i} row {row}: box has no '{name}'", found=type(box).__name__)
        try:
            coords.append(float(value))
        except (TypeError, ValueError):
            raise input_error(path, f"image {i} row {row}: box {name} is not a number", found=repr(value)) from None
    xmin, xmax, ymin, ymax = coords
    return 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as numbers and anything JSON cannot hold as its ``str``."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
