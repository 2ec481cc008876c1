"""The sim-to-real check: score real ZTF alerts with a cascade trained on simulated images.

``python detect.py data=ztf_alerts artifact=RUN/cascade.pt [name=NAME] [overwrite=true]`` (the
task :func:`evaluate_alerts`, dispatched by :func:`neocascade.pipelines.detect.run`) reads
every ``*.avro`` under ``data.path`` (default ``../shared/data/ztf_alerts``, or ``$NEOCASCADE_ALERTS``),
de-duplicates by ``candid``, scores each alert's position in its difference stamp (science minus
reference), flags the alerts whose position already held a detection too long ago for an asteroid
(the packet's ``jdstarthist`` and ``prv_candidates``; ``data.history=true`` makes "stamp accepted and
not stationary" the headline, ``false`` the stamp alone; both are always reported) and writes to
``outputs/eval/ztf_alerts/<name>/``:

- ``alerts_report.md``: recall on known asteroids, rejection of negative subtractions and of low
  real-bogus alerts, positive rate on the other alerts, overall and by ``magpsf``;
- ``metrics.json``: the same numbers (``ztf_alerts/<name>`` scalars and the details);
- ``alerts.csv``: one row per alert with its group flags and scores;
- ``missed_asteroids.png``, ``accepted_negatives.png``: stamp grids.

Measurement only: these alerts never train or tune anything, thresholds come from the artifact.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from neocascade.detection.alerts import (
    HISTORY_MATCH_ARCSEC,
    MIN_RATE_ARCSEC_PER_HOUR,
    alert_masks,
    alert_metrics,
    alert_table,
    previous_detections,
    rate,
    scalar_alert_metrics,
    score_alerts,
    stationary_by_history,
)
from neocascade.detection.reference import build_star_check
from neocascade.detection.residuals import build_residual_check
from neocascade.errors import InputError, input_error
from neocascade.utils.atomic import atomic_path, check_writable, save_json, save_text

log = logging.getLogger(__name__)

VARIANT_TITLES = {"stamp": "stamp only", "stamp_history": "stamp + history", "stamp_reference": "stamp + reference",
                  "stamp_history_reference": "stamp + history + reference"}
OUTPUT_FILES = ("alerts_report.md", "metrics.json", "alerts.csv", "missed_asteroids.png", "accepted_negatives.png")


def evaluate_alerts(cfg: DictConfig) -> int:
    """Read, score, measure and report; see the module docstring. Returns the exit status."""
    from neocascade.pipelines.detect import load_artifact, report_error

    data = cfg.data
    folder = Path(str(data.get("path")))
    if not folder.is_dir():
        raise input_error("data.path", "not a folder of ZTF avro alerts", found=str(folder))
    out = output_dir(cfg)
    overwrite = bool(cfg.get("overwrite", False))
    for name in OUTPUT_FILES:
        check_writable(out / name, overwrite=overwrite)
    cascade, _ = load_artifact(cfg, build_selector=False)  # stamps are scored at the alert, no selector
    check = build_residual_check(cfg.get("residual_check"))
    star_check = build_star_check(cfg.get("reference_check"))
    alerts, n_duplicates, failed = read_alert_folder(folder, note=report_error)
    if not alerts:
        raise input_error(folder, "no readable alert in the folder")
    usable, scores, failed_stamps = _score_each(alerts, cascade, note=report_error, check=check)
    failed += failed_stamps
    table = alert_table(usable)
    masks = alert_masks(table, known_arcsec=float(data.get("known_asteroid_arcsec", 5.0)),
                        low_rb=float(data.get("low_rb", 0.5)))
    mag_edges = list(OmegaConf.to_container(data.get("mag_edges"))) if data.get("mag_edges") is not None else [19.0]
    rule = {"match_arcsec": float(data.get("history_match_arcsec", HISTORY_MATCH_ARCSEC)),
            "min_rate_arcsec_per_hour": float(data.get("history_min_rate", MIN_RATE_ARCSEC_PER_HOUR))}
    history = stationary_by_history(table, previous_detections(usable), **rule)
    stamp_detected = np.asarray(scores["detected"], dtype=bool)
    variants = {"stamp": stamp_detected, "stamp_history": stamp_detected & ~history["stationary"]}
    headline = "stamp_history" if bool(data.get("history", True)) else "stamp"
    if star_check is not None:  # the packet's nearest reference-catalogue source: distnr (px), magnr
        on_star = ~star_check.keep_nearest(table["distnr"], table["magnr"])
        variants = {**variants, **{f"{name}_reference": d & ~on_star for name, d in variants.items()}}
        headline = f"{headline}_reference"
        scores = {**scores, "on_star": on_star}
    scores = {**scores, "detected_stamp": stamp_detected, "detected": variants[headline], **history}
    by_variant = {
        name: alert_metrics({**scores, "detected": detected}, masks, magpsf=table["magpsf"],
                            threshold1=cascade.threshold1, mag_edges=mag_edges)
        for name, detected in variants.items()
    }
    metrics = dict(by_variant[headline])
    stored = score_alerts([a for a, neg in zip(usable, masks["negative"]) if neg], cascade, signed=False, check=check)
    metrics["negative_as_stored_acceptance"] = rate(stored["detected"])
    result = {
        "artifact": str(cascade.path),
        "alerts_folder": str(folder),
        "n_files": len(sorted(folder.glob("*.avro"))),
        "n_alerts": len(usable),
        "n_duplicates": n_duplicates,
        "n_failed": len(failed),
        "failed": failed,
        "thresholds": {"stage1": cascade.threshold1, "stage2": cascade.threshold2},
        "residual_check": repr(check) if check is not None else None,
        "reference_check": repr(star_check) if star_check is not None else None,
        "input_spec": dict(cascade.input_spec),
        "group_sizes": {key: int(mask.sum()) for key, mask in masks.items()},
        "headline": headline,
        "history": {**rule, "n_stationary": int(history["stationary"].sum())},
        "scalars": {**scalar_alert_metrics(metrics),
                    **{k: v for name, m in by_variant.items()
                       for k, v in scalar_alert_metrics(m, prefix=f"ztf_alerts_{name}").items()}},
        **metrics,
        "variants": by_variant,
    }
    save_json(out / "metrics.json", result, overwrite=overwrite)
    save_text(out / "alerts.csv", alerts_csv(table, masks, scores), overwrite=overwrite)
    max_stamps = int(data.get("max_stamps", 40))
    missed = np.flatnonzero(masks["known_asteroid"] & ~scores["detected"])
    accepted_neg = np.flatnonzero(masks["negative"] & scores["detected"])
    for name, picks, title in (
        ("missed_asteroids.png", missed, "known asteroids the cascade rejected"),
        ("accepted_negatives.png", accepted_neg, "negative subtractions the cascade accepted (science - reference)"),
    ):
        figure = stamp_grid([usable[i].signed_difference for i in picks[:max_stamps]],
                            [_stamp_label(table, scores, i) for i in picks[:max_stamps]],
                            title=f"{title}: {len(picks)} (showing {min(len(picks), max_stamps)})")
        with atomic_path(out / name, overwrite=overwrite) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    save_text(out / "alerts_report.md", report_markdown(result, cfg), overwrite=overwrite)
    log.info("ztf alerts: %s -> %s", result["scalars"], out)
    return 1 if failed else 0


def output_dir(cfg: DictConfig) -> Path:
    """``data.out_dir`` if set, else ``<paths.outputs>/eval/ztf_alerts/<name>``; name from ``cfg.name`` or the artifact's folder."""
    explicit = cfg.data.get("out_dir")
    if explicit:
        return Path(str(explicit))
    artifact = cfg.get("artifact")
    name = cfg.get("name") or (artifact_name(Path(str(artifact))) if artifact else "packaged")
    return Path(str(cfg.paths.outputs)) / "eval" / "ztf_alerts" / str(name)


