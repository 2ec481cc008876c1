"""Evaluate a trained cascade artifact on its test files: the task behind ``evaluate.py``.

Steps: load the artifact; build (or reuse) the candidate cache of the validation and test files
with the artifact's own preprocessing; score every candidate with both stages; pick the
operating point on the validation file (the stage-2 threshold reaching ``eval.target_precision``);
report candidate-level metrics (stage 1, stage 2, cascade) and asteroid-level, end-to-end metrics
(completeness, purity, false detections per quadrant, duplicates, why asteroids were missed) at
the trained thresholds, at 0.5 and at the operating point; fit m50; draw the figures; write
``report.md``, ``metrics.json`` and the PNGs into the report folder; log the same to wandb.
"""

from __future__ import annotations

import functools

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from neocascade.detection.detector import apply_veto, run_veto
from neocascade.detection.reference import build_star_check
from neocascade.detection.residuals import build_residual_check
from neocascade.errors import input_error
from neocascade.evaluation import figures as F
from neocascade.evaluation.completeness import binned_completeness, fit_logistic, magnitude_bins
from neocascade.evaluation.metrics import MISS_REASONS, classification_report, end_to_end, pr_curve, scalar_metrics
from neocascade.evaluation.report import check_report_dir, render_markdown, to_json, write_report
from neocascade.pipelines.checks import image_keys, image_stride, kept_by_checks, star_check_for, star_reader
from neocascade.pipelines.common import JobInfo, job_info, report_input_errors
from neocascade.utils.atomic import check_output_dir, save_text
from neocascade.utils.options import validate_evaluate_options

log = logging.getLogger("neocascade.evaluate")

FIGURE_SETS = ("standard", "data")
OPERATING_POINTS = ("target", "artifact", "half")
# the artifact's preprocessing always wins over a data preset: these keys make the cutouts
SPEC_KEYS = ("sigma", "kernel", "stride", "cutout_size", "channels", "normalize", "label_mode", "label_radius")


@dataclass
class Scored:
    """One split's candidates and both stages' scores."""

    cs: Any
    p1: np.ndarray
    p2: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.cs.label, dtype=bool)


@report_input_errors()
def run(cfg: DictConfig) -> dict:
    """Run the evaluation; an :class:`InputError` becomes one stderr line and exit status 2."""
    return evaluate(cfg)


