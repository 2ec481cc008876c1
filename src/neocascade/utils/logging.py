"""Run logging helpers: the resolved config as a YAML tree, closing experiment loggers, the run log file."""

from __future__ import annotations

import logging
import os
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


class RunLogFileHandler(logging.FileHandler):
    """Hydra's run log file (``<run folder>/<task>.log``), silent when stdout or stderr already is that file.

    ``make paper`` and ``make ablation`` send a step's stdout and stderr to ``<run folder>/train.log``,
    the very file Hydra's job log writes: every line reached it twice, once from Hydra's console
    handler through the redirection and once from this handler. Writing nothing then keeps one copy.
    ``conf/hydra/default.yaml`` puts it in place of Hydra's ``logging.FileHandler``.
    """

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, delay: bool = False,
                 errors: str | None = None) -> None:
        super().__init__(filename, mode=mode, encoding=encoding, delay=True, errors=errors)
        self.mirrored = _console_is(self.baseFilename)
        if not delay and not self.mirrored:
            self.stream = self._open()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.mirrored:
            super().emit(record)


def _console_is(path: str) -> bool:
    """Whether file descriptor 1 or 2 (stdout, stderr) is the existing file ``path``."""
    try:
        target = os.stat(path)
    except OSError:
        return False
    for fd in (1, 2):
        try:
            console = os.fstat(fd)
        except OSError:
            continue
        if (console.st_dev, console.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False
