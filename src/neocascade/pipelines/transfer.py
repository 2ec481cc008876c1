"""``make transfer``: train on the randomized sky family (and on paper alone), measure on skies never tuned on.

Usage: ``python -m neocascade.pipelines.transfer [key=value ...]`` (keys of ``conf/transfer.yaml``;
``reduced=true`` for a quick run). The same resumable runner as ``make paper`` (:mod:`neocascade.pipelines.runner`):

- ``snr_<sky>``: the peak SNR of every test asteroid of that sky (``transfer snr`` subtask), for SNR50;
- one step per training family (``randomized``, ``paper``): ``train.py experiment=neocascade`` with the family's
  overrides and the operating threshold picked on the family's validation file for ``target_precision``;
  then ``evaluate.py`` at that stored threshold (``eval.operating_point=artifact``) on the test files of every
  sky, families' and held-out alike (again with ``reference_check=<reference_check>`` unless it is ``none``:
  folders ``eval_<sky>_<check>``), and the ``transfer speed`` subtask on each.

The table (completeness, completeness of asteroids not on dead pixels, purity, false detections per quadrant,
m50, SNR50, candidates per quadrant, quadrants/s) goes into the ``transfer`` section of ``results``; the one with the
reference-catalogue check into ``transfer-<check>``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from neocascade.errors import input_error
from neocascade.pipelines import runner as R
from neocascade.pipelines.common import write_section
from neocascade.utils.atomic import atomic_path, save_json

log = logging.getLogger("neocascade.transfer")

CONF = R.ROOT / "conf" / "transfer.yaml"
SECTION = "transfer"
SNR_FILE = "snr.npz"
SNR_COLUMNS = ("file", "image", "x", "y", "magnitude", "snr", "mf_snr")  # snr.npz's table
SNR_CUT = 6.0  # peak SNR above which completeness is also reported (the bound on SNR50)
REFERENCE_CHECKS = ("none", "stars")  # conf/reference_check options: the second evaluation of every model and sky


# ---------------------------------------------------------------------------------------------- config
def load_config(overrides: Sequence[str] = (), *, path: str | Path = CONF) -> DictConfig:
    """``conf/transfer.yaml`` with ``key=value`` overrides (unknown keys, step names or values are an error)."""
    cfg = R.load_config(overrides, path=path)
    if not cfg.families:
        raise input_error("families", "must name at least one training family")
    clash = sorted(set(map(str, cfg.families)) & set(map(str, cfg.held_out)))
    if clash:
        raise input_error("families", f"'{clash[0]}' is also a held-out sky", expected="names disjoint from held_out")
    if not 0.0 < float(cfg.target_precision) <= 1.0:
        raise input_error("target_precision", "must be a precision in (0, 1]", found=cfg.target_precision)
    if str(cfg.get("reference_check")) not in REFERENCE_CHECKS:
        raise input_error("reference_check", "names no conf/reference_check option",
                          expected=", ".join(REFERENCE_CHECKS), found=cfg.get("reference_check"))
    extra = cfg.get("family_train_overrides") or {}
    stray = sorted(set(map(str, extra)) - set(map(str, cfg.families)))
    if stray:
        raise input_error(f"family_train_overrides.{stray[0]}", "names no training family",
                          expected=f"some of {[str(f) for f in cfg.families]}")
    cfg.step_names = [*map(str, cfg.families), *(f"snr_{s}" for s in _sky_names(cfg))]
    unknown = [n for n in (cfg.get("skip") or []) if str(n) not in cfg.step_names]
    if unknown:
        raise input_error("skip", "names no step", expected=f"some of {list(cfg.step_names)}", found=unknown)
    return cfg


def _sky_names(cfg: DictConfig) -> list[str]:
    return [*map(str, cfg.get("families") or {}), *map(str, cfg.get("held_out") or [])]


def skies(cfg: DictConfig) -> dict[str, list[str]]:
    """Test sky name -> the overrides that build its data: each family's own, then every held-out preset."""
    out = {str(name): [f"data={cfg.data}", *map(str, extra)] for name, extra in cfg.families.items()}
    out.update({str(name): [f"data={name}"] for name in cfg.held_out})
    return out


