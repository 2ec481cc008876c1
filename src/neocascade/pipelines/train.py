"""Training pipeline behind ``train.py``: one classifier, stage 1 tuned for recall, or the seed's cascade.

``stage=single`` trains one model on all candidates; ``stage=first`` also picks the threshold that keeps
``stage.min_recall`` of the validation positives (``stage=gated``: reaches ``stage.min_precision``);
``stage=boost`` then trains stage 2 on stage 1's positives only. Every run writes ``config.yaml``,
``metrics.json`` and the artifact ``cascade.pt`` (a one-stage artifact for single, first and gated) into
its run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from neocascade.detection.reference import build_star_check
from neocascade.detection.residuals import build_residual_check
from neocascade.errors import input_error
from neocascade.models.ensemble import EnsembleNet
from neocascade.pipelines.checks import kept_by_checks, on_transients, star_check_for, star_reader
from neocascade.pipelines.common import JobInfo, is_rank_zero, job_info, report_input_errors, save_config
from neocascade.training.artifact import (FP32_FAST, InferenceOptions, StageModel, check_resume, load_cascade, save_cascade,
                                          stage_record)
from neocascade.training.callbacks import MARKER_KEY, StageMarker
from neocascade.training.cascade import candidate_ids, decision_report, score_loader, split_counts, stage2_keep
from neocascade.training.specs import selector_spec, veto_spec
from neocascade.training.thresholds import threshold_for_precision, threshold_for_recall
from neocascade.utils.atomic import check_output_dir, save_json
from neocascade.utils.instantiate import instantiate_callbacks, instantiate_filled, wandb_mode_from_env
from neocascade.utils.logging import finish_loggers, flat_config, log_config
from neocascade.utils.options import validate_train_options

log = logging.getLogger("neocascade.train")

METRICS_FILE = "metrics.json"
STAGE1_FILE = "stage1.pt"  # boost runs: the finished stage 1 as a one-stage artifact, so stage 2 can resume
FAST_DECISIONS = InferenceOptions()  # bf16 on CPUs that have it, fp32 recheck near thresholds: fp32's decisions
STAGE2_PREFIX = "stage2"  # logger prefix of stage 2's curves in a boost run (stage2-val/recall)


TRANSIENT_MODES = ("negative", "aside")


@dataclasses.dataclass(frozen=True)
class Judged:
    """What a precision-based operating point counts on the validation file: the candidates the deployed residual
    ``check`` and reference ``star_check`` keep, less those on simulated transients when ``transients_aside``."""

    check: Any = None
    star_check: Any = None
    transients_aside: bool = False

    @property
    def everything(self) -> bool:
        return self.check is None and self.star_check is None and not self.transients_aside


@dataclasses.dataclass
class Context:
    """What every step of a run needs."""

    cfg: DictConfig
    job: JobInfo
    dm: Any
    logger: Any
    postprocess: dict  # what the artifact stores after the classifier (built and checked once, at start)
    judged: Judged  # what the precision-based operating point counts (built and checked once, at start)

    @property
    def run_dir(self) -> Path:
        return self.job.run_dir


@report_input_errors()
def run(cfg: DictConfig) -> dict:
    """Entry point for ``train.py``: :func:`train`, with bad input reported as one line and exit status 2."""
    return train(cfg)


def train(cfg: DictConfig, *, run_dir: str | Path | None = None) -> dict:
    """Train what ``cfg.stage`` asks for, save the artifact and the JSON report, and return the report.

    Parameters
    ----------
    cfg : DictConfig
        The composed ``conf/train.yaml``.
    run_dir : path, optional
        Run folder; default: Hydra's output folder (or the working folder without Hydra).

    Returns
    -------
    dict
        The report written to ``metrics.json`` (rank 0); other ranks return it unwritten.
    """
    if OmegaConf.select(cfg, "data._target_") is None:
        raise input_error("data", "this preset builds no training data (data=ztf_alerts is for measuring only)",
                          found=OmegaConf.select(cfg, "data.name"))
    validate_train_options(cfg)
    job = job_info(run_dir)
    check_output_dir(job.run_dir, key="hydra.run.dir")
    if OmegaConf.select(cfg, "data.cache_dir") is not None:
        check_output_dir(cfg.data.cache_dir, key="data.cache_dir")
    job.run_dir.mkdir(parents=True, exist_ok=True)
    # torch 2.13 deprecates LeafSpec, which Lightning 2.6's utilities/_pytree.py still builds on every fit
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning,
                            module=r"pytorch_lightning\.utilities\._pytree")
    log.info("run folder: %s", job.run_dir.resolve())
    log_config(cfg)
    save_config(cfg, job.run_dir)
    _check_stage(cfg.stage)
    _check_members(cfg)
    postprocess = _postprocess(cfg)  # a veto that cannot be built fails now, not after training
    judged = _judged(cfg)  # so do the checks the operating point is picked after
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = instantiate(cfg.data)
    judged = dataclasses.replace(judged, star_check=star_check_for(dm.source, judged.star_check,
                                                                   without="the operating point is picked without it"))
    dm.prepare_data()
    dm.setup("fit")
    logger = _build_logger(cfg, job)
    status = "failed"
    try:
        if logger is not None:
            logger.log_hyperparams(flat_config(cfg))
        ctx = Context(cfg=cfg, job=job, dm=dm, logger=logger, postprocess=postprocess, judged=judged)
        report = _run_stages(ctx)
        status = "success"
    finally:
        finish_loggers([logger] if logger is not None else [], status=status)
    log.info("run folder: %s", job.run_dir.resolve())
    return report


def _check_stage(stage: DictConfig) -> None:
    """Exactly one of ``stage.threshold``, ``stage.min_recall`` and ``stage.min_precision``; values in range."""
    threshold, min_recall, min_precision = stage.get("threshold"), stage.get("min_recall"), stage.get("min_precision")
    if sum(v is not None for v in (threshold, min_recall, min_precision)) != 1:
        raise input_error("stage.threshold / stage.min_recall / stage.min_precision", "set exactly one",
                          found=f"{threshold} / {min_recall} / {min_precision}")
    if min_recall is not None and not 0.0 < float(min_recall) <= 1.0:
        raise input_error("stage.min_recall", "must lie in (0, 1]", found=min_recall)
    if min_precision is not None and not 0.0 < float(min_precision) <= 1.0:
        raise input_error("stage.min_precision", "must lie in (0, 1]", found=min_precision)
    if min_precision is not None and stage.get("cascade"):
        raise input_error("stage.min_precision", "is for one-stage runs; a cascade tunes stage 2 with stage.second_precision")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise input_error("stage.threshold", "must lie in [0, 1]", found=threshold)
    if stage.get("cascade") and stage.get("second_precision") is not None:
        if not 0.0 < float(stage.second_precision) <= 1.0:
            raise input_error("stage.second_precision", "must lie in (0, 1]", found=stage.second_precision)


def _judged(cfg: DictConfig) -> Judged:
    """The checks of ``residual_check`` / ``reference_check`` and ``operating_point.transients``, built and checked."""
    mode = OmegaConf.select(cfg, "operating_point.transients", default="negative")
    if mode not in TRANSIENT_MODES:
        raise input_error("operating_point.transients", f"must be one of {', '.join(TRANSIENT_MODES)}",
                          found=repr(mode))
    return Judged(check=build_residual_check(cfg.get("residual_check")),
                  star_check=build_star_check(cfg.get("reference_check")), transients_aside=mode == "aside")


def _counted(ctx: Context) -> tuple[np.ndarray | None, dict]:
    """Validation candidates a precision-based threshold counts (:class:`Judged`; None: every one), and the record
    ``metrics.json`` keeps: the checks, the transients' mode and, when any applies, how many of the ``candidates``
    were ``dropped`` by the checks and set ``aside``.

    A candidate a check drops is no detection at any threshold; one on a simulated transient (a real, stationary point
    source that one exposure cannot tell from a slow asteroid; linking can) is neither true nor false.
    """
    judged, dm = ctx.judged, ctx.dm
    record = {"residual_check": repr(judged.check) if judged.check is not None else None,
              "reference_check": repr(judged.star_check) if judged.star_check is not None else None,
              "transients": "aside" if judged.transients_aside else "negative"}
    if judged.everything:
        return None, record
    cs = dm.candidates("val")
    index = np.arange(len(cs))
    stars = None if judged.star_check is None else star_reader(dm.source, cs, key="reference_check")
    counted = kept_by_checks(cs, index, check=judged.check, star_check=judged.star_check, stars=stars)
    aside = on_transients(cs, dm.source, radius=float(dm.label_radius)) if judged.transients_aside else None
    record.update(candidates=int(len(cs)), dropped=int((~counted).sum()),
                  aside=0 if aside is None else int((aside & counted).sum()))
    if aside is not None:
        counted &= ~aside
    log.info("operating point: %d of %d validation candidates dropped by the checks, %d on transients set aside",
             record["dropped"], record["candidates"], record["aside"])
    _log_metrics(ctx, {"operating_point/dropped": record["dropped"], "operating_point/aside": record["aside"]})
    return counted, record


def _postprocess(cfg: DictConfig) -> dict:
    """What detection does after the classifier, stored in the artifact as ``{"veto": {"kind", "params"} or None}``.

    The selector and the veto must be from the fixed set an artifact can store (``training.specs``): checked now,
    not after training.
    """
    selector = OmegaConf.select(cfg, "data.selector")
    if selector is not None:
        selector_spec(OmegaConf.to_container(selector, resolve=True), source="data.selector")
    node = cfg.get("veto")
    config = None if node is None or node.get("_target_") is None else OmegaConf.to_container(node, resolve=True)
    return {"veto": veto_spec(config, source="veto")}


def _build_logger(cfg: DictConfig, job: JobInfo) -> Any:
    """The configured experiment logger with run folder, name and sweep group filled in; None for ``logger=null``."""
    node = cfg.get("logger")
    if node is None:
        return None
    node = wandb_mode_from_env(node)
    fill = {"save_dir": str(job.run_dir), "name": job.name, "group": job.group, "version": "train"}
    return instantiate_filled(node, key="logger", fill=fill)


# ---------------------------------------------------------------------------------------- stages
def _run_stages(ctx: Context) -> dict:
    cfg, dm = ctx.cfg, ctx.dm
    stage_cfg = cfg.stage
    cascade = bool(stage_cfg.get("cascade", False))
    marker = _read_marker(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    resume_stage = None if marker is None else marker.get("stage", "stage1")
    notes: dict[str, Any] = {}

    # stage 1: reuse a finished one, or train it (resuming it when ckpt_path was written by stage 1)
    if cascade and stage_cfg.get("first_ckpt"):
        stage1 = _load_stage1(stage_cfg.first_ckpt, cfg, dm)
        notes["stage1_source"] = str(stage_cfg.first_ckpt)
    elif resume_stage == "stage2" and marker.get("stage1_artifact"):
        stage1 = _load_stage1(marker["stage1_artifact"], cfg, dm)
        notes["stage1_source"] = str(marker["stage1_artifact"])
    else:
        resume = cfg.ckpt_path if resume_stage in (None, "stage1") else None
        stage1, notes["stage1_checkpoint"] = _fit_stage(ctx, cfg.model, tag="stage1", resume=resume)
    p1_val, label_val = _scores(dm, "val", [stage1])
    counted, notes["operating_point"] = _counted(ctx) if _by_precision(stage_cfg) else (None, None)  # stage 2 too
    stage1.threshold = _pick_threshold1(stage_cfg, p1_val[0] if cascade else _judge(p1_val[0], counted), label_val)
    log.info("stage 1 (%s): threshold %.6g", stage1.arch, stage1.threshold)
    _log_metrics(ctx, {"stage1/threshold": stage1.threshold})

    counts: dict[str, Any] = {name: split_counts(dm.get_labels(name)) for name in ("train", "val", "test")}
    stage2 = None
    if cascade:
        stage2 = _boost(ctx, stage1, p1_val[0], label_val, counts, counted=counted,
                        resume=cfg.ckpt_path if resume_stage == "stage2" else None)
    return _evaluate_and_save(ctx, stage1, stage2, counts, notes)


def _boost(ctx: Context, stage1: StageModel, p1_val: np.ndarray, label_val: np.ndarray, counts: dict, *,
           counted: np.ndarray | None, resume: Any) -> StageModel:
    """Train stage 2 on stage 1's positives (true and false) of the training and validation files."""
    cfg, dm = ctx.cfg, ctx.dm
    stage1_path = ctx.run_dir / STAGE1_FILE
    if is_rank_zero():
        save_cascade(
            stage1_path,
            stage1=stage_record(stage1.model, stage1.threshold),
            stage2=None,
            input_spec=dm.input_spec,
            config=OmegaConf.to_container(cfg, resolve=True),
            metrics={},
            postprocess=ctx.postprocess,
            overwrite=True,
        )
    # only stage 1's decisions matter here: bf16 with the fp32 recheck near its threshold gives fp32's
    (p1_train,), label_train = _scores(dm, "train", [stage1], options=FAST_DECISIONS, thresholds=[stage1.threshold])
    keep_train = stage2_keep(p1_train, stage1.threshold)
    keep_val = stage2_keep(p1_val, stage1.threshold)
    counts["stage2_train"] = split_counts(label_train, keep_train)
    counts["stage2_val"] = split_counts(label_val, keep_val)
    n_pos, n_all = counts["stage2_train"]["positives"], counts["stage2_train"]["candidates"]
    log.info("stage 2 trains on %d stage-1 positives of the training files (%d true)", n_all, n_pos)
    if n_pos == 0 or n_pos == n_all:
        raise input_error(
            "stage.min_recall",
            "stage 1 passes one class only of the training candidates; stage 2 needs true and false positives",
            found=f"{n_pos} true of {n_all}",
        )
    dm.restrict("train", keep_train)
    dm.restrict("val", keep_val)
    second_cfg = cfg.stage.get("second_model") or cfg.model
    try:
        stage2, _ = _fit_stage(ctx, second_cfg, tag="stage2", resume=resume, stage1_artifact=str(stage1_path.resolve()))
    finally:
        dm.restrict("train", None)
        dm.restrict("val", None)
    target = cfg.stage.get("second_precision")
    if target is not None:
        (p2_val,), _ = _scores(dm, "val", [stage2], indices=np.flatnonzero(keep_val))
        p2_val = _judge(p2_val, counted)
        stage2.threshold = threshold_for_precision(p2_val[keep_val], label_val[keep_val], target_precision=float(target))
    else:
        stage2.threshold = float(cfg.stage.second_threshold)
    log.info("stage 2 (%s): threshold %.6g", stage2.arch, stage2.threshold)
    _log_metrics(ctx, {"stage2/threshold": stage2.threshold})
    return stage2


