"""Point-spread functions (round Moffat; Gaussian, core + halo, elliptical, varying FWHM): stamps and FWHM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Core radius alpha of a Moffat profile with the given FWHM (px) and wing index beta."""
    return float(fwhm) / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat(dx: np.ndarray, dy: np.ndarray, *, fwhm: float, beta: float) -> np.ndarray:
    """Unnormalised Moffat profile ``(1 + r^2 / alpha^2)^-beta`` at offsets ``dx, dy`` (px); 1 at r = 0."""
    alpha = moffat_alpha(fwhm, beta)
    return (1.0 + (dx * dx + dy * dy) / (alpha * alpha)) ** (-beta)


def stamp_radius(fwhm: float, *, extent: float = 0.0) -> int:
    """Half-size in px of a stamp that holds >99.5% of a Moffat source's flux, plus ``extent`` (a trail)."""
    return int(np.ceil(max(4.0 * fwhm, 7.0) + 0.5 * extent))


def render_points(
    x: np.ndarray, y: np.ndarray, *, fwhm: float, beta: float, radius: int, psf: PSFShape | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render unit-flux PSF sources (round Moffat unless ``psf`` says otherwise), one stamp each.

    Parameters
    ----------
    x, y : (N,) float arrays
        Source centres in px (x column, y row).
    fwhm, beta : float
        Moffat FWHM in px and wing index.
    radius : int
        Stamp half-size; stamps are ``2 * radius + 1`` px square.
    psf : PSFShape, optional
        Kind, ellipticity and FWHM gradient (evaluated at each source's position).

    Returns
    -------
    stamps : (N, S, S) float32
        Each stamp sums to exactly 1 (the profile is sampled at pixel centres, then normalised).
    row0, col0 : (N,) int arrays
        Image position of each stamp's top-left pixel; stamps may overhang the image edge.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    col0 = np.rint(x).astype(np.int64) - radius
    row0 = np.rint(y).astype(np.int64) - radius
    grid = np.arange(2 * radius + 1, dtype=np.float64)
    dx = (col0 - x)[:, None, None] + grid[None, None, :]
    dy = (row0 - y)[:, None, None] + grid[None, :, None]
    if psf is None:
        stamps = moffat(dx, dy, fwhm=fwhm, beta=beta)
    else:
        stamps = psf_profile(dx, dy, fwhm=local_fwhm(fwhm, x, y, psf)[:, None, None], beta=beta, shape=psf)
    stamps /= stamps.sum(axis=(1, 2), keepdims=True)
    return stamps.astype(np.float32), row0, col0


def measure_fwhm(stamp: np.ndarray, *, beta: float | None = None) -> float:
    """Fit a circular profile plus constant background to a stamp and return its FWHM in px.

    Parameters
    ----------
    stamp : (H, W) float array
        A cutout with one source near its centre; NaN pixels are ignored.
    beta : float, optional
        Fit a Moffat with this fixed wing index; by default a Gaussian (what survey pipelines quote).

    Returns
    -------
    float
        The fitted FWHM, or NaN when the fit fails or the stamp has fewer than 9 finite pixels.
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    if stamp.ndim != 2:
        raise ValueError(f"stamp: must be a 2-D array, got shape {stamp.shape}")
    rows, cols = np.indices(stamp.shape)
    ok = np.isfinite(stamp)
    if ok.sum() < 9:
        return float("nan")
    z, yy, xx = stamp[ok], rows[ok].astype(np.float64), cols[ok].astype(np.float64)
    peak = np.unravel_index(np.nanargmax(stamp), stamp.shape)
    bg0 = float(np.median(z))
    p0 = [float(stamp[peak]) - bg0, float(peak[1]), float(peak[0]), 2.0, bg0]

    def residual(p: np.ndarray) -> np.ndarray:
        amp, x0, y0, fwhm, bg = p
        if beta is None:
            model = np.exp(-4.0 * np.log(2.0) * ((xx - x0) ** 2 + (yy - y0) ** 2) / fwhm**2)
        else:
            model = moffat(xx - x0, yy - y0, fwhm=fwhm, beta=beta)
        return amp * model + bg - z

    lower = [-np.inf, -np.inf, -np.inf, 0.3, -np.inf]
    upper = [np.inf, np.inf, np.inf, 30.0, np.inf]
    try:
        fit = optimize.least_squares(residual, p0, bounds=(lower, upper))
    except ValueError:
        return float("nan")
    return float(fit.x[3]) if fit.success else float("nan")


PSF_KINDS = ("moffat", "gaussian", "core_halo")


@dataclass(frozen=True)
class PSFShape:
    """How one image's PSF departs from the round Moffat of :func:`moffat`.

    Attributes
    ----------
    kind : str
        ``moffat``, ``gaussian`` or ``core_halo`` (a Gaussian core plus a Moffat halo).
    ellipticity : float
        ``1 - b/a`` in [0, 1); the FWHM is the geometric mean of the major and minor axes.
    angle : float
        Major axis, degrees from +x towards +y.
    halo_fraction, halo_scale : float
        ``core_halo`` only: share of the flux in the halo, and halo FWHM / core FWHM.
    gradient : (float, float)
        Relative FWHM change per px along x and y from ``centre`` (mild variation across the quadrant).
    centre : (float, float)
        (x, y) in px where the FWHM equals the image's FWHM.
    """

    kind: str = "moffat"
    ellipticity: float = 0.0
    angle: float = 0.0
    halo_fraction: float = 0.0
    halo_scale: float = 3.0
    gradient: tuple[float, float] = (0.0, 0.0)
    centre: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.kind not in PSF_KINDS:
            raise ValueError(f"psf.kind: must be one of {', '.join(PSF_KINDS)}, got {self.kind!r}")
        if not 0.0 <= self.ellipticity < 1.0:
            raise ValueError(f"psf.ellipticity: must be in [0, 1), got {self.ellipticity}")
        if not 0.0 <= self.halo_fraction < 1.0 or self.halo_scale < 1.0:
            raise ValueError(f"psf.halo: need 0 <= halo_fraction < 1 and halo_scale >= 1, got "
                             f"{self.halo_fraction}, {self.halo_scale}")

    @property
    def is_round_moffat(self) -> bool:
        """True when the profile is exactly :func:`moffat` everywhere (the pre-sky simulator)."""
        return self.kind == "moffat" and self.ellipticity == 0.0 and self.gradient == (0.0, 0.0)


def local_fwhm(fwhm: float, x: np.ndarray | float, y: np.ndarray | float, shape: PSFShape | None) -> np.ndarray:
    """FWHM in px at image position(s) (x, y): ``fwhm * (1 + gx (x - cx) + gy (y - cy))``, floored at 0.5 fwhm."""
    if shape is None or shape.gradient == (0.0, 0.0):
        return np.broadcast_to(np.float64(fwhm), np.shape(x)).copy()
    (gx, gy), (cx, cy) = shape.gradient, shape.centre
    factor = 1.0 + gx * (np.asarray(x, dtype=np.float64) - cx) + gy * (np.asarray(y, dtype=np.float64) - cy)
    return float(fwhm) * np.maximum(factor, 0.5)


def psf_profile(
    dx: np.ndarray, dy: np.ndarray, *, fwhm: float | np.ndarray, beta: float, shape: PSFShape | None = None
) -> np.ndarray:
    """Unnormalised PSF at offsets ``dx, dy`` (px) from the centre; :func:`moffat` when ``shape`` is None.

    Parameters
    ----------
    dx, dy : float arrays
        Offsets along x (columns) and y (rows); broadcast together.
    fwhm : float or array
        FWHM in px (an array must broadcast against ``dx``: one value per source).
    beta : float
        Moffat wing index (Moffat and the halo of ``core_halo``).
    shape : PSFShape, optional
        Kind and ellipticity; its gradient is applied by the caller through ``fwhm``.

    Returns
    -------
    float64 array
        Profile values; only ratios matter (stamps are normalised afterwards). For ``core_halo`` the
        core and halo are each normalised to unit flux before mixing, so ``halo_fraction`` is a flux share.
    """
    if shape is None or (shape.kind == "moffat" and shape.ellipticity == 0.0 and np.ndim(fwhm) == 0):
        return moffat(dx, dy, fwhm=float(fwhm), beta=beta)
    fwhm = np.asarray(fwhm, dtype=np.float64)
    r2 = dx * dx + dy * dy
    if shape.ellipticity > 0.0:
        q = 1.0 - shape.ellipticity
        theta = np.deg2rad(shape.angle)
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        r2 = u * u * q + v * v / q
    if shape.kind == "moffat":
        alpha2 = (fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))) ** 2
        return (1.0 + r2 / alpha2) ** (-beta)
    sigma2 = (fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))) ** 2
    core = np.exp(-0.5 * r2 / sigma2)
    if shape.kind == "gaussian":
        return core
    halo_fwhm = fwhm * shape.halo_scale
    alpha2 = (halo_fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))) ** 2
    halo = (1.0 + r2 / alpha2) ** (-beta)
    f = shape.halo_fraction
    return (1.0 - f) * core / (2.0 * np.pi * sigma2) + f * halo * (beta - 1.0) / (np.pi * alpha2)