def evaluate(cfg: DictConfig, *, run_dir: str | Path | None = None) -> dict:
    """Evaluate ``cfg.artifact``; returns the results dict also written to ``metrics.json``.

    Parameters
    ----------
    cfg : DictConfig
        The composed ``conf/evaluate.yaml``.
    run_dir : path, optional
        The run folder (wandb logs, a copy of ``metrics.json``); default: Hydra's run folder.
    """
    from neocascade.training.artifact import load_cascade

    validate_evaluate_options(cfg)
    job = job_info(run_dir)
    figure_sets = _figure_sets(cfg.get("figures"))
    op_name = str(cfg.eval.operating_point)
    if op_name not in OPERATING_POINTS:
        raise input_error("eval.operating_point", f"must be one of {', '.join(OPERATING_POINTS)}", found=repr(op_name))
    target = float(cfg.eval.target_precision)
    if not 0.0 < target <= 1.0:
        raise input_error("eval.target_precision", "must be a precision in (0, 1]", found=target)
    cascade = load_cascade(cfg.artifact)
    name = str(cfg.name) if cfg.get("name") else Path(cfg.artifact).resolve().parent.name
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else Path(cfg.paths.outputs) / "eval" / name
    check_output_dir(out_dir, key="out_dir")
    check_output_dir(job.run_dir, key="hydra.run.dir")
    check_output_dir(cfg.paths.cache, key="paths.cache")
    check_report_dir(out_dir, overwrite=bool(cfg.overwrite))  # fail before the long part

    check = build_residual_check(cfg.get("residual_check"))  # bad settings refused before the long part
    star_check = build_star_check(cfg.get("reference_check"))
    dm, data_cfg = _datamodule(cfg, cascade)
    star_check = star_check_for(dm.source, star_check, without="evaluated without the check")
    val = _score(dm, "val", cascade, batch_size=int(cfg.eval.batch_size))
    test = _score(dm, "test", cascade, batch_size=int(cfg.eval.batch_size))

    t1, t2_artifact = cascade.threshold1, cascade.threshold2
    t2_target = _threshold_for_precision(val.p2, val.labels, target)
    points = {"target": t2_target, "artifact": t2_artifact, "half": 0.5}
    results = _candidate_results(val, test, t1=t1, points=points, op_name=op_name, target=target)
    veto = run_veto(cfg.get("veto"), cascade)
    pixels = _pixel_reader(dm, test)
    stars = star_reader(dm.source, test.cs, key="reference_check") if star_check is not None else None
    e2e = {k: _end_to_end(test, t1=t1, t2=t2, cfg=cfg, veto=veto, pixels=pixels, check=check,
                          star_check=star_check, stars=stars)
           for k, t2 in points.items()}
    primary = e2e[op_name]
    metrics = results.pop("metrics")
    for key, r in e2e.items():
        suffix = "" if key == op_name else f"@{key}"
        metrics.update({f"{k}{suffix}": v for k, v in scalar_metrics(r, prefix="test").items()})

    truth = test.cs.truth
    fit = fit_logistic(truth[:, 3], primary["found_mask"]) if len(truth) else None
    m50 = {} if fit is None else {
        "m50": fit.m50, "m50_err": fit.m50_err, "width": fit.width, "width_err": fit.width_err,
        "plateau": fit.plateau, "plateau_err": fit.plateau_err, "n": fit.n,
    }
    metrics.update({f"test/e2e_{k}": v for k, v in m50.items() if k in ("m50", "m50_err", "width", "plateau")})

    figures: dict[str, Any] = {}
    footprint_rows: list[dict] = []
    if "standard" in figure_sets:
        figures.update(_standard_figures(val, test, primary, fit, t1=t1, points=points, op_name=op_name, cfg=cfg))
        if int(cfg.eval.footprint.n_images) > 0:
            fp_figs, footprint_rows = _footprint(dm, cascade, cfg)
            figures.update(fp_figs)
    if "data" in figure_sets:
        figures.update(_data_figures(dm, test, cfg))

    counts = {
        "val_candidates": len(val.cs), "val_positive": int(val.labels.sum()),
        "test_candidates": len(test.cs), "test_positive": int(test.labels.sum()),
        "test_images": primary["n_images"], "test_asteroids": int(len(truth)),
    }
    report = {
        "title": f"Evaluation of {cfg.artifact}",
        "summary": [
            ("artifact", str(cfg.artifact)),
            ("data", f"{data_cfg.get('name')}: test files {list(dm.split['test'])}, validation files {list(dm.split['val'])}"),
            ("stages", f"{cascade.stage1_arch} -> {cascade.stage2_arch or '(none)'}"),
            ("thresholds", f"stage 1 {t1:.4g}, stage 2 (trained) {t2_artifact:.4g}, stage 2 (operating point) {t2_target:.4g}"),
            ("test candidates", f"{counts['test_candidates']} ({counts['test_positive']} positive)"),
            ("test images / asteroids", f"{counts['test_images']} / {counts['test_asteroids']}"),
            ("match radius / merge radius", f"{cfg.eval.match_radius} px / {cfg.eval.merge_radius} px"),
            ("residual check, reference check, then veto, after the classifier",
             (f"{check!r}, " if check is not None else "none, ")
             + (f"{star_check!r}, then " if star_check is not None else "none, then ")
             + _veto_summary(veto, primary["vetoed"], own=cfg.get("veto") is not None)),
            ("plain test/* metrics use", f"the {op_name} operating point"),
        ],
        "operating_point": results["operating_point"],
        "candidate": results["candidate"],
        "end_to_end": {k: _scalars(v) for k, v in e2e.items()},
        "m50": m50,
        "footprint": footprint_rows,
    }
    payload = {
        "artifact": str(cfg.artifact),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "data": data_cfg,
        "split": {k: list(v) for k, v in dm.split.items()},
        "counts": counts,
        "metrics": metrics,
        "operating_point": results["operating_point"],
        "candidate": results["candidate"],
        "end_to_end": report["end_to_end"],
        "m50": m50,
        "footprint": footprint_rows,
        **_error_ids(test, primary, t1=t1, t2=points[op_name], limit=int(cfg.eval.max_report_ids)),
    }
    write_report(out_dir, markdown=render_markdown(report, figures=list(figures)), metrics=payload, figures=figures,
                 overwrite=bool(cfg.overwrite))
    save_text(job.run_dir / "metrics.json", to_json(payload), overwrite=True)
    log.info("report written to %s", out_dir)
    _log_wandb(cfg, job, metrics, out_dir, list(figures))
    for fig in figures.values():
        fig.clear()
    return payload


