"""`make paper`: the seed's experiments at the seed's scale, step by step, resumable.

Usage: ``python -m neocascade.pipelines.paper [key=value ...]`` (keys of ``conf/paper.yaml``; ``reduced=true``
for a quick run). Each step is one subprocess: the ``train.py`` / ``evaluate.py`` command a user would type, or
``python -m neocascade.pipelines.paper cache|study <train.py overrides> out=<folder>`` for the shared cutout
cache and the footprint kernel study. A step whose output exists (``cascade.pt``, ``eval/metrics.json``,
``done.json``) is skipped, so a rerun resumes where the last one stopped and rebuilds nothing cached. Wall
times go to ``<out_dir>/steps.json``; ``docs/results.md`` sets the seed's numbers beside ours.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig

from neocascade.errors import input_error
from neocascade.pipelines import runner as R
from neocascade.pipelines.common import marked_sections, replace_section
# the generic runner, lifted into neocascade.pipelines.runner; these names stay importable from here
from neocascade.pipelines.runner import (  # noqa: F401
    DONE_FILE, ROOT, RUN_FILE, STEPS_FILE, Command, Step, _compose_train, _fmt, _read, check_run_settings,
    data_overrides, images_per_file, machine_info, resume_args, run_plan, run_settings, runner_main,
)
from neocascade.utils.atomic import atomic_path, save_json, save_text

log = logging.getLogger("neocascade.paper")

CONF = ROOT / "conf" / "paper.yaml"
KINDS = ("cache", "study", "train")
SUBTASKS = ("cache", "study")


# ---------------------------------------------------------------------------------------------- config
def load_config(overrides: Sequence[str] = (), *, path: str | Path = CONF) -> DictConfig:
    """``conf/paper.yaml`` with ``key=value`` overrides applied (unknown keys are an error)."""
    cfg = R.load_config(overrides, path=path)
    for step in cfg.steps:
        if step.get("kind") not in KINDS:
            raise input_error(f"steps.{step.get('name')}.kind", f"must be one of {', '.join(KINDS)}", found=repr(step.get("kind")))
    return cfg


def plan(cfg: DictConfig, *, python: str | None = None) -> list[Step]:
    """The steps of ``cfg.steps`` as subprocess commands, with the files that mark them done."""
    py = python or sys.executable
    out = Path(cfg.out_dir)
    shared = data_overrides(cfg)
    steps = []
    skip = {str(n) for n in (cfg.get("skip") or [])}
    for spec in cfg.steps:
        name, kind = str(spec.name), str(spec.kind)
        if name in skip:
            continue
        folder = out / name
        step = Step(name=name, kind=kind, figures=list(spec.get("figures") or []))
        if kind in SUBTASKS:
            extra = [f"kernels={list(cfg.study.kernels)}", f"n_images={int(cfg.study.n_images)}",
                     f"tsne_n={int(cfg.study.tsne_n)}"] if kind == "study" else []
            argv = [py, "-m", "neocascade.pipelines.paper", kind, *shared, f"out={folder}", *extra]
            step.commands.append(Command(kind, argv, folder / DONE_FILE, folder / f"{kind}.log"))
        else:
            train = [py, "train.py", *list(spec.overrides), *shared, f"trainer.max_epochs={int(cfg.epochs)}",
                     f"hydra.run.dir={folder}", *list(cfg.train_overrides)]
            step.commands.append(Command("train", train, folder / "cascade.pt", folder / "train.log"))
            if spec.get("evaluate", True):
                ev = [py, "evaluate.py", f"artifact={folder / 'cascade.pt'}", f"out_dir={folder / 'eval'}",
                      f"paths.cache={cfg.cache_dir}", f"hydra.run.dir={folder / 'eval_run'}", *list(cfg.eval_overrides)]
                step.commands.append(Command("evaluate", ev, folder / "eval" / "metrics.json", folder / "evaluate.log"))
        steps.append(step)
    return steps


# ---------------------------------------------------------------------------------------------- subtasks
def _split_args(args: Sequence[str], keys: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    own, rest = {}, []
    for a in args:
        k = a.split("=", 1)[0]
        (own.__setitem__(k, a.split("=", 1)[1]) if k in keys and "=" in a else rest.append(a))
    if "out" not in own:
        raise input_error("paper subtask", "needs out=<folder>")
    return own, rest


def build_cache_task(args: Sequence[str]) -> dict:
    """Build the cutout cache of every file (``data.n_jobs`` workers); write ``out/done.json`` with counts."""
    from hydra.utils import instantiate

    own, rest = _split_args(args, ("out",))
    cfg = _compose_train(rest)
    start = time.perf_counter()
    dm = instantiate(cfg.data)
    dm.prepare_data()
    counts = {}
    for split in ("train", "val", "test"):
        cs = dm.candidates(split)
        counts[split] = {"files": list(dm.split[split]), "candidates": len(cs), "positives": int(cs.label.sum()),
                         "asteroids": int(len(cs.truth)), "proposed": int(cs.truth_proposed.sum())}
    result = {"cache": str(dm.handle.root), "counts": counts, "wall_s": round(time.perf_counter() - start, 1)}
    save_json(Path(own["out"]) / DONE_FILE, result, overwrite=True)
    log.info("cache %s: %s", dm.handle.root, counts)
    return result


def study_task(args: Sequence[str]) -> dict:
    """Footprint completeness vs kernel on the test images (seed Fig. 3 / 4) and t-SNE + k-means (Fig. 7)."""
    import numpy as np
    from hydra.utils import instantiate

    from neocascade.evaluation import figures as F
    from neocascade.evaluation.tsne import tsne_kmeans

    own, rest = _split_args(args, ("out", "kernels", "n_images", "tsne_n"))
    cfg = _compose_train(rest)
    dm = instantiate(cfg.data)
    kernels = [int(k) for k in json.loads(own.get("kernels", "[30, 50, 70, 100]"))]
    if not kernels or min(kernels) <= 0:
        raise input_error("study.kernels", "must be positive integers", found=kernels)
    n_images = int(own.get("n_images", 0)) or sum(dm.source.n_images(f) for f in dm.split["test"])
    from neocascade.pipelines.evaluate import footprint_study

    start = time.perf_counter()
    mag, flags, per_image, n_img = footprint_study(dm, kernels=kernels, n_images=n_images, sigma=dm.sigma,
                                                   label_mode=dm.label_mode, label_radius=dm.label_radius)
    rows = [{"kernel_px": k, "proposed": int(flags[k].sum()), "asteroids": int(mag.size),
             "fraction": float(flags[k].mean()) if mag.size else None, "candidates_per_image": per_image[k]}
            for k in kernels]
    figs: dict[str, Any] = {}
    if mag.size:
        figs["footprint_vs_kernel"] = F.footprint_vs_kernel(
            kernels, np.array([r["proposed"] for r in rows]), np.full(len(kernels), mag.size),
            candidates_per_image=np.array([per_image[k] for k in kernels]),
            title=f"Footprint selector vs kernel size ({n_img} test images)")
        figs["footprint_vs_magnitude"] = F.footprint_vs_magnitude(mag, flags, step=0.5)
    result: dict[str, Any] = {"footprint": rows, "footprint_images": n_img,
                              "footprint_wall_s": round(time.perf_counter() - start, 1)}
    n = int(own.get("tsne_n", 2000))
    cs = dm.candidates("test")
    y = np.asarray(cs.label, dtype=bool)
    if n >= 4 and y.any() and (~y).any():
        rng = np.random.default_rng(int(cfg.seed))
        pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
        n_pos = min(pos.size, n // 2)
        n_neg = min(neg.size, n - n_pos)
        idx = np.sort(np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]))
        stamps = np.asarray(cs.cutouts.take(idx), dtype=np.float32)[:, 0]
        res = tsne_kmeans(stamps, y[idx], n=idx.size, seed=int(cfg.seed),
                          perplexity=min(30.0, max(2.0, (idx.size - 1) / 3.0 - 1)))
        figs["tsne"] = F.tsne_figure(res.embedding, y[idx][res.index], res.clusters, accuracy=res.accuracy)
        result.update({"tsne_accuracy": res.accuracy, "tsne_n": int(idx.size), "tsne_positives": int(n_pos)})
    result["wall_s"] = round(time.perf_counter() - start, 1)
    out = Path(own["out"])
    for name, fig in figs.items():
        with atomic_path(out / "figures" / f"{name}.png", overwrite=True) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        fig.clear()
    save_json(out / DONE_FILE, result, overwrite=True)
    return result


# ---------------------------------------------------------------------------------------------- results
def collect(cfg: DictConfig, *, cwd: str | Path = ROOT) -> dict:
    """Every step's outputs: ``done.json`` of cache / study, ``metrics.json`` of training and evaluation."""
    out = Path(cwd) / cfg.out_dir
    found: dict[str, Any] = {}
    for spec in cfg.steps:
        folder = out / str(spec.name)
        if spec.kind in SUBTASKS:
            found[spec.name] = {"done": _read(folder / DONE_FILE)}
        else:
            found[spec.name] = {"train": _read(folder / "metrics.json"), "eval": _read(folder / "eval" / "metrics.json")}
    found["_steps"] = _read(out / STEPS_FILE)
    return found