def _sized(cfg: DictConfig) -> list[str]:
    """Overrides every data-building command shares: size, cache, the smoke run's data overrides."""
    return [f"data.source.images_per_file={R.images_per_file(cfg)}", f"paths.cache={cfg.cache_dir}",
            *map(str, cfg.data_overrides)]


def run_settings(cfg: DictConfig) -> dict:
    """What makes two runs comparable (``run.json``): data, sizes, families, skies, epochs and overrides."""
    return {"data": str(cfg.data), "images_per_file": R.images_per_file(cfg), "experiment": str(cfg.experiment),
            "families": {str(k): [str(v) for v in vals] for k, vals in cfg.families.items()},
            "held_out": [str(s) for s in cfg.held_out], "epochs": int(cfg.epochs),
            "target_precision": float(cfg.target_precision), "val_negatives": cfg.get("val_negatives"),
            "data_overrides": [str(v) for v in cfg.data_overrides],
            "train_overrides": [str(v) for v in cfg.train_overrides], "eval_overrides": [str(v) for v in cfg.eval_overrides],
            **({"family_train_overrides": {f: _family_train(cfg, f) for f in map(str, cfg.families)}}
               if any(_family_train(cfg, f) for f in map(str, cfg.families)) else {}),
            "reference_check": str(cfg.reference_check)}


def _family_train(cfg: DictConfig, family: str) -> list[str]:
    """Train-only overrides of one family (``family_train_overrides``); its data and test sky are unchanged."""
    return [str(v) for v in ((cfg.get("family_train_overrides") or {}).get(family) or [])]


def _variants(cfg: DictConfig) -> dict[str, list[str]]:
    """Evaluation variant -> its extra evaluate.py overrides: the default, and the reference-catalogue check."""
    check = str(cfg.reference_check)
    return {"": ["reference_check=none"], **({} if check == "none" else {check: [f"reference_check={check}"]})}


def _eval_name(sky: str, variant: str) -> str:
    return f"eval_{sky}" + (f"_{variant}" if variant else "")


# ---------------------------------------------------------------------------------------------- plan
def plan(cfg: DictConfig, *, python: str | None = None) -> list[R.Step]:
    """``snr_<sky>`` subtasks, then per family: train, evaluate on every sky, time on every sky."""
    py = python or sys.executable
    out = Path(cfg.out_dir)
    skip = {str(n) for n in (cfg.get("skip") or [])}
    sized = _sized(cfg)
    steps = []
    for sky, data in skies(cfg).items():
        name = f"snr_{sky}"
        if name in skip:
            continue
        folder = out / name
        argv = [py, "-m", "neocascade.pipelines.transfer", "snr", *data, *sized, f"out={folder}"]
        steps.append(R.Step(name=name, kind="snr", commands=[R.Command("snr", argv, folder / R.DONE_FILE, folder / "snr.log")]))
    target = float(cfg.target_precision)
    for family, extra in cfg.families.items():
        family = str(family)
        if family in skip:
            continue
        folder = out / family
        artifact = folder / "cascade.pt"
        step = R.Step(name=family, kind="train")
        val = [] if cfg.get("val_negatives") is None else [f"data.val_negatives={int(cfg.val_negatives)}"]
        # the operating point, on the family's validation file: the gated stage's threshold (experiment=neocascade)
        train = [py, "train.py", f"experiment={cfg.experiment}", f"data={cfg.data}", *map(str, extra), *sized, *val,
                 f"trainer.max_epochs={int(cfg.epochs)}", f"stage.min_precision={target}", f"hydra.run.dir={folder}",
                 *map(str, cfg.train_overrides), *_family_train(cfg, family)]
        step.commands.append(R.Command("train", train, artifact, folder / "train.log"))
        for variant, extra_eval in _variants(cfg).items():
            for sky, data in skies(cfg).items():
                name = _eval_name(sky, variant)
                sub = folder / name
                ev = [py, "evaluate.py", f"artifact={artifact}", *data, *sized, f"out_dir={sub}",
                      f"hydra.run.dir={folder / f'{name}_run'}", "eval.operating_point=artifact",
                      f"eval.target_precision={target}", *map(str, cfg.eval_overrides), *extra_eval]
                label = name.replace("eval_", "evaluate_", 1)
                step.commands.append(R.Command(label, ev, sub / "metrics.json", folder / f"{label}.log"))
        for sky, data in skies(cfg).items():
            sub = folder / f"speed_{sky}"
            speed = [py, "-m", "neocascade.pipelines.transfer", "speed", f"artifact={artifact}", f"out={sub}",
                     f"n_images={int(cfg.speed.n_images)}", f"repeats={int(cfg.speed.repeats)}",
                     f"threads={int(cfg.speed.threads)}", *data, *sized]
            step.commands.append(R.Command(f"speed_{sky}", speed, sub / R.DONE_FILE, folder / f"speed_{sky}.log"))
        steps.append(step)
    return steps


