"""The cascade artifact: both stages' weights, thresholds, input spec, config and metrics in one file.

One ``torch.save`` file of plain containers (dicts, lists, str, numbers, tensors), loaded with
``torch.load(weights_only=True)``; a random forest is stored as tensors of its node arrays, never
pickled. Evaluation and detection load a training run's ``cascade.pt`` by path and see exactly the
models, thresholds and preprocessing the run used.

An artifact is data: its selector and veto are ``{"kind", "params"}`` from the fixed set in
:mod:`neocascade.training.specs`, and everything is checked when it is loaded (types, finiteness,
cutout size and channels against the networks), so a crafted or mismatched file is one line, never code.
"""

from __future__ import annotations

import math
import os
import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from neocascade.data.transforms import NORMALIZATIONS, channel_indices
from neocascade.errors import InputError, input_error
from neocascade.models.registry import FOREST_ARCH, check_architecture, model_from_state, model_state
from neocascade.training.specs import selector_spec, veto_spec
from neocascade.utils.atomic import atomic_path

FORMAT = "neocascade-cascade"
VERSION = 1
PACKAGED = Path(__file__).resolve().parents[1] / "artifacts" / "neocascade.pt"
"""The recommended cascade shipped inside the package (``experiment=neocascade``), used when no artifact is given."""
STAGE_KEYS = ("arch", "hparams", "state", "threshold")
PRECISIONS = ("auto", "fp32", "bf16")
SPEC_REQUIRED = ("sigma", "selector", "cutout_size", "channels", "normalize")
REPOSITORY = Path(__file__).resolve().parents[3]
"""The source checkout (``src/neocascade/training`` -> root): shipped provenance stores paths relative to it."""