def _by_precision(stage_cfg: DictConfig) -> bool:
    """Whether a threshold is picked for a validation precision (stage 1's ``min_precision`` or stage 2's
    ``second_precision``): the picks :func:`_counted` applies to."""
    if stage_cfg.get("cascade"):
        return stage_cfg.get("second_precision") is not None
    return stage_cfg.get("threshold") is None and stage_cfg.get("min_precision") is not None


def _judge(probs: np.ndarray, counted: np.ndarray | None) -> np.ndarray:
    """``probs`` with the candidates a threshold does not count set to NaN (never accepted)."""
    return probs if counted is None else np.where(counted, probs, np.nan)


def _pick_threshold1(stage_cfg: DictConfig, p1_val: np.ndarray, label_val: np.ndarray) -> float:
    """The fixed threshold, or the one reaching ``min_recall`` / ``min_precision`` on the validation file."""
    if stage_cfg.get("threshold") is not None:
        return float(stage_cfg.threshold)
    if not label_val.any():
        raise input_error("data.split.val", "the validation files hold no positive candidate to tune stage 1's threshold on")
    if stage_cfg.get("min_precision") is not None:
        return threshold_for_precision(p1_val, label_val, target_precision=float(stage_cfg.min_precision))
    return threshold_for_recall(p1_val, label_val, min_recall=float(stage_cfg.min_recall))