# ---------------------------------------------------------------------------------------------- subtasks
def _own(args: Sequence[str], keys: Sequence[str], required: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` args into this subtask's own keys and train.py overrides."""
    own, rest = {}, []
    for a in args:
        key, _, value = a.partition("=")
        (own.__setitem__(key, value) if key in keys else rest.append(a))
    missing = [k for k in required if k not in own]
    if missing:
        raise input_error("transfer subtask", f"needs {', '.join(k + '=' for k in required)}", found=sorted(own))
    return own, rest


def snr_task(args: Sequence[str]) -> dict:
    """Peak SNR and matched-filter SNR of every test asteroid of a simulated sky: ``out/snr.npz`` (file, image, x, y,
    magnitude, snr, mf_snr)."""
    from hydra.utils import instantiate

    from neocascade.data.sources import SimulatedSource
    from neocascade.evaluation.trails import matched_filter_snr
    from neocascade.simulation.quadrant import asteroid_peak_snr, trail_models

    own, rest = _own(args, ("out",), ("out",))
    data = R._compose_train(rest).data
    source = instantiate(data.source)
    if not isinstance(source, SimulatedSource):
        raise input_error("data.source", "SNR50 needs a simulated sky", found=type(source).__name__)
    start = time.perf_counter()
    rows = []
    live = np.ones(source.config.shape, dtype=bool)  # as the peak SNR: masks are the "dead" misses' business
    for file in data.split.test:
        for image in range(source.n_images(int(file))):
            truth = source.read_truth(int(file), image)
            where = dict(seed=source.seed, file_index=int(file), image_index=image)
            snr = asteroid_peak_snr(source.config, **where)
            models, rms, correlation = trail_models(source.config, **where)
            mf = [matched_filter_snr(m.rows, m.cols, m.values, valid=live, rms=rms, correlation=correlation)
                  for m in models]
            rows.append(np.column_stack([np.full(len(truth), float(file)), truth[:, :4], snr, mf]))
    table = np.concatenate(rows) if rows else np.empty((0, len(SNR_COLUMNS)))
    out = Path(own["out"])
    with atomic_path(out / SNR_FILE, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, table=table, columns=np.array(SNR_COLUMNS))
    result = {"sky": str(data.name), "asteroids": int(len(table)), "snr_median": float(np.median(table[:, 5])) if len(table) else None,
              "wall_s": round(time.perf_counter() - start, 1)}
    save_json(out / R.DONE_FILE, result, overwrite=True)
    return result


def speed_task(args: Sequence[str]) -> dict:
    """Seconds per quadrant of ``detect_image`` on the sky's first test file; ``out/done.json``."""
    own, rest = _own(args, ("artifact", "out", "n_images", "repeats", "threads"), ("artifact", "out"))
    n_images, repeats, threads = (int(own.get(k, d)) for k, d in (("n_images", 2), ("repeats", 3), ("threads", 2)))
    return R.time_detection(own["artifact"], R._compose_train(rest).data, own["out"], n_images=n_images,
                            repeats=repeats, threads=threads)


# ---------------------------------------------------------------------------------------------- results
def _found(snr_path: Path, ev: Mapping[str, Any], *,
           column: str = "snr") -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(SNR ``column``, found, dead) per asteroid of the sky's SNR table: found unless listed among the evaluation's
    missed asteroids, dead when missed for that reason; None when the two do not describe the same asteroids or the
    table has no such column (an older table)."""
    missed = (ev.get("missed_asteroids") or {})
    if not snr_path.is_file() or not ev or missed.get("count") is None or missed["count"] > len(missed.get("rows") or []):
        return None
    with np.load(snr_path, allow_pickle=False) as z:
        table = np.asarray(z["table"], dtype=np.float64)
        columns = [str(c) for c in z["columns"]] if "columns" in z.files else list(SNR_COLUMNS[:6])
    if column not in columns or table.ndim != 2 or table.shape[1] != len(columns):
        return None
    key = {(int(r["file"]), int(r["image"]), round(float(r["x"]), 3), round(float(r["y"]), 3)): r.get("reason")
           for r in missed["rows"]}
    reason = [key.get((int(f), int(i), round(x, 3), round(y, 3)), "") for f, i, x, y in table[:, :4]]
    found = np.array([r == "" for r in reason], dtype=bool)
    if len(table) == 0 or int((~found).sum()) != int(missed["count"]):
        return None  # the evaluation saw other asteroids than the SNR table (other size or data)
    return table[:, columns.index(column)], found, np.array([r == "dead" for r in reason], dtype=bool)


def snr50(snr_path: Path, ev: Mapping[str, Any], *, column: str = "snr") -> tuple[float | None, float | None]:
    """SNR50 of one evaluation: the sky's asteroid SNRs (peak, or ``mf_snr``: matched filter), found unless listed
    among its missed asteroids."""
    from neocascade.evaluation.completeness import fit_snr50

    got = _found(snr_path, ev, column=column)
    if got is None:
        return None, None
    value, err = fit_snr50(got[0], got[1])
    return (None if not np.isfinite(value) else value), (None if not np.isfinite(err) else err)


def completeness_above(snr_path: Path, ev: Mapping[str, Any], cut: float = SNR_CUT) -> float | None:
    """Completeness of the asteroids not on dead pixels whose noiseless peak SNR is at least ``cut``: what one
    exposure should find on any sky, whatever share of its asteroids the sky's noise hides."""
    got = _found(snr_path, ev)
    if got is None:
        return None
    snr, found, dead = got
    keep = (snr >= cut) & ~dead
    return float(found[keep].mean()) if keep.any() else None


def collect(cfg: DictConfig, *, cwd: str | Path = R.ROOT, variant: str = "") -> dict:
    """Per family and sky: the evaluation (of ``variant``, see :func:`_variants`), the speed and SNR50; and the
    runner's record."""
    out = Path(cwd) / cfg.out_dir
    found: dict[str, Any] = {}
    for family in map(str, cfg.families):
        for sky in skies(cfg):
            ev = R._read(out / family / _eval_name(sky, variant) / "metrics.json")
            value, err = snr50(out / f"snr_{sky}" / SNR_FILE, ev)
            found[f"{family}/{sky}"] = {"eval": ev, "speed": R._read(out / family / f"speed_{sky}" / R.DONE_FILE),
                                        "snr50": value, "snr50_err": err,
                                        "mf_snr50": snr50(out / f"snr_{sky}" / SNR_FILE, ev, column="mf_snr")[0],
                                        "above_cut": completeness_above(out / f"snr_{sky}" / SNR_FILE, ev)}
    found["_steps"] = R._read(out / R.STEPS_FILE)
    return found


def _e2e(ev: Mapping[str, Any], key: str) -> Any:
    return ((ev.get("end_to_end") or {}).get("artifact") or {}).get(key)


def render_table(cfg: DictConfig, found: Mapping[str, Any], *, variant: str = "") -> str:
    """The transfer section (of ``variant``, see :func:`_variants`): one row per (training family, test sky)."""
    n = R.images_per_file(cfg)
    fmt = R._fmt
    held = [str(s) for s in cfg.held_out]
    title = "## Skies it never saw: transfer" if not variant else \
        f"### The same models with the reference-catalogue check (`reference_check={variant}`)"
    lines = [title + (f" (REDUCED: {n} images per file)" if cfg.reduced else ""), "",
             f"Generated by `python -m neocascade.pipelines.transfer{' reduced=true' if cfg.reduced else ''}` from "
             f"`{cfg.out_dir}/`. `experiment={cfg.experiment}` trained on `data={cfg.data}` plus each family's overrides "
             f"({n} quadrants per file, {cfg.epochs} epochs); its threshold picked on that family's validation file for "
             f"precision {cfg.target_precision} among the candidates the experiment's checks keep (`residual_check`, "
             "`reference_check`: the detector as deployed), and kept unchanged on every test sky. Evaluated with the "
             "residual check" + ("" if variant else " and without the reference check (`reference_check=none`)") +
             f". Held-out skies ({', '.join(held)}) "
             "are never trained or tuned on; their seeds are disjoint from training. Asteroid level, end to end; "
             "\"not on dead pixels\": completeness of the asteroids whose centre pixel is not masked or zero; SNR50: the "
             "noiseless peak SNR where the logistic fit of completeness crosses half its plateau (\"matched\": the same in "
             "matched-filter SNR, the optimal SNR of each asteroid's noiseless model with the image's PSF and noise "
             f"correlation, comparable across noise textures); \"SNR ≥ {SNR_CUT:g}\": "
             f"completeness of the asteroids not on dead pixels with a peak SNR of at least {SNR_CUT:g}; candidates: "
             f"selector proposals per test quadrant; speed: quadrants per second, {cfg.speed.threads} threads.", "",
             "| trained on | test sky | held out | completeness | not on dead pixels | purity | false / quadrant | m50 | "
             f"SNR50 | SNR50 matched | SNR ≥ {SNR_CUT:g} | candidates / quadrant | quadrants/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for family in map(str, cfg.families):
        for sky in skies(cfg):
            res = found.get(f"{family}/{sky}") or {}
            ev = res.get("eval") or {}
            counts = ev.get("counts") or {}
            per_q = (counts["test_candidates"] / counts["test_images"]) if counts.get("test_images") else None
            m50 = ev.get("m50") or {}
            snr, mf = res.get("snr50"), res.get("mf_snr50")
            lines.append(
                f"| {family} | {sky} | {'yes' if sky in held else 'no'} | {fmt(_e2e(ev, 'completeness'))} | "
                f"{fmt(_e2e(ev, 'completeness_visible'))} | {fmt(_e2e(ev, 'purity'))} | "
                f"{fmt(_e2e(ev, 'false_per_quadrant'), 2)} | {fmt(m50.get('m50'), 2)} | "
                f"{'—' if snr is None else f'{snr:.1f}'} | "
                f"{'—' if mf is None else f'{mf:.1f}'} | "
                f"{fmt(res.get('above_cut'))} | {fmt(per_q, 0)} | "
                f"{fmt((res.get('speed') or {}).get('quadrants_per_s'), 2)} |")
    return "\n".join(lines) + "\n"


def write_results(cfg: DictConfig, *, cwd: str | Path = R.ROOT) -> Path | None:
    """Put the tables into the transfer sections of ``cfg.results`` (created when missing): ``transfer``, and
    ``transfer-<check>`` for the reference-catalogue check."""
    if not cfg.get("results"):
        return None
    path = None
    for variant in _variants(cfg):
        body = render_table(cfg, collect(cfg, cwd=cwd, variant=variant), variant=variant)
        path = write_section(cfg.results, f"{SECTION}-{variant}" if variant else SECTION, body, cwd=cwd)
    return path


def run_transfer(cfg: DictConfig, *, cwd: str | Path = R.ROOT) -> dict:
    """Run the plan, then write the table; returns the steps record."""
    out = Path(cwd) / cfg.out_dir
    R.check_run_settings(cfg, out, settings=run_settings(cfg), step_names=list(cfg.step_names))
    start = time.perf_counter()
    record = R.run_plan(plan(cfg), record_path=out / R.STEPS_FILE, cwd=cwd)
    path = write_results(cfg, cwd=cwd)
    log.info("transfer: finished in %.0f s; table in %s", time.perf_counter() - start, path)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``transfer [key=value ...]`` runs the plan; ``transfer snr|speed ...`` one subtask."""
    return R.runner_main(list(sys.argv[1:] if argv is None else argv), subtasks={"snr": snr_task, "speed": speed_task},
                         run=lambda args: run_transfer(load_config(args)))


if __name__ == "__main__":
    raise SystemExit(main())