def artifact_name(path: Path) -> str:
    """The run name of an artifact: its folder's name, as ``evaluate.py`` names its reports."""
    return Path(path).resolve().parent.name


def read_alert_folder(folder: Path, *, note: Any) -> tuple[list[Any], int, list[str]]:
    """Every alert of the folder's ``*.avro`` files, first occurrence of each ``candid`` only.

    Returns the alerts, the number of duplicates dropped and the failure lines (a bad file is
    reported through ``note`` and skipped).
    """
    from neocascade.io.alerts import read_alerts

    alerts, seen, failed, duplicates = [], set(), [], 0
    for path in sorted(folder.glob("*.avro")):
        try:
            records = read_alerts(path)
        except InputError as exc:
            failed.append(note(str(exc)))
            continue
        for alert in records:
            if alert.candid in seen:
                duplicates += 1
                continue
            seen.add(alert.candid)
            alerts.append(alert)
    return alerts, duplicates, failed


def _score_each(alerts: Sequence[Any], cascade: Any, *, note: Any,
                check: Any = None) -> tuple[list[Any], dict[str, np.ndarray], list[str]]:
    """Score alerts, skipping (and reporting) those whose stamp cannot be scored."""
    usable, failed = [], []
    for alert in alerts:
        stamp = alert.signed_difference
        size = int(cascade.input_spec["cutout_size"])
        if min(stamp.shape) < size or not np.isfinite(stamp).any():
            failed.append(note(f"{alert.path}: candid {alert.candid}: difference stamp {stamp.shape[0]}x{stamp.shape[1]} "
                               f"is fully masked or smaller than the {size}-px cutout"))
            continue
        usable.append(alert)
    return usable, score_alerts(usable, cascade, signed=True, check=check), failed


