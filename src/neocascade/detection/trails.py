"""Trail detector: fast movers' trails (10 to 300+ px) found beside the point-source cascade.

Candidates: the image is binned 4 x 4, divided by its robust noise, smoothed by a Gaussian of one bin and
thresholded with hysteresis (seed and grow levels); each connected region gives a line (centre, direction and
extent from its weighted moments). Compact regions go on only when their full-resolution pixels are elongated
(point sources, hot pixels and cosmic rays stop there); a long region is measured, then what lies off its line
is regrouped (a trail crossing a satellite). Faint long trails, which no single bin shows, come from a second
path: 8 x 8 px bins clipped at 3 sigma and summed along a ~70 px line in 12 directions.

Measurement, on the full-resolution image along a rotated grid of bilinear samples (9 px across): the
cross-track centroid corrects position and direction, the run of samples maximising sum / sqrt(length) (a
top-hat matched filter) gives the end points, and the run is regrown while it touches the sampled extent.
Samples count at most max(5 sigma, twice the line's median) in the end points and the SNR, so a cosmic ray
or a star residual on a trail neither becomes the line nor stretches it. A trail is reported with end points,
length, angle, total flux, matched-filter SNR, width and, given the exposure time, rate and position angle.
Once satellites and bad columns are known, they are masked and the search runs again near them: a trail
crossing a satellite had joined its region.

Discrimination (not a length rule): a line is a satellite or aircraft when it reaches the image edge or a mask
at both ends over half of ``max_length``, when nothing but masked pixels lies past both ends up to the image
edge (a satellite clipping a corner), or when signal goes on along it past its ends (dashed or partly hidden);
a bad column when its flux sits in one pixel column; dashed when three pieces are collinear or its 10 px pieces
have gaps; not a trail when narrower or wider than a PSF, too short, or too faint.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import numpy as np
from scipy import ndimage

__all__ = ["TRAIL_KEYS", "TrailDetector", "bin_image", "build_trail_detector", "empty_trails", "find_trails",
           "is_asteroid_trail", "measure_line", "point_segment_distance", "segment_chord", "sky_motion",
           "trail_rates", "trail_segments"]

TRAIL_KEYS = ("x", "y", "x1", "y1", "x2", "y2", "length", "angle", "flux", "snr", "width", "rate", "pa")
"""Per trail: midpoint, end points (px, 0-based, x = column), length (px), angle (deg from +x to +y, [0, 180)),
total flux (DN), matched-filter SNR, cross-track FWHM (px), rate ("/min, NaN without exposure time) and
position angle (deg, NaN without a sky orientation)."""

BIN = 4  # px per side of a bin: a 3080 x 3072 quadrant becomes 770 x 768, a trail's width fits one or two bins
HALF_WIDTH = 4  # px either side of the line sampled across it: the PSF core plus its near wings
SPLIT_HALF = 60.0  # px: a region this long may hold two lines (a trail across a satellite); see _split
LINE_TAPS = 9  # 8 x 8 px bins summed along a line: ~70 px, where a faint long trail first stands out
LINE_ANGLES = 12  # directions 15 deg apart: a 9-bin line drifts by under a bin from the nearest one
LINE_CLIP = 3.0  # sigma: bins clipped here before summing, so point sources do not look like lines
LINE_SEED, LINE_GROW = 5.0, 3.0  # hysteresis levels on the line-filtered image (robust SNR)
BOX_CLIP, BOX_RELATIVE = 5.0, 2.0  # samples count at most max(5 sigma, 2 x the line's median) in end points, SNR
SAT_BAND = 12.0  # px either side of a satellite or column (plus 3 of its widths) masked before looking again
FAINT_REACH = 60.0  # px searched past a faint candidate's ends for the rest of its trail
FAINT_MIN_LENGTH = 60.0
JOIN_SNR = 30.0  # pieces fainter than this are joined when collinear; a bright line's pieces are a satellite's  # px: shorter lines from the faint path are left to the main one
PIXEL_SCALE = 1.01  # arcsec/px of the ZTF camera, for rates when no WCS is given


def empty_trails() -> dict[str, np.ndarray]:
    """A trail table with every column of :data:`TRAIL_KEYS` and no rows."""
    return {key: np.zeros(0, dtype=np.float64) for key in TRAIL_KEYS}


def bin_image(image: np.ndarray, *, factor: int = BIN) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``factor x factor`` blocks of an image with NaN as 0, and count the finite pixels of each.

    Parameters
    ----------
    image : (H, W) float array
        NaN marks masked pixels.
    factor : int
        Block side in px (>= 1); partial blocks at the bottom and right edges are dropped.

    Returns
    -------
    sums : (H // factor, W // factor) float32
    counts : (H // factor, W // factor) int array
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor: must be a positive integer, got {factor!r}")
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"image: expected a 2-D array, got shape {arr.shape}")
    h, w = (arr.shape[0] // factor) * factor, (arr.shape[1] // factor) * factor
    finite = np.isfinite(arr[:h, :w])
    return _block_sum(np.where(finite, arr[:h, :w], np.float32(0.0)), factor), \
        _block_sum(finite.view(np.uint8), factor)


def _block_sum(a: np.ndarray, f: int) -> np.ndarray:
    """Sum of f x f blocks by strided adds (several times faster than a 4-D reshape sum)."""
    cols = a[:, 0::f].astype(np.int32 if a.dtype == np.uint8 else np.float32)
    for k in range(1, f):
        cols = cols + a[:, k::f]
    out = cols[0::f].copy()
    for k in range(1, f):
        out += cols[k::f]
    return out


def point_segment_distance(
    px: np.ndarray, py: np.ndarray, x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray
) -> np.ndarray:
    """Distance from points to line segments (broadcasting), in px.

    Notes
    -----
    A zero-length segment is its end point.
    """
    px, py, x1, y1, x2, y2 = (np.asarray(v, dtype=np.float64) for v in (px, py, x1, y1, x2, y2))
    dx, dy = x2 - x1, y2 - y1
    length2 = dx * dx + dy * dy
    t = np.clip(np.divide((px - x1) * dx + (py - y1) * dy, length2, out=np.zeros(np.broadcast(px, dx).shape),
                          where=length2 > 0), 0.0, 1.0)
    return np.hypot(px - (x1 + t * dx), py - (y1 + t * dy))


def segment_chord(
    x: np.ndarray, y: np.ndarray, angle: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances along a line from a point on it to where it leaves the image box.

    Parameters
    ----------
    x, y : (N,) float arrays
        Points inside the image (px).
    angle : (N,) float array
        Line directions in degrees from +x to +y.
    shape : (H, W)
        The box ``[0, W-1] x [0, H-1]``.

    Returns
    -------
    t_low, t_high : (N,) float arrays
        The line ``(x, y) + t (cos, sin)`` is inside the box for ``t_low <= t <= t_high`` (t_low <= 0 <= t_high).
    """
    x, y, angle = (np.asarray(v, dtype=np.float64) for v in (x, y, angle))
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    h, w = shape
    big = 1e12
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.sort(np.stack([(0.0 - x) / c, (w - 1.0 - x) / c]), axis=0)
        ty = np.sort(np.stack([(0.0 - y) / s, (h - 1.0 - y) / s]), axis=0)
    tx = np.where(np.abs(c) < 1e-12, np.array([[-big], [big]]), tx)
    ty = np.where(np.abs(s) < 1e-12, np.array([[-big], [big]]), ty)
    return np.maximum(tx[0], ty[0]), np.minimum(tx[1], ty[1])


def trail_rates(
    length: np.ndarray, angle: np.ndarray, *, exptime: float | None, pixel_scale: float = PIXEL_SCALE,
    north_angle: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rate ("/min) and position angle (deg, east of north, [0, 180)) implied by trails in one exposure.

    Parameters
    ----------
    length, angle : (N,) float arrays
        Trail length (px) and direction (deg from +x to +y).
    exptime : float or None
        Exposure time in s; None gives NaN rates.
    pixel_scale : float
        arcsec/px.
    north_angle : float, optional
        Image direction of north in deg from +x to +y, with east 90 deg counter-clockwise of it on the sky
        (as in a FITS image shown with +y up); None gives NaN position angles. A trail's direction of
        motion is ambiguous by 180 deg in one exposure, so the angle is folded into [0, 180).
    """
    length, angle = np.asarray(length, dtype=np.float64), np.asarray(angle, dtype=np.float64)
    rate = np.full(length.shape, np.nan)
    if exptime is not None and exptime > 0:
        rate = length * pixel_scale / (exptime / 60.0)
    pa = np.full(length.shape, np.nan) if north_angle is None else (angle - north_angle) % 180.0
    return rate, pa


def sky_motion(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray, *,
               exptime: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Rate ("/min, NaN without exposure time) and position angle (deg east of north, folded into [0, 180)) of
    trails from the sky positions of their end points (deg); the direction of motion is ambiguous by 180 deg."""
    ra1, dec1, ra2, dec2 = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    sep = np.arccos(np.clip(np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra), -1.0, 1.0))
    pa = np.degrees(np.arctan2(np.sin(dra) * np.cos(dec2),
                               np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))) % 180.0
    rate = np.full(sep.shape, np.nan)
    if exptime is not None and exptime > 0:
        rate = np.degrees(sep) * 3600.0 / (exptime / 60.0)
    return rate, pa


def trail_segments(trails: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, 2, 2) end points ``[[x1, y1], [x2, y2]]`` of each trail, for overlays (e.g. a matplotlib LineCollection)."""
    keys = ("x1", "y1", "x2", "y2")
    x1, y1, x2, y2 = (np.asarray(trails[k], dtype=np.float64) for k in keys)
    return np.stack([np.stack([x1, y1], axis=-1), np.stack([x2, y2], axis=-1)], axis=1).reshape(-1, 2, 2)


def find_trails(
    image: np.ndarray,
    *,
    seed_snr: float = 4.0,
    grow_snr: float = 2.5,
    min_snr: float = 8.0,
    short_length: float = 40.0,
    short_snr: float = 15.0,
    min_length: float = 8.0,
    min_elongation: float = 3.0,
    max_length: float = 1000.0,
    min_width: float = 1.4,
    max_width: float = 4.0,
    exptime: float | None = None,
    return_rejected: bool = False,
) -> dict[str, np.ndarray]:
    """Find the trails of fast movers in one difference image.

    Parameters
    ----------
    image : (H, W) float array
        Difference image in DN; NaN marks masked pixels. Both sides >= 32 px.
    seed_snr, grow_snr : float
        Hysteresis levels on the smoothed, binned SNR image: regions above ``grow_snr`` holding a bin above
        ``seed_snr`` become candidate lines.
    min_snr : float
        Smallest matched-filter SNR of a reported trail.
    short_length, short_snr : float
        Lines shorter than ``short_length`` px need SNR ``short_snr``: a short faint line's elongation is
        uncertain, and subtraction residuals (rings, dipoles) then pass for trails.
    min_length, min_elongation : float
        Smallest length (px) and length / width of a trail: point sources, cosmic rays and hot pixels are shorter.
    max_length : float
        Longest trail (px); longer lines (satellites, aircraft) are not asteroids.
    min_width, max_width : float
        Cross-track FWHM range of a trail (px): a bad column is one pixel wide, a PSF is ~2 px.
    exptime : float, optional
        Exposure time in s, for the rate column.
    return_rejected : bool
        Also return the lines rejected (with a ``reason`` column: 0 trail, 1 satellite, 2 column, 3 short,
        4 faint, 5 width, 6 dashed).

    Returns
    -------
    dict of (N,) float64 arrays
        :data:`TRAIL_KEYS`, one row per trail, brightest first; empty arrays when none is found.

    Notes
    -----
    Costs ~0.12 s for a full quadrant on one core of a loaded 2-core machine (~60 ms for the binned images,
    the rest ~1 ms per candidate line). A trail that leaves the image ends at the edge; a line that reaches the
    image edge (or a mask) at both ends over half of ``max_length``, or that goes on past its ends, is a satellite.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2 or min(arr.shape) < 8 * BIN:
        raise ValueError(f"image: expected a 2-D array with both sides >= {8 * BIN}, got shape {arr.shape}")
    for name, value in (("seed_snr", seed_snr), ("grow_snr", grow_snr), ("min_snr", min_snr),
                        ("short_length", short_length), ("short_snr", short_snr),
                        ("min_length", min_length), ("max_length", max_length), ("min_width", min_width),
                        ("max_width", max_width), ("min_elongation", min_elongation)):
        if not (isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    if grow_snr > seed_snr or min_width > max_width or min_length > max_length:
        raise ValueError("find_trails: need grow_snr <= seed_snr, min_width <= max_width, min_length <= max_length, "
                         f"got {grow_snr}, {seed_snr}, {min_width}, {max_width}, {min_length}, {max_length}")
    lines, filled, noise, bins = _candidates(arr, seed_snr=seed_snr, grow_snr=grow_snr)
    rows = []
    cut = dict(max_length=max_length, min_length=min(min_length, 0.5 * short_length), min_snr=min_snr)
    for index in np.flatnonzero(_elongated(filled, noise, lines)):
        row = _measure(filled, noise, *lines[index], **cut)
        rows.append(row)
        if row is not None and lines[index][3] >= SPLIT_HALF:
            parts = _split(bins, int(index), row)
            band = (row["x"], row["y"], row["angle"], 2.0 * row["width"] + 4.0)
            rows += [_measure(filled, noise, *part, exclude=band, **cut)
                     for part, ok in zip(parts, _elongated(filled, noise, parts)) if ok]
    faint = _faint_lines(*bins[4:])
    for line in faint:  # a faint trail's best box stops short by chance: search far past it
        row = _measure(filled, noise, *line, reach=FAINT_REACH, **cut)
        if row is not None and row["length"] >= FAINT_MIN_LENGTH:
            rows.append(row)
    rows = [r for r in rows if r is not None]
    rows += [r for r in (_measure(filled, noise, *line, **cut) for line in _joins(rows, min_length=min_length))
             if r is not None]
    extra = ("edges", "open", "beyond1", "beyond2", "sharp", "gaps")
    table = {key: np.array([r[key] for r in rows], dtype=np.float64) for key in (*TRAIL_KEYS, *extra)}
    table = _dedupe(table)
    settings = dict(min_snr=min_snr, short_length=short_length, short_snr=short_snr, min_length=min_length,
                    min_elongation=min_elongation, max_length=max_length, min_width=min_width, max_width=max_width)
    reason = _classify(table, arr.shape, **settings)
    wide = (reason == 1) | (reason == 2)
    if wide.any():  # look again with the satellites and columns masked: trails crossing them
        again, faint, masked = _without_lines(filled, bins, table, wide, (lines, faint), seed_snr=seed_snr,
                                              grow_snr=grow_snr)
        more = [_measure(masked, noise, *line, **cut) for line, ok in zip(again, _elongated(masked, noise, again))
                if ok]
        more += [r for r in (_measure(masked, noise, *line, reach=FAINT_REACH, **cut) for line in faint)
                 if r is not None and r["length"] >= FAINT_MIN_LENGTH]
        more = [r for r in more if r is not None]
        more += [r for r in (_measure(masked, noise, *line, **cut) for line in _joins(more, min_length=min_length))
                 if r is not None]  # a trail's two sides of the satellite are one trail
        if more:
            table = _dedupe({key: np.r_[table[key], [r[key] for r in more]] for key in table})
            reason = _classify(table, arr.shape, **settings)
    table["rate"], table["pa"] = trail_rates(table["length"], table["angle"], exptime=exptime)
    order = np.argsort(-table["flux"], kind="stable")
    keep = order[reason[order] == 0]
    out = {key: table[key][keep] for key in TRAIL_KEYS}
    if return_rejected:
        out["rejected"] = {**{key: table[key][order] for key in TRAIL_KEYS},
                           "reason": reason[order].astype(np.float64)}
    return out


def measure_line(image: np.ndarray, *, x: float, y: float, angle: float, half_length: float,
                 max_length: float = 1000.0) -> dict[str, float] | None:
    """Measure one line given roughly (a point on it, direction, half-length) as :func:`find_trails` does.

    Returns
    -------
    dict or None
        :data:`TRAIL_KEYS` plus ``edges`` (ends at the image edge or a mask), ``beyond1, beyond2`` (SNR of
        the line's continuation past each end) and ``sharp``; None when nothing is there.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2 or min(arr.shape) < 8 * BIN:
        raise ValueError(f"image: expected a 2-D array with both sides >= {8 * BIN}, got shape {arr.shape}")
    finite = np.isfinite(arr)
    filled = np.where(finite, arr, np.float32(0.0))
    h, w = (arr.shape[0] // BIN) * BIN, (arr.shape[1] // BIN) * BIN
    sums = _block_sum(filled[:h, :w], BIN)
    counts = _block_sum(finite[:h, :w].view(np.uint8), BIN)
    full = counts == BIN * BIN
    noise = _robust_sigma(sums[::2, ::2][full[::2, ::2]]) / BIN
    return _measure(filled, noise, float(x), float(y), float(angle) % 180.0, float(half_length), max_length=max_length)


def is_asteroid_trail(row: Mapping[str, float] | None, shape: tuple[int, int], **settings: float) -> bool:
    """True when a :func:`measure_line` result passes :func:`find_trails`' trail decision (``settings`` as there)."""
    if row is None:
        return False
    defaults = dict(min_snr=8.0, short_length=40.0, short_snr=15.0, min_length=8.0, min_elongation=3.0,
                    max_length=1000.0, min_width=1.4, max_width=4.0)
    defaults.update(settings)
    table = {key: np.array([row[key]], dtype=np.float64) for key in row}
    return bool(_classify(table, shape, **defaults)[0] == 0)


def build_trail_detector(config: object) -> "TrailDetector | None":
    """The trail detector a ``conf/trails`` config describes (the user's own config): None for none
    (no config, or ``_target_: null``).

    Raises
    ------
    InputError
        One line naming ``trails``: not a mapping, settings the detector refuses, or a config that builds
        something other than a :class:`TrailDetector`.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from neocascade.errors import input_error

    if config is None or (isinstance(config, Mapping) and config.get("_target_") is None):
        return None
    if not isinstance(config, Mapping):
        raise input_error("trails", "expected a config with '_target_'", found=repr(config))
    try:
        built = instantiate(dict(config))
    except (InstantiationException, ImportError, ValueError, TypeError) as exc:
        cause = exc.__cause__ if isinstance(exc, InstantiationException) and exc.__cause__ is not None else exc
        first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise input_error("trails", f"cannot build {config.get('_target_')!r} ({first})") from None
    if not isinstance(built, TrailDetector):
        raise input_error("trails", "must build a neocascade.detection.trails.TrailDetector",
                          found=type(built).__name__)
    return built


class TrailDetector:
    """Callable :func:`find_trails` with fixed settings; built from ``conf/trails/default.yaml``."""

    def __init__(self, seed_snr: float = 4.0, grow_snr: float = 2.5, min_snr: float = 8.0,
                 short_length: float = 40.0, short_snr: float = 15.0, min_length: float = 8.0,
                 min_elongation: float = 3.0, max_length: float = 1000.0, min_width: float = 1.4,
                 max_width: float = 4.0, merge_radius: float = 4.0) -> None:
        self.settings = dict(seed_snr=float(seed_snr), grow_snr=float(grow_snr), min_snr=float(min_snr),
                             short_length=float(short_length), short_snr=float(short_snr),
                             min_length=float(min_length), min_elongation=float(min_elongation),
                             max_length=float(max_length), min_width=float(min_width), max_width=float(max_width))
        if not (math.isfinite(merge_radius) and merge_radius >= 0):
            raise ValueError(f"merge_radius: must be a finite number >= 0, got {merge_radius!r}")
        self.merge_radius = float(merge_radius)
        find_trails(np.zeros((8 * BIN, 8 * BIN), np.float32), **self.settings)  # validates the settings once

    def __call__(self, image: np.ndarray, *, exptime: float | None = None) -> dict[str, np.ndarray]:
        """Trails of one image (:data:`TRAIL_KEYS`)."""
        return find_trails(image, exptime=exptime, **self.settings)

    def on_trail(self, x: np.ndarray, y: np.ndarray, trails: Mapping[str, np.ndarray]) -> np.ndarray:
        """(N,) bool: point detections within ``merge_radius`` + half the trail's width of a found trail."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.size == 0 or len(trails["x1"]) == 0:
            return np.zeros(x.shape, dtype=bool)
        ends = (np.asarray(trails[k])[None, :] for k in ("x1", "y1", "x2", "y2"))
        d = point_segment_distance(x[:, None], y[:, None], *ends)
        return (d <= self.merge_radius + 0.5 * np.asarray(trails["width"])[None, :]).any(axis=1)

    def rows(self, pixels: np.ndarray, points: Mapping[str, np.ndarray], *, file: str, image: object,
             wcs: object = None, exptime: float | None = None) -> dict[str, np.ndarray]:
        """One image's catalogue: the cascade's point rows (:func:`~neocascade.detection.catalogue.catalogue_rows`)
        that lie on no found trail, then one row per trail (``kind`` = trail), so each asteroid is reported once.

        With a celestial ``wcs`` the rate and position angle come from the sky positions of the end points.
        """
        from neocascade.detection.catalogue import merge_trails, pixel_to_sky, trail_rows

        found = self(pixels, exptime=exptime)
        if wcs is not None and found["x"].size:
            ra1, dec1 = pixel_to_sky(wcs, found["x1"], found["y1"])
            ra2, dec2 = pixel_to_sky(wcs, found["x2"], found["y2"])
            if np.isfinite(ra1).all():
                found["rate"], found["pa"] = sky_motion(ra1, dec1, ra2, dec2, exptime=exptime)
        on = self.on_trail(points["x"], points["y"], found)
        return merge_trails(points, trail_rows(found, file=file, image=image, wcs=wcs), on)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"TrailDetector({inner}, merge_radius={self.merge_radius})"


def _robust_sigma(values: np.ndarray) -> float:
    """1.4826 x median absolute deviation (1.0 when there is nothing to measure)."""
    if values.size == 0:
        return 1.0
    med = np.median(values)
    sigma = 1.4826 * float(np.median(np.abs(values - med)))
    return sigma if sigma > 0 else 1.0


def _candidates(arr: np.ndarray, *, seed_snr: float, grow_snr: float) -> tuple[list, np.ndarray, float, tuple]:
    """Candidate lines (x, y, angle, half-length in px) from the binned image, the NaN-free image, its noise, and
    each line's bins (rows, cols, line index, binned SNR image, sums, counts, bin sigma) for :func:`_split`."""
    h, w = (arr.shape[0] // BIN) * BIN, (arr.shape[1] // BIN) * BIN
    finite = np.isfinite(arr)
    filled = np.where(finite, arr, np.float32(0.0))
    sums = _block_sum(filled[:h, :w], BIN)
    counts = _block_sum(finite[:h, :w].view(np.uint8), BIN)
    full = counts == BIN * BIN
    sigma_bin = _robust_sigma(sums[::2, ::2][full[::2, ::2]])
    lines, bins = _binned_lines(sums, counts, sigma_bin, seed_snr=seed_snr, grow_snr=grow_snr)
    return lines, filled, sigma_bin / BIN, bins  # per-pixel noise that sums like the image's (correlations included)


def _binned_lines(sums: np.ndarray, counts: np.ndarray, sigma_bin: float, *, seed_snr: float,
                  grow_snr: float) -> tuple[list, tuple]:
    """Candidate lines and their bins (see :func:`_candidates`) from binned sums and finite-pixel counts."""
    z = sums / (np.float32(sigma_bin) * np.sqrt(np.maximum(counts, 1).astype(np.float32) / np.float32(BIN * BIN)))
    z[counts == 0] = 0.0
    smooth = ndimage.gaussian_filter(z, 1.0)
    smooth /= _robust_sigma(smooth[::2, ::2])
    regions = _hysteresis(smooth, grow=grow_snr, seed=seed_snr)
    if regions is None:
        return [], (np.zeros(0, np.int64),) * 3 + (z, sums, counts, sigma_bin)
    rr, cc, inv = regions
    return _lines_from_bins(rr, cc, inv, z), (rr, cc, inv, z, sums, counts, sigma_bin)


def _hysteresis(image: np.ndarray, *, grow: float, seed: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Rows, columns and region index (0..K-1) of the pixels of every 8-connected region above ``grow`` that holds a
    pixel at or above ``seed``; None when there is none."""
    grown, n = ndimage.label(image > grow, structure=np.ones((3, 3)))
    if n == 0:
        return None
    rr, cc = np.nonzero(grown)
    lab = grown[rr, cc]
    peak = np.zeros(n + 1)
    np.maximum.at(peak, lab, image[rr, cc])
    keep = peak[lab] >= seed
    if not keep.any():
        return None
    return rr[keep], cc[keep], np.unique(lab[keep], return_inverse=True)[1]


def _without_lines(filled: np.ndarray, bins: tuple, table: dict[str, np.ndarray], which: np.ndarray, seen: tuple,
                   *, seed_snr: float, grow_snr: float) -> tuple[list, list, np.ndarray]:
    """New candidate lines (bright, then faint) once the ``which`` lines of ``table`` (satellites, columns) are
    masked over SAT_BAND px plus three of their widths either side, and that masked image.

    A trail crossing a satellite joins its region, so it is looked for again with the satellite's pixels gone.
    Lines already among ``seen`` (the first pass's bright and faint candidates) are not returned again.
    """
    sums, counts, sigma_bin = bins[4], bins[5], bins[6]
    h, w = filled.shape
    hit = np.zeros(h * w, dtype=bool)
    for i in np.flatnonzero(which):
        c, s = math.cos(math.radians(table["angle"][i])), math.sin(math.radians(table["angle"][i]))
        half = 0.5 * table["length"][i] + SAT_BAND
        t = np.arange(-half, half + 1.0)
        hw = SAT_BAND + 3.0 * table["width"][i]
        u = np.arange(-hw, hw + 0.5, 0.5)
        px = np.rint(table["x"][i] + t[:, None] * c - u[None, :] * s).astype(np.int64).ravel()
        py = np.rint(table["y"][i] + t[:, None] * s + u[None, :] * c).astype(np.int64).ravel()
        inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
        hit[py[inside] * w + px[inside]] = True
    r, c = np.divmod(np.flatnonzero(hit), w)
    masked = filled.copy()
    values = masked[r, c].astype(np.float64)
    was = values != 0.0
    masked[r, c] = 0.0
    hb, wb = sums.shape
    binned = (r // BIN < hb) & (c // BIN < wb)
    b = (r[binned] // BIN) * wb + c[binned] // BIN
    sums = sums - np.bincount(b, values[binned], minlength=hb * wb).reshape(hb, wb).astype(np.float32)
    counts = counts - np.bincount(b, was[binned], minlength=hb * wb).reshape(hb, wb).astype(counts.dtype)
    lines, _ = _binned_lines(sums, counts, sigma_bin, seed_snr=seed_snr, grow_snr=grow_snr)
    idx = np.flatnonzero(which)
    out = []
    for group, old in ((lines, seen[0]), (_faint_lines(sums, counts, sigma_bin), seen[1])):
        group = _new_lines(group, old)
        if group:  # elsewhere nothing changed: only lines reaching a masked band can be new
            gx, gy, _, gh = (np.array(v, dtype=np.float64) for v in zip(*group))
            d = _off_line(gx[:, None], gy[:, None], table["x"][idx][None, :], table["y"][idx][None, :],
                          table["angle"][idx][None, :])
            reach = gh[:, None] + SAT_BAND + 3.0 * table["width"][idx][None, :] + 2.0 * BIN
            group = [line for line, close in zip(group, (d <= reach).any(axis=1)) if close]
        out.append(group)
    return out[0], out[1], masked


def _off_line(x: np.ndarray, y: np.ndarray, lx: np.ndarray, ly: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Distance (px) of points (x, y) from the infinite lines through (lx, ly) at ``angle`` deg (broadcast)."""
    theta = np.deg2rad(angle)
    return np.abs(-(x - lx) * np.sin(theta) + (y - ly) * np.cos(theta))


def _new_lines(lines: list, old: list, *, shift: float = 3.0, turn: float = 3.0, stretch: float = 0.15) -> list:
    """The ``lines`` matching none of ``old`` (centre within ``shift`` px, direction within ``turn`` deg and
    half-length within ``stretch`` of it): the regions masking did not change give the same line again."""
    if not lines or not old:
        return list(lines)
    a, b = np.array(lines, dtype=np.float64), np.array(old, dtype=np.float64)
    near = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1]) <= shift
    turned = np.abs((a[:, None, 2] - b[None, :, 2] + 90.0) % 180.0 - 90.0) <= turn
    same = near & turned & (np.abs(a[:, None, 3] - b[None, :, 3]) <= stretch * b[None, :, 3] + 1.0)
    return [line for line, known in zip(lines, same.any(axis=1)) if not known]


def _faint_lines(sums: np.ndarray, counts: np.ndarray, sigma_bin: float) -> list:
    """Candidate lines of faint long trails: 8 x 8 px bins, clipped at LINE_CLIP sigma (so bright point sources
    weigh no more than a faint trail's bin), summed along LINE_TAPS bins in each of LINE_ANGLES directions; regions
    above LINE_GROW holding a bin above LINE_SEED (robust SNR of the best direction) give one line each."""
    h2, w2 = sums.shape[0] // 2, sums.shape[1] // 2
    s2 = _block_sum(sums[:2 * h2, :2 * w2], 2)
    n2 = _block_sum(counts[:2 * h2, :2 * w2].astype(np.int32), 2)
    z = (s2 / (2.0 * sigma_bin * np.sqrt(np.maximum(n2, 1) / (4 * BIN * BIN)))).astype(np.float32)
    z[n2 == 0] = 0.0
    np.clip(z, -LINE_CLIP, LINE_CLIP, out=z)
    half = LINE_TAPS // 2
    pad = np.pad(z, half)
    best = np.full(z.shape, -np.inf, dtype=np.float32)
    best_angle = np.zeros(z.shape, dtype=np.float32)
    acc = np.empty_like(z)
    for a in np.arange(LINE_ANGLES) * (180.0 / LINE_ANGLES):
        c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
        acc.fill(0.0)
        for k in range(-half, half + 1):
            dx, dy = int(round(k * c)), int(round(k * s))
            acc += pad[half + dy:half + dy + z.shape[0], half + dx:half + dx + z.shape[1]]
        better = acc > best
        best[better] = acc[better]
        best_angle[better] = a
    sample = best[::2, ::2]
    best = (best - np.median(sample)) / _robust_sigma(sample)
    regions = _hysteresis(best, grow=LINE_GROW, seed=LINE_SEED)
    if regions is None:
        return []
    rr, cc, inv = regions
    wgt = best[rr, cc].astype(np.float64)
    sw = np.bincount(inv, wgt)
    mx, my = np.bincount(inv, wgt * cc) / sw, np.bincount(inv, wgt * rr) / sw
    theta = np.deg2rad(2.0 * best_angle[rr, cc].astype(np.float64))  # direction: circular mean of doubled angles
    angle = 0.5 * np.degrees(np.arctan2(np.bincount(inv, wgt * np.sin(theta)),
                                        np.bincount(inv, wgt * np.cos(theta)))) % 180.0
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    along = (cc - mx[inv]) * c[inv] + (rr - my[inv]) * s[inv]
    t_lo, t_hi = np.full(sw.size, np.inf), np.full(sw.size, -np.inf)
    np.minimum.at(t_lo, inv, along)
    np.maximum.at(t_hi, inv, along)
    step = 2 * BIN
    x = (mx + 0.5 * (t_lo + t_hi) * c + 0.5) * step - 0.5
    y = (my + 0.5 * (t_lo + t_hi) * s + 0.5) * step - 0.5
    half_length = 0.5 * (t_hi - t_lo + 1.0) * step
    return [line for line in zip(x, y, angle, half_length)]


def _lines_from_bins(rr: np.ndarray, cc: np.ndarray, inv: np.ndarray, z: np.ndarray) -> list:
    """One line per group of bins (``inv`` = 0..K-1): SNR-weighted centre, principal direction and extent, in px."""
    wgt = np.maximum(z[rr, cc], 0.0) + 1e-3
    sw = np.bincount(inv, wgt)
    mx, my = np.bincount(inv, wgt * cc) / sw, np.bincount(inv, wgt * rr) / sw
    dx, dy = cc - mx[inv], rr - my[inv]
    sxx, syy, sxy = (np.bincount(inv, wgt * v) / sw for v in (dx * dx, dy * dy, dx * dy))
    angle = 0.5 * np.degrees(np.arctan2(2.0 * sxy, sxx - syy)) % 180.0
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    along = dx * c[inv] + dy * s[inv]
    t_lo, t_hi = np.full(sw.size, np.inf), np.full(sw.size, -np.inf)
    np.minimum.at(t_lo, inv, along)
    np.maximum.at(t_hi, inv, along)
    centre = 0.5 * (t_lo + t_hi)
    x = (mx + centre * c + 0.5) * BIN - 0.5  # bin (i) covers px BIN i .. BIN i + BIN - 1
    y = (my + centre * s + 0.5) * BIN - 0.5
    half = 0.5 * (t_hi - t_lo + 1.0) * BIN
    return list(zip(x, y, angle, half))


def _split(bins: tuple, index: int, row: dict) -> list:
    """Lines in what is left of a large region once the line measured in it is taken out (a trail crossing a
    satellite, a bleed or another trail joins their regions): the region's bins farther than 3 bins from the
    measured line, regrouped by connectivity."""
    rr, cc, inv, z = bins[:4]
    sel = inv == index
    r, c = rr[sel], cc[sel]
    ca, sa = math.cos(math.radians(row["angle"])), math.sin(math.radians(row["angle"]))
    px, py = (c + 0.5) * BIN - 0.5, (r + 0.5) * BIN - 0.5
    d = np.abs(-(px - row["x"]) * sa + (py - row["y"]) * ca)
    band = max(3.0 * BIN + row["width"], 3.0 * float(np.median(d)))  # a bright streak's region is wide
    far = d > band
    if far.sum() < 3:
        return []
    r, c = r[far], c[far]
    mask = np.zeros((r.max() - r.min() + 1, c.max() - c.min() + 1), dtype=bool)
    mask[r - r.min(), c - c.min()] = True
    groups, n = ndimage.label(mask, structure=np.ones((3, 3)))
    group = groups[r - r.min(), c - c.min()] - 1
    big = np.bincount(group, minlength=n)[group] >= 3  # single bins beside a streak are its halo
    if not big.any():
        return []
    r, c, group = r[big], c[big], np.unique(group[big], return_inverse=True)[1]
    parts = _lines_from_bins(r, c, group, z)
    # pieces parallel to the measured line and close to it are that line again
    return [p for p in parts if abs((p[2] - row["angle"] + 90.0) % 180.0 - 90.0) > 10.0
            or abs(-(p[0] - row["x"]) * sa + (p[1] - row["y"]) * ca) > band + 10.0]


def _elongated(filled: np.ndarray, noise: float, lines: list, *, radius: int = 8, compact: float = 12.0) -> np.ndarray:
    """(K,) bool: keep the line; compact candidates (half-length <= ``compact`` px) only when their pixels above
    2 sigma are elongated (major / minor second moment >= 2), which point sources, hot pixels and most cosmic
    rays are not."""
    keep = np.ones(len(lines), dtype=bool)
    small = np.flatnonzero([line[3] <= compact for line in lines])
    if small.size == 0:
        return keep
    h, w = filled.shape
    xc = np.rint([lines[i][0] for i in small]).astype(np.int64)
    yc = np.rint([lines[i][1] for i in small]).astype(np.int64)
    off = np.arange(-radius, radius + 1)
    rr = np.clip(yc[:, None, None] + off[None, :, None], 0, h - 1)
    cc = np.clip(xc[:, None, None] + off[None, None, :], 0, w - 1)
    v = filled[rr, cc].astype(np.float64)
    wgt = np.where(v > 2.0 * noise, v, 0.0)
    sw = wgt.sum(axis=(1, 2))
    oy, ox = np.broadcast_arrays(off[None, :, None].astype(np.float64), off[None, None, :].astype(np.float64))
    safe = np.maximum(sw, 1e-12)
    mx, my = (wgt * ox).sum(axis=(1, 2)) / safe, (wgt * oy).sum(axis=(1, 2)) / safe
    dx, dy = ox - mx[:, None, None], oy - my[:, None, None]
    sxx, syy, sxy = ((wgt * a * b).sum(axis=(1, 2)) / safe for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    root = np.sqrt(0.25 * (sxx - syy) ** 2 + sxy ** 2)
    major, minor = 0.5 * (sxx + syy) + root, 0.5 * (sxx + syy) - root
    keep[small] = (sw > 0) & (major >= 2.0 * np.maximum(minor, 0.25))
    return keep


def _sample(filled: np.ndarray, x: float, y: float, angle: float, t: np.ndarray,
            s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of the image on the rotated grid (t along, s across the line) and their validity."""
    c, sn = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    px = x + t[:, None] * c - s[None, :] * sn
    py = y + t[:, None] * sn + s[None, :] * c
    h, w = filled.shape
    valid = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    px, py = np.clip(px, 0, w - 1.001), np.clip(py, 0, h - 1.001)
    x0, y0 = px.astype(np.int64), py.astype(np.int64)
    fx, fy = (px - x0).astype(np.float32), (py - y0).astype(np.float32)
    flat = filled.reshape(-1)
    index = y0 * w + x0
    v00, v01, v10, v11 = flat[index], flat[index + 1], flat[index + w], flat[index + w + 1]
    top = v00 + fx * (v01 - v00)
    v = top + fy * (v10 + fx * (v11 - v10) - top)
    valid &= v00 != 0  # NaN pixels were filled with exact zeros
    return np.where(valid, v, 0.0), valid


def _outside(t: np.ndarray, x: float, y: float, angle: float,
             exclude: tuple[float, float, float, float] | None) -> np.ndarray:
    """(T,) bool: samples along the line farther than ``exclude``'s half-width from its line (all when None), so a
    trail crossing a satellite is measured without the satellite's pixels."""
    if exclude is None:
        return np.ones(t.shape, dtype=bool)
    ex, ey, ea, width = exclude
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    ca, sa = math.cos(math.radians(ea)), math.sin(math.radians(ea))
    return np.abs(-(x + t * c - ex) * sa + (y + t * s - ey) * ca) > width


def _median(values: np.ndarray) -> float:
    """Median of a small 1-D array (np.median's overhead is most of the cost at this size)."""
    n = values.size
    part = np.partition(values, [(n - 1) // 2, n // 2])
    return 0.5 * float(part[(n - 1) // 2] + part[n // 2])


@functools.lru_cache(maxsize=64)
def _lower(n: int) -> np.ndarray:
    """(n, n) bool: the lower triangle with the diagonal (runs that end before they start)."""
    return np.tri(n, dtype=bool)


def _best_box(track: np.ndarray, seen: np.ndarray, sigma: float, level: float = np.inf) -> tuple[int, int, float]:
    """First and last sample of the run maximising sum / sqrt(samples seen) (a top-hat matched filter), and that SNR.

    Samples are clipped at ``level`` first (see :func:`_measure`), so a cosmic ray or a star residual lying on a
    fainter trail does not become the best run by itself."""
    c = np.r_[0.0, np.cumsum(np.where(seen, np.minimum(track, level), 0.0))]
    n = np.r_[0.0, np.cumsum(seen)]
    total = (c[None, :] - c[:, None]) / np.sqrt(np.maximum(n[None, :] - n[:, None], 1.0))
    total[_lower(c.size)] = -np.inf
    i, j = np.unravel_index(int(np.argmax(total)), total.shape)
    return int(i), int(j) - 1, float(total[i, j]) / sigma


def _measure(filled: np.ndarray, noise: float, x: float, y: float, angle: float, half: float, *,
             max_length: float, exclude: tuple[float, float, float, float] | None = None,
             min_length: float = 0.0, min_snr: float = 0.0, reach: float = 24.0) -> dict | None:
    """Refine one candidate line on the full image: centre line, angle, width, end points, flux and SNR."""
    s = np.arange(-HALF_WIDTH, HALF_WIDTH + 1, dtype=np.float64)
    sigma_track = noise * math.sqrt(s.size)
    half = max(half, 4.0)
    extent = half + reach
    for _ in range(6):
        step = max(1, int(math.ceil(2.0 * extent / 300.0)))  # keeps the box search at <= 300^2 pairs
        t = np.arange(-extent, extent + 1.0, step)
        vals, valid = _sample(filled, x, y, angle, t, s)
        seen = (valid.mean(axis=1) > 0.5) & _outside(t, x, y, angle, exclude)
        if seen.sum() < 4:
            return None
        vals = vals * seen[:, None]
        # centre line and direction: cross-track centroid of the signal over the current extent
        core = np.abs(t) <= half
        weights = np.maximum(vals[core], 0.0)
        wsum = weights.sum(axis=1)
        use = wsum > 0
        offset = np.divide((weights * s[None, :]).sum(axis=1), wsum, out=np.zeros_like(wsum), where=use)
        tt = t[core]
        slope, icpt = 0.0, 0.0
        if use.sum() >= 4 and np.ptp(tt[use]) > 6:
            slope, icpt = np.polyfit(tt[use], offset[use], 1, w=wsum[use])
        elif use.any():
            icpt = float(np.average(offset[use], weights=wsum[use]))
        slope, icpt = float(np.clip(slope, -0.2, 0.2)), float(np.clip(icpt, -1.5, 1.5))
        c, sn = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        x, y = x - icpt * sn, y + icpt * c
        angle = (angle + math.degrees(math.atan(slope))) % 180.0
        track = vals.sum(axis=1)
        sigma_step = sigma_track * math.sqrt(step)
        middle = track[core & seen]
        level = max(BOX_CLIP * sigma_step, BOX_RELATIVE * _median(middle)) if middle.size else np.inf
        i, j, box_snr = _best_box(track, seen, sigma_step, level)
        if box_snr < 0.5 * min_snr:  # cannot reach min_snr: stop before the costly measurements
            return None
        inside = np.flatnonzero(seen[i:j + 1])  # unseen (masked, outside) samples add nothing: trim them
        if inside.size == 0:
            return None
        i, j = i + int(inside[0]), i + int(inside[-1])
        t1, t2 = float(t[i]) - 0.5 * (step - 1), float(t[j]) + 0.5 * (step - 1)
        c, sn = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        mid = 0.5 * (t1 + t2)
        x, y = x + mid * c, y + mid * sn
        open_end = (i == 0 and seen[0]) or (j == t.size - 1 and seen[-1])
        moved = abs(slope) > 0.005 or abs(icpt) > 0.2 or abs(0.5 * (t2 - t1) - half) > 2.0
        half = max(0.5 * (t2 - t1), 1.0)
        if open_end and 2.0 * half < max_length:
            extent = 2.0 * extent
        elif moved:
            extent = half + 24.0
        else:
            break
    if 2.0 * half < min_length:
        return None
    t = np.arange(-half, half + 1.0)
    vals, valid = _sample(filled, x, y, angle, t, s)
    seen = (valid.mean(axis=1) > 0.5) & _outside(t, x, y, angle, exclude)
    block = vals * seen[:, None]
    profile = block.sum(axis=0)
    pos = np.maximum(profile - np.median(profile[[0, 1, -2, -1]]), 0.0)
    width = 2.3548 * math.sqrt(float((pos * s * s).sum() / pos.sum())) if pos.sum() > 0 else 0.0
    sig = min(max(width, 1.0), 4.0) / 2.3548
    g = np.exp(-0.5 * (s / sig) ** 2)
    n_seen = int(seen.sum())
    flux = float(block[:, np.abs(s) <= 3].sum())
    per_sample = (block * g[None, :]).sum(axis=1)
    sigma_sample = noise * math.sqrt(float((g * g).sum()))
    level = max(BOX_CLIP * sigma_sample, BOX_RELATIVE * _median(per_sample[seen])) if n_seen else np.inf
    snr = float(np.minimum(per_sample, level).sum() / (sigma_sample * math.sqrt(max(n_seen, 1))))
    c, sn = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    length = 2.0 * half
    x1, y1, x2, y2 = x - half * c, y - half * sn, x + half * c, y + half * sn
    ends = [_at_edge(filled, xe, ye, c * sign, sn * sign) for xe, ye, sign in ((x1, y1, -1.0), (x2, y2, 1.0))]
    opened = [at and _open_end(filled, xe, ye, c * sign, sn * sign)
              for at, (xe, ye, sign) in zip(ends, ((x1, y1, -1.0), (x2, y2, 1.0)))]
    beyond = [_beyond(filled, noise, x, y, angle, sign * (half + 6.0)) for sign in (-1.0, 1.0)]
    gaps = _gaps(block[:, np.abs(s) <= 3], seen, noise)
    return {"x": x, "y": y, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "length": length, "angle": angle,
            "flux": flux, "snr": snr, "width": width, "rate": np.nan, "pa": np.nan, "edges": float(sum(ends)),
            "open": float(sum(opened)),
            "beyond1": beyond[0], "beyond2": beyond[1], "sharp": _sharpness(filled, x1, y1, x2, y2, angle),
            "gaps": gaps}


def _gaps(block: np.ndarray, seen: np.ndarray, noise: float, chunk: int = 10) -> float:
    """Share of the line's 10 px pieces holding under a quarter of the mean piece's flux (a trail: ~0; blobs in a
    row or a dashed streak: most); NaN when the pieces are too faint to tell (mean piece SNR < 3)."""
    sums = block.sum(axis=1)[seen]
    n = sums.size // chunk
    if n < 3:
        return float("nan")
    pieces = sums[:n * chunk].reshape(n, chunk).sum(axis=1)
    mean = float(pieces.mean())
    sigma = noise * math.sqrt(chunk * block.shape[1])
    if mean < 3.0 * sigma:
        return float("nan")
    return float((pieces < 0.25 * mean).mean())


def _beyond(filled: np.ndarray, noise: float, x: float, y: float, angle: float, start: float,
            stretch: float = 300.0) -> float:
    """SNR of the signal on the same line over ``stretch`` px past an end point (NaN when under 20 px are visible):
    an asteroid's trail stops inside the exposure, a satellite's line goes on (dashed or not)."""
    sign = 1.0 if start >= 0 else -1.0
    t = start + sign * np.arange(0.0, stretch)
    s = np.arange(-2.0, 3.0)
    vals, valid = _sample(filled, x, y, angle, t, s)
    seen = valid.all(axis=1)
    if seen.sum() < 20:
        return float("nan")
    return float(vals[seen].sum() / (noise * math.sqrt(seen.sum() * s.size)))


def _sharpness(filled: np.ndarray, x1: float, y1: float, x2: float, y2: float, angle: float) -> float:
    """Share of a near-vertical line's flux in its brightest pixel column (bad column ~1, PSF ~0.4); else 0."""
    if abs(angle - 90.0) > 2.0:
        return 0.0
    h, w = filled.shape
    r0, r1 = int(np.clip(min(y1, y2), 0, h - 1)), int(np.clip(max(y1, y2), 0, h - 1)) + 1
    xc = int(np.clip(round(0.5 * (x1 + x2)), 3, w - 4))
    profile = np.maximum(filled[r0:r1, xc - 3:xc + 4].sum(axis=0, dtype=np.float64), 0.0)
    return float(profile.max() / profile.sum()) if profile.sum() > 0 else 0.0


def _at_edge(filled: np.ndarray, x: float, y: float, c: float, s: float, margin: float = 12.0) -> bool:
    """True when the line leaves the image or enters masked pixels within ``margin`` px beyond (x, y)."""
    h, w = filled.shape
    steps = np.arange(1.0, margin + 1.0)
    px, py = np.rint(x + steps * c).astype(np.int64), np.rint(y + steps * s).astype(np.int64)
    outside = (px < 0) | (px >= w) | (py < 0) | (py >= h)
    if outside.any():
        return True
    return bool((filled[py, px] == 0).any())


def _open_end(filled: np.ndarray, x: float, y: float, c: float, s: float) -> bool:
    """True when nothing but masked pixels lies beyond (x, y) along (c, s) up to the image edge: the line's
    visible part ends where the data does (a satellite clipping a corner or a dead border), not on the sky."""
    h, w = filled.shape
    steps = np.arange(1.0, float(h + w), 2.0)
    px, py = np.rint(x + steps * c).astype(np.int64), np.rint(y + steps * s).astype(np.int64)
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    return not bool((filled[py[inside], px[inside]] != 0).any())


def _joins(rows: list[dict], *, min_length: float, max_gap: float = 80.0) -> list:
    """Lines through pairs of faint (SNR < JOIN_SNR) collinear pieces (direction within 5 deg, offset within 6 px) less than ``max_gap`` px
    apart along their line: one faint trail measured as two pieces. The direction is the one between the pieces'
    midpoints, more precise than either piece's own."""
    pieces = [r for r in rows if r["length"] >= min_length and r["snr"] < JOIN_SNR]
    if len(pieces) < 2:
        return []
    x, y, angle, length = (np.array([r[k] for r in pieces]) for k in ("x", "y", "angle", "length"))
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    dx, dy = x[None, :] - x[:, None], y[None, :] - y[:, None]
    along = np.abs(dx * c[:, None] + dy * s[:, None])
    perp = np.abs(-dx * s[:, None] + dy * c[:, None])
    dang = np.abs((angle[:, None] - angle[None, :] + 90.0) % 180.0 - 90.0)
    gap = along - 0.5 * (length[:, None] + length[None, :])
    near = (gap > -0.25 * np.minimum(length[:, None], length[None, :])) & (gap <= max_gap)
    i, j = np.nonzero(np.triu((dang <= 5.0) & (perp <= 6.0) & near, k=1))
    between = np.degrees(np.arctan2(y[j] - y[i], x[j] - x[i])) % 180.0
    half = 0.5 * (along[i, j] + 0.5 * (length[i] + length[j]))
    return list(zip(0.5 * (x[i] + x[j]), 0.5 * (y[i] + y[j]), between, half))


def _dedupe(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop lines measured twice (two regions of one trail converge on the same line): keep the higher SNR."""
    n = table["x"].size
    if n < 2:
        return table
    order = np.argsort(-table["snr"], kind="stable")
    keep = np.ones(n, dtype=bool)
    for i_pos, i in enumerate(order):
        if not keep[i]:
            continue
        rest = order[i_pos + 1:]
        rest = rest[keep[rest]]
        if rest.size == 0:
            break
        d = point_segment_distance(table["x"][rest], table["y"][rest], table["x1"][i], table["y1"][i],
                                   table["x2"][i], table["y2"][i])
        dang = np.abs((table["angle"][rest] - table["angle"][i] + 90.0) % 180.0 - 90.0)
        keep[rest[(d <= 3.0 + 0.5 * table["width"][i]) & ((dang <= 10.0) | (table["length"][rest] < 10.0))]] = False
    return {k: v[keep] for k, v in table.items()}


def _classify(table: dict[str, np.ndarray], shape: tuple[int, int], *, min_snr: float, short_length: float,
              short_snr: float, min_length: float,
              min_elongation: float, max_length: float, min_width: float, max_width: float) -> np.ndarray:
    """Reason code per line: 0 trail, 1 satellite, 2 column, 3 short, 4 faint, 5 width, 6 dashed."""
    n = table["x"].size
    reason = np.zeros(n, dtype=np.int64)
    if n == 0:
        return reason
    length, width, angle = table["length"], table["width"], table["angle"]
    dashed = np.zeros(n, dtype=bool)
    if n >= 3:  # three or more pieces on one line: a dashed or flaring satellite broken into segments
        dang = np.abs((angle[:, None] - angle[None, :] + 90.0) % 180.0 - 90.0)
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        perp = np.abs(-(table["x"][None, :] - table["x"][:, None]) * s[:, None]
                      + (table["y"][None, :] - table["y"][:, None]) * c[:, None])
        along = np.abs((table["x"][None, :] - table["x"][:, None]) * c[:, None]
                       + (table["y"][None, :] - table["y"][:, None]) * s[:, None])
        disjoint = along > 0.5 * (length[:, None] + length[None, :])  # dashes; overlapping pieces are one line
        collinear = (dang <= 3.0) & (perp <= 6.0) & (length[None, :] >= min_length) & disjoint
        dashed = collinear.sum(axis=1) >= 2
    dashed |= table["gaps"] > 0.3
    crossing = ((table["edges"] >= 2) & (length >= 0.5 * max_length)) | (table["open"] >= 2)
    b1, b2 = table["beyond1"], table["beyond2"]
    continues = ((b1 > 5.0) & ((b2 > 5.0) | np.isnan(b2))) | ((b2 > 5.0) & np.isnan(b1))
    crossing |= continues & (length >= min_length)
    column = (table["sharp"] > 0.55) | ((np.abs(angle - 90.0) <= 1.0) & (width < 1.5 * min_width))
    reason[(table["snr"] < min_snr) | ((length < short_length) & (table["snr"] < short_snr))] = 4
    reason[(length < min_length) | (length < min_elongation * np.maximum(width, 1.0))] = 3
    reason[(width < min_width) | (width > max_width)] = 5
    reason[dashed] = 6
    reason[column] = 2
    satellite = crossing | (length > max_length)
    reason[satellite] = 1
    lines = np.flatnonzero(satellite | column)
    if lines.size:  # pieces of a satellite or column (a flare, a dash, an end) belong to it
        d = _off_line(table["x"][:, None], table["y"][:, None], table["x"][lines][None, :], table["y"][lines][None, :],
                      angle[lines][None, :])
        dang = np.abs((angle[:, None] - angle[lines][None, :] + 90.0) % 180.0 - 90.0)
        on_segment = point_segment_distance(table["x"][:, None], table["y"][:, None],
                                            *(table[k][lines][None, :] for k in ("x1", "y1", "x2", "y2")))
        part = ((((d <= 8.0 + table["width"][lines][None, :]) & (dang <= 5.0)) | (on_segment <= 12.0))
                & (np.arange(n)[:, None] != lines[None, :])).any(axis=1)
        reason[part & (reason == 0)] = np.where(column[part & (reason == 0)], 2, 1)
    return reason
