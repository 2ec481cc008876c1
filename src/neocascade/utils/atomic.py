"""Atomic writes: write to a temporary name beside the target, then rename.

A reader never sees a half-written file. Every writer refuses to replace an existing file unless
called with ``overwrite=True``, which only run-owned files (a run folder's reports, caches) use.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from neocascade.errors import input_error


def check_writable(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse to replace an existing ``path`` unless ``overwrite``; create its parent folder.

    A folder in the file's place, or a parent folder that cannot be created, is an :class:`InputError`.
    """
    path = Path(path)
    if path.is_dir():
        raise input_error(path, "is a folder", expected="a file name")
    if path.exists() and not overwrite:
        raise input_error(path, "already exists; pass overwrite=true to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    return path


def check_output_dir(path: str | os.PathLike, *, key: str) -> Path:
    """Check that ``path`` is, or can become, a folder this process can write in; return it as a Path.

    Parameters
    ----------
    path : path
        The output folder (``out=``, ``out_dir=``, a run or cache folder); it need not exist yet.
    key : str
        The config key that named it, used as the source of the error message.

    Returns
    -------
    Path
        ``path``; nothing is created.

    Raises
    ------
    InputError
        One line naming ``key`` and the path: it is a file; a parent is a file; or the nearest
        existing folder refuses writes (no permission, or a read-only file system).

    Notes
    -----
    ``os.access`` is asked first; then a probe file is created and removed in the nearest existing
    folder, since ``os.access`` says yes on a read-only mount for root, and root ignores permissions.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise input_error(key, f"{path} is a file", expected="a folder")
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise input_error(key, f"{path} cannot be created: {existing} is a file", expected="a folder")
    problem = _write_problem(existing)
    if problem is not None:
        raise input_error(key, f"{path} is not writable: {problem}")
    return path


def _write_problem(folder: Path) -> str | None:
    """Why nothing can be written in the existing ``folder``, or None when a probe file can be."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no permission to write in {folder}"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", suffix=".tmp", dir=folder)
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def _unwritable(path: Path, exc: OSError) -> Exception:
    """The one-line error for a folder or file that the operating system refused to create."""
    return input_error(path, f"cannot be written ({exc.strerror or exc})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``."""
    path = check_writable(path, overwrite=overwrite)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _unwritable(path, exc) from None
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``.

    If another process finished ``path`` first, ours is discarded and theirs kept: concurrent
    builders of the same content (two sweep jobs sharing a cache) both succeed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_npz(path: str | os.PathLike, *, overwrite: bool = False, compressed: bool = False, **arrays: Any) -> Path:
    """Write ``arrays`` to an ``.npz`` file atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return Path(path)


def save_json(path: str | os.PathLike, obj: Any, *, overwrite: bool = False) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return save_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n", overwrite=overwrite)


def save_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_bytes(path: str | os.PathLike, data: bytes | io.BytesIO, *, overwrite: bool = False) -> Path:
    """Write ``data`` atomically."""
    payload = data.getvalue() if isinstance(data, io.BytesIO) else data
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_default(obj: Any) -> Any:
    """numpy scalars and arrays, and paths, as JSON values (the ``default=`` of ``json.dumps``)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
