"""Run logging helpers: the resolved config as a YAML tree, and closing experiment loggers."""

from __future__ import annotations

import logging
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("neocascade")


def config_tree(cfg: DictConfig) -> str:
    """The resolved config as YAML, one top-level group after another (data, model, stage, ...)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def log_config(cfg: DictConfig) -> None:
    """Log the resolved config tree at INFO."""
    log.info("resolved config:\n%s", config_tree(cfg))


def flat_config(cfg: DictConfig | dict, *, sep: str = "/") -> dict[str, Any]:
    """Flatten a resolved config into ``{"model/widths": [...], ...}`` for logger hyperparameters."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{sep}{key}" if prefix else str(key))
        else:
            out[prefix] = node

    walk(container, "")
    return out


def finish_loggers(loggers: Iterable[Any], *, status: str = "success") -> None:
    """Flush and close every experiment logger; a wandb run is always finished (also after errors)."""
    for logger in loggers:
        try:
            logger.finalize(status)
        finally:
            experiment = getattr(logger, "_experiment", None)
            if experiment is not None and hasattr(experiment, "finish"):
                experiment.finish()
