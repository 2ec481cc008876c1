"""The task behind ``detect.py``: run a trained cascade on data nobody labelled.

``python detect.py input=PATH... artifact=RUN/cascade.pt out=DIR`` writes ``DIR/catalogue.csv``
(columns :data:`~neocascade.detection.catalogue.CATALOGUE_COLUMNS`), one overlay PNG per image (up
to ``max_overlays``) under ``DIR/overlays/`` and ``DIR/summary.json``. Images give one row per
merged detection; alert packets one row per alert, ``detected`` telling the verdict.

``python detect.py data=ztf_alerts artifact=...`` runs the ZTF alert evaluation instead
(:mod:`neocascade.pipelines.alerts_eval`).

A bad file costs one stderr line and is skipped; the run goes on and exits 1. A bad artifact,
config or output folder stops it at once with exit 2.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from neocascade.detection.catalogue import CatalogueWriter, catalogue_rows, open_catalogue
from neocascade.detection.detector import (
    InputSpec, detect_image, input_spec, run_veto, score_stamps, stamp_centre,
)
from neocascade.detection.inputs import AlertUnit, ImageUnit, expand_inputs, iter_units
from neocascade.errors import InputError, input_error
from neocascade.pipelines.common import report_input_errors
from neocascade.utils.atomic import atomic_path, check_writable, save_json

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SOME_FAILED = 0, 1  # bad input that stops the run exits 2 (pipelines.common)
OVERLAY_MAX_SIDE = 1024  # px of the downsampled overlay image: a 3080x3072 quadrant is binned 4x4
OVERLAY_RADIUS = 12.0  # circle radius in overlay (display) px, big enough to see at a glance


def run(cfg: DictConfig) -> int:
    """Run detection, or the ZTF alert evaluation when ``cfg.data`` is set.

    Bad input stops the run with one ``error: ...`` stderr line and exit status 2; when only some
    files failed, the run finishes and exits 1 (``SystemExit``); 0 is returned on success.
    """
    from neocascade.pipelines.alerts_eval import evaluate_alerts

    task = evaluate_alerts if cfg.get("data") is not None else detect
    with report_input_errors():
        status = task(cfg)
    if status != EXIT_OK:
        raise SystemExit(status)
    return status


def report_error(message: str) -> str:
    """Write ``error: <message>`` as one stderr line (through tqdm, so a progress bar stays intact); return the line."""
    from tqdm import tqdm

    line = " ".join(str(message).split())
    tqdm.write(f"error: {line}", file=sys.stderr)
    return line


def load_artifact(cfg: DictConfig, *, build_selector: bool = True) -> tuple[Any, InputSpec]:
    """Load ``cfg.artifact`` (checking ``cfg.expected_arch``) and its input spec; InputError if unusable."""
    from neocascade.training.artifact import PACKAGED, load_cascade

    path = cfg.get("artifact")
    if path in (None, "", "???"):
        if not PACKAGED.is_file():
            raise input_error("artifact", "none given and no cascade is shipped in this package yet",
                              expected=f"a training run's cascade.pt, or {PACKAGED}")
        path = PACKAGED
    expected = cfg.get("expected_arch")
    if expected is not None and not isinstance(expected, str):
        expected = tuple(OmegaConf.to_container(expected))
    cascade = load_cascade(Path(str(path)), expected_arch=expected)
    try:
        spec = input_spec(cascade, build_selector=build_selector)
    except ValueError as exc:
        raise input_error(path, f"unusable input spec: {exc}") from None
    return cascade, spec


def detect(cfg: DictConfig) -> int:
    """Detection over every input unit; see the module docstring. Returns the exit status."""
    from tqdm import tqdm

    batch_size, merge_radius, max_overlays = _options(cfg)
    if cfg.get("out") in (None, ""):
        raise input_error("out", "required: the folder the catalogue is written to")
    out = Path(str(cfg.out))
    overwrite = bool(cfg.get("overwrite", False))
    catalogue_path, summary_path = out / "catalogue.csv", out / "summary.json"
    for path in (catalogue_path, summary_path):
        check_writable(path, overwrite=overwrite)
    cascade, spec = load_artifact(cfg)
    veto = run_veto(cfg.get("veto"), cascade)
    if cfg.get("input") in (None, ""):
        raise input_error("input", "required: a file, folder or glob (or a list of them)")
    raw_inputs = cfg.input if isinstance(cfg.input, str) else list(OmegaConf.to_container(cfg.input))
    files = expand_inputs(raw_inputs)
    state = _RunState(
        cascade=cascade, spec=spec, out=out, overwrite=overwrite, batch_size=batch_size, merge_radius=merge_radius,
        max_overlays=max_overlays, veto=veto,
        read_options={"allow_pickle": bool(cfg.get("allow_pickle", False)), "mask_hdu": cfg.get("mask_hdu"),
                      "bad_value": cfg.get("bad_value")},
    )
    state.counts["files"] = len(files)
    failed: list[str] = []
    with open_catalogue(catalogue_path, overwrite=overwrite) as writer:
        for path in tqdm(files, desc="detect", unit="file", disable=not cfg.get("progress", True) or len(files) < 2):
            failed += _process_file(path, state, writer)
        n_rows = writer.n_rows
    summary = {
        "artifact": str(cascade.path),
        "catalogue": str(catalogue_path),
        "rows": n_rows,
        "veto": repr(veto) if veto is not None else None,
        **state.counts,
        "failed": failed,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    save_json(summary_path, summary, overwrite=overwrite)
    log.info(
        "detect: %d files, %d images, %d alerts -> %d rows in %s; %d failed",
        state.counts["files"], state.counts["images"], state.counts["alerts"], n_rows, catalogue_path, len(failed),
    )
    return EXIT_SOME_FAILED if failed else EXIT_OK


@dataclass
class _RunState:
    """What every input unit of one run needs, and the running counts."""

    cascade: Any
    spec: InputSpec
    out: Path
    overwrite: bool
    batch_size: int
    merge_radius: float
    max_overlays: int
    read_options: dict
    veto: Any = None
    counts: dict = field(default_factory=lambda: dict.fromkeys(("files", "images", "alerts", "detections", "overlays"), 0))
    seen_candids: set = field(default_factory=set)


def _process_file(path: Path, state: _RunState, writer: CatalogueWriter) -> list[str]:
    """Detect in every unit of one file; return the failure lines (already on stderr)."""
    failed = []
    try:
        for unit in iter_units(path, **state.read_options):
            try:
                _process_unit(unit, state, writer)
            except InputError as exc:
                failed.append(report_error(str(exc)))
            except ValueError as exc:
                source = f"{path}" if isinstance(unit, AlertUnit) else f"{path}[image {unit.image}]"
                failed.append(report_error(f"{source}: {exc}"))
    except (ValueError, OSError) as exc:
        failed.append(report_error(str(exc) if isinstance(exc, InputError) else f"{path}: {exc}"))
    return failed


def _process_unit(unit: ImageUnit | AlertUnit, state: _RunState, writer: CatalogueWriter) -> None:
    """Score one image or alert and append its catalogue rows (and the image's overlay)."""
    if isinstance(unit, AlertUnit):
        if unit.alert.candid in state.seen_candids:  # the same packet distributed twice
            return
        state.seen_candids.add(unit.alert.candid)
        writer.write(_alert_rows(unit, state.cascade, state.spec, state.batch_size))
        state.counts["alerts"] += 1
        return
    rows = _image_rows(unit, state)
    writer.write(rows)
    state.counts["images"] += 1
    state.counts["detections"] += len(rows["x"])
    if state.counts["overlays"] < state.max_overlays:
        _write_overlay(state.out, unit, rows, overwrite=state.overwrite)
        state.counts["overlays"] += 1


def _options(cfg: DictConfig) -> tuple[int, float, int]:
    """Check the numeric run options, naming the config key on error."""
    batch_size = cfg.get("batch_size", 1024)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise input_error("batch_size", "must be a positive integer", found=batch_size)
    merge_radius = cfg.get("merge_radius", 5.0)
    if isinstance(merge_radius, bool) or not isinstance(merge_radius, (int, float)) or not math.isfinite(merge_radius) \
            or merge_radius < 0:
        raise input_error("merge_radius", "must be a number >= 0 (px)", found=merge_radius)
    max_overlays = cfg.get("max_overlays", 20)
    if isinstance(max_overlays, bool) or not isinstance(max_overlays, int) or max_overlays < 0:
        raise input_error("max_overlays", "must be an integer >= 0", found=max_overlays)
    return batch_size, float(merge_radius), max_overlays


def _image_rows(unit: ImageUnit, state: _RunState) -> dict:
    """Catalogue columns of one image's detections."""
    det = detect_image(unit.pixels, state.cascade, merge_radius=state.merge_radius, batch_size=state.batch_size,
                       spec=state.spec, veto=state.veto)
    return catalogue_rows(det, file=str(unit.file), image=unit.image, wcs=unit.wcs)


def _alert_rows(unit: AlertUnit, cascade: Any, spec: InputSpec, batch_size: int) -> dict:
    """One catalogue row for an alert: its position (0-based quadrant px, sky from the packet) and verdict.

    The stamp is scored with the science-minus-reference sign, so a negative subtraction's fading
    source is negative, as nothing in training ever was.
    """
    alert = unit.alert
    cand = alert.candidate
    stamp = alert.signed_difference
    centre = stamp_centre(stamp.shape, xpos=cand.get("xpos"), ypos=cand.get("ypos"))
    scores = score_stamps([stamp], cascade, centres=[centre], batch_size=batch_size, spec=spec)

    def value(key: str, fallback: float) -> np.ndarray:
        raw = cand.get(key)
        return np.array([fallback if raw is None else float(raw)])

    # ZTF's xpos/ypos are 1-based FITS pixel coordinates; the catalogue is 0-based like the images.
    det = {
        "x": value("xpos", float("nan")) - 1.0,
        "y": value("ypos", float("nan")) - 1.0,
        "ra": value("ra", float("nan")),
        "dec": value("dec", float("nan")),
        **{key: scores[key] for key in ("p1", "p2", "peak", "snr", "detected")},
    }
    return catalogue_rows(det, file=str(unit.file), image=alert.candid)


def _write_overlay(out: Path, unit: ImageUnit, rows: dict, *, overwrite: bool) -> Path:
    """Write ``out/overlays/<file>_<image>.png``: the binned image with a circle per detection."""
    name = Path(unit.file).name
    for suffix in (".fz", ".gz", ".fits", ".fit", ".fts", ".npz"):
        name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
    path = out / "overlays" / f"{name}_{unit.image}.png"
    title = f"{unit.file} [image {unit.image}]: {len(rows['x'])} detections"
    figure = overlay_figure(unit.pixels, rows["x"], rows["y"], title=title)
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


def bin_image(image: np.ndarray, *, max_side: int = OVERLAY_MAX_SIDE, reduce: str = "mean") -> tuple[np.ndarray, int]:
    """Block-reduce ``image`` (NaN-aware) by the smallest integer factor that fits ``max_side``.

    ``reduce="mean"`` averages each block; ``"max"`` keeps its brightest pixel, so point sources stay
    visible in a small overview. Returns the binned image and the factor; trailing rows/columns that do
    not fill a block are dropped; an all-NaN block stays NaN.
    """
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce: must be 'mean' or 'max', got {reduce!r}")
    arr = np.asarray(image, dtype=np.float32)
    factor = max(1, math.ceil(max(arr.shape) / max_side))
    h, w = (arr.shape[0] // factor) * factor, (arr.shape[1] // factor) * factor
    blocks = arr[:h, :w].reshape(h // factor, factor, w // factor, factor)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=(1, 3))
    if reduce == "max":
        binned = np.where(finite, blocks, -np.inf).max(axis=(1, 3))
    else:
        total = np.where(finite, blocks, 0.0).sum(axis=(1, 3), dtype=np.float64)
        binned = total / np.maximum(count, 1)
    return np.where(count > 0, binned, np.nan).astype(np.float32), factor


def overlay_figure(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, title: str = "") -> Any:
    """A matplotlib Figure of the image (block maxima, 1-99.5 percentile stretch) with circles at ``(x, y)``.

    Axes are in the image's own pixel coordinates; masked pixels are shown in blue.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    binned, factor = bin_image(image, reduce="max")
    finite = binned[np.isfinite(binned)]
    lo, hi = (np.percentile(finite, [1.0, 99.5]) if finite.size else (0.0, 1.0))
    h, w = binned.shape[0] * factor, binned.shape[1] * factor
    figure = Figure(figsize=(8.8, 8 * h / max(w, 1) + 0.4))
    ax = figure.add_subplot()
    cmap = colormaps["gray"].with_extremes(bad="tab:blue")
    shown = ax.imshow(binned, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower",
                      interpolation="nearest", extent=(-0.5, w - 0.5, -0.5, h - 0.5))
    for cx, cy in zip(np.asarray(x, dtype=float), np.asarray(y, dtype=float)):
        ax.add_patch(Circle((cx, cy), OVERLAY_RADIUS * factor, fill=False, edgecolor="red", linewidth=1.0))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("x (column, px)")
    ax.set_ylabel("y (row, px)")
    figure.colorbar(shown, ax=ax, shrink=0.8, label=f"brightest pixel per {factor}x{factor} block (DN)")
    figure.tight_layout()
    return figure