def _stamp_label(table: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray], i: int) -> str:
    """Short caption of stamp ``i``: object name, magnitude, stage scores."""
    p2 = scores["p2"][i]
    p2_text = "-" if not np.isfinite(p2) else f"{p2:.2f}"
    return f"{table['object_id'][i]} m={table['magpsf'][i]:.1f}\np1={scores['p1'][i]:.2f} p2={p2_text}"


def stamp_grid(stamps: Sequence[np.ndarray], labels: Sequence[str], *, title: str, columns: int = 8) -> Any:
    """A matplotlib Figure with one panel per stamp (each stretched to its own 1-99.5 percentiles)."""
    from matplotlib.figure import Figure

    n = max(len(stamps), 1)
    rows = int(np.ceil(n / columns))
    figure = Figure(figsize=(1.6 * columns, 1.8 * rows + 0.5))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, stamp, label in zip(axes.ravel(), stamps, labels):
        finite = stamp[np.isfinite(stamp)]
        lo, hi = np.percentile(finite, [1.0, 99.5]) if finite.size else (0.0, 1.0)
        ax.imshow(np.nan_to_num(stamp, nan=lo), cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), origin="lower",
                  interpolation="nearest")
        ax.set_title(label, fontsize=6)
    if not stamps:
        axes[0, 0].text(0.0, 0.5, "none", fontsize=10)
    figure.suptitle(title, fontsize=9)
    return figure


