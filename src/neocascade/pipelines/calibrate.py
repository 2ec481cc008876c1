"""`make calibrate`: simulator statistics on full quadrants against the seed's targets and real ZTF alerts.

Usage: ``python -m neocascade.pipelines.calibrate [--n-images 20] [--seed 2021] [--out-dir outputs]``

Prints a table and writes ``<out-dir>/calibration.json`` (atomic) and ``<out-dir>/calibration.png``:
real ZTF difference cutouts beside simulated ones, and histograms of noise, peak and FWHM.
Footprint completeness follows the seed's label rule: an asteroid counts as found when some footprint
candidate (block maximum of the NaN-aware Gaussian-filtered image) lies within 1 px of its centre.
The alerts are only measured, never used to train.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from neocascade.candidates.footprint import footprint_peaks
from neocascade.candidates.labels import match_centres
from neocascade.errors import InputError, input_error
from neocascade.evaluation.stamp_stats import subtraction_residuals, tail_shares
from neocascade.preprocess.filters import gaussian_filter, mask_invalid
from neocascade.simulation import SIMULATOR_VERSION, SimConfig, draw_conditions, simulate_image
from neocascade.simulation.psf import measure_fwhm
from neocascade.utils.atomic import check_writable, save_bytes, save_json

log = logging.getLogger("neocascade.calibrate")

KERNELS = (30, 50, 70, 100)  # footprint block sizes in px compared in the seed's report
SIGMA = 1.0  # Gaussian filter sigma in px (the seed's default)
LABEL_RADIUS = 1.0  # px, the seed's label rule
CUTOUT = 63  # px, the ZTF alert stamp size
MAG_EDGES = np.arange(13.0, 23.0, 1.0)

# Target (low, high) of each statistic: the seed data's pixel statistics and its ~95% ceiling.
TARGETS = {
    "noise_mad_dn_median": (5.5, 6.5),
    "noise_mad_dn_min": (4.8, 7.6),
    "noise_mad_dn_max": (4.8, 7.6),
    "psf_fwhm_px_median": (2.0, 2.4),
    "psf_fwhm_px_min": (1.3, 3.1),
    "psf_fwhm_px_max": (1.3, 3.1),
    "zero_point_measured": (26.2, 26.4),
    "asteroid_peak_median_dn": (400.0, 600.0),
    "dead_fraction": (0.02, 0.06),
    "footprint_completeness_k50": (0.93, 0.97),
}


def robust_noise(values: np.ndarray) -> float:
    """MAD * 1.4826 of the finite, non-zero values (zeros are dead pixels)."""
    v = values[np.isfinite(values) & (values != 0)]
    if v.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _stamp_noise(stamp: np.ndarray, *, inner: int = 21) -> float:
    """Robust noise of a cutout outside its central ``inner`` x ``inner`` box (where the source is)."""
    keep = np.ones(stamp.shape, dtype=bool)
    cy, cx = stamp.shape[0] // 2, stamp.shape[1] // 2
    keep[cy - inner // 2:cy + inner // 2 + 1, cx - inner // 2:cx + inner // 2 + 1] = False
    return robust_noise(stamp[keep])


def _lag1_correlation(stamp: np.ndarray, *, inner: int = 21) -> float:
    """Correlation of horizontally adjacent background pixels of a cutout (source box left out)."""
    a, b = stamp[:, :-1].astype(np.float64), stamp[:, 1:].astype(np.float64)
    cy, cx = stamp.shape[0] // 2, stamp.shape[1] // 2
    cols = np.arange(a.shape[1])
    rows = np.arange(a.shape[0])
    in_box = (np.abs(rows - cy)[:, None] <= inner // 2 + 1) & (np.abs(cols - cx)[None, :] <= inner // 2 + 1)
    ok = np.isfinite(a) & np.isfinite(b) & (a != 0) & (b != 0) & ~in_box
    if ok.sum() < 100:
        return float("nan")
    a, b = a[ok], b[ok]
    clip = 5 * robust_noise(np.concatenate([a, b]))  # sources in the background would dominate
    good = (np.abs(a) < clip) & (np.abs(b) < clip)
    return float(np.corrcoef(a[good], b[good])[0, 1])


def _peak3(stamp: np.ndarray) -> float:
    """Max of the central 3x3 pixels (NaN when all are masked)."""
    cy, cx = stamp.shape[0] // 2, stamp.shape[1] // 2
    centre = stamp[cy - 1:cy + 2, cx - 1:cx + 2]
    return float(np.nanmax(centre)) if np.isfinite(centre).any() else float("nan")


def _cutouts(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size) float32 cutouts centred on (rows, cols), NaN outside the image."""
    half = size // 2
    padded = np.pad(image, half, constant_values=np.nan)
    offsets = np.arange(size)
    rr = np.asarray(rows, dtype=np.int64)[:, None, None] + offsets[None, :, None]
    cc = np.asarray(cols, dtype=np.int64)[:, None, None] + offsets[None, None, :]
    return padded[rr, cc]


