"""The canonical npz layout: images, truth table and metadata in one uncompressed ``.npz`` file.

Keys: ``images`` float32 (N, H, W) in DN with NaN for masked pixels; ``truth`` float64 (M, 6)
with columns :data:`TRUTH_COLUMNS` (x = column, y = row, 0-based trail centre; length in px,
angle in degrees); ``truth_columns`` the six names; ``meta`` a JSON object string.

Optional keys (image sequences, e.g. a field observed several times in a night): ``obs_mjd``
float64 (N,) mid-exposure MJD (UTC); ``exptime`` float64 (N,) s; ``wcs`` float64 (N, 8) TAN WCS
rows (see :mod:`neocascade.io.observation`); ``field`` and ``epoch`` int64 (N,); a 7th truth
column ``object_id`` (:data:`TRUTH_COLUMNS_ID`, an integer >= 0, the same for one asteroid in
every image); ``stationary`` float64 (K, 5) with columns :data:`STATIONARY_COLUMNS` (sources
fixed on the sky, one row per image they are painted in). Files without them stay valid.

Files are written uncompressed so one image can be read by memory-mapping the zip member,
without loading the file: a 100-image 3080×3072 quadrant file is 3.8 GB.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neocascade.errors import InputError, input_error
from neocascade.utils.atomic import atomic_path, json_default

if TYPE_CHECKING:  # astropy is imported only for files that carry a WCS
    from neocascade.io.observation import Observation

TRUTH_COLUMNS = ("image", "x", "y", "magnitude", "length", "angle")
TRUTH_COLUMNS_ID = (*TRUTH_COLUMNS, "object_id")
STATIONARY_COLUMNS = ("image", "x", "y", "magnitude", "object_id")
REQUIRED_KEYS = ("images", "truth", "truth_columns", "meta")
OPTIONAL_KEYS = ("obs_mjd", "exptime", "wcs", "field", "epoch", "stationary")
TRUTH_MODES = ("check", "ignore")

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError, zlib.error)


class ImageStackFile:
    """What every image file offers downstream code: images one at a time and their truth rows.

    Subclasses set ``path``, ``n_images``, ``shape``, ``meta``, ``truth``, ``_stack`` (an
    :class:`NpyMember`) and ``_truth_image`` (the image column of ``truth`` as int64).
    """

    path: Path
    n_images: int
    shape: tuple[int, int]
    meta: dict
    truth: np.ndarray
    _stack: "NpyMember"
    _truth_image: np.ndarray

    def __len__(self) -> int:
        return self.n_images

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a new float32 (H, W) array in DN, NaN where masked."""
        return self._stack.item(_check_index(i, self.n_images))

    def images(self) -> np.ndarray:
        """All images as one float32 (N, H, W) array; for small files only."""
        return self._stack.load()

    def truth_for(self, i: int) -> np.ndarray:
        """Truth rows (k, 6) of image ``i``; empty (0, 6) when it holds no asteroid."""
        return self.truth[self._truth_image == _check_index(i, self.n_images)]

    def observation(self, i: int) -> "Observation":
        """Time, exposure and WCS of image ``i`` (needs the ``obs_mjd``, ``exptime`` and ``wcs`` keys)."""
        from neocascade.io.observation import Observation

        i = _check_index(i, self.n_images)
        missing = [k for k in ("obs_mjd", "exptime", "wcs") if getattr(self, k, None) is None]
        if missing:
            raise input_error(self.path, f"no observation data: missing key(s) {', '.join(repr(k) for k in missing)}")
        return Observation(mjd=float(self.obs_mjd[i]), exptime=float(self.exptime[i]), wcs=self.wcs[i])


