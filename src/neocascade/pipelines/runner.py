"""The generic step runner behind ``make paper``, ``make ablation`` and ``make transfer``.

A run is a plan of :class:`Step` s, each a list of :class:`Command` s (a subprocess and the file whose
existence means it is done). :func:`run_plan` runs what is missing and records wall times in
``steps.json``, so a rerun resumes where the last one stopped; :func:`check_run_settings` keeps one
folder to one set of settings (``run.json``); :func:`runner_main` is the shared command line.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from neocascade.errors import InputError, input_error
from neocascade.utils.atomic import save_json

log = logging.getLogger("neocascade.runner")

ROOT = Path(__file__).resolve().parents[3]
STEPS_FILE = "steps.json"
RUN_FILE = "run.json"  # the settings every step of out_dir shares; a run with other settings is refused
DONE_FILE = "done.json"


@dataclass
class Command:
    """One subprocess of a step: its argument list and the file whose existence means it is done."""

    label: str
    argv: list[str]
    done: Path
    log: Path


@dataclass
class Step:
    """A named step of the plan and its commands, run in order."""

    name: str
    kind: str
    commands: list[Command] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- config
def load_config(overrides: Sequence[str], *, path: str | Path) -> DictConfig:
    """A runner's YAML (``conf/paper.yaml`` ...) with ``key=value`` overrides applied (unknown keys are an error)."""
    cfg = OmegaConf.load(path)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise input_error(f"{Path(path).stem} arguments", "expected key=value", found=repr(bad[0]))
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+")
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise input_error(f"{Path(path).name}: {key}", "no such key")
    cfg.merge_with(OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    names = [str(step.get("name")) for step in (cfg.get("steps") or [])]
    # a runner whose steps are generated (make transfer) checks skip= against its own names
    unknown = [n for n in (cfg.get("skip") or []) if str(n) not in names] if cfg.get("steps") is not None else []
    if unknown:
        raise input_error("skip", "names no step", expected=f"some of {names}", found=unknown)
    n = images_per_file(cfg)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise input_error("images_per_file", "must be a positive integer", found=repr(n))
    return cfg


def images_per_file(cfg: DictConfig) -> int:
    """Quadrants per file this run uses (the reduced count when ``reduced``)."""
    return cfg.reduced_images_per_file if cfg.reduced else cfg.images_per_file


def data_overrides(cfg: DictConfig) -> list[str]:
    """train.py overrides every step shares: the data preset, its size, the cache and the validation cap."""
    out = [f"data={cfg.data}", f"data.source.images_per_file={images_per_file(cfg)}", f"paths.cache={cfg.cache_dir}"]
    if cfg.get("val_negatives") is not None:
        out.append(f"data.val_negatives={int(cfg.val_negatives)}")
    return out


# ---------------------------------------------------------------------------------------------- runner
def resume_args(folder: Path) -> list[str]:
    """``ckpt_path=`` of an interrupted training run in ``folder`` (stage 2's last.ckpt first), else nothing."""
    for stage in ("stage2", "stage1"):
        last = folder / "checkpoints" / stage / "last.ckpt"
        if last.is_file():
            return [f"ckpt_path={last}"]
    return []


# ---------------------------------------------------------------------------------------------- runner
def run_plan(
    steps: Sequence[Step],
    *,
    record_path: str | Path,
    runner: Callable[[Command, list[str]], int] | None = None,
    cwd: str | Path = ROOT,
) -> dict:
    """Run every command whose output is missing; record wall times in ``record_path`` after each one.

    Parameters
    ----------
    steps : sequence of Step
    record_path : path
        ``steps.json``: per step and command the argv, status (done, failed; skipped when its output was
        made outside this runner) and wall seconds; a skipped command keeps the record of the run that
        made it and gains ``last_skipped``.
    runner : callable, optional
        ``runner(command, argv) -> exit status``; default: a subprocess in ``cwd`` logging to ``command.log``.
    cwd : path
        Folder the commands run in (the repository root: ``train.py`` and ``conf/`` live there).

    Returns
    -------
    dict
        The record. Commands after a failed one in the same step are not run; other steps still are.
    """
    record_path = Path(record_path)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    run = runner or _subprocess_runner(cwd)
    for step in steps:
        entry = record.setdefault(step.name, {})
        for cmd in step.commands:
            done = _is_done(cmd.done, cwd)
            previous = entry.get(cmd.label, {})
            if done:
                # keep the record of the run that made the output; "skipped" only when no run here made it
                entry[cmd.label] = {**previous, "status": "done" if previous.get("status") == "done" else "skipped",
                                    "argv": previous.get("argv") or _show(cmd.argv),
                                    "last_skipped": _dt.datetime.now().isoformat(timespec="seconds")}
                log.info("%s/%s: done already (%s), skipped", step.name, cmd.label, cmd.done)
                continue
            argv = list(cmd.argv) + (resume_args(Path(cwd) / cmd.done.parent) if cmd.label == "train" else [])
            log.info("%s/%s: %s", step.name, cmd.label, " ".join(_show(argv)))
            start = time.perf_counter()
            status = run(cmd, argv)
            wall = time.perf_counter() - start
            ok = status == 0 and _is_done(cmd.done, cwd)
            entry[cmd.label] = {"status": "done" if ok else "failed", "exit": int(status), "wall_s": round(wall, 1),
                                "argv": _show(argv), "log": str(cmd.log),
                                "finished": _dt.datetime.now().isoformat(timespec="seconds")}
            _save_record(record_path, step.name, cmd.label, entry[cmd.label])
            log.info("%s/%s: %s in %.0f s", step.name, cmd.label, entry[cmd.label]["status"], wall)
            if not ok:
                break
    for step in steps:
        for label, rec in record.get(step.name, {}).items():
            _save_record(record_path, step.name, label, rec)
    return json.loads(record_path.read_text()) if record_path.is_file() else record


def _save_record(path: Path, step: str, label: str, rec: dict) -> None:
    """Update one entry of ``steps.json``, keeping entries other runs wrote meanwhile."""
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.setdefault(step, {})[label] = rec
    save_json(path, record, overwrite=True)


def _is_done(path: Path, cwd: str | Path) -> bool:
    return (Path(cwd) / path).is_file()


def _show(argv: Sequence[str]) -> list[str]:
    """argv with the interpreter written as ``python`` (what a user types)."""
    return ["python" if i == 0 else str(a) for i, a in enumerate(argv)]


def _subprocess_runner(cwd: str | Path) -> Callable[[Command, list[str]], int]:
    def run(cmd: Command, argv: list[str]) -> int:
        logfile = Path(cwd) / cmd.log
        logfile.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("WANDB_MODE", "offline")
        env.setdefault("WANDB_SILENT", "true")
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(logfile, "a") as fh:
            fh.write(f"\n# {_dt.datetime.now().isoformat(timespec='seconds')}: {' '.join(_show(argv))}\n")
            fh.flush()
            return subprocess.run(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    return run


# ---------------------------------------------------------------------------------------------- helpers
def time_detection(artifact: str, data: DictConfig, out: str | Path, *, n_images: int, repeats: int,
                   threads: int) -> dict:
    """Seconds per quadrant of ``detect_image`` on the first test file of ``data``; written to ``out/done.json``.

    One warm-up pass (layouts, oneDNN primitive caches), then ``repeats`` passes over up to ``n_images``
    quadrants on ``threads`` torch threads; the median pass is reported.
    """
    import numpy as np
    import torch
    from hydra.utils import instantiate

    from neocascade.detection.detector import detect_image, input_spec
    from neocascade.training.artifact import load_cascade

    torch.set_num_threads(threads)
    cascade = load_cascade(artifact)
    spec = input_spec(cascade)
    source = instantiate(data.source)
    file = int(data.split.test[0])
    images = [np.asarray(source.read(file, i)[0]) for i in range(min(n_images, source.n_images(file)))]
    detect_image(images[0], cascade, spec=spec)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            detect_image(image, cascade, spec=spec)
        times.append((time.perf_counter() - start) / len(images))
    seconds = statistics.median(times)
    result = {"seconds_per_quadrant": seconds, "quadrants_per_s": 1.0 / seconds, "seconds_all": times,
              "threads": threads, "n_images": len(images), "shape": list(images[0].shape), "repeats": repeats}
    save_json(Path(out) / DONE_FILE, result, overwrite=True)
    return result


def _compose_train(overrides: Sequence[str]) -> DictConfig:
    """``conf/train.yaml`` composed with train.py overrides (no Hydra run folder)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def machine_info() -> dict[str, Any]:
    """Where the run happened: CPU count, platform, Python and torch versions."""
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "torch threads": torch.get_num_threads()}


def run_settings(cfg: DictConfig) -> dict:
    """What makes the steps of one run comparable: data, size, epochs and the extra overrides."""
    return {"data_overrides": data_overrides(cfg), "epochs": int(cfg.epochs),
            "train_overrides": [str(v) for v in cfg.train_overrides], "eval_overrides": [str(v) for v in cfg.eval_overrides]}


def check_run_settings(cfg: DictConfig, out: Path, *, settings: Mapping[str, Any] | None = None,
                       step_names: Sequence[str] | None = None) -> None:
    """Record this run's settings in ``out``, or refuse when its finished steps were made with other ones.

    Steps are skipped when their output exists, so a full run resuming into a reduced run's folder would
    otherwise report the reduced numbers as full-scale ones. ``settings`` default to :func:`run_settings`;
    ``step_names`` (default: the names in ``cfg.steps``) are the folders that betray an unrecorded run.
    """
    path = out / RUN_FILE
    settings = dict(run_settings(cfg) if settings is None else settings)
    names = [str(spec.name) for spec in cfg.steps] if step_names is None else [str(n) for n in step_names]
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise input_error(out, f"holds steps of a run with other {', '.join(changed)} "
                                   f"({previous.get(changed[0])}); pass another out_dir= or move that folder")
        return
    if out.is_dir() and any((out / name).exists() for name in names):
        raise input_error(out, f"holds step folders but no {RUN_FILE}, so their settings are unknown; "
                               "pass another out_dir= or move that folder")
    out.mkdir(parents=True, exist_ok=True)
    save_json(path, settings, overwrite=False)


def runner_main(args: Sequence[str], *, subtasks: Mapping[str, Callable[[Sequence[str]], Any]],
                run: Callable[[Sequence[str]], dict]) -> int:
    """Shared command line of the step runners: ``NAME args`` runs subtask NAME, otherwise ``run(args)``.

    Exit status 2 with one stderr line for bad input, 1 when a step failed (named in the log), else 0.
    """
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        if args and args[0] in subtasks:
            subtasks[args[0]](args[1:])
            return 0
        record = run(args)
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    failed = [f"{s}/{c}" for s, e in record.items() for c, r in e.items() if r.get("status") == "failed"]
    if failed:
        log.error("failed steps: %s (see their logs)", ", ".join(failed))
        return 1
    return 0