def _point_metric(ev: Mapping[str, Any], name: str, point: str) -> Any:
    """``name`` at operating ``point`` from an evaluate.py metrics.json: plain keys are its primary point.

    None at the target point when no stage-2 threshold reached the target precision on validation.
    """
    if point == "target" and (ev.get("operating_point") or {}).get("reached") is False:
        return None
    primary = ((ev.get("config") or {}).get("eval") or {}).get("operating_point", "target")
    metrics = ev.get("metrics") or {}
    return metrics.get(name if point == primary else f"{name}@{point}")


def _candidate(res: Mapping[str, Any], key: str) -> Any:
    """Test-candidate ``precision`` / ``recall`` / ``f1`` at the trained thresholds (the seed's argmax)."""
    value = _point_metric(res.get("eval") or {}, f"test/cascade_{key}", "artifact")
    if value is not None:
        return value
    return ((res.get("train") or {}).get("metrics") or {}).get(f"test/cascade_{key}")


def _e2e(res: Mapping[str, Any], key: str, point: str = "artifact") -> Any:
    """An end-to-end figure at ``point``; None at the target point when no threshold reached the target."""
    ev = res.get("eval") or {}
    if point == "target" and (ev.get("operating_point") or {}).get("reached") is False:
        return None
    return ((ev.get("end_to_end") or {}).get(point) or {}).get(key)