def _fit_stage(
    ctx: Context, model_cfg: DictConfig, *, tag: str, resume: Any = None, stage1_artifact: str | None = None
) -> tuple[StageModel, str | list[str] | None]:
    """Build the configured model and train it: a CNN with Lightning, a forest with its ``fit``.

    With ``stage.members`` = n > 1, n CNNs are trained one after another (member k reseeded with
    ``seed + k``, so stage 1's member 0 is the one-network run) and averaged in an :class:`EnsembleNet`.
    Returns the stage (threshold 0.5 until the caller picks one) and its best checkpoint path(s).
    """
    n = _members(ctx.cfg.stage)
    if n == 1:
        return _fit_network(ctx, model_cfg, tag=tag, resume=resume, stage1_artifact=stage1_artifact)
    nets, bests = [], []
    for k in range(n):
        if k:
            pl.seed_everything(int(ctx.cfg.seed) + k, workers=True, verbose=False)
        stage, best = _fit_network(ctx, model_cfg, tag=tag, member=k, stage1_artifact=stage1_artifact)
        nets.append(stage.model)
        bests.append(best or "")
    net = EnsembleNet(nets).eval()
    log.info("%s: %d %s networks averaged", tag, n, nets[0].arch)
    return StageModel(arch=net.arch, hparams=net.hparams(), model=net, threshold=0.5), bests


