"""Model inputs from cached cutouts: channel choice, normalisation, dihedral and fading augmentation.

Shared by training (the DataModule) and inference (the detector), so both see the same numbers.
Pure functions: arrays in, new arrays out.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from neocascade.preprocess.filters import gaussian_kernel1d
from neocascade.preprocess.noise import MAD_TO_SIGMA

CHANNELS = ("filtered", "raw")  # order of the cached cutout channels
NORMALIZATIONS = ("none", "image_noise", "local_noise", "cutout", "snr")


def channel_indices(channels: Sequence[str]) -> list[int]:
    """Positions of ``channels`` in the cached (filtered, raw) pair; ValueError naming ``channels``."""
    if isinstance(channels, str) or not isinstance(channels, Sequence) or len(channels) == 0:
        raise ValueError(f"channels: must be a non-empty list drawn from {list(CHANNELS)}, got {channels!r}")
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ValueError(f"channels: unknown channel {unknown[0]!r} (expected some of {list(CHANNELS)})")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels: a channel is repeated, got {list(channels)}")
    return [CHANNELS.index(c) for c in channels]


def assemble_inputs(
    cutouts: np.ndarray,
    *,
    channels: Sequence[str],
    normalize: str,
    image_noise: np.ndarray | None = None,
    local_noise: np.ndarray | None = None,
) -> np.ndarray:
    """Pick channels from cached cutouts and normalise them into model inputs.

    Parameters
    ----------
    cutouts : (N, 2, S, S) float array
        Channel 0 the filtered image, channel 1 the raw (unfiltered) one, in DN, NaN already 0.
    channels : sequence of {'filtered', 'raw'}
        Input channels, in this order.
    normalize : {'none', 'image_noise', 'local_noise', 'cutout', 'snr'}
        ``none`` keeps DN (the seed); ``image_noise`` divides each cutout by its image's robust
        noise; ``local_noise`` by the noise around the candidate; ``cutout`` maps each cutout and
        channel to ``(x - median) / (1.4826 MAD)`` of its own pixels; ``snr`` puts each channel in
        units of its own noise: the filtered channel over ``local_noise`` (the selector's SNR, whatever
        the noise's correlation or its variation across the image), the raw channel over ``image_noise``.
    image_noise, local_noise : (N,) float arrays or floats, optional
        Noise in DN per cutout (a float applies to all, e.g. one image's noise): ``image_noise`` the raw
        image's robust noise, ``local_noise`` the filtered image's around the candidate; required by the
        matching ``normalize`` mode (``snr``: both).

    Returns
    -------
    (N, C, S, S) float32 array
        A new array; the input is never modified.

    Notes
    -----
    A scale that is zero, negative or not finite (a cutout of a dead border is all zeros, so its
    MAD is 0) is replaced by 1: such a cutout is only shifted (``cutout``) or left as it is.
    """
    cutouts = np.asarray(cutouts)
    if cutouts.ndim != 4 or cutouts.shape[1] != len(CHANNELS) or cutouts.shape[2] != cutouts.shape[3]:
        raise ValueError(f"cutouts: must have shape (N, 2, S, S), got {cutouts.shape}")
    picks = channel_indices(channels)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize: must be one of {list(NORMALIZATIONS)}, got {normalize!r}")
    n = cutouts.shape[0]
    needs = {"image_noise": ("image_noise",), "local_noise": ("local_noise",),
             "snr": ("local_noise", "image_noise")}.get(normalize, ())
    given = {"image_noise": image_noise, "local_noise": local_noise}
    scales = []
    for name in needs:
        if given[name] is None:
            raise ValueError(f"{name}: required when normalize={normalize!r}")
        noise = np.asarray(given[name], dtype=np.float64)
        if noise.shape not in ((), (n,)):
            raise ValueError(f"{name}: must be a float or have shape ({n},) like cutouts, got {noise.shape}")
        scales.append(np.broadcast_to(noise, (n,)))
    scale = np.stack(scales, axis=1)[:, picks] if normalize == "snr" else (scales[0] if scales else None)
    return _assemble(cutouts, picks, normalize, scale)


def _assemble(cutouts: np.ndarray, picks: list[int], normalize: str, scale: np.ndarray | None) -> np.ndarray:
    """Core of :func:`assemble_inputs` for checked arguments; ``scale`` is (N,) or, per picked channel, (N, C)."""
    x = cutouts[:, picks].astype(np.float32)
    if normalize == "none":
        return x
    if normalize == "cutout":
        flat = x.reshape(*x.shape[:2], x.shape[2] * x.shape[3])  # explicit: -1 cannot size an empty batch
        median = np.median(flat, axis=2, keepdims=True)
        mad = np.median(np.abs(flat - median), axis=2, keepdims=True)
        sigma = _safe_scale(MAD_TO_SIGMA * mad)
        return ((flat - median) / sigma).astype(np.float32).reshape(x.shape)
    scale = _safe_scale(scale)
    return (x / scale.reshape(scale.shape + (1,) * (4 - scale.ndim))).astype(np.float32)


def _safe_scale(scale: np.ndarray) -> np.ndarray:
    """Scales with non-positive or non-finite entries replaced by 1."""
    scale = np.asarray(scale, dtype=np.float32)
    return np.where(np.isfinite(scale) & (scale > 0), scale, np.float32(1.0))


def dihedral(x: Any, code: int) -> Any:
    """One of the 8 symmetries of the square on the last two axes: ``code % 4`` quarter turns, then a flip if ``code >= 4``."""
    if not 0 <= code < 8:
        raise ValueError(f"code: must be in [0, 8), got {code}")
    if _is_torch(x):
        out = x.rot90(code % 4, dims=(-2, -1))
        return out.flip(-1) if code >= 4 else out
    out = np.rot90(x, code % 4, axes=(-2, -1))
    return np.flip(out, axis=-1) if code >= 4 else out


def augment(x: Any, rng: np.random.Generator, *, codes: np.ndarray | None = None) -> Any:
    """Apply a random flip / quarter-turn to each sample of a batch.

    Parameters
    ----------
    x : (N, C, S, S) numpy array or torch tensor
        Square samples; every channel of a sample gets the same transform.
    rng : np.random.Generator
        Draws one of the 8 dihedral transforms per sample.
    codes : (N,) int array, optional
        The transforms to apply instead of drawing them (see :func:`dihedral`).

    Returns
    -------
    Same type and shape as ``x``
        A new array or tensor; labels are unchanged by construction (the transforms keep the centre).

    Notes
    -----
    Vectorised per group: samples sharing a transform are turned together, so at most 8 array
    operations run per batch.
    """
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[-1] != shape[-2]:
        raise ValueError(f"x: must have shape (N, C, S, S), got {shape}")
    if codes is None:
        codes = rng.integers(0, 8, size=shape[0])
    codes = np.asarray(codes)
    if codes.shape != (shape[0],):
        raise ValueError(f"codes: must have shape ({shape[0]},), got {codes.shape}")
    out = x.clone() if _is_torch(x) else np.array(x, copy=True)
    for code in np.unique(codes):
        if code == 0:
            continue
        where = np.flatnonzero(codes == code)
        if _is_torch(x):
            import torch

            idx = torch.as_tensor(where, device=x.device)
            out[idx] = dihedral(x[idx], int(code))
        else:
            out[where] = dihedral(x[where], int(code))
    return out


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def fade(
    cutouts: np.ndarray,
    *,
    noise: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    probability: float = 0.5,
    min_scale: float = 0.1,
    min_snr: float = 5.0,
    match_correlation: bool = False,
) -> np.ndarray:
    """Make random cutouts look like fainter copies of themselves: scale the signal, restore the noise.

    A cutout ``x`` in DN becomes ``a x + sqrt(1 - a^2) n``, with ``n`` fresh white noise of the image's
    level (raw channel) and the same noise through the Gaussian filter (filtered channel), so the noise of
    the result has the original level and the source is ``a`` times fainter. This grows the faint end of the
    training set (where the seed misses most, and where real ZTF asteroids sit) without new simulations.

    Parameters
    ----------
    cutouts : (N, 2, S, S) float array
        Cached (filtered, raw) cutouts in DN, NaN already 0.
    noise : (N,) float array
        Robust noise of each cutout's raw image in DN.
    sigma : float
        The Gaussian filter's sigma in px (the filtered channel's).
    rng : np.random.Generator
    probability : float
        Share of cutouts faded.
    min_scale : float
        Smallest flux scale ``a``; ``a`` is log-uniform in ``[max(min_scale, min_snr / snr), 1]``.
    min_snr : float
        A faded source keeps at least this filtered centre SNR, so no positive fades into pure noise
        (its label would be wrong); a cutout already below it is left as it is.
    match_correlation : bool
        Give the fresh noise the adjacent-pixel correlation of the cutout's own raw pixels (measured outside its
        central 7 x 7 px, clipped to [0, 0.65]) instead of white noise, so a faded cutout keeps its image's noise
        texture and the ratio of its filtered to raw noise.

    Returns
    -------
    (N, 2, S, S) float32 array
        A new array. Exact zeros of the raw channel (dead pixels) stay zero in both channels.
    """
    from scipy.ndimage import gaussian_filter as _scipy_gaussian

    x = np.array(cutouts, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != len(CHANNELS) or x.shape[2] != x.shape[3]:
        raise ValueError(f"cutouts: must have shape (N, 2, S, S), got {x.shape}")
    n, size = x.shape[0], x.shape[-1]
    noise = np.broadcast_to(np.asarray(noise, dtype=np.float64), (n,))
    if not 0.0 <= probability <= 1.0 or not 0.0 < min_scale <= 1.0 or min_snr < 0:
        raise ValueError(f"fade: need 0 <= probability <= 1, 0 < min_scale <= 1, min_snr >= 0; got "
                         f"{probability}, {min_scale}, {min_snr}")
    kernel = gaussian_kernel1d(sigma)
    filtered_noise = noise * float(np.sqrt(np.sum(np.outer(kernel, kernel) ** 2)))
    c = size // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(filtered_noise > 0, x[:, 0, c, c] / filtered_noise, 0.0)
        low = np.maximum(min_scale, np.where(snr > 0, min_snr / snr, np.inf))
    chosen = np.flatnonzero((rng.random(n) < probability) & (low < 1.0) & (noise > 0))
    if chosen.size == 0:
        return x
    a = np.exp(rng.uniform(np.log(low[chosen]), 0.0)).astype(np.float32)
    pad = len(kernel) // 2
    if match_correlation:
        white = _correlated(rng, adjacent_correlation(x[chosen, 1], noise[chosen]), size + 2 * pad)
    else:
        white = rng.standard_normal((chosen.size, size + 2 * pad, size + 2 * pad)).astype(np.float32)
    smooth = _scipy_gaussian(white, sigma=(0, sigma, sigma), mode="reflect", truncate=4.0)[:, pad:pad + size, pad:pad + size]
    white = white[:, pad:pad + size, pad:pad + size]
    extra = (np.sqrt(1.0 - a * a) * noise[chosen]).astype(np.float32)[:, None, None]
    dead = x[chosen, 1] == 0
    for channel, fresh in ((0, smooth), (1, white)):
        faded = a[:, None, None] * x[chosen, channel] + extra * fresh
        x[chosen, channel] = np.where(dead, np.float32(0.0), faded)
    return x


def adjacent_correlation(raw: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Adjacent-pixel noise correlation of each raw cutout, from its pixels outside the central 7 x 7 px.

    Pixels beyond 4 times the noise (sources, artifacts) and dead zeros are left out; pairs of horizontal and
    vertical neighbours both kept count. Returns (N,) float64 in [0, 0.65] (0 where too few pairs are left).
    """
    x = np.asarray(raw, dtype=np.float64)
    size = x.shape[-1]
    c = size // 2
    idx = np.arange(size)
    outer = ~((np.abs(idx - c) <= 3)[:, None] & (np.abs(idx - c) <= 3)[None, :])
    keep = outer[None] & (x != 0) & (np.abs(x) < 4.0 * np.asarray(noise, dtype=np.float64)[:, None, None])
    v = np.where(keep, x, 0.0)
    num = (v[:, :, :-1] * v[:, :, 1:]).sum(axis=(1, 2)) + (v[:, :-1, :] * v[:, 1:, :]).sum(axis=(1, 2))
    pairs = (keep[:, :, :-1] & keep[:, :, 1:]).sum(axis=(1, 2)) + (keep[:, :-1, :] & keep[:, 1:, :]).sum(axis=(1, 2))
    var = (v * v).sum(axis=(1, 2)) / np.maximum(keep.sum(axis=(1, 2)), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where((pairs >= 50) & (var > 0), num / np.maximum(pairs, 1) / var, 0.0)
    return np.clip(rho, 0.0, 0.65)


def _correlated(rng: np.random.Generator, rho: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) unit-variance Gaussian noise, sample ``k`` with adjacent-pixel correlation ``rho[k]``.

    White noise through the separable kernel ``[e, c, e]`` with ``c^2 + 2 e^2 = 1`` and ``2 c e = rho``
    (:func:`neocascade.simulation.noise.correlation_weights`).
    """
    from neocascade.simulation.noise import correlation_weights  # here: detection never loads the simulator

    e, c = correlation_weights(rho)
    white = rng.standard_normal((c.size, size + 2, size + 2)).astype(np.float32)
    c3, e3 = c.astype(np.float32)[:, None, None], e.astype(np.float32)[:, None, None]
    rows = c3 * white[:, 1:-1, :] + e3 * (white[:, :-2, :] + white[:, 2:, :])
    return c3 * rows[:, :, 1:-1] + e3 * (rows[:, :, :-2] + rows[:, :, 2:])