def alerts_csv(table: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray]) -> str:
    """Per-alert CSV text: packet fields, group flags and scores."""
    columns = ["candid", "object_id", "file", "isdiffpos", "ssdistnr", "magpsf", "rb", "fid", "ndethist", *masks,
               "p1", "p2", "peak", "snr", "detected_stamp", "history_span_min", "stationary",
               *(["distnr", "magnr", "on_star"] if "on_star" in scores else []), "detected"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    merged = {**table, **{k: np.asarray(v) for k, v in masks.items()}, **scores}
    for i in range(len(table["candid"])):
        row = []
        for key in columns:
            value = merged[key][i]
            if isinstance(value, (bool, np.bool_)):
                row.append("1" if value else "0")
            elif isinstance(value, (float, np.floating)):
                row.append("" if not np.isfinite(value) else f"{float(value):.6g}")
            else:
                row.append(str(value))
        writer.writerow(row)
    return buffer.getvalue()


def _fmt(entry: Mapping[str, Any]) -> str:
    """``k/n = rate [lo, hi]`` or ``n = 0``."""
    if entry["n"] == 0:
        return "n = 0"
    lo, hi = entry["ci95"]
    return f"{entry['k']}/{entry['n']} = {entry['rate']:.3f} [{lo:.3f}, {hi:.3f}]"


def report_markdown(result: Mapping[str, Any], cfg: DictConfig) -> str:
    """The human-readable report for ``alerts_report.md``."""
    spec = result["input_spec"]
    lines = [
        "# ZTF alerts: sim-to-real check",
        "",
        f"Artifact `{result['artifact']}` (stage thresholds {result['thresholds']['stage1']:.4g} / "
        f"{result['thresholds']['stage2']:.4g}; sigma {spec.get('sigma')}, cutout {spec.get('cutout_size')} px, "
        f"channels {spec.get('channels')}, normalize {spec.get('normalize')}).",
        f"Alerts: {result['n_alerts']} distinct from {result['n_files']} files in `{result['alerts_folder']}` "
        f"({result['n_duplicates']} duplicate candid dropped, {result['n_failed']} failed).",
        "",
        "Each alert's position in its 63x63 difference stamp is scored as one candidate: the stamp is filtered with "
        "the artifact's sigma and the cutout around the alert is normalised as in training. The stamp is taken as "
        "science minus reference (`isdiffpos` 'f' stamps are stored sign-flipped and are negated back), so a fading "
        "source is negative. Nothing here was trained or tuned on these alerts.",
        "",
        f"Headline (`data.history={str(result['headline'].startswith('stamp_history')).lower()}`): "
        + ("stamp accepted **and** no earlier detection at the position. "
           if result["headline"].startswith("stamp_history") else "the stamp score alone. ")
        + (f"With `reference_check` ({result['reference_check']}): **and** not on a catalogued star by the "
           "packet's `distnr` (px) / `magnr`. " if result.get("reference_check") else "")
        + f"History rule, fixed a priori from motion physics: an asteroid moving at least "
        f"{result['history']['min_rate_arcsec_per_hour']:g}\"/h leaves a {result['history']['match_arcsec']:g}\" "
        f"circle within {60 * result['history']['match_arcsec'] / result['history']['min_rate_arcsec_per_hour']:.0f} "
        "min, so an alert whose position already held a detection earlier than that (`jdstarthist`, or a "
        "`prv_candidates` detection within the radius) is stationary. "
        f"{result['history']['n_stationary']} of {result['n_alerts']} alerts are stationary by that rule. "
        "Known-object fields (`ssdistnr`, `ssnamenr`, `ssmagnr`) are only labels.",
        "",
        "Rates are k/n with a Wilson 95 % interval.",
        "",
        "| metric | " + " | ".join(VARIANT_TITLES[name] for name in result["variants"]) + " |",
        "|---|" + "---|" * len(result["variants"]),
        *[f"| `{key}` | " + " | ".join(_fmt(v[key]) for v in result["variants"].values()) + " |"
          for key in ("known_asteroid_recall", "negative_rejection", "low_rb_rejection", "other_positive_rate")],
        "",
        "Headline details:",
        "",
        "| metric | what it should be | value |",
        "|---|---|---|",
        f"| `ztf_alerts/known_asteroid_recall` (0 <= ssdistnr <= 5\", positive) | high | {_fmt(result['known_asteroid_recall'])} |",
        f"| `ztf_alerts/known_asteroid_stage1_recall` | high | {_fmt(result['known_asteroid_stage1_recall'])} |",
        f"| `ztf_alerts/negative_rejection` (isdiffpos 'f') | high | {_fmt(result['negative_rejection'])} |",
        f"| `ztf_alerts/low_rb_rejection` (rb < {cfg.data.get('low_rb', 0.5)}) | high | {_fmt(result['low_rb_rejection'])} |",
        f"| `ztf_alerts/other_positive_rate` (transients, variables) | not scored | {_fmt(result['other_positive_rate'])} |",
        f"| negatives scored as stored (sign-flipped), accepted | diagnostic | {_fmt(result['negative_as_stored_acceptance'])} |",
        "",
        "## By magnitude (magpsf)",
        "",
        "| magpsf bin | asteroid recall | negative rejection | other positive rate |",
        "|---|---|---|---|",
    ]
    for entry in result["by_magnitude"]:
        lo, hi = entry["bin"]
        label = f"< {hi:g}" if not np.isfinite(lo) else (f">= {lo:g}" if not np.isfinite(hi) else f"{lo:g} - {hi:g}")
        lines.append(f"| {label} | {_fmt(entry['known_asteroid_recall'])} | {_fmt(entry['negative_rejection'])} | "
                     f"{_fmt(entry['other_positive_rate'])} |")
    lines += [
        "",
        "Stamp grids: `missed_asteroids.png` (known asteroids rejected), `accepted_negatives.png` (negative "
        "subtractions accepted). Per-alert scores: `alerts.csv`.",
        "",
    ]
    return "\n".join(lines)