class CanonicalFile(ImageStackFile):
    """A validated canonical npz file; images are read one at a time.

    Parameters
    ----------
    path : str or path
        The ``.npz`` file. Everything is validated on construction (keys, dtypes, shapes,
        truth rows inside the images); the image pixels themselves are not read.
    truth : {"check", "ignore"}
        ``"ignore"`` reads neither ``truth``/``truth_columns`` nor ``stationary`` (they may be absent
        or spelled differently): for code that only needs the pixels, such as detection.

    Attributes
    ----------
    path : Path
    n_images : int
    shape : (H, W) tuple of int
    meta : dict
        The decoded ``meta`` JSON object.
    truth : (M, 6) float64 array
        Columns :data:`TRUTH_COLUMNS`; M may be 0 (always 0 with ``truth="ignore"``).
    truth_columns : tuple of str
        The file's column names (:data:`TRUTH_COLUMNS` or :data:`TRUTH_COLUMNS_ID`).
    object_id : (M,) int64 array or None
        Per-object id of each truth row, when the file has the ``object_id`` column.
    stationary : (K, 5) float64 array
        Columns :data:`STATIONARY_COLUMNS`; (0, 5) when the file has none.
    obs_mjd, exptime : (N,) float64 arrays or None
        Mid-exposure MJD (UTC) and exposure time in s of each image.
    wcs : (N, 8) float64 array or None
        TAN WCS row of each image (:mod:`neocascade.io.observation`).
    field, epoch : (N,) int64 arrays or None
        Field id and visit index within the field of each image.

    Notes
    -----
    An uncompressed ``images`` member is memory-mapped; a compressed one (``np.savez_compressed``)
    is loaded whole on the first :meth:`image` call and kept. The object pickles without its
    memory map, so it can be handed to worker processes.
    """

    def __init__(self, path: str | os.PathLike, *, truth: str = "check"):
        if truth not in TRUTH_MODES:
            raise ValueError(f"truth: must be one of {TRUTH_MODES}, got {truth!r}")
        self.path = Path(path)
        self._stack = NpyMember(self.path, "images")
        n_images, height, width = _check_images_header(self.path, self._stack.dtype, self._stack.shape)
        self.n_images = n_images
        self.shape = (height, width)
        with _open_npz(self.path) as npz:
            meta_raw = _load_key(self.path, npz, "meta")
            optional = {k: _load_key(self.path, npz, k) for k in OPTIONAL_KEYS if k in npz.files}
            if truth == "check":
                truth_raw = _load_key(self.path, npz, "truth")
                columns = _load_key(self.path, npz, "truth_columns")
        self.meta = _decode_meta(self.path, meta_raw)
        problem = check_observations({k: v for k, v in optional.items() if k != "stationary"}, n_images=n_images)
        if problem:
            raise input_error(self.path, problem)
        self.obs_mjd, self.exptime, self.wcs, self.field, self.epoch = (
            _optional_array(optional, k) for k in ("obs_mjd", "exptime", "wcs", "field", "epoch"))
        self.object_id = None
        self.stationary = np.empty((0, len(STATIONARY_COLUMNS)))
        if truth == "ignore":
            self.truth_columns = TRUTH_COLUMNS
            self.truth = np.empty((0, len(TRUTH_COLUMNS)))
        else:
            _checked(self.path, _check_columns, columns)
            self.truth_columns = tuple(str(c) for c in np.atleast_1d(columns))
            full = _checked(self.path, check_truth, truth_raw, n_images=n_images, shape=self.shape,
                            columns=self.truth_columns)
            self.truth = np.ascontiguousarray(full[:, :len(TRUTH_COLUMNS)])
            if len(self.truth_columns) == len(TRUTH_COLUMNS_ID):
                self.object_id = full[:, -1].astype(np.int64)
            if "stationary" in optional:
                self.stationary = _checked(self.path, check_stationary, optional["stationary"], n_images=n_images,
                                           shape=self.shape)
        self._truth_image = self.truth[:, 0].astype(np.int64)

    def __repr__(self) -> str:
        return f"CanonicalFile({str(self.path)!r}, n_images={self.n_images}, shape={self.shape}, n_truth={len(self.truth)})"



def read_canonical(path: str | os.PathLike, *, truth: str = "check") -> CanonicalFile:
    """Open and validate a canonical npz file.

    Parameters
    ----------
    path : str or path
    truth : {"check", "ignore"}
        ``"ignore"``: skip the truth tables (``truth``, ``truth_columns``, ``stationary``), which may
        then be missing or use other column names; ``.truth`` is empty. Detection uses this.

    Returns
    -------
    CanonicalFile
        With ``.n_images``, ``.shape``, ``.meta``, ``.truth``, ``.image(i)``, ``.truth_for(i)``, ``.images()``,
        and the optional sequence keys (``.obs_mjd``, ``.wcs``, ``.object_id``, ``.stationary``, ...).

    Raises
    ------
    InputError
        One line naming the file: missing, not a zip/npz or truncated, a key missing, pickled
        (object) content, wrong dtype or shape, bad ``truth_columns`` or ``meta``, or a truth row
        whose image index or position falls outside the images.
    """
    return CanonicalFile(path, truth=truth)


