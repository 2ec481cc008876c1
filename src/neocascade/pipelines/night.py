"""The task behind ``link.py``: a night of revisits -> single-exposure detections -> tracklets -> ADES.

``python link.py input=outputs/data/night out=outputs/link/night`` reads every canonical npz night
file of the folder (keys ``obs_mjd``, ``exptime``, ``wcs``, ``field``, ``epoch``; truth with
``object_id`` and ``stationary`` when simulated), detects in every image with the cascade (the
shipped one unless ``artifact=`` is given) at the linker's lower threshold ``link.threshold``,
turns pixels into sky positions with each image's WCS, links each field, and writes to ``out``:

- ``detections.csv``: one row per detection (:data:`DETECTION_COLUMNS`), its tracklet and stationary flag;
- ``tracklets.csv``: one row per tracklet (:data:`TRACKLET_CSV_COLUMNS`);
- ``tracklets.psv`` / ``tracklets.mpc80``: the tracklets' detections in ADES PSV and MPC 80-column
  (``observatory`` code), when ``ades=true`` / ``mpc80=true``;
- ``metrics.json``: counts, and with truth the tracklet metrics
  (:func:`~neocascade.evaluation.tracklets.tracklet_metrics`) and the single-exposure baseline:
  completeness and m50 at the score threshold giving ``purity`` (0.98) vs after linking;
- ``figures/``: tracklets on the sky per field (the first ``max_sky_figures``), completeness vs rate
  and vs magnitude.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from neocascade.errors import input_error
from neocascade.pipelines.common import report_input_errors, save_config

log = logging.getLogger(__name__)

DETECTION_COLUMNS = (
    "file", "image", "field", "epoch", "exposure", "mjd", "exptime", "x", "y", "ra", "dec", "score", "p1", "p2",
    "snr", "tracklet", "stationary", "object_id", "truth_row", "transient_id",
)
TRACKLET_CSV_COLUMNS = ("field", "tracklet", "n", "mjd", "ra", "dec", "rate", "pa", "rms", "score", "object_id", "pure")
NIGHT_KEYS = ("obs_mjd", "exptime", "wcs", "field", "epoch")


def run(cfg: DictConfig) -> int:
    """Link a night (see the module docstring); bad input exits 2 with one stderr line."""
    with report_input_errors():
        link_night(cfg)
    return 0


def link_night(cfg: DictConfig, *, cascade: Any = None) -> dict:
    """Detect, link and report one night; returns the metrics written to ``metrics.json``.

    ``cascade`` (a loaded artifact) replaces ``cfg.artifact``: tests pass a small one.
    """
    from hydra.utils import instantiate

    from neocascade.pipelines.detect import load_artifact

    out = _out_dir(cfg)
    overwrite = bool(cfg.get("overwrite", False))
    names = ["detections.csv", "tracklets.csv", "metrics.json"] + (["tracklets.psv"] if cfg.get("ades", True) else [])
    names += ["tracklets.mpc80"] if cfg.get("mpc80", True) else []
    for name in names:
        _check_free(out / name, overwrite)
    linker = instantiate(cfg.link)
    files = _night_files(cfg.get("input"))
    if cascade is None:
        cascade, spec = load_artifact(cfg)
    else:
        from neocascade.detection.detector import input_spec

        spec = input_spec(cascade)
    from neocascade.detection.detector import run_veto
    from neocascade.detection.residuals import build_residual_check

    veto = run_veto(cfg.get("veto"), cascade)
    check = build_residual_check(cfg.get("residual_check"))
    lowered = lowered_cascade(cascade, linker.threshold)
    det, truth, footprints = _detect_night(files, lowered, spec, veto, cfg, check=check)
    det["tracklet"], det["stationary"], tracklets, link_counts = _link_fields(det, linker, footprints)
    metrics = {
        "files": [str(f) for f in files],
        "threshold": linker.threshold,
        "cascade_thresholds": [float(cascade.threshold1), float(cascade.threshold2)],
        "counts": {"images": int(truth["n_images"]), "detections": int(det["x"].size),
                   "tracklets": int(tracklets["tracklet"].size), **link_counts},
        "linker": repr(linker),
    }
    if truth["has_truth"]:
        metrics.update(_truth_metrics(det, truth, tracklets, cfg, own=(float(cascade.threshold1), float(cascade.threshold2))))
    _write_outputs(out, det, tracklets, metrics, truth, cfg, overwrite=overwrite)
    log.info("link: %d images, %d detections -> %d tracklets in %s", truth["n_images"], det["x"].size,
             tracklets["tracklet"].size, out)
    return metrics


def lowered_cascade(cascade: Any, threshold: float) -> Any:
    """The cascade with its stage thresholds lowered to ``threshold`` where they are higher.

    The final score (stage 2's probability) of every detection at or above ``threshold`` is then
    known, so the single-exposure baseline can be measured at any higher threshold from one run.
    """
    t = float(threshold)
    if not 0 <= t <= 1:
        raise input_error("link.threshold", "must be a probability in [0, 1]", found=threshold)
    stage1 = replace(cascade.stage1, threshold=min(cascade.stage1.threshold, t))
    stage2 = None if cascade.stage2 is None else replace(cascade.stage2, threshold=min(cascade.stage2.threshold, t))
    return replace(cascade, stage1=stage1, stage2=stage2)


# ---------------------------------------------------------------------------------------------- reading
def _out_dir(cfg: DictConfig) -> Path:
    if cfg.get("out") in (None, ""):
        raise input_error("out", "required: the folder the tracklets are written to")
    return Path(str(cfg.out))


def _check_free(path: Path, overwrite: bool) -> None:
    from neocascade.utils.atomic import check_writable

    check_writable(path, overwrite=overwrite)


def _night_files(value: Any) -> list[Path]:
    """Canonical npz files named by ``input`` (a folder of them, a file, or a list)."""
    if value in (None, "", "???"):
        raise input_error("input", "required: a folder of night npz files (simulate.py data=night_...)")
    entries = [value] if isinstance(value, str) else list(OmegaConf.to_container(value) if not isinstance(value, list) else value)
    files: list[Path] = []
    for entry in entries:
        path = Path(str(entry))
        if path.is_dir():
            listed = sorted(path.glob("*.npz"))
            if not listed:
                raise input_error(path, "folder holds no npz file")
            files.extend(listed)
        elif path.is_file():
            files.append(path)
        else:
            raise input_error(path, "no such file or folder")
    return files


def _detect_night(files: list[Path], cascade: Any, spec: Any, veto: Any, cfg: DictConfig, *,
                  check: Any = None) -> tuple[dict, dict, dict]:
    """Detections of every image (sky positions, truth matches), the truth appearances and the image footprints;
    ``check`` is the residual check after the classifier."""
    from tqdm import tqdm

    from neocascade.io.npz import read_canonical

    parts: list[dict] = []
    truth_parts: list[dict] = []
    prints: dict[str, list] = {"field": [], "mjd": [], "ra": [], "dec": []}
    has_truth, n_images, truth_offset = True, 0, 0
    for k, path in enumerate(tqdm(files, desc="link: detect", unit="file", disable=not cfg.get("progress", True))):
        f = read_canonical(path)
        missing = [key for key in NIGHT_KEYS if getattr(f, key, None) is None]
        if missing:
            raise input_error(path, f"not a night file: missing key(s) {', '.join(repr(m) for m in missing)}",
                              expected="obs_mjd, exptime, wcs, field, epoch (simulate.py with revisits)")
        has_truth &= f.object_id is not None
        t = {key: np.full(len(f.truth), np.nan) for key in ("mjd", "ra", "dec")}
        t["visible"] = np.zeros(len(f.truth), dtype=bool)
        for i in range(f.n_images):
            part, footprint = _detect_image(f, i, cascade, spec, veto, cfg, truth_sky=t, check=check)
            part.update(file=np.full(part["x"].size, k), exposure=np.full(part["x"].size, n_images + i))
            part["truth_row"] = np.where(part["truth_row"] >= 0, part["truth_row"] + truth_offset, -1)
            parts.append(part)
            for key, value in zip(("field", "mjd", "ra", "dec"), (int(f.field[i]), f.obs_mjd[i], *footprint)):
                prints[key].append(value)
        if f.object_id is not None:
            image = f.truth[:, 0].astype(np.int64)
            truth_parts.append({"object_id": f.object_id, "field": f.field[image], "epoch": f.epoch[image],
                                "magnitude": f.truth[:, 3], **t})
        truth_offset += len(f.truth)
        n_images += f.n_images
    ints = {"file", "image", "field", "epoch", "exposure", "object_id", "truth_row", "transient_id"}
    det = {key: np.concatenate([p[key] for p in parts]).astype(np.int64 if key in ints else np.float64)
           if parts else np.empty(0, dtype=np.int64 if key in ints else np.float64)
           for key in DETECTION_COLUMNS if key not in ("tracklet", "stationary")}
    keys = ("object_id", "field", "epoch", "magnitude", "mjd", "ra", "dec", "visible")
    table = {key: np.concatenate([p[key] for p in truth_parts]) if truth_parts else np.empty(0) for key in keys}
    for key in ("object_id", "field", "epoch"):
        table[key] = table[key].astype(np.int64)
    table["visible"] = table["visible"].astype(bool)
    table.update(has_truth=has_truth, n_images=n_images)
    footprints = {key: np.asarray(v, dtype=np.int64 if key == "field" else np.float64).reshape(
        (-1,) if key in ("field", "mjd") else (-1, 4)) for key, v in prints.items()}
    return det, table, footprints


def _detect_image(f: Any, i: int, cascade: Any, spec: Any, veto: Any, cfg: DictConfig, *,
                  truth_sky: dict, check: Any = None) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """One image's detections with sky positions and truth matches (truth rows of the file, -1 none), and the
    sky corners of its data footprint; fills ``truth_sky`` (time, position, visibility) for its truth rows."""
    from neocascade.candidates.labels import match_centres, match_trails
    from neocascade.detection.detector import detect_image
    from neocascade.linking.sky import image_footprint

    radius = float(cfg.get("match_radius", 3.0))
    obs = f.observation(i)
    image = f.image(i)
    d = detect_image(image, cascade, merge_radius=float(cfg.get("merge_radius", 5.0)),
                     batch_size=int(cfg.get("batch_size", 1024)), spec=spec, veto=veto, check=check)
    n = d["x"].size
    ra, dec = obs.pixel_to_sky(d["x"], d["y"])
    row_ids = np.flatnonzero(f.truth[:, 0] == i)
    _, matched = match_trails(d["rows"], d["cols"], f.truth[row_ids], radius=radius)
    st = f.stationary[f.stationary[:, 0] == i]
    _, st_matched = match_centres(d["rows"], d["cols"], st[:, 1:3], radius=radius)
    object_id = np.full(n, -1, dtype=np.int64)
    if f.object_id is not None:
        object_id = np.where(matched >= 0, f.object_id[row_ids][np.maximum(matched, 0)] if n else 0, -1)
    part = {
        "image": np.full(n, i), "field": np.full(n, int(f.field[i])), "epoch": np.full(n, int(f.epoch[i])),
        "mjd": np.full(n, obs.mjd), "exptime": np.full(n, obs.exptime), "x": d["x"], "y": d["y"], "ra": ra,
        "dec": dec, "score": np.where(np.isfinite(d["p2"]), d["p2"], d["p1"]), "p1": d["p1"], "p2": d["p2"],
        "snr": d["snr"], "object_id": object_id,
        "truth_row": np.where(matched >= 0, row_ids[np.maximum(matched, 0)] if n else 0, -1),
        "transient_id": np.where(st_matched >= 0, st[np.maximum(st_matched, 0), 4] if len(st) else 0, -1),
    }
    if row_ids.size:
        x, y = f.truth[row_ids, 1], f.truth[row_ids, 2]
        truth_sky["ra"][row_ids], truth_sky["dec"][row_ids] = obs.pixel_to_sky(x, y)
        truth_sky["mjd"][row_ids] = obs.mjd
        centre = image[np.rint(y).astype(np.int64).clip(0, image.shape[0] - 1),
                       np.rint(x).astype(np.int64).clip(0, image.shape[1] - 1)]
        truth_sky["visible"][row_ids] = np.isfinite(centre) & (centre != 0)  # dead pixels: nobody can see it
    corner_x, corner_y = image_footprint(image, margin=spec.cutout_size // 2)
    return part, obs.pixel_to_sky(corner_x, corner_y)


# ---------------------------------------------------------------------------------------------- linking
def _link_fields(det: dict, linker: Any, footprints: dict) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Link each field alone (with its images' footprints); tracklet ids are made unique over the night."""
    n = det["x"].size
    tracklet = np.full(n, -1, dtype=np.int64)
    stationary = np.zeros(n, dtype=bool)
    tables, offset = [], 0
    counts = {"candidate_pairs": 0, "stationary": 0}
    for field in np.unique(det["field"]):
        idx = np.flatnonzero(det["field"] == field)
        own = footprints["field"] == field
        res = linker({k: det[k][idx] for k in ("exposure", "mjd", "ra", "dec", "x", "y", "score", "exptime")},
                     footprints={k: footprints[k][own] for k in ("mjd", "ra", "dec")})
        linked = res.tracklet >= 0
        tracklet[idx[linked]] = res.tracklet[linked] + offset
        stationary[idx] = res.stationary
        table = dict(res.tracklets)
        table["tracklet"] = table["tracklet"] + offset
        table["field"] = np.full(table["tracklet"].size, field, dtype=np.int64)
        tables.append(table)
        offset += table["tracklet"].size
        counts["candidate_pairs"] += res.n_pairs
        counts["stationary"] += int(res.stationary.sum())
    from neocascade.linking.tracklets import TRACKLET_COLUMNS

    merged = {k: np.concatenate([t[k] for t in tables]) if tables else np.empty(0) for k in (*TRACKLET_COLUMNS, "field")}
    return tracklet, stationary, merged, counts


# ---------------------------------------------------------------------------------------------- metrics
def _truth_metrics(det: dict, truth: dict, tracklets: dict, cfg: DictConfig, *, own: tuple[float, float]) -> dict:
    """Tracklet metrics and the single-exposure baseline vs linking, against the simulated truth.

    Only visible truth rows (centre pixel with data) count; ``own`` are the cascade's own stage thresholds,
    reported as a second single-exposure reference.
    """
    from neocascade.evaluation.completeness import fit_logistic
    from neocascade.evaluation.tracklets import (
        classify_tracklets, findable_objects, found_objects, object_motion, rows_found, threshold_at_purity,
        tracklet_metrics,
    )

    purity = float(cfg.get("purity", 0.98))
    vis = truth["visible"]
    epoch_key = det["field"] * 1000 + det["epoch"]
    truth_epoch = truth["field"] * 1000 + truth["epoch"]
    linking = tracklet_metrics(det["tracklet"], det["object_id"], truth["object_id"][vis], truth_epoch[vis],
                               det_epoch=epoch_key, stationary=det["stationary"], det_transient=det["transient_id"])
    n_rows = truth["object_id"].size
    is_true = det["object_id"] >= 0
    t_single = threshold_at_purity(det["score"], is_true, purity=purity)
    at_target = det["score"] >= t_single if np.isfinite(t_single) else np.zeros(det["score"].size, bool)
    at_own = (det["p1"] >= own[0]) & (np.nan_to_num(det["p2"], nan=-1.0) >= own[1])
    linked = rows_found(det["truth_row"], det["tracklet"] >= 0, n_rows)
    mags = truth["magnitude"][vis]

    def single_exposure(accepted: np.ndarray, threshold: float) -> tuple[dict, np.ndarray]:
        found = rows_found(det["truth_row"], accepted, n_rows)
        fit = fit_logistic(mags, found[vis])
        return {"threshold": threshold,
                "detection_purity": float(is_true[accepted].mean()) if accepted.any() else float("nan"),
                "completeness": float(found[vis].mean()) if vis.any() else float("nan"),
                "m50": fit.m50, "m50_err": fit.m50_err}, found

    baseline, single = single_exposure(at_target, t_single)
    baseline = {"purity_target": purity, "purity_reached": bool(np.isfinite(t_single)), **baseline}
    own_threshold, single_own = single_exposure(at_own, float(own[1]))
    fit_linked = fit_logistic(mags, linked[vis])
    after = {
        "detection_purity": linking["detection_purity"],
        "completeness": float(linked[vis].mean()) if vis.any() else float("nan"),
        "m50": fit_linked.m50, "m50_err": fit_linked.m50_err,
        "m50_gain": fit_linked.m50 - baseline["m50"],
    }
    ids, findable = findable_objects(truth["object_id"][vis], truth_epoch[vis])
    classes = classify_tracklets(det["tracklet"], det["object_id"])
    rate_ids, rate = object_motion(truth["object_id"], truth["mjd"], truth["ra"], truth["dec"])
    where = np.searchsorted(ids, truth["object_id"][vis])
    per_object = {
        "findable": findable,
        "found": found_objects(classes, ids, min_obs=2),
        "single": np.isin(ids, truth["object_id"][single & vis]),
        "rate": rate[np.searchsorted(rate_ids, ids)],
        "magnitude": np.bincount(where, weights=mags, minlength=ids.size) / np.maximum(np.bincount(where, minlength=ids.size), 1),
    }
    if classes["tracklet"].size:
        at = np.searchsorted(classes["tracklet"], tracklets["tracklet"])
        tracklets["object_id"], tracklets["pure"] = classes["object"][at], classes["pure"][at]
    return {"linking": linking, "single_exposure": baseline, "single_exposure_cascade_threshold": own_threshold,
            "after_linking": after,
            "_rows": {"single": single[vis], "own": single_own[vis], "linked": linked[vis], "magnitude": mags},
            "_objects": per_object}


# ---------------------------------------------------------------------------------------------- writing
def _write_outputs(out: Path, det: dict, tracklets: dict, metrics: dict, truth: dict, cfg: DictConfig, *,
                   overwrite: bool) -> None:
    """CSV tables, ADES, metrics JSON and figures, each written atomically."""
    from neocascade.utils.atomic import save_json, save_text

    rows, objects = metrics.pop("_rows", None), metrics.pop("_objects", None)
    save_text(out / "detections.csv", _csv({k: det[k] for k in DETECTION_COLUMNS}), overwrite=overwrite)
    columns = [c for c in TRACKLET_CSV_COLUMNS if c in tracklets]
    save_text(out / "tracklets.csv", _csv({c: tracklets[c] for c in columns}), overwrite=overwrite)
    if cfg.get("ades", True) or cfg.get("mpc80", True):
        _write_astrometry(out, det, cfg, overwrite=overwrite)
    if cfg.get("figures", True):
        _write_figures(out / "figures", det, truth, rows, objects, cfg, overwrite=overwrite)
    save_json(out / "metrics.json", _finite(metrics), overwrite=overwrite)
    if cfg.get("save_config", True):
        save_config(cfg, out)


def _write_astrometry(out: Path, det: dict, cfg: DictConfig, *, overwrite: bool) -> None:
    """The linked detections as ADES PSV (``tracklets.psv``) and MPC 80-column (``tracklets.mpc80``), one
    ``trkSub`` per tracklet, in time order within each tracklet."""
    from neocascade.io.ades import write_ades_psv
    from neocascade.io.mpc80 import write_mpc80

    linked = np.flatnonzero(det["tracklet"] >= 0)
    linked = linked[np.lexsort((det["mjd"][linked], det["tracklet"][linked]))]
    observations = {
        "trksub": np.array([f"t{t:06d}" for t in det["tracklet"][linked].tolist()]),  # MPC 80-col: <= 7 characters
        "mjd": det["mjd"][linked],
        "ra": det["ra"][linked],
        "dec": det["dec"][linked],
        "exptime": det["exptime"][linked],
    }
    observatory = str(cfg.get("observatory", "I41"))
    if cfg.get("ades", True):
        write_ades_psv(out / "tracklets.psv", observations, observatory=observatory, overwrite=overwrite)
    if cfg.get("mpc80", True):
        write_mpc80(out / "tracklets.mpc80", observations, observatory=observatory, overwrite=overwrite)


def _write_figures(folder: Path, det: dict, truth: dict, rows: Any, objects: Any, cfg: DictConfig, *,
                   overwrite: bool) -> None:
    """Sky maps of the first fields and, with truth, completeness vs rate and vs magnitude."""
    from neocascade.evaluation.report import figure_png
    from neocascade.evaluation.tracklet_figures import (
        completeness_vs_rate, tracklet_completeness_vs_magnitude, tracklets_on_sky,
    )
    from neocascade.utils.atomic import save_bytes

    for field in np.unique(det["field"])[: int(cfg.get("max_sky_figures", 4))]:
        sel = det["field"] == field
        sky_truth = None
        if truth["has_truth"]:
            on = truth["field"] == field
            sky_truth = {"ra": truth["ra"][on], "dec": truth["dec"][on]}
        fig = tracklets_on_sky(det["ra"][sel], det["dec"][sel], det["mjd"][sel], det["tracklet"][sel],
                               stationary=det["stationary"][sel], truth=sky_truth, title=f"Field {field}: tracklets")
        save_bytes(folder / f"sky_field{field}.png", figure_png(fig), overwrite=overwrite)
    if rows is None or objects is None:
        return
    purity = float(cfg.get("purity", 0.98))
    f = objects["findable"] & np.isfinite(objects["rate"]) & (objects["rate"] > 0)
    fig = completeness_vs_rate(objects["rate"][f], objects["found"][f],
                               reference={f"single exposure at purity {purity:g}, any epoch": objects["single"][f]})
    save_bytes(folder / "completeness_vs_rate.png", figure_png(fig), overwrite=overwrite)
    if rows["magnitude"].size:
        reference = {f"single exposure at purity {purity:g}": rows["single"],
                     "single exposure at the cascade's threshold": rows["own"]}
        fig = tracklet_completeness_vs_magnitude(rows["magnitude"], rows["linked"], reference=reference)
        save_bytes(folder / "completeness_vs_magnitude.png", figure_png(fig), overwrite=overwrite)


def _csv(columns: dict[str, np.ndarray]) -> str:
    """Columns as CSV text: floats with up to 10 significant digits, bools as 0/1."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(columns))
    formatted = []
    for value in columns.values():
        v = np.asarray(value)
        if v.dtype.kind == "f":
            formatted.append(np.char.mod("%.10g", v))
        else:
            formatted.append(v.astype(np.int64).astype(str) if v.dtype.kind == "b" else v.astype(str))
    if formatted and formatted[0].size:
        writer.writerows(np.column_stack(formatted).tolist())
    return buf.getvalue()


def _finite(obj: Any) -> Any:
    """NaN and inf as None, so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