def measure_image(image: np.ndarray, truth: np.ndarray, *, zero_point: float) -> dict[str, Any]:
    """Per-image statistics and per-asteroid measurements of one simulated quadrant."""
    x, y = truth[:, 1], truth[:, 2]
    ri, ci = np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)
    centre = image[ri, ci]
    dead = ~np.isfinite(centre) | (centre == 0.0)
    stamps = _cutouts(image, ri, ci, CUTOUT)
    filtered = gaussian_filter(mask_invalid(image), sigma=SIGMA)
    found, n_candidates, candidates = {}, {}, {}
    for k in KERNELS:
        rows, cols = footprint_peaks(filtered, kernel=k, stride=k)
        n_candidates[k] = int(rows.size)
        label, matched = match_centres(rows, cols, truth[:, 1:3], radius=LABEL_RADIUS)
        hit = np.zeros(len(truth), dtype=bool)
        hit[matched[matched >= 0]] = True
        found[k] = hit
        candidates[k] = (rows, cols, label)
    peak = np.array([_peak3(s) for s in stamps])
    bright = (~dead) & (truth[:, 3] < 17.0) & (truth[:, 4] < 1.0)
    fwhm = np.array([measure_fwhm(s[21:42, 21:42]) for s in stamps[bright]])
    # aperture photometry of bright, isolated, fully unmasked asteroids -> measured zero point
    near = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(near, np.inf)
    apert = stamps[:, CUTOUT // 2 - 15:CUTOUT // 2 + 16, CUTOUT // 2 - 15:CUTOUT // 2 + 16]
    clean = bright & (near.min(axis=1) > 40) & np.isfinite(apert).all(axis=(1, 2)) & (apert != 0).all(axis=(1, 2))
    zp = zero_point + 2.5 * np.log10(apert[clean].sum(axis=(1, 2), dtype=np.float64)
                                     / 10 ** (-0.4 * (truth[clean, 3] - zero_point)))
    rows50, cols50, label50 = candidates[50]
    return {
        "noise_mad": robust_noise(image),
        "dead": dead,
        "peak": peak,
        "found": found,
        "n_candidates": n_candidates,
        "fwhm_measured": fwhm,
        "zp_measured": zp,
        "stamp_noise": np.array([_stamp_noise(s) for s in stamps[~dead]]),
        "lag1": np.array([_lag1_correlation(s) for s in stamps[~dead][:5]]),
        "asteroid_stamps": stamps,
        "negatives": (rows50[~label50], cols50[~label50], filtered[rows50[~label50], cols50[~label50]]),
    }


def simulated_statistics(config: SimConfig, *, seed: int, n_images: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate ``n_images`` quadrants (file 0, 1, ... with 10 images each) and summarise them.

    Returns
    -------
    report : dict
        JSON-ready statistics (see the module docstring).
    samples : dict
        Arrays for the figure: asteroid and negative cutouts, per-asteroid peaks and noise.
    """
    per_image, truths, conds = [], [], []
    neg_stamps, sky_stamps = [], []
    start = time.perf_counter()
    for n in range(n_images):
        f, i = divmod(n, 10)
        image, truth = simulate_image(config, seed=seed, file_index=f, image_index=i)
        conds.append(draw_conditions(config, seed=seed, file_index=f, image_index=i))
        m = measure_image(image, truth, zero_point=config.zero_point)
        rows, cols, values = m.pop("negatives")
        top = np.argsort(values)[::-1][:2]
        neg_stamps.append(_cutouts(image, rows[top], cols[top], CUTOUT))
        sky = np.random.default_rng([seed, n]).integers(CUTOUT, np.array(config.shape) - CUTOUT, size=(1, 2))
        sky_stamps.append(_cutouts(image, sky[:, 0], sky[:, 1], CUTOUT))
        per_image.append(m)
        truths.append(truth)
        log.info("image %d/%d simulated and measured (%.0f s)", n + 1, n_images, time.perf_counter() - start)
    truth = np.concatenate(truths)
    dead = np.concatenate([m["dead"] for m in per_image])
    peak = np.concatenate([m["peak"] for m in per_image])
    found = {k: np.concatenate([m["found"][k] for m in per_image]) for k in KERNELS}
    mads = np.array([m["noise_mad"] for m in per_image])
    fwhm_true = np.array([c.fwhm for c in conds])
    zp = np.concatenate([m["zp_measured"] for m in per_image])
    by_mag = []
    for lo, hi in zip(MAG_EDGES[:-1], MAG_EDGES[1:]):
        sel = (truth[:, 3] >= lo) & (truth[:, 3] < hi)
        by_mag.append({
            "magnitude": [float(lo), float(hi)],
            "n": int(sel.sum()),
            "dead": int((sel & dead).sum()),
            "footprint_completeness_k50": float(found[50][sel].mean()) if sel.any() else None,
            "peak_median_dn": float(np.nanmedian(peak[sel])) if (sel & np.isfinite(peak)).any() else None,
        })
    report = {
        "n_images": n_images,
        "n_asteroids": int(len(truth)),
        "noise_mad_dn": _summary(mads),
        "noise_adjacent_correlation": float(np.nanmedian(np.concatenate([m["lag1"] for m in per_image]))),
        "psf_fwhm_px": _summary(fwhm_true),
        "psf_fwhm_measured_px": _summary(np.concatenate([m["fwhm_measured"] for m in per_image])),
        "zero_point": config.zero_point,
        "zero_point_measured": float(np.median(zp)) if zp.size else None,
        "asteroid_peak_median_dn": float(np.nanmedian(peak)),
        "asteroid_magnitude_median": float(np.median(truth[:, 3])),
        "dead_fraction": float(dead.mean()),
        "candidates_per_quadrant": {str(k): float(np.mean([m["n_candidates"][k] for m in per_image]))
                                    for k in KERNELS},
        "footprint_completeness": {str(k): float(found[k].mean()) for k in KERNELS},
        "footprint_completeness_live": {str(k): float(found[k][~dead].mean()) for k in KERNELS},
        "completeness_by_magnitude": by_mag,
        "seconds": round(time.perf_counter() - start, 1),
    }
    live = ~dead
    stamps = np.concatenate([m["asteroid_stamps"] for m in per_image])[live]
    report["asteroid_stamp_tails"] = dict(zip(("above_4sigma", "below_4sigma"), tail_shares(stamps)))
    samples = {
        "truth": truth[live],
        "asteroid_stamps": stamps,
        "peak": peak[live],
        "stamp_noise": np.concatenate([m["stamp_noise"] for m in per_image]),
        "fwhm": np.concatenate([m["fwhm_measured"] for m in per_image]),
        "negatives": np.concatenate(neg_stamps),
        "sky": np.concatenate(sky_stamps),
    }
    return report, samples


def alert_statistics(alert_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Noise, peak, FWHM and pixel correlation of real ZTF difference stamps (r band, fid 2).

    Known asteroids are alerts with ``0 <= ssdistnr <= 5``; negative alerts are sign-restored.
    """
    from neocascade.io.alerts import iter_alerts

    paths = sorted(alert_dir.glob("*.avro"))
    if not paths:
        raise input_error(alert_dir, "no *.avro alert packets found (set NEOCASCADE_ALERTS or --alerts)")
    alerts = [a for a in iter_alerts(paths) if a.candidate.get("fid") == 2]
    full = [a for a in alerts if a.difference.shape == (CUTOUT, CUTOUT)]
    asteroids = [a for a in full if a.is_known_asteroid]
    noise = np.array([_stamp_noise(a.difference) for a in full])
    ast_noise = np.array([_stamp_noise(a.difference) for a in asteroids])
    peak = np.array([_peak3(a.signed_difference) for a in asteroids])
    fwhm_field = np.array([float(a.candidate.get("fwhm") or np.nan) for a in full])
    fwhm_fit = np.array([measure_fwhm(a.signed_difference[21:42, 21:42]) for a in asteroids])
    lag1 = np.array([_lag1_correlation(a.difference) for a in full])
    zp = np.array([float(a.candidate.get("magzpsci") or np.nan) for a in full])
    mags = np.array([float(a.candidate.get("magpsf")) for a in asteroids])
    triples = [a for a in full if a.science.shape == a.template.shape == (CUTOUT, CUTOUT)]
    report = {
        "band": "r (fid 2)",
        "n_alerts": len(full),
        "n_known_asteroids": len(asteroids),
        "noise_mad_dn": _summary(noise),
        "asteroid_noise_mad_dn": _summary(ast_noise),
        "noise_adjacent_correlation": float(np.nanmedian(lag1)),
        "psf_fwhm_px_alert_field": _summary(fwhm_field),
        "asteroid_fwhm_fit_px": _summary(fwhm_fit),
        "zero_point_magzpsci": _summary(zp),
        "asteroid_peak_dn": _summary(peak),
        "asteroid_magpsf": _summary(mags),
        "asteroid_stamp_tails": dict(zip(("above_4sigma", "below_4sigma"),
                                         tail_shares(np.stack([a.difference for a in asteroids]))
                                         if asteroids else (None, None))),
        "subtraction_residuals": subtraction_residuals(*(np.stack([getattr(a, k) for a in triples])
                                                         for k in ("difference", "science", "template")))
        if triples else None,
    }
    samples = {
        "asteroid_stamps": np.stack([a.signed_difference for a in asteroids]) if asteroids else np.zeros((0, 63, 63)),
        "asteroid_mag": mags,
        "peak": peak,
        "noise": noise,
        "fwhm": fwhm_fit,
    }
    return report, samples


def _summary(values: np.ndarray) -> dict[str, float | int | None]:
    """Count, median, range and 5/95 percentiles of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "median": None, "min": None, "max": None, "p05": None, "p95": None}
    return {"n": int(v.size), "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
            "p05": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95))}


def check_targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target statistic with its value, range and whether it lies inside."""
    values = {
        "noise_mad_dn_median": report["noise_mad_dn"]["median"],
        "noise_mad_dn_min": report["noise_mad_dn"]["min"],
        "noise_mad_dn_max": report["noise_mad_dn"]["max"],
        "psf_fwhm_px_median": report["psf_fwhm_px"]["median"],
        "psf_fwhm_px_min": report["psf_fwhm_px"]["min"],
        "psf_fwhm_px_max": report["psf_fwhm_px"]["max"],
        "zero_point_measured": report["zero_point_measured"],
        "asteroid_peak_median_dn": report["asteroid_peak_median_dn"],
        "dead_fraction": report["dead_fraction"],
        "footprint_completeness_k50": report["footprint_completeness"]["50"],
    }
    out = {}
    for name, (lo, hi) in TARGETS.items():
        value = values[name]
        out[name] = {"value": value, "target": [lo, hi], "ok": value is not None and lo <= value <= hi}
    return out


def format_table(report: dict[str, Any]) -> str:
    """The calibration table as plain text."""
    lines = [f"simulator {report['simulator']}: {report['sim']['n_images']} quadrants, "
             f"{report['sim']['n_asteroids']} asteroids, seed {report['seed']}", ""]
    lines.append(f"{'statistic':32s} {'value':>10s}  {'target':>16s}  ok")
    for name, row in report["targets"].items():
        value = "n/a" if row["value"] is None else f"{row['value']:.3f}"
        lines.append(f"{name:32s} {value:>10s}  {row['target'][0]:>7.3g}..{row['target'][1]:<7.3g}  "
                     f"{'yes' if row['ok'] else 'NO'}")
    sim = report["sim"]
    lines.append("")
    lines.append(f"{'kernel':>8s} {'candidates/quadrant':>20s} {'completeness':>13s} {'(live only)':>12s}")
    for k in KERNELS:
        lines.append(f"{k:>8d} {sim['candidates_per_quadrant'][str(k)]:>20.0f} "
                     f"{sim['footprint_completeness'][str(k)]:>13.3f} {sim['footprint_completeness_live'][str(k)]:>12.3f}")
    lines.append("")
    lines.append(f"{'magnitude':>12s} {'n':>5s} {'dead':>5s} {'compl. k50':>11s} {'peak DN':>9s}")
    for row in sim["completeness_by_magnitude"]:
        if row["n"]:
            lo, hi = row["magnitude"]
            peak = "n/a" if row["peak_median_dn"] is None else f"{row['peak_median_dn']:.0f}"
            lines.append(f"{lo:>5.0f}-{hi:<6.0f} {row['n']:>5d} {row['dead']:>5d} "
                         f"{row['footprint_completeness_k50']:>11.3f} {peak:>9s}")
    real = report.get("ztf_alerts")
    if real and "noise_mad_dn" in real:
        lines.append("")
        lines.append(f"{'real vs sim (63x63 stamps)':32s} {'real':>10s} {'sim':>10s}")
        pairs = [
            ("noise MAD DN (median)", real["noise_mad_dn"]["median"], sim["stamp_noise_mad_dn"]["median"]),
            ("adjacent-pixel correlation", real["noise_adjacent_correlation"], sim["noise_adjacent_correlation"]),
            ("asteroid FWHM fit px (median)", real["asteroid_fwhm_fit_px"]["median"],
             sim["psf_fwhm_measured_px"]["median"]),
            ("asteroid 3x3 peak DN (median)", real["asteroid_peak_dn"]["median"], sim["asteroid_peak_median_dn"]),
            ("zero point", real["zero_point_magzpsci"]["median"], sim["zero_point_measured"]),
        ]
        for side in ("above", "below"):
            pairs.append((f"asteroid stamps {side} {'+' if side == 'above' else '-'}4 sigma, %",
                          _percent(real["asteroid_stamp_tails"][f"{side}_4sigma"]),
                          _percent(sim["asteroid_stamp_tails"][f"{side}_4sigma"])))
        for name, a, b in pairs:
            fa = "n/a" if a is None else f"{a:.3f}"
            fb = "n/a" if b is None else f"{b:.3f}"
            lines.append(f"{name:32s} {fa:>10s} {fb:>10s}")
        res = real.get("subtraction_residuals")
        if res:
            lines.append("")
            lines.append(f"real stamps (r > 8 px): {100 * res['tail_on_sources']:.0f} % of the pixels beyond 4 sigma lie on "
                         f"template sources ({100 * res['source_pixel_share']:.1f} % of the pixels)")
            lines.append("residual rms / science flux per pixel: " + ", ".join(
                f"{row['rms_over_flux']:.3f} at {row['median_flux_dn']:.0f} DN" for row in res["residual_rms_over_flux"]))
            lines.append(f"adjacent residuals on sources correlate at {res['residual_adjacent_correlation']:.2f}")
    return "\n".join(lines)


def _percent(share: float | None) -> float | None:
    """A share as a percentage (None and NaN stay None)."""
    return None if share is None or not np.isfinite(share) else 100.0 * share


def make_figure(sim_samples: dict[str, Any], real_samples: dict[str, Any] | None) -> bytes:
    """PNG bytes: real and simulated 63x63 cutouts on one colour scale, and noise / peak / FWHM histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import AsinhNorm

    n_col = 6
    fig = plt.figure(figsize=(14, 12.5), constrained_layout=True)
    grid = fig.add_gridspec(5, n_col, height_ratios=[1, 1, 1, 1, 1.3])
    norm = AsinhNorm(linear_width=15.0, vmin=-60.0, vmax=1500.0)
    rows = []
    if real_samples is not None and len(real_samples["asteroid_stamps"]):
        order = np.argsort(real_samples["asteroid_mag"])
        pick = order[np.linspace(0, len(order) - 1, n_col).astype(int)]
        rows.append(("real ZTF known asteroids", real_samples["asteroid_stamps"][pick],
                     [f"m={real_samples['asteroid_mag'][i]:.1f}" for i in pick]))
    truth, stamps = sim_samples["truth"], sim_samples["asteroid_stamps"]
    rng = np.random.default_rng(0)
    targets = np.linspace(16.0, 20.5, n_col)
    pick = [int(np.argmin(np.abs(truth[:, 3] - t) + 0.01 * rng.random(len(truth)))) for t in targets]
    rows.append(("simulated asteroids", stamps[pick], [f"m={truth[i, 3]:.1f} L={truth[i, 4]:.1f}" for i in pick]))
    negatives = sim_samples["negatives"]
    pick = np.sort(rng.choice(len(negatives), size=min(n_col, len(negatives)), replace=False))
    rows.append(("simulated: bright non-asteroid candidates (k50)", negatives[pick], ["negative"] * n_col))
    rows.append(("simulated: empty sky", sim_samples["sky"][:n_col], ["sky"] * n_col))
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="tab:red")  # masked (NaN) pixels in red
    image = None
    for r, (title, cutouts, labels) in enumerate(rows):
        for c in range(min(n_col, len(cutouts))):
            ax = fig.add_subplot(grid[r, c])
            image = ax.imshow(cutouts[c], cmap=cmap, norm=norm, origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(title, fontsize=8)
    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes, location="right", shrink=0.6, label="DN (asinh scale)")
        bar.set_ticks([-50, -10, 0, 10, 30, 100, 300, 1000])
        bar.set_ticklabels(["-50", "-10", "0", "10", "30", "100", "300", "1000"])
    hists = [
        ("stamp noise MAD*1.4826 (DN)", sim_samples["stamp_noise"], None if real_samples is None else real_samples["noise"],
         np.linspace(3, 12, 40), False),
        ("asteroid peak: max of central 3x3 (DN)", sim_samples["peak"], None if real_samples is None else real_samples["peak"],
         np.logspace(0.5, 4.5, 40), True),
        ("asteroid FWHM, Gaussian fit (px)", sim_samples["fwhm"], None if real_samples is None else real_samples["fwhm"],
         np.linspace(1, 4, 31), False),
    ]
    for j, (title, sim, real, bins, logx) in enumerate(hists):
        ax = fig.add_subplot(grid[4, 2 * j:2 * j + 2])
        sim = sim[np.isfinite(sim)]
        ax.hist(sim, bins=bins, weights=np.full(sim.size, 1.0 / max(sim.size, 1)), alpha=0.6,
                label=f"sim (n={sim.size})")
        if real is not None:
            real = real[np.isfinite(real)]
            ax.hist(real, bins=bins, weights=np.full(real.size, 1.0 / max(real.size, 1)), histtype="step", lw=2,
                    color="k", label=f"real ZTF r (n={real.size})")
        ax.set_ylabel("fraction per bin", fontsize=8)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(title, fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle("neocascade simulator vs real ZTF difference stamps (63x63 px, ~1\"/px; red = masked)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def calibrate(*, n_images: int, seed: int, out_dir: Path, alert_dir: Path | None, overwrite: bool = False) -> dict[str, Any]:
    """Run the calibration; write ``calibration.json`` and ``calibration.png`` into ``out_dir``.

    Existing files there are refused (before any work) unless ``overwrite``.
    """
    for name in ("calibration.json", "calibration.png"):
        check_writable(out_dir / name, overwrite=overwrite)
    if n_images < 1:
        raise input_error("--n-images", "must be >= 1", found=n_images)
    config = SimConfig()
    sim, sim_samples = simulated_statistics(config, seed=seed, n_images=n_images)
    sim["stamp_noise_mad_dn"] = _summary(sim_samples["stamp_noise"])
    report: dict[str, Any] = {
        "simulator": SIMULATOR_VERSION,
        "seed": seed,
        "config": config.to_dict(),
        "sim": sim,
        "ztf_alerts": None,
    }
    real_samples = None
    if alert_dir is not None:
        if not alert_dir.is_dir():
            raise input_error(alert_dir, "alert folder not found (set NEOCASCADE_ALERTS, --alerts, or --no-alerts)")
        report["ztf_alerts"], real_samples = alert_statistics(alert_dir)
    report["targets"] = check_targets({**sim})
    report["table"] = format_table(report).splitlines()
    # the simulator's statistics sit at the top level of the file (noise_mad_dn, footprint_completeness, ...)
    save_json(out_dir / "calibration.json", {**sim, **{k: v for k, v in report.items() if k != "sim"}}, overwrite=overwrite)
    save_bytes(out_dir / "calibration.png", make_figure(sim_samples, real_samples), overwrite=overwrite)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: print the calibration table; exit 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m neocascade.pipelines.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=20, help="full quadrants to simulate (default 20)")
    parser.add_argument("--seed", type=int, default=2021, help="simulation seed (default 2021, the demo's)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs"), help="folder for calibration.json/.png")
    parser.add_argument("--alerts", type=Path, default=Path(os.environ.get("NEOCASCADE_ALERTS", "../shared/data/ztf_alerts")),
                        help="folder of ZTF alert *.avro packets (default $NEOCASCADE_ALERTS or ../shared/data/ztf_alerts)")
    parser.add_argument("--no-alerts", action="store_true", help="skip the real-data comparison")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing calibration.json/.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    # the filter is torch-threaded; on a shared 2-core machine one thread avoids oversubscription
    torch.set_num_threads(1)
    try:
        report = calibrate(n_images=args.n_images, seed=args.seed, out_dir=args.out_dir,
                           alert_dir=None if args.no_alerts else args.alerts, overwrite=args.overwrite)
    except InputError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    log.info("%s", "\n".join(report["table"]))
    log.info("wrote %s and %s", args.out_dir / "calibration.json", args.out_dir / "calibration.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