@dataclass(frozen=True)
class InferenceOptions:
    """How a cascade's CNN stages run; every choice gives the same accept/reject decisions as fp32.

    Attributes
    ----------
    precision : {"auto", "fp32", "bf16"}
        ``bf16`` runs the network under ``torch.autocast(dtype=bfloat16)``; ``auto`` picks bf16 on a
        CPU with native bf16 (AMX or AVX512-BF16, where oneDNN makes it ~5-10x faster for FinalNet)
        and fp32 elsewhere. bf16 moves P(asteroid) by up to ~2e-3 (measured on FinalNet).
    channels_last : bool
        Feed NHWC tensors, for which oneDNN picks faster convolution kernels; the result equals
        the NCHW one to float32 rounding (|ΔP| ~ 1e-7).
    batch_size : int
        Cutouts per forward pass. 256 was fastest on 1-2 cores (the activations stay in cache);
        4096 was ~2x slower.
    recheck_margin : float
        With bf16, scores within this distance of the stage threshold are recomputed in fp32, so
        the decisions equal fp32's whenever the bf16 error is below the margin (it is ~5x below).
    compile : bool
        Wrap the network in ``torch.compile`` (minutes of compilation on a CPU; the first call pays it).

    Notes
    -----
    ``benchmarks/bench_e2e.py`` times every variant and checks the decisions against fp32.
    """

    precision: str = "auto"  # bf16 where the CPU computes it natively: the fastest variant measured
    channels_last: bool = True  # exact, and needed for the fast oneDNN bf16 kernels
    batch_size: int = 256  # fastest of 128..4096 on 1 and 2 cores
    recheck_margin: float = 0.01  # ~5x the largest bf16 error measured; keeps decisions equal to fp32
    compile: bool = False  # no measured gain at this model size, minutes of start-up

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: must be a positive integer, got {self.batch_size!r}")
        margin = self.recheck_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (0 <= margin < 1):
            raise ValueError(f"recheck_margin: must be a number in [0, 1), got {margin!r}")

    def resolved_precision(self, device: torch.device) -> str:
        """``fp32`` or ``bf16`` on ``device`` (``auto`` resolved as described above)."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if device.type == "cpu" and native_bf16() else "fp32"


REFERENCE = InferenceOptions(precision="fp32", channels_last=False, batch_size=4096, recheck_margin=0.0)
"""Plain fp32 NCHW in 4096-cutout batches: the reference the faster variants are checked against."""

FP32_FAST = InferenceOptions(precision="fp32", channels_last=True, batch_size=256, recheck_margin=0.0)
"""fp32 in channels-last layout: scores within ~1e-6 of :data:`REFERENCE`, 2-3x faster on a CPU. Used where
scores feed threshold choices (training, stage-2 sets), so no threshold is picked on rounded scores."""


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX512-BF16)."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check() for check in checks if check is not None)


def stage_record(model: Any, threshold: float) -> dict:
    """Describe one trained stage as the plain dict :func:`save_cascade` stores.

    Parameters
    ----------
    model : nn.Module with ``arch`` and ``hparams()``, or a fitted ``RandomForestStage``
        The stage's model (for a CNN, the bare network, not the LightningModule).
    threshold : float
        Accept a candidate when P(asteroid) >= threshold.

    Returns
    -------
    dict
        ``{"arch", "hparams", "state", "threshold"}``; ``state`` is the CNN's state dict or the
        forest's node arrays, as CPU tensors.
    """
    if isinstance(model, nn.Module):
        plain = model_state(model)
        state = plain["state_dict"]
    else:
        plain = model.to_state(as_tensors=True)
        state = plain["arrays"]
    return {"arch": plain["arch"], "hparams": plain["hparams"], "state": state, "threshold": float(threshold)}


def save_cascade(
    path: str | os.PathLike,
    *,
    stage1: Mapping[str, Any],
    stage2: Mapping[str, Any] | None,
    input_spec: Mapping[str, Any],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    postprocess: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a cascade artifact atomically.

    Parameters
    ----------
    path : path
        Target file (``<run>/cascade.pt`` by convention). An existing file is refused unless
        ``overwrite``.
    stage1, stage2 : dict
        :func:`stage_record` dicts ``{arch, hparams, state, threshold}``. ``stage2=None`` stores a
        one-stage classifier (``stage=single`` or ``first``); it then accepts on stage 1 alone.
    input_spec : dict
        How cutouts are made and assembled (sigma, selector, cutout_size, channels, normalize, ...),
        as the data module reports it; the selector config (``_target_`` of a project selector, or
        ``{"kind", "params"}``) is stored as ``{"kind", "params"}``.
    config, metrics : dict
        The resolved run config and its report metrics (plain containers).
    postprocess : dict, optional
        What detection does after the classifier: ``{"veto": <conf/veto config, {"kind", "params"} or None>}``,
        stored as ``{"kind", "params"}``; read back as :attr:`Cascade.postprocess`.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        One line naming the key: a selector or veto outside the fixed set, a bad input spec or
        threshold (what :func:`load_cascade` would refuse is never written).
    """
    post = _plain(dict(postprocess or {}))
    if "veto" in post:
        post["veto"] = veto_spec(post["veto"], source="postprocess.veto")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "stage1": _stage_payload("stage1", stage1),
        "stage2": None if stage2 is None else _stage_payload("stage2", stage2),
        "input_spec": check_input_spec(_plain(input_spec), source="input_spec"),
        "config": _plain(config),
        "metrics": _plain(metrics),
        "postprocess": post,
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _stage_payload(name: str, stage: Mapping[str, Any]) -> dict:
    missing = [k for k in STAGE_KEYS if k not in stage]
    if missing:
        raise ValueError(f"{name}: missing keys {missing} (expected {list(STAGE_KEYS)})")
    state = {str(k): _tensor(v) for k, v in dict(stage["state"]).items()}
    return {
        "arch": str(stage["arch"]),
        "hparams": _plain(stage["hparams"]),
        "state": state,
        "threshold": check_threshold(_plain(stage["threshold"]), source=f"{name}.threshold"),
    }


