"""Unlabelled nuisances of a difference image: subtraction residuals, saturated stars, cosmic rays,
hot pixels, bad columns, satellite streaks, real transients, masked regions and dead borders.

Every function draws from the given generator and returns what to paint, never an image:
additive :class:`Stamp` / :class:`Pixels`, or boolean :class:`Stamp` masks (True = NaN).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from neocascade.simulation.psf import PSFShape, local_fwhm, moffat, psf_profile, render_points, stamp_radius
from neocascade.simulation.streaks import line_pixels


class Stamp(NamedTuple):
    """A dense patch whose top-left pixel sits at (row0, col0); it may overhang the image edge."""

    row0: int
    col0: int
    data: np.ndarray


class Pixels(NamedTuple):
    """Sparse additive pixels inside the image (indices may repeat; values add)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray


def _empty_pixels() -> Pixels:
    """Nothing to add."""
    return Pixels(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int | None = None) -> np.ndarray:
    """Draws spread evenly in log between the bounds."""
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    return np.exp(rng.uniform(lo, hi, size))


def _psf(dx: np.ndarray, dy: np.ndarray, *, fwhm: float, beta: float, psf: PSFShape | None,
         at: tuple[float, float]) -> np.ndarray:
    """The image PSF for a source at ``at`` = (x, y): exactly :func:`moffat` when ``psf`` is None."""
    if psf is None:
        return moffat(dx, dy, fwhm=fwhm, beta=beta)
    return psf_profile(dx, dy, fwhm=float(local_fwhm(fwhm, *at, psf)), beta=beta, shape=psf)


def flux_of(magnitude: np.ndarray | float, zero_point: float) -> np.ndarray:
    """Total DN of a source: ``10**(-0.4 (m - zero_point))``."""
    return 10.0 ** (-0.4 * (np.asarray(magnitude, dtype=np.float64) - zero_point))


def star_residuals(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    n: int,
    fwhm: float,
    beta: float,
    zero_point: float,
    gain: float,
    magnitude_range: tuple[float, float],
    fraction_range: tuple[float, float],
    poisson: bool,
    psf: PSFShape | None = None,
    stars: list | None = None,
) -> list[Stamp]:
    """Imperfectly subtracted stars: dipoles (misregistration), rings (PSF mismatch), negative holes.

    Parameters
    ----------
    shape : (H, W)
        Image shape.
    rng : np.random.Generator
        Source of randomness.
    n : int
        Number of residuals.
    fwhm, beta : float
        Image PSF.
    zero_point, gain : float
        Photometric zero point and e-/DN (the star's photon noise stays in the difference).
    magnitude_range : (float, float)
        Star magnitudes, uniform.
    fraction_range : (float, float)
        Residual flux (sum of absolute values) as a fraction of the star's flux, log-uniform.
    poisson : bool
        Add the star's photon noise to the stamp.
    psf : PSFShape, optional
        Another PSF kind, ellipticity or FWHM gradient; None: round Moffat. Draws one star at a time
        (the pre-sky order); :func:`star_residual_batch` draws crowded fields at once.
    stars : list, optional
        Receives one ``(x, y, magnitude)`` per star (the reference catalogue of these stars).

    Returns
    -------
    list of Stamp
        One float32 stamp per residual; each kind has zero or negative total flux.
    """
    h, w = shape
    radius = stamp_radius(fwhm) + 4
    grid = np.arange(2 * radius + 1, dtype=np.float64)
    out = []
    for _ in range(n):
        x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        mag = rng.uniform(*magnitude_range)
        if stars is not None:
            stars.append((x, y, mag))
        flux = float(flux_of(mag, zero_point))
        fraction = float(_log_uniform(rng, fraction_range))
        col0, row0 = int(np.rint(x)) - radius, int(np.rint(y)) - radius
        dx = col0 + grid[None, :] - x
        dy = row0 + grid[:, None] - y
        star = _psf(dx, dy, fwhm=fwhm, beta=beta, psf=psf, at=(x, y))
        star /= star.sum()
        kind = rng.integers(3)
        if kind == 0:  # dipole: science and reference misregistered by a fraction of a pixel
            theta = rng.uniform(0, 2 * np.pi)
            ux, uy = 0.15 * np.cos(theta), 0.15 * np.sin(theta)
            shape_ = (_psf(dx - ux, dy - uy, fwhm=fwhm, beta=beta, psf=psf, at=(x, y))
                      - _psf(dx + ux, dy + uy, fwhm=fwhm, beta=beta, psf=psf, at=(x, y)))
        elif kind == 1:  # ring: PSF-matching kernel a little too wide or too narrow
            wider = _psf(dx, dy, fwhm=fwhm * rng.uniform(1.1, 1.4), beta=beta, psf=psf, at=(x, y))
            shape_ = (wider / wider.sum() - star) * rng.choice([-1.0, 1.0])
        else:  # hole: the star got fainter, or the reference over-subtracts
            shape_ = -star
        shape_ = shape_ / np.abs(shape_).sum()
        data = flux * fraction * shape_
        if poisson:
            data += rng.standard_normal(data.shape) * np.sqrt(flux * star / gain)
        out.append(Stamp(row0, col0, data.astype(np.float32)))
    return out