# ---------------------------------------------------------------------------------------------- data
def _figure_sets(value: Any) -> tuple[str, ...]:
    """``figures`` as a tuple of names; a single string is one name, ``all`` is both."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else list(value)
    if "all" in names:
        names = list(FIGURE_SETS)
    unknown = [n for n in names if n not in FIGURE_SETS]
    if unknown:
        raise input_error("figures", f"unknown figure set {unknown[0]!r}", expected=f"some of {list(FIGURE_SETS)} or all")
    return tuple(names)


def _datamodule(cfg: DictConfig, cascade: Any) -> tuple[Any, dict]:
    """The data module of the artifact's data (or ``cfg.data``), with the artifact's preprocessing.

    A data config read from the artifact names only the project's data classes (``specs.check_data_config``),
    and the selector's class comes from the fixed set of ``training.specs``, never from the file.
    """
    from hydra.utils import instantiate

    from neocascade.training.specs import check_data_config, hydra_config

    if cfg.get("data") is not None:
        data = OmegaConf.to_container(cfg.data, resolve=True)
    else:
        data = dict(cascade.config.get("data") or {})
        if not data:
            raise input_error(cfg.artifact, "stores no data config; pass data=<preset>")
        data = check_data_config(data, source=f"{cfg.artifact}: config.data")
    spec = cascade.input_spec
    for key in SPEC_KEYS:
        if key in spec:
            data[key] = spec[key]
    if spec.get("selector"):
        data["selector"] = hydra_config(spec["selector"], group="selector",
                                        source=f"{cfg.artifact}: input_spec.selector")
    data["cache_dir"] = str(cfg.paths.cache)
    data["seed"] = int(cfg.seed)
    data["progress"] = bool(cfg.get("progress", False))
    if "_target_" not in data:
        raise input_error("data", "has no _target_", found=sorted(data))
    return instantiate(OmegaConf.create(data), _convert_="all"), data


def _score(dm: Any, split: str, cascade: Any, *, batch_size: int) -> Scored:
    """Both stages' probabilities for every candidate of a split, in candidate order."""
    cs = dm.candidates(split)
    p1 = np.full(len(cs), np.nan)
    p2 = np.full(len(cs), np.nan)
    for x, _, index in dm.predict_loader(split, batch_size=batch_size):
        b1, b2 = cascade.score(x)
        idx = index.numpy()
        p1[idx], p2[idx] = b1, b2
    log.info("scored %d %s candidates", len(cs), split)
    return Scored(cs=cs, p1=p1, p2=p2)


