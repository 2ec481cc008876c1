"""Completeness curves with binomial errors, and the logistic fit of the 50 % magnitude m50.

Errors are Clopper–Pearson (exact binomial, via the beta distribution) central intervals at
68.27 % (±1 sigma), which stay inside [0, 1] and are honest for the few-object bins at the faint
end. The logistic ``f(m) = c / (1 + exp((m - m50) / w))`` is fitted to the found/missed flag of
every asteroid by maximum likelihood (no binning), and its errors come from the inverse Hessian
of the negative log-likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ONE_SIGMA = 0.6826894921370859  # central probability within ±1 sigma of a normal


def _values_found(values: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check a finite 1-D value per object and a bool flag of the same length."""
    v = np.asarray(values, dtype=np.float64)
    f = np.asarray(found)
    if v.ndim != 1:
        raise ValueError(f"values: expected a 1-D array, got shape {v.shape}")
    if f.shape != v.shape:
        raise ValueError(f"found: expected shape {v.shape}, got {f.shape}")
    if f.dtype != bool:
        if f.size and not np.isin(f, (0, 1)).all():
            raise ValueError("found: expected 0/1 or bool values")
        f = f.astype(bool)
    if not np.isfinite(v).all():
        raise ValueError(f"values: {int((~np.isfinite(v)).sum())} non-finite entries")
    return v, f