def _counts_magnitudes(rng: np.random.Generator, bounds: tuple[float, float], slope: float, n: int) -> np.ndarray:
    """Magnitudes with density ``10**(slope * m)`` on the bounds (inverse CDF); uniform when slope is 0."""
    u = rng.random(n)
    lo, hi = bounds
    if slope == 0.0 or lo == hi:
        return lo + u * (hi - lo)
    a, b = 10.0 ** (slope * (lo - hi)), 1.0
    return hi + np.log10(a + u * (b - a)) / slope


def star_field(
    shape: tuple[int, int], *, rng: np.random.Generator, n: int, magnitude_range: tuple[float, float],
    magnitude_slope: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first draws of :func:`star_residual_batch`: star ``x, y`` (px) and magnitudes, (n,) each."""
    h, w = shape
    x, y = rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)
    return x, y, _counts_magnitudes(rng, magnitude_range, magnitude_slope, n)


def star_residual_batch(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    n: int,
    fwhm: float,
    beta: float,
    zero_point: float,
    gain: float,
    magnitude_range: tuple[float, float],
    fraction_range: tuple[float, float],
    shift_range: tuple[float, float],
    poisson: bool,
    magnitude_slope: float = 0.0,
    psf: PSFShape | None = None,
    chunk: int = 512,
    pixel_noise: float = 0.0,
) -> list[Stamp]:
    """Star-subtraction residuals drawn all at once, for fields from a few to many thousands of stars.

    The same three kinds as :func:`star_residuals` (dipole, ring, hole), vectorised over the stars
    in chunks of ``chunk`` stamps, with a misregistration drawn per star from ``shift_range`` (px).

    Parameters
    ----------
    shape, rng, n, fwhm, beta, zero_point, gain, magnitude_range, fraction_range, poisson, psf
        As for :func:`star_residuals`.
    shift_range : (float, float)
        Dipole misregistration in px, uniform.
    magnitude_slope : float
        Star counts rise as ``10**(magnitude_slope * m)`` inside ``magnitude_range`` (0: uniform; ~0.3 real fields).
    chunk : int
        Stamps evaluated together (bounds memory: ``chunk * (6 fwhm + 5)**2`` floats per array).
    pixel_noise : float
        Adds an independent residual in each pixel with rms ``pixel_noise`` times the star's flux there (imperfect
        PSF matching and resampling); 0 draws nothing, so the other draws stay as they were.

    Returns
    -------
    list of Stamp
        One float32 stamp per residual, ``2 * radius + 1`` px square with ``radius = ceil(max(3 fwhm, 6)) + 2``
        at the largest local FWHM: a residual holds a few per cent of the star's flux, so wings
        beyond 3 FWHM are far below the noise.
    """
    if n <= 0:
        return []
    x, y, mag = star_field(shape, rng=rng, n=n, magnitude_range=magnitude_range, magnitude_slope=magnitude_slope)
    flux = flux_of(mag, zero_point)
    amplitude = flux * _log_uniform(rng, fraction_range, n)
    kind = rng.integers(3, size=n)
    theta = rng.uniform(0, 2 * np.pi, n)
    shift = rng.uniform(*shift_range, n)
    widen = rng.uniform(1.1, 1.4, n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    local = local_fwhm(fwhm, x, y, psf)
    radius = int(np.ceil(max(3.0 * float(local.max()), 6.0))) + 2
    grid = np.arange(2 * radius + 1, dtype=np.float64)
    col0 = np.rint(x).astype(np.int64) - radius
    row0 = np.rint(y).astype(np.int64) - radius
    shape_psf = psf if psf is not None else PSFShape()
    out = []
    for lo in range(0, n, chunk):
        sl = slice(lo, min(lo + chunk, n))
        f = local[sl][:, None, None]
        dx = (col0[sl] - x[sl])[:, None, None] + grid[None, None, :]
        dy = (row0[sl] - y[sl])[:, None, None] + grid[None, :, None]
        star = psf_profile(dx, dy, fwhm=f, beta=beta, shape=shape_psf)
        star /= star.sum(axis=(1, 2), keepdims=True)
        data = -star  # hole: the star got fainter, or the reference over-subtracts
        k = kind[sl]
        dip = np.flatnonzero(k == 0)
        if dip.size:  # dipole: science and reference misregistered by a fraction of a pixel
            ux = (shift[sl][dip] * np.cos(theta[sl][dip]))[:, None, None]
            uy = (shift[sl][dip] * np.sin(theta[sl][dip]))[:, None, None]
            data[dip] = (psf_profile(dx[dip] - ux, dy[dip] - uy, fwhm=f[dip], beta=beta, shape=shape_psf)
                         - psf_profile(dx[dip] + ux, dy[dip] + uy, fwhm=f[dip], beta=beta, shape=shape_psf))
        ring = np.flatnonzero(k == 1)
        if ring.size:  # ring: PSF-matching kernel a little too wide or too narrow
            wider = psf_profile(dx[ring], dy[ring], fwhm=f[ring] * widen[sl][ring][:, None, None], beta=beta,
                                shape=shape_psf)
            wider /= wider.sum(axis=(1, 2), keepdims=True)
            data[ring] = (wider - star[ring]) * sign[sl][ring][:, None, None]
        data *= (amplitude[sl] / np.abs(data).sum(axis=(1, 2)))[:, None, None]
        if poisson:
            data += rng.standard_normal(data.shape) * np.sqrt(flux[sl][:, None, None] * star / gain)
        if pixel_noise > 0:
            data += rng.standard_normal(data.shape) * (pixel_noise * flux[sl][:, None, None] * star)
        data = data.astype(np.float32)
        out.extend(Stamp(int(r), int(c), d) for r, c, d in zip(row0[sl], col0[sl], data))
    return out


def saturated_stars(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    n: int,
    fwhm: float,
    beta: float,
    zero_point: float,
    magnitude_range: tuple[float, float],
    bleed_length_per_mag: float,
    stars: list | None = None,
) -> tuple[list[Stamp], list[Stamp]]:
    """Saturated stars: a NaN core, NaN bleed columns along the readout direction and a strong halo residual.

    ``stars``, if given, receives one ``(x, y, magnitude)`` per star.

    Returns
    -------
    halos : list of Stamp
        Additive float32 ring residuals around each core.
    masks : list of Stamp
        Boolean masks (True = NaN) of the cores and bleed columns.
    """
    h, w = shape
    halos, masks = [], []
    faint = magnitude_range[1]
    for _ in range(n):
        x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        mag = rng.uniform(*magnitude_range)
        if stars is not None:
            stars.append((x, y, mag))
        core = 2.0 + 1.5 * (faint - mag) + rng.uniform(0, 1.5)
        radius = int(np.ceil(3 * core + stamp_radius(fwhm)))
        grid = np.arange(2 * radius + 1, dtype=np.float64)
        col0, row0 = int(np.rint(x)) - radius, int(np.rint(y)) - radius
        dx = col0 + grid[None, :] - x
        dy = row0 + grid[:, None] - y
        r2 = dx * dx + dy * dy
        halo_fwhm = 2.0 * core
        wide = moffat(dx, dy, fwhm=1.25 * halo_fwhm, beta=beta)
        narrow = moffat(dx, dy, fwhm=halo_fwhm, beta=beta)
        ring = wide / wide.sum() - narrow / narrow.sum()
        amplitude = float(flux_of(mag, zero_point)) * float(_log_uniform(rng, (0.002, 0.01)))
        halos.append(Stamp(row0, col0, (amplitude * rng.choice([-1.0, 1.0]) * ring).astype(np.float32)))
        masks.append(Stamp(row0, col0, r2 <= core * core))
        bleed = bleed_length_per_mag * (faint - mag) * rng.uniform(0.5, 1.5)
        up = int(bleed * rng.uniform(0.3, 0.7))
        down = int(bleed) - up
        width = 1 + int(mag < faint - 1.5) + int(mag < faint - 3.0)
        c0 = int(np.rint(x)) - width // 2
        masks.append(Stamp(int(np.rint(y)) - up, c0, np.ones((up + down + 1, width), dtype=bool)))
    return halos, masks


def cosmic_rays(
    shape: tuple[int, int], *, rng: np.random.Generator, n: int, dn_range: tuple[float, float]
) -> Pixels:
    """Cosmic-ray hits: 1-8 pixel worms with sharp, independent per-pixel values (not PSF-shaped)."""
    if n == 0:
        return _empty_pixels()
    h, w = shape
    lengths = np.minimum(rng.geometric(0.45, n), 8)
    total = int(lengths.sum())
    start_rows = np.repeat(rng.integers(0, h, n), lengths)
    start_cols = np.repeat(rng.integers(0, w, n), lengths)
    starts = np.cumsum(lengths) - lengths
    steps = rng.integers(-1, 2, size=(total, 2))
    steps[starts] = 0
    walk = np.cumsum(steps, axis=0)
    walk -= np.repeat(walk[starts], lengths, axis=0)  # offsets from each ray's first pixel
    rows = np.clip(start_rows + walk[:, 0], 0, h - 1)
    cols = np.clip(start_cols + walk[:, 1], 0, w - 1)
    values = _log_uniform(rng, dn_range, total).astype(np.float32)
    return Pixels(rows, cols, values)


def hot_pixels(
    shape: tuple[int, int], *, rng: np.random.Generator, n: int, dn_range: tuple[float, float]
) -> Pixels:
    """Single hot pixels; a third come from the reference and are negative in the difference."""
    h, w = shape
    values = _log_uniform(rng, dn_range, n) * np.where(rng.random(n) < 1 / 3, -1.0, 1.0)
    return Pixels(rng.integers(0, h, n), rng.integers(0, w, n), values.astype(np.float32))


def bad_columns(
    shape: tuple[int, int], *, rng: np.random.Generator, n: int, dn_range: tuple[float, float]
) -> tuple[Pixels, list[Stamp]]:
    """Bad columns over all or part of the height: half offset by a constant, half masked (NaN).

    Returns
    -------
    offsets : Pixels
        Additive pixels of the unmasked bad columns.
    masks : list of Stamp
        Boolean one-column masks.
    """
    h, w = shape
    rows_out, cols_out, vals_out, masks = [], [], [], []
    for _ in range(n):
        col = int(rng.integers(0, w))
        r0, r1 = (0, h) if rng.random() < 0.5 else tuple(np.sort(rng.integers(0, h + 1, 2)))
        if rng.random() < 0.5:
            masks.append(Stamp(int(r0), col, np.ones((int(r1) - int(r0), 1), dtype=bool)))
        else:
            rows = np.arange(r0, r1)
            rows_out.append(rows)
            cols_out.append(np.full(rows.size, col))
            vals_out.append(np.full(rows.size, rng.uniform(*dn_range) * rng.choice([-1.0, 1.0]), np.float32))
    if not rows_out:
        return _empty_pixels(), masks
    return Pixels(np.concatenate(rows_out), np.concatenate(cols_out), np.concatenate(vals_out)), masks


def satellites(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    probability: float,
    dn_range: tuple[float, float],
    fwhm: float,
) -> Pixels:
    """With the given probability, one satellite or airplane streak across the whole image."""
    if rng.random() >= probability:
        return _empty_pixels()
    h, w = shape
    return Pixels(
        *line_pixels(
            shape,
            x=rng.uniform(0, w - 1),
            y=rng.uniform(0, h - 1),
            angle=rng.uniform(0, 180),
            peak=float(_log_uniform(rng, dn_range)),
            fwhm=fwhm * rng.uniform(1.0, 2.0),
        )
    )


def draw_transients(
    shape: tuple[int, int], *, rng: np.random.Generator, n: int, magnitude_range: tuple[float, float],
    negative_fraction: float,
) -> np.ndarray:
    """Where and how bright the ``n`` transients of :func:`transients` are: (n, 4) ``x, y, magnitude, sign``.

    ``sign`` is +1 (brightened) or -1 (faded, a negative source in the difference image). These are the
    first draws :func:`transients` makes from ``rng``, in the same order.
    """
    h, w = shape
    x, y = rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)
    mag = rng.uniform(*magnitude_range, n)
    sign = np.where(rng.random(n) < negative_fraction, -1.0, 1.0)
    return np.column_stack([x, y, mag, sign]).reshape(-1, 4)


def transients(
    shape: tuple[int, int],
    *,
    rng: np.random.Generator,
    n: int,
    fwhm: float,
    beta: float,
    zero_point: float,
    gain: float,
    magnitude_range: tuple[float, float],
    negative_fraction: float,
    poisson: bool,
    psf: PSFShape | None = None,
) -> list[Stamp]:
    """Real transients and variable stars: PSF-shaped point sources, positive or negative (``psf``: see render_points)."""
    if n == 0:
        return []
    x, y, mag, sign = draw_transients(shape, rng=rng, n=n, magnitude_range=magnitude_range,
                                      negative_fraction=negative_fraction).T
    flux = flux_of(mag, zero_point)
    stamps, row0, col0 = render_points(x, y, fwhm=fwhm, beta=beta, radius=stamp_radius(fwhm), psf=psf)
    data = stamps * flux[:, None, None]
    if poisson:
        data = rng.poisson(data * gain) / gain
    data = data * sign[:, None, None]
    return [Stamp(int(r), int(c), d.astype(np.float32)) for r, c, d in zip(row0, col0, data)]


def masked_regions(
    shape: tuple[int, int], *, rng: np.random.Generator, n: int, size_range: tuple[float, float]
) -> list[Stamp]:
    """NaN rectangles (ghosts, bad amplifier regions) with sides drawn uniformly from ``size_range``."""
    h, w = shape
    out = []
    for _ in range(n):
        rh, rw = (max(1, int(v)) for v in rng.uniform(*size_range, 2))
        out.append(Stamp(int(rng.integers(-rh // 2, h - rh // 2)), int(rng.integers(-rw // 2, w - rw // 2)),
                         np.ones((rh, rw), dtype=bool)))
    return out


def dead_borders(
    *, rng: np.random.Generator, probability: float, width_range: tuple[float, float]
) -> tuple[int, int, int, int]:
    """Widths in px of zero-valued borders (top, bottom, left, right): one or two sides, or none."""
    widths = [0, 0, 0, 0]
    if rng.random() < probability:
        sides = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
        for side in sides:
            widths[int(side)] = int(np.rint(rng.uniform(*width_range)))
    return tuple(widths)
