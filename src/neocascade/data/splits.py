"""Train / val / test splits by file, never by image (images of one file share a night's conditions)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from neocascade.errors import input_error

SPLITS = ("train", "val", "test")


def validate_split(split: Mapping[str, Any] | None, file_ids: Iterable[int], *, key: str = "data.split") -> dict[str, tuple[int, ...]]:
    """Check a split against the source's files and return it as ``{name: tuple of file indices}``.

    Parameters
    ----------
    split : mapping of {'train', 'val', 'test'} to lists of file indices
        A missing or null entry is an empty split.
    file_ids : iterable of int
        The files the source holds.
    key : str
        Config key named in error messages.

    Returns
    -------
    dict
        All three names, each a tuple of file indices in the order given.

    Raises
    ------
    InputError
        One line naming ``data.split``: an unknown split name, a non-integer entry, a file the
        source lacks, a file listed twice, or a file in two splits.
    """
    if split is None:
        raise input_error(key, "missing (expected train/val/test lists of file indices)")
    split = _plain(split)
    if not isinstance(split, Mapping):
        raise input_error(key, "must map train/val/test to lists of file indices", found=type(split).__name__)
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise input_error(key, f"unknown split '{unknown[0]}' (expected some of {', '.join(SPLITS)})")
    available = sorted(int(f) for f in file_ids)
    out: dict[str, tuple[int, ...]] = {}
    owner: dict[int, str] = {}
    for name in SPLITS:
        files = split.get(name)
        files = [] if files is None else files
        if isinstance(files, (int, np.integer)) and not isinstance(files, bool):
            files = [files]
        if isinstance(files, (str, bytes)) or not isinstance(files, (list, tuple)):
            raise input_error(f"{key}.{name}", "must be a list of file indices", found=repr(files))
        checked = []
        for f in files:
            if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
                raise input_error(f"{key}.{name}", "file indices must be integers", found=repr(f))
            f = int(f)
            if f not in available:
                raise input_error(f"{key}.{name}", f"file {f} is not in the source", expected=f"files {_describe(available)}", found=f)
            if f in owner:
                where = "twice" if owner[f] == name else f"in both {owner[f]} and {name}"
                raise input_error(key, f"file {f} is listed {where}")
            owner[f] = name
            checked.append(f)
        out[name] = tuple(checked)
    return out


def _describe(ids: list[int]) -> str:
    if ids and ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 2:
        return f"{ids[0]}-{ids[-1]}"
    return ", ".join(str(i) for i in ids) or "none"


def _plain(value: Any) -> Any:
    from neocascade.data.sources import _plain as plain

    return plain(value)