def write_canonical(
    path: str | os.PathLike,
    images: np.ndarray,
    truth: np.ndarray,
    meta: dict,
    *,
    overwrite: bool = False,
    obs_mjd: np.ndarray | None = None,
    exptime: np.ndarray | None = None,
    wcs: np.ndarray | None = None,
    field: np.ndarray | None = None,
    epoch: np.ndarray | None = None,
    stationary: np.ndarray | None = None,
) -> Path:
    """Write a canonical npz file atomically (uncompressed, so images can be memory-mapped).

    Parameters
    ----------
    path : str or path
        Target ``.npz`` file; its folder is created.
    images : (N, H, W) float32 or float64 array
        DN, NaN for masked pixels; stored as float32. Infinite values are refused.
    truth : (M, 6) or (M, 7) array
        Columns :data:`TRUTH_COLUMNS`, or :data:`TRUTH_COLUMNS_ID` with a 7th ``object_id`` column;
        stored as float64. Any empty array means no asteroids.
    meta : dict
        JSON-serialisable metadata (numpy scalars and arrays are converted).
    overwrite : bool
        Replace an existing file; otherwise an existing ``path`` raises :class:`InputError`.
    obs_mjd, exptime : (N,) float arrays, optional
        Mid-exposure MJD (UTC) and exposure time in s of each image.
    wcs : (N, 8) float array, optional
        TAN WCS row of each image (:mod:`neocascade.io.observation`).
    field, epoch : (N,) integer arrays, optional
        Field id and visit index of each image.
    stationary : (K, 5) float array, optional
        Columns :data:`STATIONARY_COLUMNS`: sources fixed on the sky, one row per image.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        An argument fails the same checks :func:`read_canonical` applies, naming the argument.
    """
    images = np.asarray(images)
    problem = _images_dtype_problem(images.dtype, images.shape)
    if problem:
        raise ValueError(f"images: {problem}")
    if np.isinf(images).any():
        raise ValueError(f"images: {int(np.isinf(images).sum())} infinite pixels (use NaN for masked pixels)")
    truth = np.asarray(truth)
    if truth.size == 0:
        width = truth.shape[-1] if truth.ndim == 2 and truth.shape[-1] == len(TRUTH_COLUMNS_ID) else len(TRUTH_COLUMNS)
        truth = np.empty((0, width), dtype=np.float64)
    columns = TRUTH_COLUMNS_ID if truth.ndim == 2 and truth.shape[1] == len(TRUTH_COLUMNS_ID) else TRUTH_COLUMNS
    problem = check_truth(truth, n_images=images.shape[0], shape=images.shape[1:], columns=columns)
    if problem:
        raise ValueError(problem)
    optional = {k: np.asarray(v) for k, v in (("obs_mjd", obs_mjd), ("exptime", exptime), ("wcs", wcs),
                                              ("field", field), ("epoch", epoch)) if v is not None}
    problem = check_observations(optional, n_images=images.shape[0])
    if problem:
        raise ValueError(problem)
    optional = {k: v.astype(np.int64 if k in ("field", "epoch") else np.float64) for k, v in optional.items()}
    if stationary is not None:
        stationary = np.asarray(stationary)
        if stationary.size == 0:
            stationary = np.empty((0, len(STATIONARY_COLUMNS)))
        problem = check_stationary(stationary, n_images=images.shape[0], shape=images.shape[1:])
        if problem:
            raise ValueError(problem)
        optional["stationary"] = stationary.astype(np.float64)
    if not isinstance(meta, dict):
        raise ValueError(f"meta: must be a dict, got {type(meta).__name__}")
    try:
        meta_json = json.dumps(meta, default=json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta: not JSON-serialisable ({exc})") from None
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                images=images.astype(np.float32, copy=False),
                truth=truth.astype(np.float64),
                truth_columns=np.array(columns),
                meta=np.array(meta_json),
                **optional,
            )
    return Path(path)