def _threshold_for_precision(probs: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The shared rule in ``training.thresholds`` (stage-2 score; NaN = rejected by stage 1)."""
    from neocascade.training.thresholds import threshold_for_precision

    return threshold_for_precision(probs, labels, target_precision=target)


# ---------------------------------------------------------------------------------------------- metrics
def _at(p: np.ndarray, t: float) -> np.ndarray:
    """``p >= t`` with NaN rejected."""
    with np.errstate(invalid="ignore"):
        return np.asarray(p >= t, dtype=bool)


def _candidate_results(val: Scored, test: Scored, *, t1: float, points: Mapping[str, float], op_name: str,
                       target: float) -> dict:
    """Classification reports (stage 1, stage 2 on its inputs, cascade per point) and flat metrics."""
    y = test.labels
    pass1 = _at(test.p1, t1)
    candidate = {
        f"stage 1 (t1={t1:.3g})": classification_report(y, pass1),
        f"stage 2 on stage-1 positives (t2={points['artifact']:.4g})": classification_report(
            y[pass1], _at(test.p2[pass1], points["artifact"])),
    }
    metrics: dict[str, float] = {}
    _flat(metrics, "test/stage1", candidate[f"stage 1 (t1={t1:.3g})"])
    _flat(metrics, "test/stage2", classification_report(y[pass1], _at(test.p2[pass1], points["artifact"])))
    for key, t2 in points.items():
        rep = classification_report(y, pass1 & _at(test.p2, t2))
        candidate[f"cascade @ {key} (t2={t2:.4g})"] = rep
        _flat(metrics, "test/cascade", rep, suffix="" if key == op_name else f"@{key}")
    vp, vr = {}, {}
    for key, t2 in points.items():
        acc = _at(val.p1, t1) & _at(val.p2, t2)
        rep = classification_report(val.labels, acc)
        vp[key], vr[key] = rep["positive"]["precision"], rep["positive"]["recall"]
    operating_point = {
        "target_precision": target,
        "threshold1": t1,
        "threshold2_target": points["target"],
        "threshold2_artifact": points["artifact"],
        "val_precision_target": vp["target"],
        "val_recall_target": vr["target"],
        "val_precision_artifact": vp["artifact"],
        "val_recall_artifact": vr["artifact"],
        "reached": bool(np.isfinite(points["target"])),
    }
    metrics["val/threshold2_target"] = points["target"]
    metrics["val/cascade_precision_target"] = vp["target"]
    metrics["val/cascade_recall_target"] = vr["target"]
    return {"candidate": candidate, "operating_point": operating_point, "metrics": metrics}


def _flat(out: dict, prefix: str, rep: Mapping[str, Any], *, suffix: str = "") -> None:
    """``prefix_precision``, ``_recall``, ``_f1``, ``_accuracy`` of the positive class."""
    pos = rep["positive"]
    for k in ("precision", "recall", "f1"):
        out[f"{prefix}_{k}{suffix}"] = pos[k]
    out[f"{prefix}_accuracy{suffix}"] = rep["accuracy"]


def _image_keys(test: Scored) -> tuple[np.ndarray, np.ndarray, int]:
    """One int key per (file, image) for candidates and truth rows, and the number of test images."""
    cs = test.cs
    stride = image_stride(cs)
    det_key = image_keys(cs)
    truth_key = cs.truth_file.astype(np.int64) * stride + cs.truth[:, 0].astype(np.int64)
    return det_key, truth_key, sum(int(cs.info[f]["n_images"]) for f in cs.files)


def _pixel_reader(dm: Any, test: Scored) -> Any:
    """``key -> pixels`` of a test image (keys of :func:`_image_keys`), read again from the data source for the
    veto's pixel decision; the last few are kept, since every operating point asks for the same ones."""
    stride = image_stride(test.cs)

    @functools.lru_cache(maxsize=4)
    def read(key: int) -> np.ndarray | None:
        file, image = divmod(int(key), stride)
        return np.asarray(dm.source.read(file, image)[0], dtype=np.float32)

    return read


def _end_to_end(test: Scored, *, t1: float, t2: float, cfg: DictConfig, veto: Any = None, pixels: Any = None,
                check: Any = None, star_check: Any = None, stars: Any = None) -> dict:
    """Asteroid-level results of the test files at thresholds (t1, t2), after the residual ``check`` on the cached
    unfiltered cutouts, the reference ``star_check`` against each image's catalogue ``stars(key)`` and ``veto``
    (None: none), which gets an image's pixels from ``pixels(key)`` where it would remove a line (as in
    ``detect_image``); all three count as vetoed."""
    cs = test.cs
    pass1 = _at(test.p1, t1)
    classified = pass1 & _at(test.p2, t2)
    det_key, truth_key, n_images = _image_keys(test)
    accepted = classified.copy()
    index = np.flatnonzero(classified)
    accepted[index] = kept_by_checks(cs, index, check=check, star_check=star_check, stars=stars)
    accepted[accepted] = apply_veto(veto, cs.x[accepted], cs.y[accepted], det_key[accepted], pixels)
    n_truth = len(cs.truth)
    stage1_pass = np.zeros(n_truth, dtype=bool)
    stage2_pass = np.zeros(n_truth, dtype=bool)
    veto_pass = np.zeros(n_truth, dtype=bool)
    matched = cs.truth_index >= 0
    stage1_pass[cs.truth_index[matched & pass1]] = True
    stage2_pass[cs.truth_index[matched & classified]] = True
    veto_pass[cs.truth_index[matched & accepted]] = True
    veto_pass |= ~stage2_pass  # only an accepted asteroid can be vetoed
    truth = cs.truth.copy()
    truth[:, 0] = truth_key
    score = np.where(np.isfinite(test.p2), test.p2, test.p1)[accepted]
    result = end_to_end(
        cs.x[accepted].astype(np.float64), cs.y[accepted].astype(np.float64), det_key[accepted], score, truth,
        n_images=max(n_images, 1), dead=cs.truth_dead, proposed=cs.truth_proposed, stage1_pass=stage1_pass,
        stage2_pass=stage2_pass, veto_pass=veto_pass, match_radius=float(cfg.eval.match_radius),
        merge_radius=float(cfg.eval.merge_radius),
    )
    result["accepted_index"] = np.flatnonzero(accepted)
    result["vetoed"] = int(classified.sum() - accepted.sum())
    return result


def _veto_summary(veto: Any, vetoed: int, *, own: bool) -> str:
    """The report's line on the veto: which one, whose (this run's ``veto=`` or the artifact's), how many dropped."""
    if veto is None:
        return "none"
    return f"{veto!r} ({'this run' if own else 'the artifact'}), {vetoed} accepted candidates dropped"


def _scalars(result: Mapping[str, Any]) -> dict:
    """The JSON-able part of an end-to-end result (numbers and the misses dict)."""
    return {k: v for k, v in result.items() if isinstance(v, dict) or np.isscalar(v)}


def _error_ids(test: Scored, primary: Mapping[str, Any], *, t1: float, t2: float, limit: int) -> dict:
    """IDs of candidate false positives / negatives and of missed asteroids at the primary point."""
    cs = test.cs
    accepted = _at(test.p1, t1) & _at(test.p2, t2)
    y = test.labels
    fp = np.flatnonzero(accepted & ~y)
    fn = np.flatnonzero(~accepted & y)

    def ids(idx: np.ndarray) -> list[list[int]]:
        idx = idx[:limit]
        return np.column_stack([cs.file[idx], cs.image[idx], cs.x[idx], cs.y[idx]]).astype(int).tolist()

    missed = np.flatnonzero(~primary["found_mask"])[:limit]
    reasons = primary["miss_reason"][missed]
    t = cs.truth
    missed_rows = [
        {"file": int(cs.truth_file[i]), "image": int(t[i, 0]), "x": float(t[i, 1]), "y": float(t[i, 2]),
         "magnitude": float(t[i, 3]), "reason": MISS_REASONS[int(r)]}
        for i, r in zip(missed, reasons)
    ]
    kept = primary["accepted_index"][primary["kept"]]
    false_det = kept[~primary["det_matched"]][:limit]
    return {
        "false_positive_ids": {"columns": ["file", "image", "x", "y"], "count": int(fp.size), "rows": ids(fp)},
        "false_negative_ids": {"columns": ["file", "image", "x", "y"], "count": int(fn.size), "rows": ids(fn)},
        "false_detection_ids": {"columns": ["file", "image", "x", "y"], "count": int(primary["false_detections"]),
                                "rows": ids(false_det)},
        "missed_asteroids": {"count": int((~primary["found_mask"]).sum()), "rows": missed_rows},
    }


# ---------------------------------------------------------------------------------------------- figures
def _cutouts(cs: Any, idx: np.ndarray) -> np.ndarray:
    """Channel 0 (filtered) cutouts of candidates ``idx`` (in that order) as float32 (n, S, S)."""
    if idx.size == 0:
        return np.zeros((0, cs.cutout_size, cs.cutout_size), dtype=np.float32)
    order = np.argsort(idx, kind="stable")
    stamps = np.empty((idx.size, cs.cutout_size, cs.cutout_size), dtype=np.float32)
    stamps[order] = np.asarray(cs.cutouts.take(idx[order]), dtype=np.float32)[:, 0]
    return stamps


def _standard_figures(val: Scored, test: Scored, primary: Mapping[str, Any], fit: Any, *, t1: float,
                      points: Mapping[str, float], op_name: str, cfg: DictConfig) -> dict:
    """Completeness curves, miss rate, PR curve, confusion matrix and TP / FP / FN grids."""
    figs: dict[str, Any] = {}
    truth = test.cs.truth
    step = float(cfg.eval.mag_step)
    if len(truth):
        found = primary["found_mask"]
        reference = {"proposed by the selector": test.cs.truth_proposed, "visible (centre not dead)": ~test.cs.truth_dead}
        figs["completeness_vs_magnitude"] = F.completeness_vs_magnitude(
            truth[:, 3], found, step=step, fit=fit, reference=reference)
        figs["completeness_vs_length"] = F.completeness_vs_length(truth[:, 4], found, bins=int(cfg.eval.length_bins))
        figs["miss_rate_vs_magnitude"] = F.miss_rate_vs_magnitude(truth[:, 3], found, reasons=primary["miss_reason"],
                                                                  step=step)
    curves, marks = {}, {}
    if val.labels.any():
        p, r, _ = pr_curve(val.p1, val.labels)
        curves["stage 1 alone (P1)"] = (p, r)
        p, r, _ = pr_curve(val.p2, val.labels)
        curves[f"cascade (P2, stage 1 at t1={t1:.3g})"] = (p, r)
        for key, t2 in points.items():
            if np.isfinite(t2):
                rep = classification_report(val.labels, _at(val.p1, t1) & _at(val.p2, t2))
                marks[f"{key} (t2={t2:.4g})"] = (rep["positive"]["precision"], rep["positive"]["recall"])
        marks = {k: v for k, v in marks.items() if np.isfinite(v[0]) and np.isfinite(v[1])}
        figs["pr_curve"] = F.pr_figure(curves, points=marks, target_precision=float(cfg.eval.target_precision))
    accepted = _at(test.p1, t1) & _at(test.p2, points[op_name])
    y = test.labels
    rep = classification_report(y, accepted)
    figs["confusion_cascade"] = F.confusion_figure(np.array(rep["confusion"]),
                                                   title=f"Cascade on the test candidates ({op_name} point)")
    rep1 = classification_report(y, _at(test.p1, t1))
    figs["confusion_stage1"] = F.confusion_figure(np.array(rep1["confusion"]), title="Stage 1 on the test candidates")
    n = int(cfg.eval.example_grid)
    if n > 0:
        score = np.where(np.isfinite(test.p2), test.p2, test.p1)
        for tag, sel, desc in (("tp", accepted & y, True), ("fp", accepted & ~y, True), ("fn", ~accepted & y, False)):
            idx = np.flatnonzero(sel)
            if idx.size == 0:
                continue
            idx = idx[np.argsort(-score[idx] if desc else score[idx], kind="stable")][:n]
            stamps = _cutouts(test.cs, idx)
            captions = [f"p1={test.p1[i]:.2f} p2={test.p2[i]:.2f}" for i in idx]
            title = {"tp": "True positives", "fp": "False positives", "fn": "False negatives"}[tag]
            figs[f"cutouts_{tag}"] = F.cutout_grid(stamps, captions=captions,
                                                   title=f"{title} (test, filtered channel, {op_name} point)")
    return figs


def _footprint(dm: Any, cascade: Any, cfg: DictConfig) -> tuple[dict, list[dict]]:
    """The seed's Fig. 3 and 4 on the first ``eval.footprint.n_images`` test images."""
    kernels = [int(k) for k in cfg.eval.footprint.kernels]
    if not kernels or min(kernels) <= 0:
        raise input_error("eval.footprint.kernels", "must be positive integers", found=kernels)
    spec = cascade.input_spec
    mag, flags, per_image, n_img = footprint_study(
        dm, kernels=kernels, n_images=int(cfg.eval.footprint.n_images), sigma=float(spec.get("sigma", dm.sigma)),
        label_mode=str(spec.get("label_mode", dm.label_mode)), label_radius=float(spec.get("label_radius", dm.label_radius)))
    rows_out = [
        {"kernel_px": k, "proposed": int(flags[k].sum()), "asteroids": int(mag.size),
         "fraction": float(flags[k].mean()) if mag.size else float("nan"), "candidates_per_image": per_image[k]}
        for k in kernels
    ]
    figs: dict[str, Any] = {}
    if mag.size:
        figs["footprint_vs_kernel"] = F.footprint_vs_kernel(
            kernels, np.array([r["proposed"] for r in rows_out]), np.full(len(kernels), mag.size),
            candidates_per_image=np.array([r["candidates_per_image"] for r in rows_out]),
            title=f"Footprint selector vs kernel size ({n_img} test images)")
        figs["footprint_vs_magnitude"] = F.footprint_vs_magnitude(mag, flags, step=float(cfg.eval.mag_step) * 2)
    return figs, rows_out


def footprint_study(
    dm: Any, *, kernels: Sequence[int], n_images: int, sigma: float, label_mode: str, label_radius: float
) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, float], int]:
    """Which test asteroids the footprint proposes for each kernel (stride = kernel), on the first ``n_images``.

    Same filter and label rule as the cache (``extract_candidates``, ``label_candidates``), so the row of
    the cache's own kernel matches its ``truth_proposed``. Returns the magnitudes (M,), a bool (M,) per
    kernel, the mean candidates per image per kernel and the number of images scanned.
    """
    from neocascade.candidates.extract import extract_candidates
    from neocascade.candidates.footprint import footprint_peaks
    from neocascade.data.cache import label_candidates

    mags: list[np.ndarray] = []
    hits: dict[int, list[np.ndarray]] = {k: [] for k in kernels}
    n_cand = {k: 0 for k in kernels}
    n_img = 0
    for f in dm.split["test"]:
        for i in range(dm.source.n_images(f)):
            if n_img >= n_images:
                break
            image, truth = dm.source.read(f, i)
            truth = np.asarray(truth, dtype=np.float64).reshape(-1, 6)
            filtered = extract_candidates(image, sigma=sigma, selector=_no_candidates, cutout_size=3).filtered
            for k in kernels:
                rows, cols = footprint_peaks(filtered, kernel=k, stride=k)
                _, matched = label_candidates(np.asarray(rows), np.asarray(cols), truth, mode=label_mode,
                                              radius=label_radius)
                hit = np.zeros(len(truth), dtype=bool)
                hit[matched[matched >= 0]] = True
                hits[k].append(hit)
                n_cand[k] += int(np.asarray(rows).size)
            mags.append(truth[:, 3])
            n_img += 1
    mag = np.concatenate(mags) if mags else np.zeros(0)
    flags = {k: np.concatenate(v) if v else np.zeros(0, bool) for k, v in hits.items()}
    return mag, flags, {k: n_cand[k] / max(n_img, 1) for k in kernels}, n_img