def _members(stage_cfg: DictConfig) -> int:
    """``stage.members`` (default 1): networks trained and averaged per CNN stage."""
    n = stage_cfg.get("members", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise input_error("stage.members", "must be a positive integer", found=n)
    return n


def _check_members(cfg: DictConfig) -> None:
    """An ensemble (``stage.members`` > 1) needs CNN stages and a fresh run; checked before any training."""
    n = _members(cfg.stage)
    if n == 1:
        return
    for node in (cfg.model, cfg.stage.get("second_model")):
        if node is not None and not issubclass(_model_class(node), nn.Module):
            raise input_error("stage.members", "averages CNNs; a random forest is an ensemble already", found=n)
    if cfg.get("ckpt_path"):
        raise input_error("ckpt_path", "resuming a run with stage.members > 1 is not supported; train it again",
                          found=cfg.ckpt_path)


def _fit_network(
    ctx: Context, model_cfg: DictConfig, *, tag: str, member: int = 0, resume: Any = None,
    stage1_artifact: str | None = None,
) -> tuple[StageModel, str | None]:
    """Train one model of a stage (member k of an ensemble checkpoints under ``<tag>-member<k>``)."""
    cfg, dm = ctx.cfg, ctx.dm
    model = instantiate(model_cfg, in_channels=dm.in_channels, cutout_size=dm.cutout_size)
    if not isinstance(model, nn.Module):
        return _fit_forest(dm, model, tag=tag), None
    classifier = instantiate(cfg.classifier)(model, instantiate(cfg.optimizer))
    if resume:
        check_resume(resume, classifier)  # one line naming the checkpoint, not Lightning's size-mismatch traceback
    # a resumed stage keeps writing into the checkpoint folder it was interrupted in, so its best and
    # last checkpoints stay one series (and Lightning restores the checkpoint callback's state)
    name = tag if member == 0 else f"{tag}-member{member}"
    ckpt_dir = Path(str(resume)).resolve().parent if resume else ctx.run_dir / "checkpoints" / name
    callbacks = instantiate_callbacks(cfg.callbacks, fill={"dirpath": str(ckpt_dir)})
    callbacks.append(StageMarker(tag, stage1_artifact=stage1_artifact))
    if ctx.logger is not None:
        # stage 2 of a boost run logs beside stage 1 in the same run: prefix its curves (stage2-val/recall),
        # and an ensemble's later members theirs (member1-val/recall, stage2-member1-val/recall)
        prefix = STAGE2_PREFIX if tag == "stage2" else ""
        ctx.logger._prefix = "-".join(p for p in (prefix, f"member{member}" if member else "") if p)
    trainer = instantiate_filled(
        cfg.trainer,
        key="trainer",
        fill={"default_root_dir": str(ctx.run_dir)},
        callbacks=callbacks,
        logger=ctx.logger if ctx.logger is not None else False,
    )
    log.info("%s: training %s for up to %s epochs", name, model.arch, trainer.max_epochs)
    trainer.fit(classifier, datamodule=dm, ckpt_path=str(resume) if resume else None)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback is not None else ""
    if best:
        from neocascade.training.classifier import classifier_from_checkpoint

        net = classifier_from_checkpoint(best, model.arch, in_channels=dm.in_channels, cutout_size=dm.cutout_size).model
        log.info("%s: best checkpoint %s", name, best)
    else:
        net = classifier.model
    net = net.eval().to(trainer.strategy.root_device)
    return StageModel(arch=net.arch, hparams=net.hparams(), model=net, threshold=0.5), best or None


def _fit_forest(dm: Any, forest: Any, *, tag: str) -> StageModel:
    """Fit a forest on one epoch of the training loader (all positives, ``neg_ratio`` fresh negatives each)."""
    xs, ys = [], []
    for x, y, _ in dm.train_dataloader():
        xs.append(x.numpy())
        ys.append(y.numpy())
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    log.info("%s: fitting %s on %d cutouts (%d positive)", tag, forest.arch, len(y_all), int(y_all.sum()))
    forest.fit(x_all, y_all)
    return StageModel(arch=forest.arch, hparams=forest.hparams(), model=forest, threshold=0.5)


def _load_stage1(path: Any, cfg: DictConfig, dm: Any) -> StageModel:
    """Stage 1 from a Lightning checkpoint of a CNN or from a (one-stage or full) cascade artifact (an ensemble's
    members must all be the configured model)."""
    path = Path(str(path))
    expected = getattr(_model_class(cfg.model), "arch", None)
    if path.suffix == ".ckpt":
        from neocascade.training.classifier import classifier_from_checkpoint

        net = classifier_from_checkpoint(path, expected, in_channels=dm.in_channels, cutout_size=dm.cutout_size).model
        return StageModel(arch=net.arch, hparams=net.hparams(), model=net.eval(), threshold=0.5)
    cascade = load_cascade(path, expected_cutout_size=dm.cutout_size)
    stage = cascade.stage1
    # an ensemble stage 1 (stage.members > 1) fits when every member is the configured model
    archs = {m["arch"] for m in stage.hparams["members"]} if stage.arch == EnsembleNet.arch else {stage.arch}
    if expected is not None and archs != {expected}:
        raise input_error(path, f"stage 1 was trained as '{stage.arch}'", expected=repr(expected),
                          found=", ".join(sorted(archs)))
    if cascade.in_channels != dm.in_channels:
        raise input_error(path, "stage 1 was trained for other input channels", expected=dm.in_channels, found=cascade.in_channels)
    return stage


def _model_class(model_cfg: DictConfig) -> Any:
    from hydra.utils import get_class

    return get_class(model_cfg._target_)


def _read_marker(ckpt_path: Any) -> dict:
    """Which stage wrote ``ckpt_path`` (checkpoints of runs without the marker count as stage 1)."""
    from neocascade.training.classifier import load_checkpoint_dict

    return dict(load_checkpoint_dict(ckpt_path).get(MARKER_KEY) or {"stage": "stage1"})


def _scores(
    dm: Any,
    split: str,
    stages: list[StageModel],
    *,
    indices: np.ndarray | None = None,
    options: InferenceOptions = FP32_FAST,
    thresholds: list[float | None] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each stage's P(asteroid) over the split's candidates (NaN outside ``indices``), and the labels.

    fp32 by default, for scores that thresholds are picked on; see :func:`score_loader` for ``thresholds``.
    """
    n = len(dm.candidates(split))
    probs, label = score_loader(stages, dm.predict_loader(split, indices), n, options=options, thresholds=thresholds)
    if indices is not None:
        label = np.asarray(dm.get_labels(split)) == 1
    return probs, label


def _log_metrics(ctx: Context, metrics: dict[str, float]) -> None:
    if ctx.logger is not None:
        ctx.logger._prefix = ""
        ctx.logger.log_metrics({k: float(v) for k, v in metrics.items()})


# ---------------------------------------------------------------------------------------- report
def _evaluate_and_save(ctx: Context, stage1: StageModel, stage2: StageModel | None, counts: dict, notes: dict) -> dict:
    """Score the test candidates, write ``cascade.pt`` and ``metrics.json`` (rank 0), log the test metrics."""
    cfg, dm = ctx.cfg, ctx.dm
    # decisions at the chosen thresholds, as evaluate.py and detect.py make them: bf16 where the CPU has it,
    # fp32 near each threshold; stage 2 scores only stage 1's positives
    (p1,), label = _scores(dm, "test", [stage1], options=FAST_DECISIONS, thresholds=[stage1.threshold])
    pass1 = stage2_keep(p1, stage1.threshold)
    if stage2 is None:
        p2 = np.where(pass1, p1, np.nan)
    else:
        (p2,), _ = _scores(dm, "test", [stage2], indices=np.flatnonzero(pass1), options=FAST_DECISIONS,
                           thresholds=[stage2.threshold])
    t2 = stage1.threshold if stage2 is None else stage2.threshold
    with np.errstate(invalid="ignore"):
        accept = pass1 & (p2 >= t2)
    test = {"stage1": decision_report(label, pass1), "cascade": decision_report(label, accept)}
    if stage2 is not None:
        test["stage2"] = decision_report(label[pass1], accept[pass1])
    metrics = {
        f"test/{part}_{name}": value
        for part, rep in test.items()
        for name, value in rep.items()
        if name in ("precision", "recall", "f1")
    }
    metrics["stage1/threshold"] = stage1.threshold
    if stage2 is not None:
        metrics["stage2/threshold"] = stage2.threshold
    meta = dm.candidates("test")
    limit = int(cfg.get("max_report_ids", 10000))
    scores = {"p1": p1, "p2": p2}
    fp, fn = accept & ~label, ~accept & label
    report = {
        "task": cfg.get("task", "train"),
        "stage": cfg.stage.get("name"),
        "run_dir": str(ctx.run_dir.resolve()),
        "job_num": ctx.job.job_num,
        "overrides": ctx.job.overrides,
        "metrics": metrics,
        "thresholds": {"stage1": stage1.threshold, "stage2": None if stage2 is None else stage2.threshold},
        "architectures": {"stage1": stage1.arch, "stage2": None if stage2 is None else stage2.arch},
        "split": {name: list(dm.split[name]) for name in ("train", "val", "test")},
        "counts": counts,
        "test": test,
        "n_false_positives": int(fp.sum()),
        "n_false_negatives": int(fn.sum()),
        "false_positives": candidate_ids(meta, fp, scores=scores, limit=limit),
        "false_negatives": candidate_ids(meta, fn, scores=scores, limit=limit),
        "artifact": cfg.get("artifact_name", "cascade.pt"),
        **notes,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    report = _json_safe(report)
    log.info(
        "test candidates: cascade precision %.4f recall %.4f f1 %.4f (stage 1 recall %.4f)",
        *(_nan(test["cascade"][k]) for k in ("precision", "recall", "f1")),
        _nan(test["stage1"]["recall"]),
    )
    if is_rank_zero():
        save_cascade(
            ctx.run_dir / report["artifact"],
            stage1=stage_record(stage1.model, stage1.threshold),
            stage2=None if stage2 is None else stage_record(stage2.model, stage2.threshold),
            input_spec=dm.input_spec,
            config=report["config"],
            metrics={k: v for k, v in report.items() if k not in ("config", "false_positives", "false_negatives")},
            postprocess=ctx.postprocess,
            overwrite=bool(cfg.get("overwrite", False)),
        )
        save_json(ctx.run_dir / METRICS_FILE, report, overwrite=True)
        log.info("wrote %s and %s", ctx.run_dir / report["artifact"], ctx.run_dir / METRICS_FILE)
    _log_metrics(ctx, {k: (float("nan") if v is None else v) for k, v in metrics.items()})
    _log_examples(ctx, fp, fn)
    return report


def _log_examples(ctx: Context, fp: np.ndarray, fn: np.ndarray) -> None:
    """Grids of test false positives and false negatives (first channel) to loggers that take images."""
    n = int(ctx.cfg.get("example_grid", 0))
    if ctx.logger is None or n <= 0 or not hasattr(ctx.logger, "log_image") or not is_rank_zero():
        return
    from neocascade.training.classifier import cutout_grid

    for name, mask in (("fp", fp), ("fn", fn)):
        idx = np.flatnonzero(mask)[:n]
        if idx.size:
            x = torch.cat([batch[0] for batch in ctx.dm.predict_loader("test", idx)])
            ctx.logger.log_image(key=f"test/examples_{name}", images=[cutout_grid(x[:, 0].numpy())])


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _json_safe(obj: Any) -> Any:
    """NaN and infinities become None, numpy scalars plain numbers: strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