def binomial_interval(k: np.ndarray, n: np.ndarray, *, level: float = ONE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson central interval ``(lo, hi)`` of a binomial fraction ``k / n``.

    Parameters
    ----------
    k, n : int arrays
        Successes and trials; ``0 <= k <= n``.
    level : float
        Central coverage; the default is ±1 sigma.

    Returns
    -------
    lo, hi : float arrays
        Bounds in [0, 1]; NaN where ``n == 0``. ``k == 0`` gives ``lo = 0``, ``k == n`` gives ``hi = 1``.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("k: expected 0 <= k <= n")
    alpha = 1.0 - level
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, np.maximum(k, 1e-300), n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    empty = n == 0
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def binned_completeness(
    values: np.ndarray, found: np.ndarray, *, bins: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Found fraction per bin of ``values`` with Clopper–Pearson ±1 sigma errors.

    Parameters
    ----------
    values : (M,) float array
        Magnitude, trail length in px, ... of each injected asteroid.
    found : (M,) bool array
    bins : int or (B+1,) increasing float array
        Bin edges (as for :func:`numpy.histogram`; the last bin includes its right edge).

    Returns
    -------
    centres : (B,) bin centres
    k, n : (B,) int found and injected per bin
    frac : (B,) k / n, NaN for empty bins
    err_lo, err_hi : (B,) distances from ``frac`` down to and up to the interval bounds
    """
    v, f = _values_found(values, found)
    edges = np.histogram_bin_edges(v, bins=bins)
    n, _ = np.histogram(v, bins=edges)
    k, _ = np.histogram(v[f], bins=edges)
    lo, hi = binomial_interval(k, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n > 0, k / np.maximum(n, 1), np.nan)
    centres = 0.5 * (edges[1:] + edges[:-1])
    return centres, k.astype(np.int64), n.astype(np.int64), frac, frac - lo, hi - frac


def magnitude_bins(mags: np.ndarray, *, step: float = 0.25) -> np.ndarray:
    """Bin edges on a ``step``-mag grid covering ``mags`` (edges at multiples of ``step``)."""
    m = np.asarray(mags, dtype=np.float64)
    if step <= 0:
        raise ValueError(f"step: must be positive, got {step}")
    if m.size == 0:
        return np.array([0.0, step])
    lo = np.floor(m.min() / step) * step
    hi = np.floor(m.max() / step) * step + step
    return np.arange(round((hi - lo) / step) + 1) * step + lo


def logistic(m: np.ndarray, *, m50: float, width: float, plateau: float = 1.0) -> np.ndarray:
    """``plateau / (1 + exp((m - m50) / width))``: completeness falling from ``plateau`` to 0."""
    z = (np.asarray(m, dtype=np.float64) - m50) / width
    return plateau * np.exp(-np.logaddexp(0.0, z))


@dataclass(frozen=True)
class LogisticFit:
    """Maximum-likelihood logistic completeness curve; ``*_err`` are 1-sigma (NaN when not defined)."""

    m50: float
    m50_err: float
    width: float
    width_err: float
    plateau: float
    plateau_err: float
    n: int


def _nll(params: np.ndarray, m: np.ndarray, f: np.ndarray) -> float:
    """Bernoulli negative log-likelihood of (m50, log width, plateau)."""
    m50, log_w, c = params
    z = (m - m50) / np.exp(log_w)
    log_sig = -np.logaddexp(0.0, z)  # log of 1 / (1 + e^z)
    c = np.clip(c, 1e-12, 1.0)
    log_p = np.log(c) + log_sig
    # log(1 - p) computed stably: 1 - c*sig
    log_q = np.log1p(-np.clip(c * np.exp(log_sig), 0.0, 1.0 - 1e-15))
    return float(-(log_p[f].sum() + log_q[~f].sum()))


def _hessian(fun, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Central finite-difference Hessian of a scalar function."""
    k = x.size
    h = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            ei = np.eye(k)[i] * steps[i]
            ej = np.eye(k)[j] * steps[j]
            val = (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej) + fun(x - ei - ej)) / (4 * steps[i] * steps[j])
            h[i, j] = h[j, i] = val
    return h


def fit_logistic(mags: np.ndarray, found: np.ndarray) -> LogisticFit:
    """Fit ``f(m) = c / (1 + exp((m - m50) / w))``, ``0 < c <= 1``, to per-object found flags.

    Parameters
    ----------
    mags : (M,) float array
        Magnitude of each injected asteroid.
    found : (M,) bool array

    Returns
    -------
    LogisticFit

    Notes
    -----
    Unbinned maximum likelihood (L-BFGS-B, width fitted as log w). Errors are the square roots of
    the diagonal of the inverse Hessian; when the plateau sits on its bound c = 1 it is held
    fixed there for the errors (``plateau_err`` NaN). When m50 falls in the gap between the
    faintest found asteroid and the next missed one with a width under a tenth of that gap, the
    data are separated and the likelihood is flat across the gap: ``m50_err`` is then half the
    gap and ``width_err`` NaN. Fewer than 5 objects, or all found / all
    missed, gives NaN parameters: the curve does not cross 50 % inside the data.
    """
    m, f = _values_found(mags, found)
    nan = float("nan")
    if m.size < 5 or f.all() or not f.any():
        return LogisticFit(nan, nan, nan, nan, nan, nan, int(m.size))
    spread = max(float(np.std(m)), 1e-3)
    # start: m50 where the found fraction crosses half of its bright-end value
    x0 = np.array([float(np.median(m)), np.log(0.2 * spread), min(0.999, max(0.5, 2 * f.mean()))])
    bounds = [(m.min() - 5 * spread, m.max() + 5 * spread), (np.log(1e-3 * spread), np.log(10 * spread)), (1e-3, 1.0)]
    best = None
    for m50_start in (x0[0], np.percentile(m, 25), np.percentile(m, 75)):
        start = x0.copy()
        start[0] = m50_start
        res = optimize.minimize(_nll, start, args=(m, f), method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    m50, log_w, c = best.x
    at_bound = c > 1.0 - 1e-6
    free = [0, 1] if at_bound else [0, 1, 2]
    x_free = best.x[free]

    def fun(xf: np.ndarray) -> float:
        full = best.x.copy()
        full[free] = xf
        return _nll(full, m, f)

    steps = np.array([1e-3 * spread, 1e-3, 1e-4])[free]
    if not at_bound:
        steps[2] = min(steps[2], 0.5 * (1.0 - c))
    try:
        cov = np.linalg.inv(_hessian(fun, x_free, steps))
        var = np.diag(cov)
    except np.linalg.LinAlgError:
        var = np.full(len(free), np.nan)
    err = np.sqrt(np.where(var > 0, var, np.nan))
    w = float(np.exp(log_w))
    # found and missed separated in magnitude (every found one brighter than every missed one past
    # the faintest find): the likelihood is flat for any m50 in the gap and the width runs to 0
    g_lo = float(m[f].max())
    g_hi = float(np.min(m[~f & (m > g_lo)], initial=np.inf))
    if np.isfinite(g_hi) and g_lo <= m50 <= g_hi and w < 0.1 * (g_hi - g_lo):
        err[0] = 0.5 * (g_hi - g_lo)
        err[1] = np.nan
    return LogisticFit(
        m50=float(m50),
        m50_err=float(err[0]),
        width=w,
        width_err=float(w * err[1]),  # d w = w d(log w)
        plateau=float(min(c, 1.0)),
        plateau_err=nan if at_bound else float(err[2]),
        n=int(m.size),
    )


def fit_m50(mags: np.ndarray, found: np.ndarray) -> tuple[float, float, float]:
    """Magnitude at 50 % of the logistic fit: ``(m50, m50_err, width)``; see :func:`fit_logistic`.

    m50 is the logistic's midpoint, where completeness is ``c / 2`` (50 % when c = 1).
    """
    fit = fit_logistic(mags, found)
    return fit.m50, fit.m50_err, fit.width


def fit_snr50(snr: np.ndarray, found: np.ndarray) -> tuple[float, float]:
    """Peak SNR at 50 % completeness: ``(snr50, snr50_err)``, comparable across skies whose noise differs.

    Parameters
    ----------
    snr : (M,) float array
        Peak signal-to-noise of each injected asteroid (noiseless peak DN over the noise rms at its pixel).
    found : (M,) bool array

    Returns
    -------
    snr50, snr50_err : float
        The logistic fit of :func:`fit_logistic` on ``-2.5 log10(snr)`` (an SNR magnitude, so the curve has
        the same shape as completeness vs magnitude), mapped back: ``snr50 = 10**(-m50 / 2.5)``; the error
        is propagated from ``m50_err``. NaN when the fit gives none; non-positive or non-finite SNRs are dropped.
    """
    snr = np.asarray(snr, dtype=np.float64).reshape(-1)
    found = np.asarray(found, dtype=bool).reshape(-1)
    if snr.shape != found.shape:
        raise ValueError(f"snr, found: must have the same length, got {snr.size} and {found.size}")
    ok = np.isfinite(snr) & (snr > 0)
    fit = fit_logistic(-2.5 * np.log10(snr[ok]), found[ok])
    snr50 = 10.0 ** (-fit.m50 / 2.5)
    return float(snr50), float(snr50 * np.log(10.0) / 2.5 * fit.m50_err)


def binned_miss_rate(
    values: np.ndarray, found: np.ndarray, *, bins: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """False-negative rate (missed / injected) per bin, with Clopper–Pearson ±1 sigma errors.

    Same returns as :func:`binned_completeness`, with ``k`` the missed count.
    """
    v, f = _values_found(values, found)
    return binned_completeness(v, ~f, bins=bins)
