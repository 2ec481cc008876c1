"""The detector's after-classifier checks on cached candidates, and the simulated transients under them.

Shared by ``evaluate.py`` (which scores the test files with the checks a run deploys) and ``train.py`` (which picks
the operating point on the validation file for the detector as deployed). The checks themselves live in
:mod:`neocascade.detection.residuals` and :mod:`neocascade.detection.reference`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import numpy as np

from neocascade.candidates.labels import match_centres
from neocascade.errors import input_error

__all__ = ["image_stride", "image_keys", "star_source", "star_check_for", "star_reader", "kept_by_checks",
           "on_transients"]

log = logging.getLogger(__name__)


def image_stride(cs: Any) -> int:
    """Image keys are ``file * stride + image``: one more than the most images in a file of ``cs``."""
    return max((int(cs.info[f]["n_images"]) for f in cs.files), default=1) + 1


def image_keys(cs: Any) -> np.ndarray:
    """(N,) int64 key of each candidate's (file, image)."""
    return cs.file.astype(np.int64) * image_stride(cs) + cs.image.astype(np.int64)


def star_source(source: Any, *, key: str) -> Any:
    """``source`` if it has a reference catalogue beside each image (simulated data); else an InputError naming
    ``key``."""
    if not hasattr(source, "reference_stars"):
        raise input_error(key, "needs a reference catalogue beside each image; this data source has none",
                          found=type(source).__name__)
    return source


def star_check_for(source: Any, star_check: Any, *, without: str) -> Any:
    """``star_check``, or None (one warning line ending in ``without``) when ``source`` has no reference catalogue
    beside its images (image files)."""
    if star_check is None or hasattr(source, "reference_stars"):
        return star_check
    log.warning("reference_check: the data source (%s) has no reference catalogue beside its images; %s",
                type(source).__name__, without)
    return None


def star_reader(source: Any, cs: Any, *, key: str) -> Callable[[int], np.ndarray]:
    """``image key -> (N, 3)`` reference catalogue (x, y, magnitude) of an image of ``cs`` (keys of
    :func:`image_keys`), from a source that has one (:func:`star_source`)."""
    source = star_source(source, key=key)
    stride = image_stride(cs)

    @functools.lru_cache(maxsize=None)
    def read(image_key: int) -> np.ndarray:
        file, image = divmod(int(image_key), stride)
        return source.reference_stars(file, image)

    return read


def kept_by_checks(cs: Any, index: np.ndarray, *, check: Any = None, star_check: Any = None,
                   stars: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """Which candidates ``index`` of ``cs`` survive the residual ``check`` (on the cached unfiltered cutouts, channel
    1) and the reference ``star_check`` against each image's catalogue ``stars(key)``; None skips a check."""
    index = np.asarray(index, dtype=np.int64)
    keep = np.ones(index.size, dtype=bool)
    if check is not None and index.size:
        keep[:] = np.asarray(check(np.asarray(cs.cutouts.take(index)[:, 1], dtype=np.float32)), dtype=bool)
    if star_check is not None:
        keys = image_keys(cs)[index]
        for key in np.unique(keys[keep]):
            at = np.flatnonzero(keep & (keys == key))
            keep[at] = star_check(cs.x[index[at]], cs.y[index[at]], stars(int(key)))
    return keep


def on_transients(cs: Any, source: Any, *, radius: float) -> np.ndarray | None:
    """Candidates of ``cs`` within ``radius`` px of a brightened simulated transient of their image, which no
    asteroid label claims; None when ``source`` does not know its transients (image files)."""
    if not hasattr(source, "transients"):
        return None
    stride = image_stride(cs)
    keys = image_keys(cs)
    out = np.zeros(len(keys), dtype=bool)
    for key in np.unique(keys):
        file, image = divmod(int(key), stride)
        table = source.transients(file, image)
        bright = table[table[:, 3] > 0, :2]
        at = np.flatnonzero(keys == key)
        out[at] = match_centres(cs.y[at], cs.x[at], bright, radius=radius)[0]
    return out & (np.asarray(cs.label) != 1)