def check_truth(
    truth: np.ndarray, *, n_images: int, shape: tuple[int, int], columns: tuple[str, ...] = TRUTH_COLUMNS
) -> str | None:
    """Return what is wrong with a truth table, or None when it is valid.

    Checks: (M, len(columns)) real numbers, all finite, image index an integer in [0, n_images),
    x in [0, W), y in [0, H), length >= 0 and, with :data:`TRUTH_COLUMNS_ID`, object_id an integer
    >= 0. Messages read like ``truth row 17: x=3101.5 is outside the 3072-px-wide image``. Shared
    by every reader and writer of truth tables.
    """
    problem = _table_problem("truth", truth, columns)
    if problem:
        return problem
    truth = np.asarray(truth, dtype=np.float64)
    checks = [*_position_checks(truth, n_images=n_images, shape=shape),
              (truth[:, 4] < 0, lambda r: f"length={truth[r, 4]} is negative")]
    if len(columns) == len(TRUTH_COLUMNS_ID):
        checks.append(_id_check(truth[:, 6]))
    return _first_failure("truth", checks)


def check_stationary(table: np.ndarray, *, n_images: int, shape: tuple[int, int]) -> str | None:
    """Return what is wrong with a ``stationary`` table (K, 5) (:data:`STATIONARY_COLUMNS`), or None.

    Same rules as :func:`check_truth`: finite, image index in [0, n_images), x, y inside the image,
    object_id an integer >= 0.
    """
    problem = _table_problem("stationary", table, STATIONARY_COLUMNS)
    if problem:
        return problem
    table = np.asarray(table, dtype=np.float64)
    return _first_failure("stationary", [*_position_checks(table, n_images=n_images, shape=shape),
                                         _id_check(table[:, 4])])


def check_observations(arrays: dict[str, np.ndarray], *, n_images: int) -> str | None:
    """Return what is wrong with the optional per-image keys present in ``arrays``, or None.

    Checks: ``obs_mjd`` (N,) finite MJD in :data:`neocascade.io.observation.MJD_RANGE`; ``exptime``
    (N,) finite and > 0; ``wcs`` (N, 8) valid TAN rows; ``field`` and ``epoch`` (N,) integers >= 0.
    """
    if not arrays:
        return None
    from neocascade.io.observation import MJD_RANGE, check_wcs_rows  # astropy, only for files that need it

    for key, value in arrays.items():
        value = np.asarray(value)
        expected = (n_images, 8) if key == "wcs" else (n_images,)
        if key == "wcs":
            problem = check_wcs_rows(value)
            if problem:
                return problem
        kinds = "iu" if key in ("field", "epoch") else "fiu"
        if value.dtype.kind not in kinds:
            wanted = "integers" if kinds == "iu" else "real numbers"
            return f"'{key}' must hold {wanted} (got dtype {value.dtype})"
        if value.shape != expected:
            return f"'{key}' must have shape {expected}, one entry per image (got {value.shape})"
        number = value.astype(np.float64)
        if not np.isfinite(number).all():
            return f"'{key}' has non-finite values at image(s) {np.flatnonzero(~np.isfinite(number))[:5].tolist()}"
        bad = {
            "obs_mjd": (number < MJD_RANGE[0]) | (number > MJD_RANGE[1]),
            "exptime": ~(number > 0),
            "field": number < 0,
            "epoch": number < 0,
        }.get(key)
        if bad is not None and bad.any():
            i = int(np.flatnonzero(bad)[0])
            rule = {"obs_mjd": f"a plausible MJD in [{MJD_RANGE[0]:g}, {MJD_RANGE[1]:g}]",
                    "exptime": "> 0 s"}.get(key, ">= 0")
            return f"'{key}' of image {i} must be {rule} (got {value[i]})"
    return None


def _table_problem(name: str, table: np.ndarray, columns: tuple[str, ...]) -> str | None:
    """Dtype and shape problems of a (K, len(columns)) table."""
    table = np.asarray(table)
    if table.dtype == object or not (np.issubdtype(table.dtype, np.floating) or np.issubdtype(table.dtype, np.integer)):
        return f"{name} must hold real numbers (got dtype {table.dtype})"
    if table.ndim != 2 or table.shape[1] != len(columns):
        return f"{name} must have shape (M, {len(columns)}) (got {table.shape})"
    bad = ~np.isfinite(table.astype(np.float64))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        return f"{name} row {row}: {columns[col]}={table[row, col]} is not finite"
    return None


