"""Argument checks shared by the CNNs: plain ints and int lists, so hyperparameters stay plain containers."""

from __future__ import annotations

import operator
from typing import Iterable


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int, or raise ValueError naming ``name`` when it is not a positive integer."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value}")
    return value


def int_list(name: str, values: Iterable[object], *, length: int | None = None) -> list[int]:
    """Return ``values`` (a list or a Hydra ListConfig) as a list of positive ints, checking its length."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name}: must be a list of positive integers, got {values!r}")
    out = [positive_int(f"{name}[{i}]", v) for i, v in enumerate(values)]
    if length is not None and len(out) != length:
        raise ValueError(f"{name}: must have {length} entries, got {len(out)}")
    if not out:
        raise ValueError(f"{name}: must not be empty")
    return out


def nonnegative_float(name: str, value: object, *, below: float | None = None) -> float:
    """Return ``value`` as a float in ``[0, below)``, or raise ValueError naming ``name``."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a number, got {value!r}") from None
    if not out >= 0 or (below is not None and not out < below):
        bound = f" and below {below}" if below is not None else ""
        raise ValueError(f"{name}: must be non-negative{bound}, got {value!r}")
    return out
