"""Checks of the options a user can type, one function per entry point, run before any work starts.

Each check names the config key in one line (``trainer.max_epochs: must be a positive integer
(got -1)``) and raises :class:`~neocascade.errors.InputError`, which the pipelines turn into exit
status 2. A key absent from the config is skipped: presets and groups only carry what they use.
Checks that need more than one value (exactly one of ``stage.threshold``, ``stage.min_recall``,
``stage.min_precision``; file numbers within a preset) stay with the code that uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from neocascade.errors import input_error

__all__ = [
    "validate_detect_options",
    "validate_evaluate_options",
    "validate_simulate_options",
    "validate_train_options",
]

_ABSENT = object()
_MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range


@dataclass(frozen=True)
class Rule:
    """A test on one option's value and the words saying what it must be."""

    ok: Callable[[Any], bool]
    must: str


def _is_int(v: Any) -> bool:
    """An integer, and not a bool (YAML's ``true`` is no count)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(lo: int, hi: int | None = None) -> Rule:
    """An integer in ``lo..hi`` (no upper end when ``hi`` is None)."""
    words = ("a positive integer" if lo == 1 and hi is None else
             f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}")
    return Rule(lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi), f"must be {words}")


def _number(lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """A finite number from ``lo`` (excluded when ``lo_open``) to ``hi`` (likewise)."""
    if hi is None:
        words = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        words = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def ok(v: Any) -> bool:
        if not _is_number(v) or v < lo or (lo_open and v == lo):
            return False
        return hi is None or v < hi or (not hi_open and v == hi)

    return Rule(ok, f"must be {words}")


def _optional(rule: Rule) -> Rule:
    """``rule``, or null (the option is off); a wrong value is told what ``rule`` wants."""
    return Rule(lambda v: v is None or rule.ok(v), rule.must)


def _list_of(rule: Rule, *, allow_empty: bool = False, length: int | None = None) -> Rule:
    """A list whose every item passes ``rule`` (of exactly ``length`` items when given)."""
    words = rule.must[len("must be "):]
    noun = f"a list of {length}" if length is not None else ("a list" if allow_empty else "a non-empty list")

    def ok(v: Any) -> bool:
        if not isinstance(v, (list, tuple)) or (not allow_empty and not v) or (length is not None and len(v) != length):
            return False
        return all(rule.ok(x) for x in v)

    return Rule(ok, f"must be {noun} of values each {words}")


def _int_or_list(rule: Rule) -> Rule:
    """One value passing ``rule``, or a non-empty list of them (``model.hidden``: 512 or [128, 32])."""
    as_list = _list_of(rule)
    return Rule(lambda v: rule.ok(v) or as_list.ok(v), f"{rule.must} or {as_list.must[len('must be '):]}")


def _either(*rules: Rule, must: str) -> Rule:
    """Any of ``rules``; ``must`` words them together."""
    return Rule(lambda v: any(r.ok(v) for r in rules), must)


POSITIVE_INT = _int(1)
COUNT = _int(0)
PROBABILITY_TARGET = Rule(_number(0.0, 1.0, lo_open=True).ok, "must lie in (0, 1]")  # a recall or precision to reach
THRESHOLD = Rule(_number(0.0, 1.0).ok, "must lie in [0, 1]")  # a cut on P(asteroid)
SEED = _int(0, _MAX_SEED)
MINUS_ONE = Rule(lambda v: _is_int(v) and v == -1, "must be -1")
N_JOBS = _either(POSITIVE_INT, MINUS_ONE, must="must be a positive integer or -1 (all cores)")
# a cutout is centred on its candidate pixel, and 1x1 holds no shape
ODD_SIZE = Rule(lambda v: _is_int(v) and v >= 3 and v % 2 == 1, "must be an odd integer >= 3")
MAX_EPOCHS = Rule(lambda v: _is_int(v) and v >= 1,
                  "must be a positive integer; -1 (Lightning's 'no limit') would train forever")

DATA_RULES: dict[str, Rule] = {
    "data.sigma": _number(0.0),
    "data.kernel": POSITIVE_INT,
    "data.stride": POSITIVE_INT,
    "data.cutout_size": ODD_SIZE,
    "data.label_radius": _number(0.0, lo_open=True),
    "data.neg_ratio": _number(0.0, lo_open=True),
    "data.batch_size": POSITIVE_INT,
    "data.num_workers": COUNT,
    "data.n_jobs": N_JOBS,
    "data.val_negatives": _optional(POSITIVE_INT),
    "data.seed": SEED,
    "data.source.seed": SEED,
    "data.source.n_files": POSITIVE_INT,
    "data.source.images_per_file": POSITIVE_INT,
    "data.source.n_asteroids": COUNT,
    "data.source.shape": _list_of(POSITIVE_INT, length=2),
    "data.selector.kernel": POSITIVE_INT,
    "data.selector.stride": POSITIVE_INT,
    "data.selector.tile": POSITIVE_INT,
    "data.selector.threshold": _number(0.0, lo_open=True),
    "data.selector.min_distance": POSITIVE_INT,
    "data.selector.noise_box": POSITIVE_INT,
}

VETO_RULES: dict[str, Rule] = {
    "veto.min_points": _int(2),
    "veto.tolerance": _number(0.0, lo_open=True),
    "veto.min_span": _number(0.0),
}

MODEL_RULES: dict[str, Rule] = {  # relative to a model node: cfg.model or cfg.stage.second_model
    "widths": _list_of(POSITIVE_INT),
    "hidden": _int_or_list(POSITIVE_INT),
    "depths": _list_of(POSITIVE_INT),
    "pools": COUNT,
    "blocks": POSITIVE_INT,
    "dropout": _number(0.0, 1.0, hi_open=True),
    "n_estimators": POSITIVE_INT,
    "max_depth": _optional(POSITIVE_INT),
    "min_samples_leaf": POSITIVE_INT,
    "n_jobs": N_JOBS,
}

TRAIN_RULES: dict[str, Rule] = {
    "seed": SEED,
    "trainer.max_epochs": MAX_EPOCHS,
    "trainer.min_epochs": _optional(COUNT),
    "trainer.max_steps": _either(POSITIVE_INT, MINUS_ONE,
                                 must="must be a positive integer or -1 (no step limit; max_epochs ends training)"),
    "trainer.log_every_n_steps": POSITIVE_INT,
    "trainer.num_nodes": POSITIVE_INT,
    "trainer.num_sanity_val_steps": _int(-1),
    "trainer.accumulate_grad_batches": POSITIVE_INT,
    "trainer.fast_dev_run": _either(Rule(lambda v: isinstance(v, bool), ""), COUNT,
                                    must="must be true, false or an integer >= 0 (batches)"),
    **DATA_RULES,
    "stage.threshold": _optional(THRESHOLD),
    "stage.min_recall": _optional(PROBABILITY_TARGET),
    "stage.min_precision": _optional(PROBABILITY_TARGET),
    "stage.members": POSITIVE_INT,
    "stage.second_threshold": _optional(THRESHOLD),
    "stage.second_precision": _optional(PROBABILITY_TARGET),
    "optimizer.lr": _number(0.0, lo_open=True),
    "optimizer.weight_decay": _number(0.0),
    "classifier.focal_gamma": _number(0.0),
    "classifier.n_examples": COUNT,
    "classifier.class_weights": _optional(_list_of(_number(0.0, lo_open=True), length=2)),
    "callbacks.checkpoint.save_top_k": _int(-1),
    "callbacks.checkpoint.every_n_epochs": COUNT,
    "callbacks.early_stopping.patience": COUNT,
    "max_report_ids": COUNT,
    "example_grid": COUNT,
    **VETO_RULES,
}

EVALUATE_RULES: dict[str, Rule] = {
    "seed": SEED,
    "eval.match_radius": _number(0.0, lo_open=True),
    "eval.merge_radius": _number(0.0),
    "eval.target_precision": PROBABILITY_TARGET,
    "eval.mag_step": _number(0.0, lo_open=True),
    "eval.length_bins": POSITIVE_INT,
    "eval.batch_size": POSITIVE_INT,
    "eval.max_report_ids": COUNT,
    "eval.example_grid": COUNT,
    "eval.footprint.kernels": _list_of(POSITIVE_INT, allow_empty=True),
    "eval.footprint.n_images": COUNT,
    "eval.data_figures.n_images": COUNT,
    "eval.data_figures.n_pixels": POSITIVE_INT,
    "eval.data_figures.grid": COUNT,
    "eval.data_figures.tsne_n": COUNT,
    **DATA_RULES,
    **VETO_RULES,
}

SIMULATE_RULES: dict[str, Rule] = {
    "seed": SEED,
    "data.source.seed": SEED,
    "data.source.n_files": POSITIVE_INT,
    "data.source.images_per_file": POSITIVE_INT,
    "data.source.n_asteroids": COUNT,
    "data.source.shape": _list_of(POSITIVE_INT, length=2),
}

DETECT_RULES: dict[str, Rule] = {
    "batch_size": POSITIVE_INT,
    "merge_radius": _number(0.0),
    "max_overlays": COUNT,
    "saturation": _optional(_number(0.0, lo_open=True)),
    "bad_value": _optional(Rule(_is_number, "must be a finite number")),
    "mask_hdu": _either(Rule(lambda v: v is None, ""), COUNT, Rule(lambda v: isinstance(v, str) and v != "", ""),
                        must="must be null, an HDU index >= 0 or an EXTNAME"),
    "data.known_asteroid_arcsec": _number(0.0),
    "data.low_rb": _number(0.0, 1.0),
    "data.max_stamps": COUNT,
    **VETO_RULES,
}


def validate_train_options(cfg: DictConfig) -> None:
    """Check the numeric options of ``train.py`` (``conf/train.yaml`` and its groups)."""
    _apply(cfg, TRAIN_RULES)
    for node_key in ("model", "stage.second_model"):
        _apply(cfg, {f"{node_key}.{key}": rule for key, rule in MODEL_RULES.items()})


def validate_evaluate_options(cfg: DictConfig) -> None:
    """Check the numeric options of ``evaluate.py`` (``conf/evaluate.yaml``, ``eval``, ``data`` when given)."""
    _apply(cfg, EVALUATE_RULES)


def validate_simulate_options(cfg: DictConfig) -> None:
    """Check the numeric options of ``simulate.py``; the simulator's knobs (``data.source.sim``) check themselves."""
    _apply(cfg, SIMULATE_RULES)


def validate_detect_options(cfg: DictConfig) -> None:
    """Check the numeric options of ``detect.py`` (``conf/detect.yaml``; ``data=ztf_alerts`` keys when given)."""
    _apply(cfg, DETECT_RULES)


def check_option(key: str, value: Any, rule: Rule) -> None:
    """Raise the one-line :class:`InputError` for ``key`` when ``value`` breaks ``rule``."""
    if not rule.ok(value):
        raise input_error(key, rule.must, found=_show(value))


def _apply(cfg: DictConfig, rules: dict[str, Rule]) -> None:
    """Check every key of ``rules`` present in ``cfg``."""
    for key, rule in rules.items():
        value = _value(cfg, key)
        if value is not _ABSENT:
            check_option(key, value, rule)


def _value(cfg: DictConfig, key: str) -> Any:
    """The resolved plain value at ``key``, or ``_ABSENT`` when the key (or a parent node) is not there."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _ABSENT
        node = node[part]
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _show(value: Any) -> str:
    """A value as the user typed it: strings quoted, numbers and lists plain."""
    return repr(value) if isinstance(value, str) else str(value)