def _footprint_fraction(found: Mapping[str, Any], kernel: int) -> Any:
    rows = ((found.get("study") or {}).get("done") or {}).get("footprint") or []
    return next((r["fraction"] for r in rows if int(r["kernel_px"]) == kernel), None)


def calibration_flags(cfg: DictConfig, found: Mapping[str, Any]) -> list[str]:
    """The issue's calibration rules applied to the faithful baseline and the footprint."""
    flags = []
    p = _candidate(found.get("baseline") or {}, "precision")
    f50 = _footprint_fraction(found, 50)
    seed = cfg.seed_numbers
    if p is not None and p > 0.93:
        flags.append(f"baseline precision {p:.3f} > 0.93: the simulator is too easy (harden it)")
    if f50 is not None and f50 > 0.97:
        flags.append(f"footprint completeness {f50:.3f} > 0.97: the simulator is too easy (harden it)")
    if p is not None and p < seed.baseline.precision - 0.1:
        flags.append(f"baseline precision {p:.3f} is far below the seed's {seed.baseline.precision}: find out why")
    if f50 is not None and f50 < seed.footprint_k50 - 0.05:
        flags.append(f"footprint completeness {f50:.3f} is far below the seed's {seed.footprint_k50}: find out why")
    return flags or ["baseline and footprint within the calibration bounds (precision <= 0.93, footprint <= 0.97)"]


