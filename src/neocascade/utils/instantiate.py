"""Build objects from config nodes: callbacks, the logger, and fill-in of run-dependent keys.

Configs leave keys that only the pipeline knows (a checkpoint folder, a logger's save folder, a
run name) as ``null``; :func:`instantiate_filled` fills exactly those keys the node declares, so
the code never needs to know which class it is building.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neocascade.errors import input_error

log = logging.getLogger(__name__)

ENABLED_KEY = "enabled"  # a config entry with enabled: false is skipped; the key never reaches the class


def instantiate_filled(
    node: DictConfig | Mapping[str, Any], *, key: str = "config", fill: Mapping[str, Any] | None = None, **kwargs: Any
) -> Any:
    """Instantiate ``node`` after filling those of ``fill``'s keys that the node declares as null.

    Parameters
    ----------
    node : DictConfig or mapping with ``_target_``
        The object config.
    key : str
        Config key named in the error message when the node has no ``_target_``.
    fill : mapping
        Run-dependent values (``dirpath``, ``save_dir``); keys the node lacks, or sets to a value,
        are left alone.
    **kwargs
        Passed to the constructor as they are (objects such as callbacks and loggers).
    """
    cfg = OmegaConf.create(OmegaConf.to_container(node, resolve=True)) if isinstance(node, DictConfig) else OmegaConf.create(dict(node))
    if "_target_" not in cfg:
        raise input_error(key, "has no _target_", found=sorted(str(k) for k in cfg.keys()))
    cfg.pop(ENABLED_KEY, None)
    for name, value in (fill or {}).items():
        if name in cfg and cfg[name] is None:
            cfg[name] = value
    return instantiate(cfg, **kwargs)


def instantiate_callbacks(group: DictConfig | None, *, fill: Mapping[str, Any] | None = None) -> list[Any]:
    """Build every entry of the ``callbacks`` group that has a ``_target_`` and is not disabled.

    ``fill`` is passed to :func:`instantiate_filled` (the pipeline gives ``dirpath``).
    """
    callbacks = []
    for name, node in (group or {}).items():
        if not isinstance(node, (DictConfig, dict)) or "_target_" not in node:
            continue
        if not node.get(ENABLED_KEY, True):
            log.info("callback %s disabled (callbacks.%s.enabled=false)", name, name)
            continue
        callbacks.append(instantiate_filled(node, key=f"callbacks.{name}", fill=fill))
    return callbacks


def wandb_mode_from_env(node: DictConfig) -> DictConfig:
    """Let ``WANDB_MODE`` (offline, online, disabled) decide a wandb logger node's mode.

    Nodes without an ``offline`` key (other loggers) come back unchanged. The environment wins over
    ``logger.offline`` so that ``WANDB_MODE=disabled`` silences every run, as wandb users expect.
    """
    mode = os.environ.get("WANDB_MODE")
    if not mode or "offline" not in node:
        return node
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    node.offline = mode in ("offline", "dryrun")
    if mode not in ("offline", "dryrun"):
        node.mode = mode
    return node


def build_fixed(config: Any, *, key: str, cls: type, keys: tuple[str, ...]) -> Any:
    """An instance of the one class ``cls`` a config group allows, from a user's config (never an artifact's).

    ``config`` is None, an instance of ``cls`` (returned as is) or a mapping whose ``_target_`` is ``cls``'s dotted
    name (or null with no other key: None) and whose other keys are among ``keys``. ``cls`` raises ValueError as
    ``"<field>: <why>"``. Anything else is one InputError naming ``key`` or ``key.<field>``.
    """
    if config is None or isinstance(config, cls):
        return config
    try:
        items = dict(config)
    except (TypeError, ValueError):
        raise input_error(key, "must be null or a mapping", found=repr(config)) from None
    target = items.pop("_target_", None)
    if target is None and not items:
        return None
    name = f"{cls.__module__}.{cls.__qualname__}"
    if target not in (None, name):
        raise input_error(f"{key}._target_", f"must be {name}", found=repr(target))
    unknown = sorted(set(items) - set(keys))
    if unknown:
        raise input_error(key, "unknown key", expected=", ".join(keys), found=unknown)
    try:
        return cls(**items)
    except ValueError as exc:
        field, _, why = str(exc).partition(": ")
        raise input_error(f"{key}.{field}", why) from None