def check_threshold(value: Any, *, source: str) -> float:
    """A stage threshold: a number in [0, 1], or ``inf`` (the run found none reaching its target: accepts nothing).

    Raises InputError naming ``source`` for a string, a bool, NaN, ``-inf`` or a value outside [0, 1].
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise input_error(source, "must be a number", expected="a probability in [0, 1]", found=repr(value)[:80])
    value = float(value)
    if not (0.0 <= value <= 1.0 or value == math.inf):
        raise input_error(source, "must be a probability in [0, 1] (or inf: accept nothing)", found=value)
    return value


def check_input_spec(spec: Any, *, source: str) -> dict:
    """Validate an artifact's input spec; returns a plain copy with the selector as ``{"kind", "params"}``.

    Parameters
    ----------
    spec : mapping
        ``sigma`` (finite, >= 0), ``selector``, ``cutout_size`` (int >= 1), ``channels`` (names from
        ``data.transforms.CHANNELS``), ``normalize``; optional ``noise_box`` (int >= 1 or None),
        ``kernel``, ``stride`` (int >= 1 or None), ``label_mode`` (str), ``label_radius`` (finite, >= 0).
        Other keys may hold plain numbers, strings or bools only.
    source : str
        Named in the error (``cascade.pt: input_spec``).

    Raises
    ------
    InputError
        One line naming ``source`` and the key.
    """
    if not isinstance(spec, Mapping):
        raise input_error(source, "expected a mapping of preprocessing settings", found=type(spec).__name__)
    missing = [key for key in SPEC_REQUIRED if key not in spec]
    if missing:
        raise input_error(source, f"missing key '{missing[0]}'", expected=list(SPEC_REQUIRED), found=sorted(spec))
    out = {}
    for key, value in spec.items():
        where = f"{source}.{key}"
        if not isinstance(key, str) or key.startswith("_"):
            raise input_error(where, "not an input-spec key")
        if key == "selector":
            out[key] = selector_spec(value, source=where)
        elif key == "channels":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
                raise input_error(where, "expected a list of channel names", found=repr(value)[:80])
            try:
                channel_indices(list(names))
            except ValueError as exc:
                raise input_error(where, str(exc).split(": ", 1)[-1]) from None
            out[key] = list(names)
        elif key == "normalize":
            if value not in NORMALIZATIONS:
                raise input_error(where, "unknown normalisation", expected=list(NORMALIZATIONS), found=repr(value)[:80])
            out[key] = str(value)
        elif key in ("cutout_size", "noise_box", "kernel", "stride"):
            if (value is not None or key == "cutout_size") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise input_error(where, "must be a positive integer", found=repr(value)[:80])
            out[key] = value
        elif key in ("sigma", "label_radius"):
            number = not isinstance(value, bool) and isinstance(value, (int, float))
            if not number or not (math.isfinite(value) and value >= 0):
                raise input_error(where, "must be a finite number >= 0", found=repr(value)[:80])
            out[key] = float(value)
        elif isinstance(value, str) and "${" in value:
            raise input_error(where, "interpolations are not allowed in a stored spec", found=repr(value)[:80])
        elif value is None or isinstance(value, (bool, int, str)) or (type(value) is float and math.isfinite(value)):
            out[key] = value
        else:
            raise input_error(where, "expected a plain number, string or bool", found=repr(value)[:80])
    return out


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))


def _plain(obj: Any) -> Any:
    """Containers of str/int/float/bool/None only (what ``weights_only`` loading accepts)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, bool):
        return obj
    for kind in (str, int, float):  # subclasses (torch's TorchVersion is a str) become the plain type
        if isinstance(obj, kind):
            return kind(obj)
    if hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if hasattr(obj, "__iter__"):
        return [_plain(v) for v in obj]
    return str(obj)


