"""``make ablation``: the seed's faithful cascade, then one change added per step, each measured the same way.

Usage: ``python -m neocascade.pipelines.ablation [key=value ...]`` (keys of ``conf/ablation.yaml``;
``reduced=true`` for a quick run). Each step is the train.py / evaluate.py commands a user would type, run by
the same resumable runner as ``make paper`` (:mod:`neocascade.pipelines.runner`): train on ``data`` with the
operating threshold (stage 2's, or the one stage's of ``stage=gated``) picked on the validation file for
``target_precision``; evaluate at those stored thresholds on
``data``'s test files and, unchanged, on the ``transfer`` preset's; time detection on full quadrants. The table
goes into the ablation section of ``results`` (``docs/results.md``), which ``make paper`` keeps when it
rewrites the rest.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig

from neocascade.errors import input_error
from neocascade.pipelines import paper as P
from neocascade.pipelines import runner as R
from neocascade.pipelines.common import write_section

log = logging.getLogger("neocascade.ablation")

CONF = R.ROOT / "conf" / "ablation.yaml"
SECTION = "ablation"  # marker name of the table's section in the results file


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/ablation.yaml`` with ``key=value`` overrides (unknown keys are an error)."""
    cfg = P.load_config(overrides, path=CONF)
    if not 0.0 < float(cfg.target_precision) <= 1.0:
        raise input_error("target_precision", "must be a precision in (0, 1]", found=cfg.target_precision)
    return cfg


def plan(cfg: DictConfig, *, python: str | None = None) -> list[R.Step]:
    """Per step: train.py, evaluate.py on ``data`` and on ``transfer``, then the speed subtask."""
    py = python or sys.executable
    out = Path(cfg.out_dir)
    shared = R.data_overrides(cfg)
    skip = {str(n) for n in (cfg.get("skip") or [])}
    steps = []
    for spec in cfg.steps:
        name = str(spec.name)
        if name in skip:
            continue
        folder = out / name
        artifact = folder / "cascade.pt"
        step = R.Step(name=name, kind="train")
        # the operating point, picked on the validation file: stage 2's threshold in a cascade, the single
        # stage's behind the gate (stage=gated)
        target = float(cfg.target_precision)
        point = [f"stage.min_precision={target}"] if "stage=gated" in spec.overrides else [f"stage.second_precision={target}"]
        epochs = int(spec.get("epochs") or cfg.epochs)  # a step may train longer than the others
        train = [py, "train.py", *list(spec.overrides), *shared, f"trainer.max_epochs={epochs}", *point,
                 f"hydra.run.dir={folder}", *list(cfg.train_overrides)]
        step.commands.append(R.Command("train", train, artifact, folder / "train.log"))
        for label, data in (("evaluate", None), ("transfer", str(cfg.transfer))):
            sub = "eval" if data is None else f"eval_{data}"
            ev = [py, "evaluate.py", f"artifact={artifact}", f"out_dir={folder / sub}", f"paths.cache={cfg.cache_dir}",
                  f"hydra.run.dir={folder / (sub + '_run')}", "eval.operating_point=artifact",
                  f"eval.target_precision={float(cfg.target_precision)}", *list(cfg.eval_overrides)]
            if data is not None:
                ev[3:3] = [f"data={data}", f"data.source.images_per_file={R.images_per_file(cfg)}"]
            step.commands.append(R.Command(label, ev, folder / sub / "metrics.json", folder / f"{label}.log"))
        speed = [py, "-m", "neocascade.pipelines.ablation", "speed", f"artifact={artifact}", f"data={cfg.data}",
                 f"n_images={int(cfg.speed.n_images)}", f"repeats={int(cfg.speed.repeats)}",
                 f"threads={int(cfg.speed.threads)}", f"out={folder / 'speed'}"]
        step.commands.append(R.Command("speed", speed, folder / "speed" / R.DONE_FILE, folder / "speed.log"))
        steps.append(step)
    return steps


# ---------------------------------------------------------------------------------------------- speed
def speed_task(args: Sequence[str]) -> dict:
    """Seconds per full quadrant of ``detect_image`` with the artifact's default inference; ``out/done.json``."""
    own = dict(a.split("=", 1) for a in args if "=" in a)
    missing = [k for k in ("artifact", "data", "out") if k not in own]
    if missing:
        raise input_error("ablation speed", "needs artifact=, data= and out=", found=missing)
    n_images, repeats, threads = (int(own.get(k, d)) for k, d in (("n_images", 2), ("repeats", 3), ("threads", 2)))
    result = R.time_detection(own["artifact"], R._compose_train([f"data={own['data']}"]).data, own["out"],
                              n_images=n_images, repeats=repeats, threads=threads)
    log.info("%s: %.2f quadrants/s on %d threads", own["artifact"], result["quadrants_per_s"], threads)
    return result


# ---------------------------------------------------------------------------------------------- results
def collect(cfg: DictConfig, *, cwd: str | Path = R.ROOT) -> dict:
    """Each step's train, evaluate (both presets) and speed outputs, and the runner's record."""
    out = Path(cwd) / cfg.out_dir
    found: dict[str, Any] = {}
    for spec in cfg.steps:
        folder = out / str(spec.name)
        found[str(spec.name)] = {"train": R._read(folder / "metrics.json"), "eval": R._read(folder / "eval" / "metrics.json"),
                                 "transfer": R._read(folder / f"eval_{cfg.transfer}" / "metrics.json"),
                                 "speed": R._read(folder / "speed" / R.DONE_FILE)}
    found["_steps"] = R._read(out / R.STEPS_FILE)
    return found