def _no_candidates(filtered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A selector that proposes nothing: used to get extract_candidates' filtered image alone."""
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
def _data_figures(dm: Any, test: Scored, cfg: DictConfig) -> dict:
    """The seed's Fig. 2 (pixel box plots), Fig. 6 (positive / negative cutouts) and the t-SNE."""
    from neocascade.evaluation.tsne import tsne_kmeans

    dcfg = cfg.eval.data_figures
    rng = np.random.default_rng(int(cfg.seed))
    cs = test.cs
    figs: dict[str, Any] = {}
    pixels, centres = [], []
    n_img = 0
    for f in dm.split["test"]:
        for i in range(dm.source.n_images(f)):
            if n_img >= int(dcfg.n_images):
                break
            image, truth = dm.source.read(f, i)
            image = np.asarray(image, dtype=np.float64)
            truth = np.asarray(truth, dtype=np.float64).reshape(-1, 6)
            finite = image[np.isfinite(image) & (image != 0)]
            take = min(finite.size, max(int(dcfg.n_pixels) // max(int(dcfg.n_images), 1), 1))
            pixels.append(rng.choice(finite, size=take, replace=False) if take else finite[:0])
            r = np.clip(np.rint(truth[:, 2]).astype(np.int64), 0, image.shape[0] - 1)
            c = np.clip(np.rint(truth[:, 1]).astype(np.int64), 0, image.shape[1] - 1)
            centres.append(image[r, c])
            n_img += 1
    y = test.labels
    groups = {
        "image pixels (raw)": np.concatenate(pixels) if pixels else np.zeros(0),
        "asteroid centres (raw)": np.concatenate(centres) if centres else np.zeros(0),
        "positive candidates (filtered peak)": cs.peak[y],
        "negative candidates (filtered peak)": cs.peak[~y],
    }
    groups = {k: v for k, v in groups.items() if np.isfinite(v).any()}
    if groups:
        figs["pixel_boxplots"] = F.pixel_boxplots(groups, title=f"Pixel values of the test data ({n_img} images)")
    n = int(dcfg.grid)
    for tag, sel in (("positives", y), ("negatives", ~y)):
        idx = np.flatnonzero(sel)
        if idx.size and n > 0:
            idx = np.sort(rng.choice(idx, size=min(n, idx.size), replace=False))
            figs[f"cutouts_{tag}"] = F.cutout_grid(_cutouts(cs, idx), title=f"Random {tag} (test, filtered channel)")
    half = int(dcfg.tsne_n) // 2
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    n_pos = min(pos.size, half)
    n_neg = min(neg.size, int(dcfg.tsne_n) - n_pos)
    if n_pos and n_neg and n_pos + n_neg >= 4:
        idx = np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]))
        res = tsne_kmeans(_cutouts(cs, idx), y[idx], n=idx.size, seed=int(cfg.seed),
                          perplexity=min(30.0, max(2.0, (idx.size - 1) / 3.0 - 1)))
        figs["tsne"] = F.tsne_figure(res.embedding, y[idx][res.index], res.clusters, accuracy=res.accuracy)
    return figs


# ---------------------------------------------------------------------------------------------- wandb
def _log_wandb(cfg: DictConfig, job: JobInfo, metrics: Mapping[str, Any], out_dir: Path, figures: list[str]) -> None:
    """Log the scalar metrics and the figures to wandb (offline by default, under the run folder)."""
    mode = os.environ.get("WANDB_MODE") or str(cfg.wandb.mode)
    if mode == "disabled":
        return
    import wandb

    from neocascade.utils.logging import flat_config

    job.run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=str(cfg.wandb.project), dir=str(job.run_dir), mode=mode, name=job.name,
                     group=job.group, job_type="evaluate", config=flat_config(cfg))
    try:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
        images = {f"figures/{n}": wandb.Image(str(out_dir / f"{n}.png")) for n in figures}
        run.log({**scalars, **images})
        run.summary.update(scalars)
    finally:
        run.finish()
    log.info("wandb run (%s) under %s", mode, job.run_dir)