@dataclass
class StageModel:
    """One loaded stage: a CNN or a forest, its threshold and what it was trained as."""

    arch: str
    hparams: dict
    model: Any
    threshold: float

    @property
    def in_channels(self) -> int | None:
        """Input channels the model was built for."""
        return self.hparams.get("in_channels")

    @property
    def cutout_size(self) -> int | None:
        """Cutout side in px the model was built for."""
        return self.hparams.get("cutout_size")

    _prepared: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def proba(
        self, x: torch.Tensor, *, options: InferenceOptions = REFERENCE, threshold: float | None = None
    ) -> np.ndarray:
        """P(asteroid) (N,) float64 for float32 cutouts (N, C, S, S), in batches, without gradients.

        ``options`` choose the CNN's inference variant; with bf16 and a ``threshold``, scores within
        ``options.recheck_margin`` of it are recomputed in fp32. A forest ignores ``options``.
        """
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        if not isinstance(self.model, nn.Module):
            return np.asarray(self.model.predict_proba(x.cpu().numpy()), dtype=np.float64).reshape(-1)
        device = next(self.model.parameters()).device
        precision = options.resolved_precision(device)
        p = self._run(x, options, device, bf16=precision == "bf16")
        if precision == "bf16" and threshold is not None and options.recheck_margin > 0:
            near = np.flatnonzero(np.abs(p - threshold) < options.recheck_margin)
            if near.size:
                p[near] = self._run(x[torch.from_numpy(near)], options, device, bf16=False)
        return p

    def network(self, options: InferenceOptions) -> nn.Module:
        """The CNN laid out for ``options`` (channels-last copy, compiled), built once and kept."""
        key = (options.channels_last, options.compile)
        if key not in self._prepared:
            net = self.model
            if options.channels_last:
                net = copy.deepcopy(net).to(memory_format=torch.channels_last)
            if options.compile:
                net = torch.compile(net)
            self._prepared[key] = net
        return self._prepared[key]

    def _run(self, x: torch.Tensor, options: InferenceOptions, device: torch.device, *, bf16: bool) -> np.ndarray:
        """Softmax class-1 probabilities of ``x`` with one precision, float64 (N,)."""
        net = self.network(options)
        layout = torch.channels_last if options.channels_last else torch.contiguous_format
        out = []
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, x.shape[0], options.batch_size):
                batch = x[start : start + options.batch_size].to(device).contiguous(memory_format=layout)
                out.append(torch.softmax(net(batch).float(), dim=1)[:, 1].cpu())
        return torch.cat(out).double().numpy()


