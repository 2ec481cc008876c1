"""Run a trained cascade on an image or an alert stamp: candidates -> inputs -> scores -> detections.

The pixels a model sees are made exactly as in training: :func:`~neocascade.candidates.extract.extract_candidates`
filters and cuts, :func:`~neocascade.data.transforms.assemble_inputs` picks channels and normalises,
both with the settings stored in the cascade artifact (``cascade.input_spec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from neocascade.candidates.extract import extract_candidates
from neocascade.data.transforms import NORMALIZATIONS, assemble_inputs, channel_indices
from neocascade.detection.residuals import ring_deficit
from neocascade.errors import InputError
from neocascade.evaluation.metrics import merge_detections
from neocascade.training import specs

DETECTION_KEYS = ("rows", "cols", "x", "y", "p1", "p2", "peak", "snr")
ARTIFACT = "artifact"  # detect_image(veto=ARTIFACT): the veto stored in the cascade artifact
ZTF_STAMP_SIZE = 63  # ZTF alert cutouts are 63x63 px centred on the alert, cut short at the CCD edge


@dataclass(frozen=True)
class InputSpec:
    """How a cascade's inputs are made: the artifact's preprocessing settings, validated."""

    sigma: float
    selector: Any
    cutout_size: int
    channels: tuple[str, ...]
    normalize: str
    noise_box: int | None = None  # local-noise tile side; None keeps extract_candidates' default, as the cache does


def input_spec(cascade: Any, *, build_selector: bool = True) -> InputSpec:
    """Read and check a cascade's preprocessing settings (``input_spec``, or ``preprocess``).

    The selector (``{"kind", "params"}``, or an older artifact's ``_target_`` of a project selector) is
    built from the fixed set in :mod:`neocascade.training.specs`, never by importing a stored name;
    with ``build_selector=False`` (alert stamps need no selector) it is kept as stored.

    Raises
    ------
    ValueError
        A setting is missing or out of range (naming ``cascade.input_spec.<key>``).
    """
    spec = getattr(cascade, "input_spec", None)
    if spec is None:
        spec = getattr(cascade, "preprocess", None)
    if not isinstance(spec, Mapping):
        raise ValueError(f"cascade.input_spec: expected a mapping of preprocessing settings, got {type(spec).__name__}")
    missing = [key for key in ("sigma", "selector", "cutout_size", "channels", "normalize") if key not in spec]
    if missing:
        raise ValueError(f"cascade.input_spec: missing {', '.join(missing)} (found {', '.join(sorted(spec))})")
    sigma = float(spec["sigma"])
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"cascade.input_spec.sigma: must be a finite number >= 0, got {spec['sigma']!r}")
    size = spec["cutout_size"]
    if isinstance(size, bool) or int(size) != size or int(size) < 1:
        raise ValueError(f"cascade.input_spec.cutout_size: must be a positive integer, got {size!r}")
    channels = spec["channels"]
    channels = (channels,) if isinstance(channels, str) else tuple(str(c) for c in channels)
    try:
        channel_indices(list(channels))
    except ValueError as exc:
        raise ValueError(f"cascade.input_spec.{exc}") from None
    if spec["normalize"] not in NORMALIZATIONS:
        raise ValueError(f"cascade.input_spec.normalize: must be one of {list(NORMALIZATIONS)}, got {spec['normalize']!r}")
    return InputSpec(
        sigma=sigma,
        selector=_build_selector(spec["selector"]) if build_selector else spec["selector"],
        cutout_size=int(size),
        channels=channels,
        normalize=str(spec["normalize"]),
        noise_box=None if spec.get("noise_box") is None else int(spec["noise_box"]),
    )


def detect_image(
    image: np.ndarray,
    cascade: Any,
    *,
    merge_radius: float = 5.0,
    batch_size: int = 1024,
    spec: InputSpec | None = None,
    veto: Any = ARTIFACT,
    check: Any = None,
    reference: Any = None,
) -> dict[str, np.ndarray]:
    """Find asteroids in one difference image with a cascade.

    Parameters
    ----------
    image : (H, W) float array
        Difference image in DN; NaN marks masked pixels. Both sides must be at least the
        cascade's cutout size.
    cascade : Cascade
        A loaded artifact (:func:`neocascade.training.artifact.load_cascade`): ``input_spec``,
        ``score(x) -> (p1, p2)`` and ``accept(p1, p2) -> bool``.
    merge_radius : float
        Accepted candidates closer than this (px) are one detection; the highest score stays.
        0 keeps them all.
    batch_size : int
        Candidates scored per forward pass.
    spec : InputSpec, optional
        :func:`input_spec` of ``cascade``, to avoid rebuilding it for every image.
    veto : callable, None or ``"artifact"``
        ``veto(x, y) -> keep`` (bool) applied to the accepted candidates before merging, e.g.
        :class:`~neocascade.detection.streaks.StreakVeto`; None applies none; ``"artifact"`` (default)
        the one stored in the cascade (:func:`cascade_veto`).
    check : callable, optional
        ``check(raw_cutouts) -> keep`` on the accepted candidates' unfiltered cutouts, before the veto,
        e.g. :class:`~neocascade.detection.residuals.RingCheck`; None (default) applies none.
    reference : callable, optional
        ``reference(x, y) -> keep`` on the accepted candidates, after ``check`` and before the veto: the image's
        reference catalogue, e.g. ``StarCheck().bind(stars)`` (:mod:`~neocascade.detection.reference`).

    Returns
    -------
    dict of (D,) arrays
        ``rows, cols`` (int), ``x, y`` (float, x = column), ``p1, p2`` (stage probabilities),
        ``peak`` (filtered value at the candidate, DN) and ``snr`` (peak / local noise, NaN where the
        local noise is 0). Only accepted, merged candidates; D = 0 gives empty arrays.

    Raises
    ------
    ValueError
        ``image`` is not 2-D, has no finite pixel, or is smaller than the cutouts.
    """
    spec = input_spec(cascade) if spec is None else spec
    arr = _check_image(image, spec.cutout_size, name="image")
    _check_batch(batch_size, merge_radius)
    cand = _extract(arr, spec, spec.selector)
    x = _assemble(cand, spec)
    p1, p2 = score_inputs(x, cascade, batch_size=batch_size)
    accepted = np.flatnonzero(np.asarray(cascade.accept(p1, p2), dtype=bool))
    if check is not None and accepted.size:
        accepted = accepted[np.asarray(check(np.asarray(cand.cutouts)[accepted, 1]), dtype=bool)]
    if reference is not None and accepted.size:
        accepted = accepted[np.asarray(reference(np.asarray(cand.cols, dtype=np.float64)[accepted],
                                                 np.asarray(cand.rows, dtype=np.float64)[accepted]), dtype=bool)]
    veto = cascade_veto(cascade) if isinstance(veto, str) and veto == ARTIFACT else veto
    if veto is not None and accepted.size:
        accepted = accepted[_keep(veto, cand.cols[accepted], cand.rows[accepted], arr)]
    rows = np.asarray(cand.rows, dtype=np.int64)[accepted]
    cols = np.asarray(cand.cols, dtype=np.int64)[accepted]
    score = np.where(np.isfinite(p2[accepted]), p2[accepted], p1[accepted])
    keep = accepted[merge_detections(cols.astype(np.float64), rows.astype(np.float64), score, radius=merge_radius)]
    return _detections(cand, keep, p1, p2)


def build_veto(config: Any, *, name: str = "veto") -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The veto a ``conf/veto`` config describes: None for none (no config, or ``_target_: null``).

    For the user's own configuration only (``veto=`` of a run); a veto read from an artifact is built
    by :func:`cascade_veto`.

    Raises
    ------
    InputError
        One line naming ``name``: not a mapping, or a target that cannot be built.
    """
    if config is None or callable(config):
        return config
    if not isinstance(config, Mapping):
        raise InputError(f"{name}: expected a config with '_target_', got {config!r}")
    if config.get("_target_") is None:
        return None
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(dict(config))
    except (InstantiationException, ImportError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{name}: cannot build {config.get('_target_')!r} ({first})") from None


def cascade_veto(cascade: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The veto stored in a cascade artifact (``postprocess.veto``), or None.

    Built only from the fixed set of :mod:`neocascade.training.specs` (``{"kind", "params"}``, or an
    older artifact's exact ``_target_`` of a project veto); anything else is an InputError.
    """
    config = (getattr(cascade, "postprocess", None) or {}).get("veto")
    return specs.build_veto(config, source="cascade.postprocess.veto")


def run_veto(config: Any, cascade: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The veto a run applies: its own ``veto=`` config when given (not None), else the artifact's."""
    return build_veto(config, name="veto") if config is not None else cascade_veto(cascade)


def apply_veto(
    veto: Callable[[np.ndarray, np.ndarray], np.ndarray] | None, x: np.ndarray, y: np.ndarray, image: np.ndarray,
    pixels: Callable[[int], np.ndarray | None] | None = None,
) -> np.ndarray:
    """(D,) bool keep-mask of detections at ``x, y`` after ``veto``, run on each image key's detections alone.

    ``pixels(key)`` returns an image's pixels (or None): where the veto removes something without them and it
    can judge a line by its pixels (``uses_image``), it decides again with them, as :func:`detect_image` does.
    """
    keep = np.ones(np.asarray(x).shape, dtype=bool)
    if veto is None or keep.size == 0:
        return keep
    image = np.asarray(image)
    order = np.argsort(image, kind="stable")
    starts = np.flatnonzero(np.r_[True, image[order][1:] != image[order][:-1]])
    for members in np.split(order, starts[1:]):
        xm, ym = np.asarray(x)[members], np.asarray(y)[members]
        keep[members] = _keep(veto, xm, ym)
        if pixels is not None and getattr(veto, "uses_image", False) and not keep[members].all():
            arr = pixels(int(image[members[0]]))
            if arr is not None:
                keep[members] = _keep(veto, xm, ym, np.asarray(arr, dtype=np.float32))
    return keep


def _keep(veto: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
          pixels: np.ndarray | None = None) -> np.ndarray:
    """A veto's keep-mask, checked to be one bool per detection; a veto with ``uses_image`` also gets the pixels."""
    xy = (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    keep = np.asarray(veto(*xy, image=pixels) if pixels is not None and getattr(veto, "uses_image", False) else veto(*xy))
    if keep.shape != np.shape(x) or keep.dtype != bool:
        raise ValueError(f"veto: must return one bool per detection, got {keep.dtype} of shape {keep.shape}")
    return keep


def score_inputs(x: np.ndarray, cascade: Any, *, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Score model inputs in batches; returns float64 ``(p1, p2)``, p2 NaN where stage 1 rejected."""
    n = len(x)
    p1 = np.empty(n, dtype=np.float64)
    p2 = np.empty(n, dtype=np.float64)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        b1, b2 = cascade.score(np.ascontiguousarray(x[start:stop], dtype=np.float32))
        p1[start:stop] = np.asarray(b1, dtype=np.float64)
        p2[start:stop] = np.asarray(b2, dtype=np.float64)
    return p1, p2


def stamp_centre(shape: Sequence[int], *, xpos: float | None = None, ypos: float | None = None) -> tuple[int, int]:
    """Row and column of an alert's position inside its difference stamp.

    Parameters
    ----------
    shape : (h, w)
        Stamp shape; ZTF stamps are 63x63 centred on the alert.
    xpos, ypos : float, optional
        The alert's 1-based position on the CCD quadrant (``candidate.xpos``, ``ypos``). They tell
        which side a short stamp lost: near the low edge (pos < 32) the stamp starts at the
        quadrant's first pixel, so the alert sits ``32`` px before the stamp's end.

    Notes
    -----
    A full-size side (63) or one without a position has its centre at ``side // 2``.
    """
    half = ZTF_STAMP_SIZE // 2
    centre = []
    for side, pos in zip(shape, (ypos, xpos)):
        if side < ZTF_STAMP_SIZE and pos is not None and np.isfinite(pos) and pos < half + 1:
            centre.append(max(int(side) - half - 1, 0))
        elif side < ZTF_STAMP_SIZE and pos is not None and np.isfinite(pos):
            centre.append(min(half, int(side) - 1))
        else:
            centre.append(int(side) // 2)
    return centre[0], centre[1]


def stamp_inputs(
    stamp: np.ndarray, spec: InputSpec, *, centre: tuple[int, int] | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """Model input of an alert stamp's centre pixel, made as in training.

    The whole stamp is filtered with the artifact's sigma, then the ``cutout_size`` cutout
    around ``centre`` (default: the stamp centre) is cut and normalised.

    Returns
    -------
    x : (1, C, S, S) float32 array
    info : dict
        ``row, col, peak, local_noise, image_noise, snr`` of the scored pixel.

    Raises
    ------
    ValueError
        ``stamp`` is not 2-D, has no finite pixel, or is smaller than the cutout.
    """
    arr = _check_image(stamp, spec.cutout_size, name="stamp")
    row, col = stamp_centre(arr.shape) if centre is None else (int(centre[0]), int(centre[1]))
    if not (0 <= row < arr.shape[0] and 0 <= col < arr.shape[1]):
        raise ValueError(f"centre: ({row}, {col}) is outside the {arr.shape[0]}x{arr.shape[1]} stamp")
    selector = _FixedSelector(row, col)
    cand = _extract(arr, spec, selector)
    x = _assemble(cand, spec)
    peak = float(np.asarray(cand.peak)[0])
    noise = float(np.asarray(cand.local_noise)[0])
    raw = np.asarray(cand.cutouts)[:, 1]
    info = {
        "ring": float(ring_deficit(raw)[0]) if raw.shape[-1] >= 17 else float("nan"),
        "row": row,
        "col": col,
        "peak": peak,
        "local_noise": noise,
        "image_noise": float(cand.image_noise),
        "snr": peak / noise if noise > 0 else float("nan"),
    }
    return np.asarray(x, dtype=np.float32), info


def score_stamps(
    stamps: Sequence[np.ndarray],
    cascade: Any,
    *,
    centres: Sequence[tuple[int, int] | None] | None = None,
    batch_size: int = 1024,
    spec: InputSpec | None = None,
    check: Any = None,
) -> dict[str, np.ndarray]:
    """Score the centre pixel of each alert stamp.

    Parameters
    ----------
    stamps : sequence of (h, w) float arrays
        Difference stamps with science-minus-reference sign (``Alert.signed_difference``), so a
        fading source is negative and should be rejected.
    cascade : Cascade
    centres : sequence of (row, col) or None, optional
        Position of each alert in its stamp (see :func:`stamp_centre`); None = the stamp centre.
    batch_size : int
    spec : InputSpec, optional
    check : RingCheck, optional
        Also required for ``detected``: the stamp's ring passes (:class:`~neocascade.detection.residuals.RingCheck`).

    Returns
    -------
    dict of (N,) arrays
        ``row, col, p1, p2, peak, snr, ring`` (:func:`~neocascade.detection.residuals.ring_deficit`), ``detected``.
    """
    spec = input_spec(cascade, build_selector=False) if spec is None else spec  # a stamp needs no selector
    _check_batch(batch_size, 0.0)
    centres = [None] * len(stamps) if centres is None else list(centres)
    if len(centres) != len(stamps):
        raise ValueError(f"centres: expected {len(stamps)} entries, got {len(centres)}")
    inputs, infos = [], []
    for stamp, centre in zip(stamps, centres):
        x, info = stamp_inputs(stamp, spec, centre=centre)
        inputs.append(x)
        infos.append(info)
    if not inputs:
        empty = np.empty(0, dtype=np.float64)
        return {"row": np.empty(0, np.int64), "col": np.empty(0, np.int64), "p1": empty, "p2": empty.copy(),
                "peak": empty.copy(), "snr": empty.copy(), "ring": empty.copy(), "detected": np.empty(0, dtype=bool)}
    p1, p2 = score_inputs(np.concatenate(inputs), cascade, batch_size=batch_size)
    ring = np.array([i["ring"] for i in infos], dtype=np.float64)
    detected = np.asarray(cascade.accept(p1, p2), dtype=bool)
    if check is not None:
        detected &= check.passes(np.nan_to_num(ring, nan=0.0))
    return {
        "row": np.array([i["row"] for i in infos], dtype=np.int64),
        "col": np.array([i["col"] for i in infos], dtype=np.int64),
        "p1": p1,
        "p2": p2,
        "peak": np.array([i["peak"] for i in infos], dtype=np.float64),
        "snr": np.array([i["snr"] for i in infos], dtype=np.float64),
        "ring": ring,
        "detected": detected,
    }


def score_stamp(stamp: np.ndarray, cascade: Any, *, centre: tuple[int, int] | None = None) -> dict[str, Any]:
    """Score one alert stamp's centre pixel; a dict of scalars (see :func:`score_stamps`)."""
    out = score_stamps([stamp], cascade, centres=[centre])
    return {key: value[0].item() for key, value in out.items()}


class _FixedSelector:
    """A selector that always proposes one given pixel (the alert position in its stamp)."""

    def __init__(self, row: int, col: int) -> None:
        self.row, self.col = row, col

    def __call__(self, filtered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.array([self.row], dtype=np.int64), np.array([self.col], dtype=np.int64)


def _build_selector(config: Any) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The stored selector built from the fixed set of :mod:`~neocascade.training.specs`; a callable passes through."""
    return specs.build_selector(config, source="cascade.input_spec.selector")


def _check_image(image: np.ndarray, cutout_size: int, *, name: str) -> np.ndarray:
    """A 2-D float32 view of ``image`` with some finite pixel, at least ``cutout_size`` on each side."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected real pixel values, got dtype {arr.dtype}")
    if min(arr.shape) < cutout_size:
        raise ValueError(
            f"{name}: {arr.shape[0]}x{arr.shape[1]} px is smaller than the cascade's {cutout_size}x{cutout_size} cutouts"
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).any():
        raise ValueError(f"{name}: every pixel is NaN or infinite (fully masked)")
    return arr


def _extract(image: np.ndarray, spec: InputSpec, selector: Any) -> Any:
    """:func:`extract_candidates` with the artifact's settings."""
    extra = {} if spec.noise_box is None else {"noise_box": spec.noise_box}
    return extract_candidates(image, sigma=spec.sigma, selector=selector, cutout_size=spec.cutout_size, **extra)


def _assemble(cand: Any, spec: InputSpec) -> np.ndarray:
    """Model inputs of extracted candidates, with the image noise given per cutout."""
    n = len(cand.cutouts)
    return assemble_inputs(
        cand.cutouts,
        channels=list(spec.channels),
        normalize=spec.normalize,
        image_noise=np.full(n, float(cand.image_noise)),
        local_noise=np.asarray(cand.local_noise, dtype=np.float64),
    )


def _check_batch(batch_size: int, merge_radius: float) -> None:
    """Validate the scoring options."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
    if not np.isfinite(merge_radius) or merge_radius < 0:
        raise ValueError(f"merge_radius: must be a finite number >= 0, got {merge_radius!r}")


def _detections(cand: Any, keep: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> dict[str, np.ndarray]:
    """Detection arrays of the kept candidate indices."""
    rows = np.asarray(cand.rows, dtype=np.int64)[keep]
    cols = np.asarray(cand.cols, dtype=np.int64)[keep]
    peak = np.asarray(cand.peak, dtype=np.float64)[keep]
    noise = np.asarray(cand.local_noise, dtype=np.float64)[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noise > 0, peak / np.where(noise > 0, noise, 1.0), np.nan)
    return {
        "rows": rows,
        "cols": cols,
        "x": cols.astype(np.float64),
        "y": rows.astype(np.float64),
        "p1": p1[keep],
        "p2": p2[keep],
        "peak": peak,
        "snr": snr,
    }
