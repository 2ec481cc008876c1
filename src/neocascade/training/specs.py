"""The fixed set of choices an artifact may store, and their validation: artifacts are data, never code.

A cascade artifact stores its candidate selector and its veto as ``{"kind": <name>, "params": {...}}``:
``kind`` is a key of :data:`SELECTORS` or :data:`VETOES` (the project's own classes) and ``params`` holds
plain numbers, strings and bools of the types listed there. Objects are built only from these mappings,
never by importing or instantiating a name read from a file. Artifacts written before this format stored
Hydra configs (``{"_target_": "neocascade.candidates.peaks.PeakSelector", ...}``); their ``_target_`` is
translated by exact string match against :data:`LEGACY_TARGETS`, and anything else is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from neocascade.candidates.footprint import FootprintSelector
from neocascade.candidates.grid import GridSelector
from neocascade.candidates.peaks import PeakSelector
from neocascade.detection.streaks import StreakVeto
from neocascade.errors import input_error

SPEC_KEYS = ("kind", "params")
MAX_STRING = 200  # longest string parameter accepted; the longest legitimate one ("keep") has 4 characters


@dataclass(frozen=True)
class Kind:
    """One storable choice: the class it builds and its parameters' types (``int``, ``float``, ``str``, ``bool``)."""

    cls: type
    required: Mapping[str, str]
    optional: Mapping[str, str]

    @property
    def target(self) -> str:
        """The class path, as the project's own ``conf/`` files name it."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


SELECTORS: dict[str, Kind] = {
    "footprint": Kind(FootprintSelector, {"kernel": "int", "stride": "int"}, {"edge": "str"}),
    "grid": Kind(GridSelector, {"tile": "int"}, {"edge": "str"}),
    "peaks": Kind(PeakSelector, {"threshold": "float", "min_distance": "int"}, {"noise_box": "int"}),
}
"""Candidate selectors (``conf/selector``), by the name of their config file."""

VETOES: dict[str, Kind] = {
    "streaks": Kind(StreakVeto, {}, {"min_points": "int", "tolerance": "float", "min_span": "float"}),
}
"""Vetoes after the classifier (``conf/veto``), by the name of their config file."""

GROUPS = {"selector": SELECTORS, "veto": VETOES}

LEGACY_TARGETS: dict[str, tuple[str, str]] = {
    "neocascade.candidates.footprint.FootprintSelector": ("selector", "footprint"),
    "neocascade.candidates.grid.GridSelector": ("selector", "grid"),
    "neocascade.candidates.peaks.PeakSelector": ("selector", "peaks"),
    "neocascade.detection.streaks.StreakVeto": ("veto", "streaks"),
}
"""The exact ``_target_`` strings older artifacts stored, and the kind each one is now."""

DATA_TARGETS = (
    "neocascade.data.datamodule.CutoutDataModule",
    "neocascade.data.sources.SimulatedSource",
    "neocascade.data.sources.NpzSource",
    "neocascade.data.sources.ChallengeSource",
)
"""The classes a training config stored in an artifact may name under ``data`` (see :func:`check_data_config`)."""


def selector_spec(config: Any, *, source: str) -> dict:
    """Validate a stored selector and return it as ``{"kind", "params"}``.

    Parameters
    ----------
    config : mapping
        ``{"kind": ..., "params": {...}}``, or an older artifact's ``{"_target_": <known class path>, **params}``.
    source : str
        Where it was read, named in the error (``cascade.pt: input_spec.selector``).

    Returns
    -------
    dict
        The canonical form, with the parameters checked by building the selector once.

    Raises
    ------
    InputError
        One line naming ``source`` and the key: not a mapping, unknown kind or ``_target_``, a key
        starting with ``_``, an unknown, missing or mistyped parameter, a non-finite number, a nested
        mapping, or a value the selector refuses.
    """
    if config is None:
        raise input_error(source, "no candidate selector stored", expected=f"one of {sorted(SELECTORS)}")
    spec = _canonical(config, group="selector", source=source)
    _build(spec, group="selector", source=source)
    return spec


def veto_spec(config: Any, *, source: str) -> dict | None:
    """Validate a stored veto like :func:`selector_spec`; None (or an older ``{"_target_": None}``) is no veto."""
    if config is None or (isinstance(config, Mapping) and dict(config) == {"_target_": None}):
        return None
    spec = _canonical(config, group="veto", source=source)
    _build(spec, group="veto", source=source)
    return spec


def build_selector(config: Any, *, source: str) -> Callable[..., Any]:
    """The selector a stored spec (canonical or legacy) describes; an already built callable passes through."""
    if callable(config):
        return config
    return _build(_canonical(config, group="selector", source=source), group="selector", source=source)


def build_veto(config: Any, *, source: str) -> Callable[..., Any] | None:
    """The veto a stored spec (canonical or legacy) describes, None for none; a built callable passes through."""
    if callable(config):
        return config
    if config is None or (isinstance(config, Mapping) and dict(config) == {"_target_": None}):
        return None
    return _build(_canonical(config, group="veto", source=source), group="veto", source=source)


def hydra_config(config: Any, *, group: str, source: str) -> dict:
    """A stored spec (canonical or legacy, checked) as a Hydra node whose ``_target_`` comes from the fixed mapping."""
    spec = _canonical(config, group=group, source=source)
    return {"_target_": GROUPS[group][spec["kind"]].target, **spec["params"]}


def check_data_config(config: Any, *, source: str) -> dict:
    """A training data config read from an artifact, safe to hand to ``hydra.utils.instantiate``.

    Every ``_target_`` must be one of :data:`DATA_TARGETS` (the root one the data module), no other
    key may start with ``_``, no string may hold an interpolation ``${...}`` (a stored config is
    resolved; nor a missing value ``???``), and ``allow_pickle`` must not be true (a stored config never unpickles files). The
    ``selector`` is checked as :func:`selector_spec` does and named by the fixed mapping's class path.

    Returns
    -------
    dict
        A plain copy of ``config``.

    Raises
    ------
    InputError
        One line naming ``source`` and the offending key.
    """
    if not isinstance(config, Mapping):
        raise input_error(source, "expected a mapping", found=type(config).__name__)
    if config.get("_target_") != DATA_TARGETS[0]:
        raise input_error(f"{source}._target_", "not the project's data module", expected=repr(DATA_TARGETS[0]),
                          found=repr(config.get("_target_")))
    rest = _check_tree({k: v for k, v in config.items() if k != "selector"}, source)
    if "selector" in config:
        rest["selector"] = hydra_config(config["selector"], group="selector", source=f"{source}.selector")
    return rest


def _check_tree(node: Any, key: str) -> Any:
    """A plain copy of a stored config tree, checked as :func:`check_data_config` describes."""
    if isinstance(node, Mapping):
        out = {}
        for name, value in node.items():
            sub = f"{key}.{name}"
            if not isinstance(name, str):
                raise input_error(sub, "keys must be strings", found=type(name).__name__)
            if name == "_target_" and value not in DATA_TARGETS:
                raise input_error(sub, "not one of the project's data classes", expected=list(DATA_TARGETS),
                                  found=repr(value))
            if name.startswith("_") and name != "_target_":
                raise input_error(sub, "keys starting with '_' are not allowed in a stored config")
            if name == "allow_pickle" and value is not False:
                raise input_error(sub, "a stored config may not unpickle files", expected="false", found=repr(value))
            out[name] = _check_tree(value, sub)
        return out
    if isinstance(node, (list, tuple)):
        return [_check_tree(value, f"{key}[{i}]") for i, value in enumerate(node)]
    if isinstance(node, str) and ("${" in node or node == "???"):  # OmegaConf would resolve or demand these
        raise input_error(key, "interpolations are not allowed in a stored config", found=repr(node[:MAX_STRING]))
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise input_error(key, "expected plain numbers, strings, lists and mappings", found=type(node).__name__)


def _canonical(config: Any, *, group: str, source: str) -> dict:
    """``{"kind", "params"}`` of a canonical or legacy spec, keys and parameter types checked."""
    kinds = GROUPS[group]
    if not isinstance(config, Mapping):
        raise input_error(source, f"expected a {group} spec {{kind, params}}", found=type(config).__name__)
    for name in config:
        if not isinstance(name, str):
            raise input_error(source, "keys must be strings", found=repr(name))
    if "_target_" in config:
        target = config["_target_"]
        legacy = LEGACY_TARGETS.get(target) if isinstance(target, str) else None
        if legacy is None or legacy[0] != group:
            known = sorted(t for t, (g, _) in LEGACY_TARGETS.items() if g == group)
            raise input_error(f"{source}._target_", f"not one of the project's {group} classes", expected=known,
                              found=repr(target))
        kind, params = legacy[1], {k: v for k, v in config.items() if k != "_target_"}
    else:
        extra = sorted(set(config) - set(SPEC_KEYS))
        if extra:
            raise input_error(f"{source}.{extra[0]}", "unknown key", expected=list(SPEC_KEYS))
        missing = [k for k in SPEC_KEYS if k not in config]
        if missing:
            raise input_error(source, f"missing key '{missing[0]}'", expected=list(SPEC_KEYS), found=sorted(config))
        kind, params = config["kind"], config["params"]
        if not isinstance(kind, str) or kind not in kinds:
            raise input_error(f"{source}.kind", f"unknown {group}", expected=sorted(kinds), found=repr(kind))
        if not isinstance(params, Mapping):
            raise input_error(f"{source}.params", "expected a mapping of parameters", found=type(params).__name__)
        source = f"{source}.params"
    return {"kind": kind, "params": _check_params(params, kinds[kind], source=source)}


def _check_params(params: Mapping[str, Any], kind: Kind, *, source: str) -> dict:
    """Parameters of ``kind``: no unknown or missing key, each of its declared type."""
    types = {**kind.required, **kind.optional}
    for name in params:
        if not isinstance(name, str):
            raise input_error(source, "keys must be strings", found=repr(name))
        if name.startswith("_"):
            raise input_error(f"{source}.{name}", "keys starting with '_' are not allowed in a stored spec")
        if name not in types:
            raise input_error(f"{source}.{name}", f"unknown parameter of {kind.cls.__name__}", expected=sorted(types))
    missing = [name for name in kind.required if name not in params]
    if missing:
        raise input_error(f"{source}.{missing[0]}", f"missing parameter of {kind.cls.__name__}")
    return {name: _check_value(value, types[name], key=f"{source}.{name}") for name, value in params.items()}


def _check_value(value: Any, kind: str, *, key: str) -> Any:
    """One parameter value of type ``kind``, as a plain Python value."""
    if isinstance(value, (Mapping, list, tuple)):
        raise input_error(key, "nested values are not allowed in a stored spec", expected=kind,
                          found=type(value).__name__)
    if kind == "bool":
        if not isinstance(value, bool):
            raise input_error(key, "wrong type", expected="a bool", found=repr(value))
        return value
    if kind == "str":
        if not isinstance(value, str) or len(value) > MAX_STRING or "${" in value:
            raise input_error(key, "wrong type", expected=f"a string of at most {MAX_STRING} characters",
                              found=repr(value)[:MAX_STRING])
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise input_error(key, "wrong type", expected="an integer" if kind == "int" else "a number",
                          found=repr(value)[:MAX_STRING])
    if not math.isfinite(value):
        raise input_error(key, "must be finite", found=value)
    if kind == "int":
        if not isinstance(value, int):
            raise input_error(key, "wrong type", expected="an integer", found=repr(value))
        return int(value)
    return float(value)


def _build(spec: Mapping[str, Any], *, group: str, source: str) -> Any:
    """Build a checked spec from the fixed mapping; a value the class refuses is one line naming ``source``."""
    kind = GROUPS[group][spec["kind"]]
    try:
        return kind.cls(**spec["params"])
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise input_error(source, f"{kind.cls.__name__} refuses its parameters", found=first) from None