def render_results(cfg: DictConfig, found: Mapping[str, Any], *, figures: Mapping[str, str] | None = None,
                   machine: Mapping[str, Any] | None = None) -> str:
    """``docs/results.md``: the seed's numbers beside ours, end-to-end figures, commands and wall times."""
    seed = cfg.seed_numbers
    n = images_per_file(cfg)
    title = "# Results: the seed's experiments reproduced"
    lines = [title + (f" (REDUCED: {n} images per file)" if cfg.reduced else ""), ""]
    if cfg.reduced:
        lines += [f"> **REDUCED RUN**: {n} of {cfg.images_per_file} quadrants per file ({10 * n} quadrants in all, "
                  f"data={cfg.data}). Numbers are noisier than the seed's full scale; rerun with `make paper` "
                  "for the full one.", ""]
    cache = (found.get("cache") or {}).get("done") or {}
    counts = cache.get("counts") or {}
    test_counts = counts.get("test") or {}
    lines += [
        "Generated by `python -m neocascade.pipelines.paper" + (" reduced=true" if cfg.reduced else "") + "` "
        f"from the step outputs in `{cfg.out_dir}/`; do not edit by hand.", "",
        f"- data: `{cfg.data}`, {n} quadrants per file, split train {counts.get('train', {}).get('files', '?')}, "
        f"validation {counts.get('val', {}).get('files', '?')}, test {counts.get('test', {}).get('files', '?')}",
        f"- test candidates: {test_counts.get('candidates', '—')} ({test_counts.get('positives', '—')} positive); "
        f"the seed's: {seed.test_candidates} ({seed.test_positives} positive)",
        f"- CNN epochs per stage: {cfg.epochs}; validation during training: all positives + {cfg.val_negatives} fixed negatives; "
        "thresholds on the whole validation file",
    ]
    if cfg.get("skip"):
        lines.append(f"- steps left out of this run (`skip`): {', '.join(map(str, cfg.skip))}; their rows show —")
    if machine:
        lines.append("- machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    lines += ["", "## The seed's numbers beside ours", "",
              "Test candidates, positive class, at the trained thresholds (stage 1 tuned for 99 % validation recall, "
              "stage 2 at P >= 0.5: the seed's argmax).", "",
              "| quantity | seed | ours |", "|---|---|---|"]
    lines.append(f"| footprint (kernel 50): fraction of asteroids proposed | ≈ {seed.footprint_k50} | "
                 f"{_fmt(_footprint_fraction(found, 50))} |")
    for key, label in (("baseline", "baseline single CNN"), ("baseline_cascade", "baseline cascade"),
                       ("vgg", "altered-VGG16 cascade"), ("final", "final cascade")):
        res = found.get(key) or {}
        for metric in ("precision", "recall"):
            lines.append(f"| {label}: {metric} | {seed[key][metric]} | {_fmt(_candidate(res, metric))} |")
    lines.append(f"| end-to-end recall (final cascade, asteroids found / injected) | ≈ {seed.e2e_recall} | "
                 f"{_fmt(_e2e(found.get('final') or {}, 'completeness'))} |")
    lines.append(f"| random forest F1 (alone, P >= 0.5) | ≈ {seed.rf_f1} | {_fmt(_candidate(found.get('rf_single') or {}, 'f1'))} |")
    tsne = ((found.get("study") or {}).get("done") or {}).get("tsne_accuracy")
    lines.append(f"| t-SNE + k-means accuracy | ≈ {seed.tsne_accuracy} | {_fmt(tsne)} |")
    lines += ["", "Calibration check: " + "; ".join(calibration_flags(cfg, found)), ""]

    lines += ["## Every experiment on the test candidates", "",
              "| step | stages | stage-1 threshold | stage-1 recall | cascade precision | cascade recall | cascade F1 | "
              "precision @ target | recall @ target |", "|---|---|---|---|---|---|---|---|---|"]
    for spec in cfg.steps:
        if spec.kind != "train":
            continue
        res = found.get(spec.name) or {}
        tr = res.get("train") or {}
        arch = tr.get("architectures") or {}
        lines.append(
            f"| {spec.name} | {arch.get('stage1', '—')} → {arch.get('stage2') or '—'} | "
            f"{_fmt((tr.get('thresholds') or {}).get('stage1'), 4)} | {_fmt((tr.get('metrics') or {}).get('test/stage1_recall'))} | "
            f"{_fmt(_candidate(res, 'precision'))} | {_fmt(_candidate(res, 'recall'))} | {_fmt(_candidate(res, 'f1'))} | "
            f"{_fmt(_point_metric(res.get('eval') or {}, 'test/cascade_precision', 'target'))} | "
            f"{_fmt(_point_metric(res.get('eval') or {}, 'test/cascade_recall', 'target'))} |")
    lines += ["", "\"@ target\": stage 2's threshold picked on the validation file for precision "
              f"{_target(found)} (evaluate.py's operating point).", ""]

    lines += ["## Asteroid level, end to end (not measured by the seed)", "",
              "Each injected asteroid counts once: found when an accepted detection (after merging within 5 px) lies "
              "within 3 px of its trail.", "",
              "| step | completeness | completeness (visible) | purity | false / quadrant | m50 (mag) | completeness @ target | "
              "false / quadrant @ target |", "|---|---|---|---|---|---|---|---|"]
    for spec in cfg.steps:
        if spec.kind != "train" or not spec.get("evaluate", True):
            continue
        res = found.get(spec.name) or {}
        ev = (res.get("eval") or {})
        m50 = ev.get("m50") or {}
        m50_text = "—" if not m50 else f"{m50['m50']:.2f} ± {m50.get('m50_err') or float('nan'):.2f}"
        lines.append(
            f"| {spec.name} | {_fmt(_e2e(res, 'completeness'))} | {_fmt(_e2e(res, 'completeness_visible'))} | "
            f"{_fmt(_e2e(res, 'purity'))} | {_fmt(_e2e(res, 'false_per_quadrant'), 2)} | {m50_text} | "
            f"{_fmt(_e2e(res, 'completeness', 'target'))} | {_fmt(_e2e(res, 'false_per_quadrant', 'target'), 2)} |")
    lines += ["", "m50: the magnitude where the logistic fit of completeness vs magnitude crosses half its plateau, "
              "at evaluate.py's primary operating point (`eval.operating_point`). \"@ target\": stage 2 tuned on the "
              "validation file for the target precision; — where no threshold reaches it.", ""]

    study = (found.get("study") or {}).get("done") or {}
    if study.get("footprint"):
        lines += ["## Footprint kernel study (seed Fig. 3 / 4)", "",
                  f"{study.get('footprint_images')} test images; an asteroid is proposed when a block maximum lies "
                  "within 1 px of its centre.", "",
                  "| kernel (px) | proposed | candidates / quadrant |", "|---|---|---|"]
        lines += [f"| {r['kernel_px']} | {_fmt(r['fraction'])} | {r['candidates_per_image']:.0f} |" for r in study["footprint"]]
        lines.append("")

    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{name}]({rel})" for name, rel in figures.items()]
        lines.append("")

    lines += ["## Commands and wall time", "",
              "| step | command | status | wall (s) |", "|---|---|---|---|"]
    steps = found.get("_steps") or {}
    total = 0.0
    for name, entry in steps.items():
        for label, rec in entry.items():
            wall = rec.get("wall_s")
            total += wall or 0.0
            lines.append(f"| {name}/{label} | `{' '.join(rec.get('argv') or [])}` | {rec.get('status', '—')} | {_fmt(wall, 0)} |")
    lines += ["", f"Total wall time of the steps: {total:.0f} s ({total / 60:.1f} min).", ""]

    if str(cfg.get("notes") or "").strip():
        lines += ["## Calibration loop", "", str(cfg.notes).strip(), ""]
    return "\n".join(lines)