@dataclass
class Cascade:
    """A loaded cascade: ``score`` cutouts, ``accept`` them, read what they were trained on.

    Attributes
    ----------
    stage1, stage2 : StageModel
        ``stage2`` is None for a one-stage artifact; it then passes stage 1's score on unchanged.
    input_spec : dict
        How the cutouts must be made (see :func:`save_cascade`); ``preprocess`` is the same dict.
    config, metrics : dict
        The training run's resolved config and report metrics.
    provenance : dict
        What :func:`export_cascade` recorded for a shipped cascade (empty for a training run's).
    postprocess : dict
        After the classifier: ``veto``, a ``conf/veto`` config (None or absent: no veto; artifacts
        written before the veto existed have none).
    path : Path or None
        The file it came from.
    inference : InferenceOptions
        How :meth:`score` runs the CNN stages; change it with :meth:`set_inference`.
    """

    stage1: StageModel
    stage2: StageModel | None
    input_spec: dict
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    path: Path | None = None
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    provenance: dict = field(default_factory=dict)
    postprocess: dict = field(default_factory=dict)

    @property
    def preprocess(self) -> dict:
        """Alias of ``input_spec``: sigma, selector, cutout_size, channels, normalize."""
        return self.input_spec

    @property
    def threshold1(self) -> float:
        """Stage 1 accepts P1 >= threshold1."""
        return self.stage1.threshold

    @property
    def threshold2(self) -> float:
        """Stage 2 accepts P2 >= threshold2 (stage 1's threshold for a one-stage artifact)."""
        return self.stage1.threshold if self.stage2 is None else self.stage2.threshold

    @property
    def stage1_arch(self) -> str:
        """Architecture of stage 1 (``baseline``, ``vgg``, ``final``, ``rf``)."""
        return self.stage1.arch

    @property
    def stage2_arch(self) -> str | None:
        """Architecture of stage 2, None for a one-stage artifact."""
        return None if self.stage2 is None else self.stage2.arch

    @property
    def in_channels(self) -> int:
        """Input channels C the models expect."""
        return int(self.stage1.in_channels)

    @property
    def cutout_size(self) -> int:
        """Cutout side S in px the models expect."""
        return int(self.stage1.cutout_size)

    def to(self, device: str | torch.device) -> "Cascade":
        """Move the CNN stages to ``device`` (forests stay on the CPU); returns ``self``."""
        for stage in (self.stage1, self.stage2):
            if stage is not None and isinstance(stage.model, nn.Module):
                stage.model.to(device)
                stage._prepared.clear()
        return self

    def set_inference(self, options: InferenceOptions | None = None, **changes: Any) -> "Cascade":
        """Choose how :meth:`score` runs: a whole ``InferenceOptions`` and/or single fields; returns ``self``.

        ``cascade.set_inference(precision="fp32", channels_last=False)`` gives the plain fp32 path;
        ``set_inference(REFERENCE)`` the exact reference. Unknown fields raise ``TypeError``.
        """
        self.inference = replace(self.inference if options is None else options, **changes)
        return self

    def score(self, x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Score cutouts with both stages.

        Parameters
        ----------
        x : (N, C, S, S) float32 array or tensor
            Assembled model inputs (``data.transforms.assemble_inputs``), C and S as trained.

        Returns
        -------
        p1, p2 : (N,) float64 arrays
            P(asteroid) from stage 1 and from stage 2. ``p2`` is NaN where stage 1 rejected
            (``p1 < threshold1``); a one-stage artifact gives ``p2 = p1`` where accepted.

        Notes
        -----
        Runs in batches under ``torch.inference_mode`` with :attr:`inference`; N = 0 gives two
        empty arrays. The decisions equal the fp32 ones for every variant (bf16 rechecks the scores
        near each threshold in fp32), the scores differ from fp32 by at most ~2e-3 under bf16.
        """
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        expected = (self.in_channels, self.cutout_size, self.cutout_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x: expected shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        x = x.float()
        p1 = self.stage1.proba(x, options=self.inference, threshold=self.threshold1)
        p2 = np.full(p1.shape, np.nan)
        keep = p1 >= self.threshold1
        if keep.any() and self.stage2 is None:
            p2[keep] = p1[keep]
        elif keep.any():
            p2[keep] = self.stage2.proba(x[torch.from_numpy(keep)], options=self.inference, threshold=self.threshold2)
        return p1, p2

    def accept(self, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
        """Cascade decision (N,) bool: ``p1 >= threshold1`` and ``p2 >= threshold2`` (NaN rejects)."""
        p1 = np.asarray(p1, dtype=np.float64)
        p2 = np.asarray(p2, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return (p1 >= self.threshold1) & (p2 >= self.threshold2)


def load_cascade(
    path: str | os.PathLike,
    *,
    expected_arch: str | tuple[str | None, str | None] | None = None,
    expected_cutout_size: int | None = None,
) -> Cascade:
    """Load a cascade artifact written by :func:`save_cascade`.

    Parameters
    ----------
    path : path
        The ``cascade.pt`` file.
    expected_arch : str or (str or None, str or None), optional
        A str checks stage 1 (the run's ``model``); a pair checks stage 1 and stage 2.
    expected_cutout_size : int, optional
        Cutout side the caller will feed; must match the models and the input spec.

    Returns
    -------
    Cascade
        Models in eval mode on the CPU.

    Raises
    ------
    InputError
        One line naming the file: missing, corrupt, not a cascade artifact, trained for another
        architecture or cutout size than asked, a selector or veto outside the fixed set of
        :mod:`~neocascade.training.specs` (never built from the file's names), a malformed input spec
        or threshold, or an input spec whose cutout size or channels disagree with the networks.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "no such cascade artifact")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise input_error(path, "not a readable cascade artifact", found=f"{type(exc).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise input_error(path, "not a cascade artifact", expected=f"format '{FORMAT}'", found=repr(found))
    if payload.get("version") != VERSION:
        raise input_error(path, "unsupported cascade artifact version", expected=VERSION, found=payload.get("version"))
    for key in ("stage1", "stage2", "input_spec"):
        if key not in payload:
            raise input_error(path, f"missing key '{key}'", found=sorted(payload))
    input_spec = check_input_spec(payload["input_spec"], source=f"{path}: input_spec")
    postprocess = _mapping(path, payload, "postprocess")
    if "veto" in postprocess:
        postprocess["veto"] = veto_spec(postprocess["veto"], source=f"{path}: postprocess.veto")
    want1, want2 = expected_arch if isinstance(expected_arch, tuple) else (expected_arch, None)
    stage1 = _load_stage(path, "stage 1", payload["stage1"], want1, expected_cutout_size)
    stage2 = None
    if payload["stage2"] is not None:
        stage2 = _load_stage(path, "stage 2", payload["stage2"], want2, expected_cutout_size)
    elif want2 is not None:
        raise InputError(f"{path}: one-stage artifact, config asks stage 2 '{want2}'")
    spec_size = input_spec["cutout_size"]
    if expected_cutout_size is not None and spec_size != int(expected_cutout_size):
        raise InputError(f"{path}: trained for cutout_size {spec_size}, config asks {expected_cutout_size}")
    for name, stage in (("stage 1", stage1), ("stage 2", stage2)):
        if stage is not None:
            _check_fit(path, name, stage, input_spec)
    return Cascade(
        stage1=stage1,
        stage2=stage2,
        input_spec=input_spec,
        config=_mapping(path, payload, "config"),
        metrics=_mapping(path, payload, "metrics"),
        path=path,
        provenance=_mapping(path, payload, "provenance"),
        postprocess=postprocess,
    )


def _mapping(path: Path, payload: dict, key: str) -> dict:
    """An optional mapping entry of the payload (absent or None: empty)."""
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise input_error(path, f"{key}: expected a mapping", found=type(value).__name__)
    return dict(value)


def _check_fit(path: Path, name: str, stage: StageModel, spec: dict) -> None:
    """The input spec makes the cutouts the stage's network was built for (side and channel count)."""
    size, channels = stage.cutout_size, stage.in_channels
    if size != spec["cutout_size"]:
        raise input_error(path, f"input_spec.cutout_size disagrees with the {name} network",
                          expected=f"{size} px", found=spec["cutout_size"])
    if channels != len(spec["channels"]):
        raise input_error(path, f"input_spec.channels disagree with the {name} network",
                          expected=f"{channels} channel(s)", found=spec["channels"])


def export_cascade(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    half: bool = True,
    provenance: Mapping[str, Any] | None = None,
    max_mb: float | None = None,
    overwrite: bool = False,
    relative_to: str | os.PathLike | None = None,
) -> Path:
    """Copy an artifact for shipping: CNN weights in float16, plus where it came from.

    Parameters
    ----------
    src, dst : path
        A :func:`save_cascade` artifact and the file to write (atomically).
    half : bool
        Store the CNN stages' floating-point tensors as float16 (half the size; they are widened to
        float32 on load, so inference is unchanged apart from the rounding of the weights). A forest's
        arrays are kept exactly.
    provenance : dict, optional
        Plain containers stored under ``provenance`` (config, data preset, metrics, commit); read back as
        :attr:`Cascade.provenance`.
    max_mb : float, optional
        Refuse (InputError naming ``dst``) to write a file larger than this.
    overwrite : bool
        Replace an existing ``dst``.
    relative_to : path, optional
        Rewrite every absolute path in the stored config, metrics and provenance (also the value of a
        ``key=/abs/path`` override) relative to this folder, or to its file name when it lies outside
        (:func:`relative_paths`), so the shipped file names no folder of the machine it was built on.

    Notes
    -----
    The selector and veto are written in the ``{"kind", "params"}`` form whatever form ``src`` has.
    """
    cascade = load_cascade(src)  # refuses anything that is not a loadable cascade, with its one-line error
    payload = torch.load(Path(src), map_location="cpu", weights_only=True)
    for key in ("stage1", "stage2"):
        stage = payload.get(key)
        if half and stage is not None and stage["arch"] != FOREST_ARCH:
            stage["state"] = {k: v.half() if v.is_floating_point() else v for k, v in stage["state"].items()}
    payload["input_spec"], payload["postprocess"] = cascade.input_spec, cascade.postprocess
    payload["provenance"] = _plain(dict(provenance or {}))
    if relative_to is not None:
        for key in ("config", "metrics", "provenance"):
            payload[key] = relative_paths(payload.get(key), relative_to)
    with atomic_path(dst, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
        size_mb = Path(tmp).stat().st_size / 2**20
        if max_mb is not None and size_mb > max_mb:
            raise input_error(dst, f"the shipped cascade would take {size_mb:.1f} MB", expected=f"<= {max_mb} MB")
    return Path(dst)


def relative_paths(obj: Any, root: str | os.PathLike) -> Any:
    """``obj`` with every absolute path string made relative to ``root`` (its name alone when outside ``root``).

    Strings ``key=/abs/path`` (command-line overrides) get their value rewritten the same way; other
    values are returned unchanged.
    """
    root = Path(root).resolve()
    if isinstance(obj, dict):
        return {k: relative_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_paths(v, root) for v in obj]
    if not isinstance(obj, str):
        return obj
    key, sep, value = obj.partition("=")
    if sep and not os.path.isabs(obj) and os.path.isabs(value):
        return f"{key}={_relative(value, root)}"
    return _relative(obj, root) if os.path.isabs(obj) else obj


def _relative(path: str, root: Path) -> str:
    """An absolute path relative to ``root`` (POSIX separators), or its name when outside ``root``."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        return resolved.name


def check_resume(path: str | os.PathLike, module: nn.Module) -> None:
    """Refuse, before Lightning reads it, a checkpoint ``ckpt_path=`` that the configured model cannot resume.

    Parameters
    ----------
    path : path
        A Lightning ``.ckpt`` of a :class:`~neocascade.training.classifier.CutoutClassifier`.
    module : CutoutClassifier
        The freshly built module the run would train (its ``hparams`` and ``state_dict``).

    Raises
    ------
    InputError
        One line naming ``path``: unreadable (see ``load_checkpoint_dict``), trained as another
        architecture or with other model hyperparameters, or weights whose names or shapes differ
        from the configured model's (instead of Lightning's ``size mismatch`` traceback).
    """
    from neocascade.training.classifier import load_checkpoint_dict

    ckpt = load_checkpoint_dict(path)
    stored = ckpt.get("hyper_parameters") or {}
    if not isinstance(stored, dict):
        raise input_error(path, "hyper_parameters is not a mapping", found=type(stored).__name__)
    want = dict(module.hparams)
    if stored.get("arch") != want.get("arch"):
        raise input_error(path, f"trained as {stored.get('arch')!r}, config asks {want.get('arch')!r}")
    if _plain(stored.get("model_hparams")) != _plain(want.get("model_hparams")):
        raise input_error(path, f"trained as another '{want['arch']}'", expected=f"model {want.get('model_hparams')}",
                          found=stored.get("model_hparams"))
    state, mine = ckpt["state_dict"], module.state_dict()
    if not isinstance(state, dict):
        raise input_error(path, "state_dict is not a mapping", found=type(state).__name__)
    names = sorted(set(state) ^ set(mine))
    if names:
        side = "the checkpoint only" if names[0] in state else "the configured model only"
        raise input_error(path, "weights do not fit the configured model", found=f"'{names[0]}' in {side}")
    for name, tensor in mine.items():
        stored_shape = tuple(getattr(state[name], "shape", ()))
        if stored_shape != tuple(tensor.shape):
            raise input_error(path, f"weights do not fit the configured model ({name})",
                              expected=tuple(tensor.shape), found=stored_shape)


def _load_stage(path: Path, name: str, record: Any, expected_arch: str | None, cutout_size: int | None) -> StageModel:
    """Rebuild one stage, refusing a record that is malformed or trained as something else."""
    if not isinstance(record, dict) or any(k not in record for k in STAGE_KEYS):
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise input_error(path, f"{name} is malformed", expected=list(STAGE_KEYS), found=found)
    if not isinstance(record["arch"], str) or not isinstance(record["hparams"], dict) \
            or not isinstance(record["state"], dict):
        raise input_error(path, f"{name} is malformed", expected="arch str, hparams and state mappings",
                          found=", ".join(type(record[k]).__name__ for k in ("arch", "hparams", "state")))
    arch, hparams = record["arch"], dict(record["hparams"])
    source = f"{path} ({name})"
    check_architecture(source, arch, hparams, expected_arch=expected_arch, cutout_size=cutout_size)
    threshold = check_threshold(record["threshold"], source=f"{path}: {name} threshold")
    for key in ("in_channels", "cutout_size"):
        value = hparams.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise input_error(path, f"{name} hparams.{key} must be a positive integer", found=repr(value)[:80])
    try:
        if arch == FOREST_ARCH:
            from neocascade.models.forest import RandomForestStage

            model: Any = RandomForestStage.from_state({"arch": arch, "hparams": hparams, "arrays": record["state"]})
        else:
            model = model_from_state({"arch": arch, "hparams": hparams, "state_dict": record["state"]})
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise input_error(path, f"{name} weights do not fit '{arch}'", found=first_line) from None
    return StageModel(arch=arch, hparams=hparams, model=model, threshold=threshold)