def _m50(ev: Mapping[str, Any]) -> str:
    m50 = ev.get("m50") or {}
    return "—" if not m50 else f"{m50['m50']:.2f}"


def render_table(cfg: DictConfig, found: Mapping[str, Any]) -> str:
    """The ablation section: one row per step, both presets, speed and training minutes."""
    n = R.images_per_file(cfg)
    lines = ["## Beyond the seed: ablation" + (f" (REDUCED: {n} images per file)" if cfg.reduced else ""), "",
             f"Generated by `python -m neocascade.pipelines.ablation{' reduced=true' if cfg.reduced else ''}` from "
             f"`{cfg.out_dir}/`. Each row adds one change to the row above (or to the earlier step it names). Trained on `{cfg.data}` ({n} quadrants "
             f"per file); the operating threshold (stage 2's in a cascade, the one stage's behind the gate) picked on "
             f"the validation file for precision {cfg.target_precision} and "
             f"kept unchanged for the test files of `{cfg.data}` and of `{cfg.transfer}` (never tuned on). "
             "Asteroid level, end to end: completeness, purity, m50 (mag); \"not on dead pixels\": completeness of "
             "the asteroids whose centre pixel is not masked or zero. Speed: full quadrants per second, "
             f"{cfg.speed.threads} threads. Training: wall minutes of train.py (every stage, scoring and a first "
             "build of the step's cutout cache included). Validation: positives of the validation file accepted at the operating point, out of "
             "those the step's selector and label rule give (it compares steps whose selectors propose different "
             "candidates; the seed's 1-px centre rule counts positives differently).", "",
             f"| step | change | validation positives found | completeness | not on dead pixels | purity | m50 | "
             f"{cfg.transfer} completeness | "
             f"{cfg.transfer} purity | {cfg.transfer} m50 | quadrants/s | training (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    records = found.get("_steps") or {}
    for spec in cfg.steps:
        res = found.get(str(spec.name)) or {}
        paper_res, shifted_res = {"eval": res.get("eval") or {}}, {"eval": res.get("transfer") or {}}
        train_rec = (records.get(str(spec.name)) or {}).get("train") or {}
        train_s = train_rec.get("wall_s") if train_rec.get("status") == "done" else None
        qps = (res.get("speed") or {}).get("quadrants_per_s")
        lines.append(
            f"| {spec.name} | {spec.get('what', '')} | {_val_found(paper_res['eval'])} | "
            f"{R._fmt(P._e2e(paper_res, 'completeness'))} | {R._fmt(P._e2e(paper_res, 'completeness_visible'))} | "
            f"{R._fmt(P._e2e(paper_res, 'purity'))} | {_m50(paper_res['eval'])} | "
            f"{R._fmt(P._e2e(shifted_res, 'completeness'))} | {R._fmt(P._e2e(shifted_res, 'purity'))} | "
            f"{_m50(shifted_res['eval'])} | {R._fmt(qps, 2)} | {R._fmt(None if train_s is None else train_s / 60, 1)} |")
    if cfg.get("recommended"):
        lines += ["", f"`experiment=neocascade` is step `{cfg.recommended}`: most validation positives found at the "
                  "operating point (chosen on the validation file, never on test; a tie goes to the later step). "
                  "Its cascade was shipped in the package until the randomized-family model of the transfer section replaced it."]
    return "\n".join(lines) + "\n"


def _val_found(ev: Mapping[str, Any]) -> str:
    """Validation positives accepted at the artifact's operating point, as 'found / positives'."""
    recall = (ev.get("operating_point") or {}).get("val_recall_artifact")
    positives = (ev.get("counts") or {}).get("val_positive")
    if recall is None or positives is None:
        return "—"
    return f"{round(recall * positives)} / {positives}"


def write_results(cfg: DictConfig, *, cwd: str | Path = R.ROOT) -> Path | None:
    """Put the table into the ablation section of ``cfg.results`` (created when missing)."""
    if not cfg.get("results"):
        return None
    return write_section(cfg.results, SECTION, render_table(cfg, collect(cfg, cwd=cwd)), cwd=cwd)


def run_ablation(cfg: DictConfig, *, cwd: str | Path = R.ROOT) -> dict:
    """Run the plan, then write the table; returns the steps record."""
    out = Path(cwd) / cfg.out_dir
    R.check_run_settings(cfg, out)
    start = time.perf_counter()
    record = R.run_plan(plan(cfg), record_path=out / R.STEPS_FILE, cwd=cwd)
    path = write_results(cfg, cwd=cwd)
    log.info("ablation: finished in %.0f s; table in %s", time.perf_counter() - start, path)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``ablation [key=value ...]`` runs the plan; ``ablation speed ...`` times one artifact."""
    return R.runner_main(list(sys.argv[1:] if argv is None else argv), subtasks={"speed": speed_task},
                         run=lambda args: run_ablation(load_config(args)))


if __name__ == "__main__":
    raise SystemExit(main())