def _target(found: Mapping[str, Any]) -> str:
    for res in found.values():
        op = (res.get("eval") or {}).get("operating_point") if isinstance(res, dict) else None
        if op:
            return str(op.get("target_precision"))
    return "0.98"


def copy_figures(cfg: DictConfig, *, cwd: str | Path = ROOT) -> dict[str, str]:
    """Copy each step's listed PNGs (and the study's) into ``figures_dir``; return name -> path relative to results."""
    out = Path(cwd) / cfg.out_dir
    dest = Path(cwd) / cfg.figures_dir
    rel_base = (Path(cwd) / cfg.results).parent
    copied: dict[str, str] = {}
    for spec in cfg.steps:
        if spec.kind == "study":
            sources = sorted((out / spec.name / "figures").glob("*.png"))
        elif spec.kind == "train":
            sources = [out / spec.name / "eval" / f"{f}.png" for f in (spec.get("figures") or [])]
        else:
            continue
        for src in sources:
            if src.is_file():
                dest.mkdir(parents=True, exist_ok=True)
                target = dest / f"{spec.name}-{src.name}"
                shutil.copyfile(src, target)
                copied[f"{spec.name}: {src.stem}"] = os.path.relpath(target, rel_base)
    return copied


def write_results(cfg: DictConfig, *, cwd: str | Path = ROOT) -> Path | None:
    """Copy figures and write ``cfg.results`` from the step outputs (overwrites: it is generated)."""
    if not cfg.get("results"):
        return None
    figures = copy_figures(cfg, cwd=cwd) if cfg.get("figures_dir") else {}
    text = render_results(cfg, collect(cfg, cwd=cwd), figures=figures, machine=machine_info())
    path = Path(cwd) / cfg.results
    # sections other generators wrote into the same file (make ablation's table) survive the rewrite
    for name, body in (marked_sections(path.read_text()) if path.is_file() else {}).items():
        text = replace_section(text, name, body)
    save_text(path, text, overwrite=True)
    return path


# ---------------------------------------------------------------------------------------------- main
def run_paper(cfg: DictConfig, *, cwd: str | Path = ROOT) -> dict:
    """Run the plan, then write the results; returns the steps record."""
    steps = plan(cfg)
    out = Path(cwd) / cfg.out_dir
    check_run_settings(cfg, out)
    start = time.perf_counter()
    record = run_plan(steps, record_path=out / STEPS_FILE, cwd=cwd)
    path = write_results(cfg, cwd=cwd)
    log.info("paper: finished in %.0f s; results in %s", time.perf_counter() - start, path)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``paper [key=value ...]`` runs the plan; ``paper cache|study ...`` runs one subtask."""
    return runner_main(list(sys.argv[1:] if argv is None else argv),
                       subtasks={"cache": build_cache_task, "study": study_task},
                       run=lambda args: run_paper(load_config(args)))


if __name__ == "__main__":
    raise SystemExit(main())