def _position_checks(table: np.ndarray, *, n_images: int, shape: tuple[int, int]) -> list:
    """(mask, describe) checks of the image, x and y columns shared by truth and stationary tables."""
    height, width = shape
    image, x, y = table[:, 0], table[:, 1], table[:, 2]
    return [
        (image != np.round(image), lambda r: f"image={image[r]} is not an integer index"),
        ((image < 0) | (image >= n_images), lambda r: f"image={image[r]:g} is outside [0, {n_images})"),
        ((x < 0) | (x >= width), lambda r: f"x={x[r]} is outside the {width}-px-wide image"),
        ((y < 0) | (y >= height), lambda r: f"y={y[r]} is outside the {height}-px-high image"),
    ]


def _id_check(ids: np.ndarray) -> tuple:
    """(mask, describe) of object ids that are not integers >= 0."""
    return (ids != np.round(ids)) | (ids < 0), lambda r: f"object_id={ids[r]} is not an integer >= 0"


def _first_failure(name: str, checks: list) -> str | None:
    """The message of the first failing row of the first failing check."""
    for mask, describe in checks:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            return f"{name} row {row}: {describe(row)}"
    return None


def _optional_array(arrays: dict[str, np.ndarray], key: str) -> np.ndarray | None:
    """An optional per-image key as float64 (int64 for field/epoch), or None when absent."""
    if key not in arrays:
        return None
    return np.asarray(arrays[key], dtype=np.int64 if key in ("field", "epoch") else np.float64)


class NpyMember:
    """One array member of an npz file, read lazily: memory-mapped when stored, loaded when compressed.

    Validates on construction that the file is a readable npz holding ``key`` and that the member
    is not pickled; ``dtype`` and ``shape`` come from the ``.npy`` header alone.
    """

    def __init__(self, path: Path, key: str):
        self.path = Path(path)
        self.key = key
        if not self.path.is_file():
            raise input_error(self.path, "no such file")
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
                member = f"{key}.npy"
                if member not in names:
                    found = ", ".join(repr(n.removesuffix(".npy")) for n in names) or "no keys"
                    raise input_error(self.path, f"missing key '{key}' (found {found})")
                info = zf.getinfo(member)
                with zf.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    shape, fortran, dtype = _read_header(fp, version)
                self._offset = _data_offset(self.path, info, version) if info.compress_type == zipfile.ZIP_STORED else None
                self._crc, self._member_size = info.CRC, info.file_size
        except InputError:
            raise
        except _READ_ERRORS as exc:
            raise input_error(self.path, f"not a readable npz file: {exc}") from None
        if dtype.hasobject:
            raise input_error(self.path, f"'{key}' holds pickled Python objects, which are refused (allow_pickle=False)")
        self.dtype, self.shape, self.fortran = dtype, tuple(shape), fortran
        if self._offset is not None:
            needed = self._offset + int(np.prod(self.shape)) * dtype.itemsize
            size = self.path.stat().st_size
            if needed > size:
                raise input_error(self.path, f"truncated: '{key}' needs {needed} bytes", found=size)
        self._array: np.ndarray | None = None
        self._verified = False

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None  # never ship a memory map or a loaded stack to another process
        return state

    def _stack(self) -> np.ndarray:
        """The whole member: a read-only memory map, or the loaded array for compressed files."""
        if self._array is None:
            if self._offset is not None:
                if not self._verified:
                    self._verify_crc()
                order = "F" if self.fortran else "C"
                self._array = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self._offset, shape=self.shape, order=order)
            else:
                try:
                    with np.load(self.path, allow_pickle=False) as npz:
                        self._array = npz[self.key]
                except _READ_ERRORS as exc:
                    raise input_error(self.path, f"cannot read '{self.key}': {exc}") from None
        return self._array

    def _verify_crc(self) -> None:
        """Check a stored member against its zip CRC-32 once, before it is memory-mapped.

        ``np.load`` checks the CRC of what it decompresses; a memory map bypasses that, so a file
        corrupted on disk would otherwise give wrong pixels silently. Reads the member once (~1 s/GB).
        """
        start = self._offset - self._header_length()
        crc, left = 0, self._member_size
        with open(self.path, "rb") as fh:
            fh.seek(start)
            while left > 0:
                chunk = fh.read(min(left, 1 << 26))
                if not chunk:
                    break
                crc, left = zlib.crc32(chunk, crc), left - len(chunk)
        if left or crc != self._crc:
            raise input_error(self.path, f"'{self.key}' is corrupt (its CRC-32 does not match the zip directory)")
        self._verified = True

    def _header_length(self) -> int:
        """Bytes of the ``.npy`` header in front of the array data."""
        return self._member_size - int(np.prod(self.shape)) * self.dtype.itemsize

    def item(self, i: int) -> np.ndarray:
        """Entry ``i`` along the first axis as a new float32 array."""
        return np.array(self._stack()[i], dtype=np.float32)

    def load(self) -> np.ndarray:
        """The whole member as a new float32 array."""
        return np.array(self._stack(), dtype=np.float32)


