"""The cascade artifact: both stages' weights, thresholds, input spec, config and metrics in one file.

One ``torch.save`` file of plain containers (dicts, lists, str, numbers, tensors), loaded with
``torch.load(weights_only=True)``; a random forest is stored as tensors of its node arrays, never
pickled. Evaluation and detection load a training run's ``cascade.pt`` by path and see exactly the
models, thresholds and preprocessing the run used.
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

from neocascade.errors import InputError, input_error
from neocascade.models.registry import FOREST_ARCH, check_architecture, model_from_state, model_state
from neocascade.utils.atomic import atomic_path

FORMAT = "neocascade-cascade"
VERSION = 1
PACKAGED = Path(__file__).resolve().parents[1] / "artifacts" / "neocascade.pt"
"""The recommended cascade shipped inside the package (``experiment=neocascade``), used when no artifact is given."""
STAGE_KEYS = ("arch", "hparams", "state", "threshold")
PRECISIONS = ("auto", "fp32", "bf16")


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
        exactly as the data module reports it.
    config, metrics : dict
        The resolved run config and its report metrics (plain containers).
    postprocess : dict, optional
        What detection does after the classifier: ``{"veto": <config with _target_, or None>}``
        (``conf/veto``); read back as :attr:`Cascade.postprocess`.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "stage1": _stage_payload("stage1", stage1),
        "stage2": None if stage2 is None else _stage_payload("stage2", stage2),
        "input_spec": _plain(input_spec),
        "config": _plain(config),
        "metrics": _plain(metrics),
        "postprocess": _plain(dict(postprocess or {})),
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
        "threshold": float(stage["threshold"]),
    }


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
        One line naming the file: missing, corrupt, not a cascade artifact, or trained for another
        architecture or cutout size than asked.
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
    want1, want2 = expected_arch if isinstance(expected_arch, tuple) else (expected_arch, None)
    stage1 = _load_stage(path, "stage 1", payload["stage1"], want1, expected_cutout_size)
    stage2 = None
    if payload["stage2"] is not None:
        stage2 = _load_stage(path, "stage 2", payload["stage2"], want2, expected_cutout_size)
    elif want2 is not None:
        raise InputError(f"{path}: one-stage artifact, config asks stage 2 '{want2}'")
    input_spec = dict(payload["input_spec"] or {})
    spec_size = input_spec.get("cutout_size")
    if expected_cutout_size is not None and spec_size is not None and int(spec_size) != int(expected_cutout_size):
        raise InputError(f"{path}: trained for cutout_size {spec_size}, config asks {expected_cutout_size}")
    return Cascade(
        stage1=stage1,
        stage2=stage2,
        input_spec=input_spec,
        config=dict(payload.get("config") or {}),
        metrics=dict(payload.get("metrics") or {}),
        path=path,
        provenance=dict(payload.get("provenance") or {}),
        postprocess=dict(payload.get("postprocess") or {}),
    )


def export_cascade(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    half: bool = True,
    provenance: Mapping[str, Any] | None = None,
    max_mb: float | None = None,
    overwrite: bool = False,
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
    """
    load_cascade(src)  # refuses anything that is not a loadable cascade, with its one-line error
    payload = torch.load(Path(src), map_location="cpu", weights_only=True)
    for key in ("stage1", "stage2"):
        stage = payload.get(key)
        if half and stage is not None and stage["arch"] != FOREST_ARCH:
            stage["state"] = {k: v.half() if v.is_floating_point() else v for k, v in stage["state"].items()}
    payload["provenance"] = _plain(dict(provenance or {}))
    with atomic_path(dst, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
        size_mb = Path(tmp).stat().st_size / 2**20
        if max_mb is not None and size_mb > max_mb:
            raise input_error(dst, f"the shipped cascade would take {size_mb:.1f} MB", expected=f"<= {max_mb} MB")
    return Path(dst)


def _load_stage(path: Path, name: str, record: Any, expected_arch: str | None, cutout_size: int | None) -> StageModel:
    """Rebuild one stage, refusing a record that is malformed or trained as something else."""
    if not isinstance(record, dict) or any(k not in record for k in STAGE_KEYS):
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise input_error(path, f"{name} is malformed", expected=list(STAGE_KEYS), found=found)
    arch, hparams = str(record["arch"]), dict(record["hparams"])
    source = f"{path} ({name})"
    check_architecture(source, arch, hparams, expected_arch=expected_arch, cutout_size=cutout_size)
    threshold = float(record["threshold"])
    if math.isnan(threshold):
        raise input_error(path, f"{name} threshold is NaN")
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
