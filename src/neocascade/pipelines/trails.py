"""Measure the trail detector on a simulated long-trail preset (issue 15): completeness, false trails, satellites.

    python evaluate_trails.py data=long_trails n_images=100 out=outputs/eval/trails/long_trails

Images are simulated one at a time (``data.source``), the trail detector (``trails=``) runs on each and, with
``with_cascade=true``, the point-source cascade too (the shipped one, or ``artifact=``), so that the catalogue's
"each asteroid once" and the detector's cost beside the cascade are measured. Writes ``metrics.json`` and
``trails.csv`` (every found trail) to ``out``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from neocascade.errors import input_error
from neocascade.pipelines.common import report_input_errors
from neocascade.simulation.artifacts import flux_of

log = logging.getLogger(__name__)
MATCH_RADIUS = 3.0  # px from a true segment: evaluate.py's eval.match_radius
SNR_EDGES = np.array([0.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, np.inf])
LENGTH_EDGES = np.array([10.0, 20.0, 50.0, 100.0, 150.0, 200.0, 250.0, 301.0])
SB_EDGES = np.array([14.0, 18.0, 19.0, 20.0, 21.0, 22.0, 23.0, 25.0])
MAG_EDGES = np.array([13.5, 14.5, 15.5, 16.0, 16.5, 17.5, 18.5])


def run(cfg: DictConfig) -> int:
    """Evaluate (see the module docstring); bad input exits 2 with one stderr line."""
    with report_input_errors():
        evaluate_trails(cfg)
    return 0


def evaluate_trails(cfg: DictConfig) -> dict:
    """Simulate ``n_images`` images of ``cfg.data``, find trails, and return (and write) the metrics."""
    from neocascade.detection.catalogue import trail_rows, write_catalogue, concat_catalogues
    from neocascade.detection.residuals import build_residual_check
    from neocascade.detection.trails import build_trail_detector
    from neocascade.evaluation import trails as ev
    from neocascade.simulation.config import SimConfig
    from neocascade.simulation.fast_movers import satellite_line
    from neocascade.simulation.quadrant import draw_conditions, simulate_image, trail_models
    from neocascade.utils.atomic import check_writable, save_json

    out = Path(str(cfg.out))
    overwrite = bool(cfg.get("overwrite", False))
    for name in ("metrics.json", "trails.csv"):
        check_writable(out / name, overwrite=overwrite)
    n_images, first_file = cfg.get("n_images"), cfg.get("first_file", 0)
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise input_error("n_images", "must be a positive integer", found=repr(n_images))
    if isinstance(first_file, bool) or not isinstance(first_file, int) or first_file < 0:
        raise input_error("first_file", "must be an integer >= 0", found=repr(first_file))
    detector = build_trail_detector(cfg.get("trails"))
    if detector is None:
        raise input_error("trails", "none gives nothing to measure", expected="a trail detector such as trails=default")
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    sim = dict(source.get("sim") or {})
    config = SimConfig(**sim, shape=tuple(source["shape"]), n_asteroids=int(source["n_asteroids"]))
    seed, per_file = int(source["seed"]), int(source["images_per_file"])
    cascade = _cascade(cfg) if cfg.get("with_cascade", False) else None
    check = build_residual_check(cfg.get("residual_check"))

    rows, catalogues, t_trails, t_cascade = [], [], 0.0, 0.0
    points = {"alone": [0, 0], "with_trails": [0, 0]}  # [true detections, detections] of the point catalogue
    false_trails, n_sat, sat_kept, points_merged = 0, 0, 0, 0
    for k in range(n_images):
        file_index, image_index = divmod(k, per_file)
        file_index += first_file
        image, truth = simulate_image(config, seed=seed, file_index=file_index, image_index=image_index)
        cond = draw_conditions(config, seed=seed, file_index=file_index, image_index=image_index)
        start = time.perf_counter()
        found = detector(image, exptime=30.0)
        t_trails += time.perf_counter() - start
        segments = ev.truth_segments(truth[:, 1], truth[:, 2], truth[:, 4], truth[:, 5])
        truth_found, found_true = ev.match_trails(segments, found)
        point_hit = catalogue_hit = np.zeros(len(truth), dtype=bool)
        if cascade is not None:
            from neocascade.detection.detector import detect_image

            start = time.perf_counter()
            det = detect_image(image, cascade[0], spec=cascade[1], check=check)
            t_cascade += time.perf_counter() - start
            merged = detector.on_trail(det["x"], det["y"], found)
            points_merged += int(merged.sum())
            d = ev.point_segment_distance(det["x"][None, :], det["y"][None, :], *(v[:, None] for v in segments))
            m = ev.catalogue_matches(d.reshape(len(truth), det["x"].size), merged, truth_found, found_true,
                                     radius=MATCH_RADIUS)  # as detect.py writes it: points off the trails, trails
            point_hit, catalogue_hit = m["found_alone"], m["found_with_trails"]
            for name in ("alone", "with_trails"):
                points[name][0] += m[f"true_{name}"]
                points[name][1] += m[f"detections_{name}"]
        false_trails += int((~found_true).sum())
        line = satellite_line(config, seed=seed, file_index=file_index, image_index=image_index)
        if line is not None:
            n_sat += 1
            sat_kept += int(ev.on_line(found, *line).any())
        r = np.clip(np.rint(truth[:, 2]).astype(np.int64), 0, image.shape[0] - 1)
        c = np.clip(np.rint(truth[:, 1]).astype(np.int64), 0, image.shape[1] - 1)
        visible = np.isfinite(image[r, c]) & (image[r, c] != 0)
        flux = flux_of(truth[:, 3], config.zero_point)
        formula = ev.expected_snr(flux, truth[:, 4], noise_rms=cond.noise_rms, fwhm=cond.fwhm)
        models, rms, rho = trail_models(config, seed=seed, file_index=file_index, image_index=image_index)
        valid = np.isfinite(image) & (image != 0)
        snr = np.array([ev.matched_filter_snr(m.rows, m.cols, m.values, valid=valid, rms=rms, correlation=rho)
                        for m in models])
        sb = ev.surface_brightness(truth[:, 3], truth[:, 4], np.full(len(truth), cond.fwhm))
        shown = ev.visible_fraction(image, *segments)
        rows.append(np.column_stack([truth[:, 3], truth[:, 4], snr, sb, visible, truth_found, point_hit, shown,
                                     formula, catalogue_hit]))
        catalogues.append(trail_rows(found, file=f"{cfg.data.name}_{file_index}", image=image_index))

    table = np.concatenate(rows, axis=0)
    mag, length, snr, sb, visible, hit, point_hit, shown, formula, catalogue_hit = table.T
    long = length >= 10.0
    hit, point_hit, visible, catalogue_hit = (v.astype(bool) for v in (hit, point_hit, visible, catalogue_hit))

    def share(mask: np.ndarray, found: np.ndarray = hit) -> dict:
        n = int(mask.sum())
        return {"n": n, "found": int(found[mask].sum()), "completeness": float(found[mask].mean()) if n else None}

    metrics = {
        "data": cfg.data.name, "seed": seed, "images": n_images, "trails": repr(detector),
        "trails_true": int(long.sum()),
        "completeness_snr_ge_10": share(long & (snr >= 10.0)),
        "completeness_mag_le_16": share(long & (mag <= 16.0)),
        "completeness_all": share(long),
        "completeness_formula_snr_ge_10": share(long & (formula >= 10.0)),
        "formula_over_matched_snr": float(np.median(formula[long & (snr > 0)] / snr[long & (snr > 0)]))
        if (long & (snr > 0)).any() else None,
        "completeness_snr_ge_10_visible_centre": share(long & (snr >= 10.0) & visible),
        "completeness_snr_ge_10_half_visible": share(long & (snr >= 10.0) & (shown >= 0.5)),
        "completeness_mag_le_16_half_visible": share(long & (mag <= 16.0) & (shown >= 0.5)),
        "false_trails": false_trails, "false_trails_per_quadrant": false_trails / n_images,
        "satellites": n_sat, "satellites_rejected": (n_sat - sat_kept) / n_sat if n_sat else None,
        "by_length": ev.binned_completeness(length[long], hit[long], LENGTH_EDGES),
        "by_snr": ev.binned_completeness(snr[long], hit[long], SNR_EDGES),
        "by_surface_brightness": ev.binned_completeness(sb[long], hit[long], SB_EDGES),
        "by_magnitude": ev.binned_completeness(mag[long], hit[long], MAG_EDGES),
        "seconds_per_image_trails": t_trails / n_images,
    }
    if cascade is not None:
        either = hit | point_hit
        metrics.update({
            "reported_snr_ge_10_trail_or_point": share(long & (snr >= 10.0), either),
            "cascade_points_on_trails_merged": points_merged,
            # every asteroid (short ones too), as evaluate.py counts them: found within MATCH_RADIUS px of its
            # segment, completeness of those whose centre is on live pixels, purity = true / all detections
            "points_alone": {"completeness_not_dead": share(visible, point_hit)["completeness"],
                             "purity": points["alone"][0] / points["alone"][1] if points["alone"][1] else None,
                             "detections": points["alone"][1]},
            "points_with_trails": {"completeness_not_dead": share(visible, catalogue_hit)["completeness"],
                                   "purity": (points["with_trails"][0] / points["with_trails"][1]
                                              if points["with_trails"][1] else None),
                                   "detections": points["with_trails"][1]},
            "seconds_per_image_cascade": t_cascade / n_images,
            "trail_cost_over_cascade": t_trails / t_cascade if t_cascade > 0 else None,
        })
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "metrics.json", metrics, overwrite=overwrite)
    write_catalogue(out / "trails.csv", concat_catalogues(catalogues), overwrite=overwrite)
    log.info("trails: %s", {k: v for k, v in metrics.items() if not k.startswith("by_")})
    return metrics


def _cascade(cfg: DictConfig) -> tuple[Any, Any]:
    """The cascade (``artifact``, or the shipped one) and its input spec."""
    from neocascade.detection.detector import input_spec
    from neocascade.training.artifact import PACKAGED, load_cascade

    cascade = load_cascade(cfg.get("artifact") or PACKAGED)
    return cascade, input_spec(cascade)