def _data_offset(path: Path, info: zipfile.ZipInfo, version: tuple[int, int]) -> int:
    """Byte offset of a stored member's array data: local header + name + extra + npy header."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
            raise zipfile.BadZipFile(f"bad local header for {info.filename}")
        fields = _LOCAL_HEADER.unpack(header)
        fh.seek(info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10])
        np.lib.format.read_magic(fh)
        _read_header(fh, version)
        return fh.tell()


def _read_header(fp: Any, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The ``.npy`` header (shape, fortran_order, dtype) after the magic string."""
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    return np.lib.format.read_array_header_2_0(fp)


def _open_npz(path: Path):
    """``np.load`` without pickles, with low-level failures turned into one line."""
    try:
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise input_error(path, f"not a readable npz file: {exc}") from None


def _load_key(path: Path, npz: Any, key: str) -> np.ndarray:
    """One member of an open npz, with a missing key or pickled content reported in one line."""
    if key not in npz.files:
        found = ", ".join(repr(k) for k in npz.files) or "no keys"
        raise input_error(path, f"missing key '{key}' (found {found})")
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise input_error(path, f"'{key}' holds pickled Python objects, which are refused (allow_pickle=False)") from None
        raise input_error(path, f"cannot read '{key}': {exc}") from None
    except _READ_ERRORS as exc:
        raise input_error(path, f"cannot read '{key}': {exc}") from None


def _checked(path: Path, check, value: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Run a ``check_*`` returning a problem string; raise it as an InputError naming ``path``."""
    problem = check(value, **kwargs)
    if problem:
        raise input_error(path, problem)
    return np.asarray(value, dtype=np.float64) if value.dtype.kind in "fiu" else value


def _check_images_header(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Validate the images member's dtype and shape; return (N, H, W)."""
    problem = _images_dtype_problem(dtype, shape)
    if problem:
        raise input_error(path, f"'images' {problem}")
    n_images, height, width = shape
    return int(n_images), int(height), int(width)


def _images_dtype_problem(dtype: np.dtype, shape: tuple[int, ...]) -> str | None:
    """What is wrong with an image stack's dtype or shape, or None."""
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return f"must be float32 or float64 (got dtype {dtype})"
    if len(shape) != 3:
        return f"must be 3-D (N, H, W) (got shape {tuple(shape)})"
    if shape[1] < 1 or shape[2] < 1:
        return f"must have non-empty images (got shape {tuple(shape)})"
    return None


def _check_columns(columns: np.ndarray) -> str | None:
    """What is wrong with ``truth_columns`` (:data:`TRUTH_COLUMNS` or :data:`TRUTH_COLUMNS_ID`), or None."""
    found = tuple(str(c) for c in np.atleast_1d(columns)) if columns.dtype.kind in "US" else None
    if found not in (TRUTH_COLUMNS, TRUTH_COLUMNS_ID):
        return (f"'truth_columns' must be {list(TRUTH_COLUMNS)}, optionally with 'object_id' "
                f"(got {list(found) if found else columns.dtype})")
    return None


def _decode_meta(path: Path, raw: np.ndarray) -> dict:
    """Parse the ``meta`` member: a 0-d string array holding a JSON object."""
    if raw.dtype.kind not in "US" or raw.size != 1:
        raise input_error(path, "'meta' must be one JSON string", found=f"dtype {raw.dtype}, shape {raw.shape}")
    try:
        meta = json.loads(str(raw.reshape(()).item()))
    except json.JSONDecodeError as exc:
        raise input_error(path, f"'meta' is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise input_error(path, "'meta' must be a JSON object", found=type(meta).__name__)
    return meta


def _check_index(i: Any, n: int) -> int:
    """``i`` as an int in [0, n), or IndexError."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
        raise IndexError(f"image index {i!r} is outside [0, {n})")
    return int(i)
