"""The task behind ``detect.py``: run a trained cascade on data nobody labelled.

``python detect.py input=PATH... artifact=RUN/cascade.pt out=DIR`` writes ``DIR/catalogue.csv``
(columns :data:`~neocascade.detection.catalogue.CATALOGUE_COLUMNS`; ``format=parquet``: the folder
``DIR/catalogue/``, partitioned by ``partition_by``, with provenance columns), one overlay PNG per image
for the first ``max_overlays`` images under ``DIR/overlays/`` and ``DIR/summary.json``. Images give one
row per merged detection; alert packets one row per alert, ``detected`` telling the verdict. With
``trails=default`` the trail detector (:mod:`neocascade.detection.trails`) also searches every image: each
trail found is one ``kind=trail`` row, and the cascade's point detections on it are merged into it.

Input files are the units of work: ``cluster=local`` (the default) spreads them over one Dask worker
per core, ``cluster=none`` runs them here one after another (:mod:`neocascade.pipelines.cluster`). Each
finished file leaves its rows in ``DIR/.detect-run/parts/`` and a line in ``DIR/.detect-run/manifest.jsonl``;
a rerun of the same command after a crash skips those files, and the catalogue is assembled in input
order at the end, so it is the same as an uninterrupted run's. The folder is removed when the run completes.

``python detect.py data=ztf_alerts artifact=...`` runs the ZTF alert evaluation instead
(:mod:`neocascade.pipelines.alerts_eval`).

A bad file costs one stderr line and is skipped; the run goes on and exits 1 (2 when every input was
bad). A bad artifact, config or output folder stops it at once with exit 2.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from neocascade.detection.catalogue import (
    catalogue_rows, concat_catalogues, empty_catalogue, open_catalogue, partition_name, read_part,
    write_parquet_catalogue, write_part,
)
from neocascade.detection.detector import (
    InputSpec, detect_image, input_spec, run_veto, score_stamps, stamp_centre,
)
from neocascade.detection.inputs import (
    KINDS, AlertUnit, ImageUnit, challenge_index, expand_inputs, input_kind, iter_units,
)
from neocascade.detection.reference import build_star_check
from neocascade.detection.residuals import build_residual_check
from neocascade.detection.trails import TrailDetector, build_trail_detector, trail_segments
from neocascade.errors import InputError, input_error
from neocascade.io.reference import read_star_catalogue, stars_on_image
from neocascade.pipelines.common import INPUT_ERROR_EXIT, report_input_errors
from neocascade.utils.atomic import atomic_path, save_json

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SOME_FAILED, EXIT_ALL_FAILED = 0, 1, INPUT_ERROR_EXIT
OVERLAY_MAX_SIDE = 1024  # px of the downsampled overlay image: a 3080x3072 quadrant is binned 4x4
OVERLAY_RADIUS = 12.0  # circle radius in overlay (display) px, big enough to see at a glance
FORMATS = ("csv", "parquet")
PARTITIONS = ("folder", "night", "field", "none")  # Parquet partition key of each input file (see file_partition)
UNKNOWN = "unknown"  # partition of a file that does not say its night or field
MJD_EPOCH = "1858-11-17"  # MJD 0 (UTC)
STATE_DIR = ".detect-run"  # settings.json, manifest.jsonl, parts/: an unfinished run, removed when it completes
_PART = re.compile(r"[0-9a-f]{20}\.parquet")  # part_name's form
_TMP_GLOBS = (".catalogue.csv.*.tmp", ".catalogue.*.tmp", ".summary.json.*.tmp")  # atomic writers' leftovers in out/


def run(cfg: DictConfig) -> int:
    """Run detection, or the ZTF alert evaluation when ``cfg.data`` is set.

    Bad input stops the run with one ``error: ...`` stderr line and exit status 2; when only some
    files failed, the run finishes and exits 1, when all failed 2 (``SystemExit``); 0 is returned on success.
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

    line = _one_line(message)
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


@dataclass(frozen=True)
class DetectJob:
    """Everything a worker needs to process an input file: plain values only, sent to every worker."""

    artifact: str
    artifact_sha256: str | None
    expected_arch: Any
    veto: Any
    batch_size: int
    merge_radius: float
    read_options: dict
    out: str
    partition_by: str = "folder"
    torch_threads: int | None = None
    trails: Any = None
    residual_check: Any = None
    reference_check: Any = None
    reference: str | None = None

    @property
    def parts(self) -> Path:
        """Where each input file's rows are written."""
        return Path(self.out) / STATE_DIR / "parts"

    @property
    def cache_key(self) -> str:
        """Identifies the loaded cascade, veto, trail detector, residual check and reference catalogue a worker can
        reuse."""
        return json.dumps([self.artifact, self.artifact_sha256, self.expected_arch, self.veto, self.trails,
                           self.residual_check, self.reference_check, self.reference], default=str)


def detect(cfg: DictConfig) -> int:
    """Detection over every input file; see the module docstring. Returns the exit status."""
    from hydra.utils import instantiate

    from neocascade.pipelines.cluster import Serial
    from neocascade.utils.atomic import check_output_dir
    from neocascade.utils.options import validate_detect_options

    batch_size, merge_radius, max_overlays = _options(cfg)
    fmt, partition_by = _format_options(cfg)
    validate_detect_options(cfg)
    if cfg.get("out") in (None, ""):
        raise input_error("out", "required: the folder the catalogue is written to")
    check_output_dir(str(cfg.out), key="out")
    out = Path(str(cfg.out))
    overwrite = bool(cfg.get("overwrite", False))
    cascade, spec = load_artifact(cfg)
    veto_config = _plain(cfg.get("veto"))
    veto = run_veto(veto_config, cascade)
    trails_config = _trails_config(cfg)
    trails = build_trail_detector(trails_config)  # refuses bad settings here, before any work
    check_config = _plain(cfg.get("residual_check"))
    check = build_residual_check(check_config)
    star_config = _plain(cfg.get("reference_check"))
    star_check = build_star_check(star_config)
    if cfg.get("input") in (None, ""):
        raise input_error("input", "required: a file, folder or glob (or a list of them)")
    files = expand_inputs(cfg.input if isinstance(cfg.input, str) else list(OmegaConf.to_container(cfg.input)))
    files = _unique_files(files)
    reference, catalogue = _reference(cfg, star_check, files)
    cluster = Serial() if cfg.get("cluster") is None else instantiate(cfg.cluster)
    job = DetectJob(
        artifact=str(Path(str(cascade.path)).resolve()), artifact_sha256=_sha256(Path(str(cascade.path))),
        expected_arch=_plain(cfg.get("expected_arch")), veto=veto_config, batch_size=batch_size,
        merge_radius=merge_radius, out=str(out.resolve()), partition_by=partition_by,
        torch_threads=cluster.torch_threads, trails=trails_config, residual_check=check_config,
        reference_check=star_config, reference=reference, read_options=_read_options(cfg),
    )
    settings = {
        "inputs": [str(p) for p in files], "artifact_sha256": job.artifact_sha256, "expected_arch": job.expected_arch,
        "veto": veto_config, "trails": trails_config, "residual_check": check_config, "batch_size": batch_size,
        "reference_check": star_config,
        "reference": None if reference is None else {"file": reference, "sha256": _sha256(Path(reference))},
        "merge_radius": merge_radius,
        "max_overlays": max_overlays, "read_options": job.read_options, "format": fmt, "partition_by": partition_by,
    }
    config_hash = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = RunFolder(out, fmt=fmt, config_hash=config_hash)
    with folder.locked():
        done = folder.prepare(overwrite=overwrite, settings=settings)
        # the serial loop (and threaded workers) reuse these
        _remember(job, (cascade, spec, veto, trails, check, star_check, catalogue))
        resumed = len(done)
        entries = _run_files(files, job, cluster, folder, done, max_overlays=max_overlays,
                             progress=bool(cfg.get("progress", True)))
        by = None if partition_by == "none" or fmt == "csv" else partition_by  # a CSV keeps input order
        counts, partitions = _assemble(entries, job.parts, by=by)
        provenance = {"artifact_sha256": job.artifact_sha256 or "", "config_hash": config_hash}
        if fmt == "csv":
            with open_catalogue(folder.catalogue, overwrite=True) as writer:
                for columns in partitions.values():
                    writer.write(columns)
        else:
            write_parquet_catalogue(folder.catalogue, partitions, by=None if partition_by == "none" else partition_by,
                                    provenance=provenance, overwrite=True)
        failed = [line for entry in entries for line in entry["failed"]]
        summary = {
            "artifact": str(cascade.path), **provenance, "catalogue": str(folder.catalogue), "format": fmt,
            "partition_by": partition_by, "veto": repr(veto) if veto is not None else None,
            "trails": repr(trails) if trails is not None else None, "cluster": repr(cluster),
            "residual_check": repr(check) if check is not None else None,
            "reference_check": repr(star_check) if star_check is not None else None,
            "reference": None if catalogue is None else {"file": str(catalogue.path), "stars": len(catalogue)},
            "images_reference_checked": star_check is not None and catalogue is not None,
            "resumed_files": resumed, **counts, "failed": failed, "config": OmegaConf.to_container(cfg, resolve=True),
        }
        save_json(folder.summary, summary, overwrite=True)
        folder.finish()
    log.info("detect: %d files, %d images, %d alerts -> %d rows in %s; %d failed", counts["files"], counts["images"],
             counts["alerts"], counts["rows"], folder.catalogue, len(failed))
    if not failed:
        return EXIT_OK
    return EXIT_SOME_FAILED if counts["units_ok"] else EXIT_ALL_FAILED


def _run_files(files: list[Path], job: DetectJob, cluster: Any, folder: "RunFolder", done: dict[str, dict], *,
               max_overlays: int, progress: bool) -> list[dict]:
    """Detect in every file not yet ``done`` on ``cluster``, recording each as it finishes; entries in input order."""
    from tqdm import tqdm

    budgets = overlay_budgets(files, max_overlays, read_options=job.read_options)
    for entry in done.values():  # a resumed run reports what the killed one found, as an uninterrupted run would
        for line in entry["failed"]:
            report_error(line)
    todo = [(str(path), budgets[k], job) for k, path in enumerate(files) if part_name(path) not in done]
    if done:
        log.info("detect: resuming in %s: %d of %d files already done", folder.out, len(files) - len(todo), len(files))
    bar = tqdm(total=len(files), initial=len(files) - len(todo), desc="detect", unit="file",
               disable=not progress or len(files) < 2)

    def finished(entry: dict) -> None:
        for line in entry["failed"]:
            report_error(line)
        folder.record(entry)
        done[entry["part"]] = entry
        bar.update()

    def lost(item: tuple, error: BaseException) -> None:
        path = item[0]
        write_part(job.parts / part_name(path), empty_catalogue(), overwrite=True)
        finished({"file": path, "part": part_name(path), "kind": None, "partition": UNKNOWN, "images": 0, "alerts": 0,
                  "detections": 0, "overlays": 0, "units_ok": 0,
                  "failed": [f"{path}: skipped, it took down every worker that read it (out of memory, or a crash "
                             f"in a library): {_one_line(str(error))[:200]}"]})

    try:
        cluster.map(_detect_file, todo, on_result=finished, on_lost=lost)
    finally:
        bar.close()
    return [done[part_name(path)] for path in files]


class RunFolder:
    """The output folder of one detection run: its final files, and the state that makes a rerun resume.

    Parameters
    ----------
    out : path
        The run's ``out=`` folder.
    fmt : {"csv", "parquet"}
        Decides the catalogue's name: ``catalogue.csv`` or the folder ``catalogue/``.
    config_hash : str
        Hash of the settings that decide the catalogue; a rerun resumes only a run with the same one.
    """

    def __init__(self, out: Path, *, fmt: str, config_hash: str) -> None:
        self.out = Path(out)
        self.state = self.out / STATE_DIR
        self.catalogue = self.out / ("catalogue.csv" if fmt == "csv" else "catalogue")
        self.summary = self.out / "summary.json"
        self.overlays = self.out / "overlays"
        self.config_hash = config_hash

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the folder for the block: a second run into it is refused, not interleaved.

        Raises
        ------
        InputError
            Another process holds the lock.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no flock (Windows): unguarded
            yield
            return
        fd = os.open(self.out, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise input_error(self.out, "another detect.py run is writing into this folder") from None
            yield
        finally:
            os.close(fd)

    @property
    def manifest(self) -> Path:
        """One JSON line per finished input file."""
        return self.state / "manifest.jsonl"

    def prepare(self, *, overwrite: bool, settings: dict) -> dict[str, dict]:
        """Make the folder ready and return the manifest entries of files already done (by part name).

        A fresh run refuses a folder holding another run's catalogue, summary or overlays unless
        ``overwrite`` (which removes exactly those); an unfinished run with the same settings is resumed,
        one with other settings refused. Temporary files of a killed run are removed.

        Raises
        ------
        InputError
            One line naming the file or folder in the way.
        """
        finals = (self.out / "catalogue.csv", self.out / "catalogue", self.summary)
        unfinished = None if overwrite else self._settings()
        if overwrite:
            self._remove(*finals, self.state)
            self._remove_overlays()
        elif unfinished is not None:
            found = unfinished.get("config_hash")
            if found != self.config_hash:
                raise input_error(self.state, "holds an unfinished run with other settings (input, artifact or "
                                  "options); pass overwrite=true to start again",
                                  expected=f"config hash {self.config_hash}", found=found)
            self._clean_tmp()
            return self._finished()
        else:
            for path in finals:
                if path.exists():
                    raise input_error(path, "already exists; pass overwrite=true to replace it")
            if self.overlays.is_dir() and any(self.overlays.glob("*.png")):
                raise input_error(self.overlays, "holds another run's overlays; pass overwrite=true to replace them")
        self._remove(self.state)
        self._clean_tmp()
        (self.state / "parts").mkdir(parents=True)
        save_json(self.state / "settings.json", {"config_hash": self.config_hash, **settings}, overwrite=True)
        return {}

    def record(self, entry: dict) -> None:
        """Append a finished file's entry to the manifest (flushed to disk: a crash keeps what is done)."""
        with open(self.manifest, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self) -> None:
        """Remove the resume state and any temporary file: the run is complete."""
        self._clean_tmp()
        self._remove(self.state)

    def _settings(self) -> dict | None:
        """The settings of an unfinished run in this folder, or None when there is none."""
        try:
            settings = json.loads((self.state / "settings.json").read_text())
        except (OSError, ValueError):
            return None
        return settings if isinstance(settings, dict) else None

    def _finished(self) -> dict[str, dict]:
        """Manifest entries whose part file is there; a line torn by a crash is ignored."""
        done = {}
        if not self.manifest.is_file():
            return done
        for line in self.manifest.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if _valid_entry(entry) and (self.state / "parts" / entry["part"]).is_file():
                done[entry["part"]] = entry
        return done

    def _clean_tmp(self) -> None:
        """Remove what atomic writers of a killed run left: ``.<name>.*.tmp`` files and folders."""
        leftovers = [p for pattern in _TMP_GLOBS for p in self.out.glob(pattern)]
        leftovers += list(self.overlays.glob(".*.png.*.tmp")) + list((self.state / "parts").glob(".*.tmp"))
        self._remove(*leftovers)

    def _remove_overlays(self) -> None:
        """Remove the overlay PNGs (and their temporary files); the folder goes when nothing else is in it."""
        if not self.overlays.is_dir():
            return
        self._remove(*self.overlays.glob("*.png"), *self.overlays.glob(".*.png.*.tmp"))
        if not any(self.overlays.iterdir()):
            self.overlays.rmdir()

    @staticmethod
    def _remove(*paths: Path) -> None:
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


def _valid_entry(entry: Any) -> bool:
    """Whether a manifest line is an entry :func:`_detect_file` wrote (anything else is redone)."""
    counts = ("images", "alerts", "detections", "overlays", "units_ok")
    return (isinstance(entry, dict) and isinstance(entry.get("part"), str)
            and _PART.fullmatch(entry["part"]) is not None and isinstance(entry.get("file"), str)
            and entry.get("kind") in (None, *KINDS) and isinstance(entry.get("partition"), str) and isinstance(entry.get("failed"), list)
            and all(isinstance(line, str) for line in entry["failed"])
            and all(isinstance(entry.get(key), int) and not isinstance(entry.get(key), bool) for key in counts))


def _unique_files(files: list[Path]) -> list[Path]:
    """``files`` without a second name of the same file (``a.npz`` and ``/data/a.npz``), in order."""
    unique: dict[Path, Path] = {}
    for path in files:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def part_name(path: str | os.PathLike) -> str:
    """The file name of an input file's rows in the run state: a hash of its absolute path."""
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:20] + ".parquet"


def overlay_budgets(files: list[Path], max_overlays: int, *, read_options: dict) -> list[int]:
    """How many of each file's images get an overlay, so that the first ``max_overlays`` images of the run do.

    Files are opened (headers only) until the budget is spent; a file that cannot be read counts 0.
    """
    budgets, left = [], max_overlays
    for path in files:
        take = min(left, _image_count(path, read_options)) if left else 0
        budgets.append(take)
        left -= take
    return budgets


def _image_count(path: Path, read_options: dict) -> int:
    """Images in an input file (alerts: none get overlays); 0 when it cannot be read."""
    try:
        kind = input_kind(path)
        if kind == "fits":
            return 1
        if kind == "avro":
            return 0
        if kind == "npz":
            from neocascade.io.npz import read_canonical

            return read_canonical(path, truth="ignore").n_images
        from neocascade.io.challenge import read_challenge

        return read_challenge(path.parent, challenge_index(path), allow_pickle=read_options["allow_pickle"]).n_images
    except (ValueError, OSError):
        return 0


_LOADED: dict[str, tuple] = {}
_LOADED_LOCK = threading.Lock()


def _remember(job: DetectJob, loaded: tuple) -> None:
    """Keep the driver's loaded cascade, spec and veto for the serial loop (and threaded workers)."""
    with _LOADED_LOCK:
        _LOADED.clear()
        _LOADED[job.cache_key] = loaded


def _worker_cascade(job: DetectJob) -> tuple:
    """The cascade, input spec, veto, trail detector, residual check, reference check and star catalogue of ``job``,
    built once per process (keyed by the artifact's hash and the settings)."""
    with _LOADED_LOCK:
        if job.cache_key not in _LOADED:
            if job.torch_threads is not None:
                import torch

                torch.set_num_threads(job.torch_threads)
            found = _sha256(Path(job.artifact))
            if found != job.artifact_sha256:  # replaced while the run goes on: its rows would not be one cascade's
                raise input_error(job.artifact, "changed since the run started", expected=job.artifact_sha256,
                                  found=found)
            cascade, spec = load_artifact(OmegaConf.create({"artifact": job.artifact,
                                                            "expected_arch": job.expected_arch}))
            _LOADED.clear()
            catalogue = None if job.reference is None else read_star_catalogue(job.reference)
            _LOADED[job.cache_key] = (cascade, spec, run_veto(job.veto, cascade), build_trail_detector(job.trails),
                                      build_residual_check(job.residual_check), build_star_check(job.reference_check),
                                      catalogue)
        return _LOADED[job.cache_key]


def _detect_file(path: str, overlays: int, job: DetectJob) -> dict:
    """Detect in every unit of one input file, write its rows (a part file) and return its manifest entry.

    Runs on a worker. Bad input is caught here and returned as one line per problem (``failed``);
    the caller reports it. ``overlays`` is how many of the file's first images get an overlay PNG.
    """
    cascade, spec, veto, trails, check, star_check, catalogue = _worker_cascade(job)
    path = Path(path)
    entry = {"file": str(path), "part": part_name(path), "kind": None, "partition": None, "images": 0, "alerts": 0,
             "detections": 0, "overlays": 0, "units_ok": 0, "failed": []}
    rows: list[dict] = []
    seen_candids: set = set()
    n_images = 0
    try:
        entry["kind"] = input_kind(path)
        entry["partition"] = file_partition(path, entry["kind"], by=job.partition_by)
        for unit in iter_units(path, **job.read_options):
            try:
                if isinstance(unit, AlertUnit):
                    if entry["partition"] is None:
                        entry["partition"] = alert_partition(unit.alert.candidate, by=job.partition_by)
                    if unit.alert.candid in seen_candids:  # the same packet twice in one file
                        continue
                    seen_candids.add(unit.alert.candid)
                    rows.append(_alert_rows(unit, cascade, spec, job.batch_size, check=check, star_check=star_check))
                    entry["alerts"] += 1
                else:
                    n_images += 1
                    found = _image_rows(unit, cascade, spec, veto, job, trails=trails, check=check,
                                        reference=_image_reference(unit, star_check, catalogue))
                    rows.append(found)
                    entry["images"] += 1
                    entry["detections"] += len(found["x"])
                    if n_images <= overlays:
                        _write_overlay(Path(job.out), unit, found, overwrite=True)
                        entry["overlays"] += 1
                entry["units_ok"] += 1
            except InputError as exc:
                entry["failed"].append(_one_line(str(exc)))
            except ValueError as exc:
                source = f"{path}" if isinstance(unit, AlertUnit) else f"{path}[image {unit.image}]"
                entry["failed"].append(_one_line(f"{source}: {exc}"))
    except (ValueError, OSError) as exc:
        entry["failed"].append(_one_line(str(exc) if isinstance(exc, InputError) else f"{path}: {exc}"))
    entry["partition"] = UNKNOWN if entry["partition"] is None else entry["partition"]
    write_part(job.parts / entry["part"], concat_catalogues(rows), overwrite=True)
    return entry


def file_partition(path: Path, kind: str, *, by: str) -> str | None:
    """The Parquet partition an input file's rows go to; None for alerts, whose packets say it.

    ``folder``: the file's folder name (a night's alert tarball, a survey's night folder); ``night``: the
    UTC date (``YYYY-MM-DD``) of the first image's mid-exposure MJD, from a canonical npz's ``obs_mjd``
    or a FITS header's ``OBSMJD``/``MJD-OBS`` (Palomar's nights fall within one UTC date); ``field``: the
    npz ``field`` key or the header's ``FIELDID``. A file that does not say gives ``unknown``.
    """
    if by in ("folder", "none"):
        return Path(path).parent.name or UNKNOWN
    if kind == "avro":
        return None
    try:
        if kind == "npz":
            from neocascade.io.npz import read_canonical

            data = read_canonical(path, truth="ignore")
            values = data.obs_mjd if by == "night" else data.field
            value = None if values is None or not len(values) else values[0]
        elif kind == "fits":
            value = _fits_card(path, ("OBSMJD", "MJD-OBS") if by == "night" else ("FIELDID",))
        else:
            value = None
    except (ValueError, OSError):  # the detection reports the file's problem itself
        value = None
    return _partition_value(value, by=by)


def alert_partition(candidate: dict, *, by: str) -> str:
    """Partition of an alert packet from its candidate: ``night`` from ``jd``, ``field`` from ``field``."""
    if by == "night":
        jd = candidate.get("jd")
        return _partition_value(None if jd is None else float(jd) - 2400000.5, by=by)
    return _partition_value(candidate.get("field"), by=by)


def _partition_value(value: Any, *, by: str) -> str:
    """A night (MJD -> UTC date) or field id as a partition string; ``unknown`` when missing or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return UNKNOWN
    if not math.isfinite(number):
        return UNKNOWN
    if by == "night":
        import datetime

        return (datetime.date.fromisoformat(MJD_EPOCH) + datetime.timedelta(days=math.floor(number))).isoformat()
    return str(int(number))


def _fits_card(path: Path, keys: tuple[str, ...]) -> Any:
    """The first of ``keys`` found in the headers of a FITS file's HDUs, or None."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul:
            for key in keys:
                if key in hdu.header:
                    return hdu.header[key]
    return None


def _assemble(entries: list[dict], parts: Path, *, by: str | None) -> tuple[dict, dict[str, dict]]:
    """Rows of every file in input order, grouped by partition; an alert seen in an earlier file is dropped.

    Returns the run's counts (``detections`` counts point and trail rows, ``trail_rows`` the trails alone) and
    ``{partition value: columns}`` (one ``"all"`` entry when ``by`` is None).
    """
    counts = {"files": len(entries), "images": 0, "alerts": 0, "detections": 0, "trail_rows": 0, "overlays": 0,
              "units_ok": 0, "rows": 0}
    grouped: dict[str, list[dict]] = {}
    seen_candids: set = set()
    for entry in entries:
        columns = read_part(parts / entry["part"])
        if entry["kind"] == "avro" and len(columns["x"]):
            fresh = np.array([c not in seen_candids for c in columns["image"]], dtype=bool)
            seen_candids.update(columns["image"].tolist())
            columns = {name: values[fresh] for name, values in columns.items()}
        counts["alerts"] += len(columns["x"]) if entry["kind"] == "avro" else 0
        for key in ("images", "detections", "overlays", "units_ok"):
            counts[key] += entry[key]
        counts["rows"] += len(columns["x"])
        counts["trail_rows"] += int((np.asarray(columns["kind"], dtype=object) == "trail").sum())
        # grouped by folder name, so values that name the same folder ("a b", "a_b") share one part
        grouped.setdefault("all" if by is None else partition_name(entry["partition"]), []).append(columns)
    partitions = {value: concat_catalogues(parts_) for value, parts_ in grouped.items()}
    return counts, partitions or {"all": empty_catalogue()}


def _trails_config(cfg: DictConfig) -> dict | None:
    """The run's ``trails=`` config as a plain dict (None for ``trails=none``); the user's own conf, never a file's."""
    config = _plain(cfg.get("trails"))
    if config is None or (isinstance(config, dict) and config.get("_target_") is None):
        return None
    if not isinstance(config, dict):
        raise input_error("trails", "expected a config group choice such as trails=default", found=repr(config))
    return config


def _read_options(cfg: DictConfig) -> dict:
    """The keyword arguments of :func:`~neocascade.detection.inputs.iter_units` a run sets."""
    options = {"allow_pickle": bool(cfg.get("allow_pickle", False)), "mask_hdu": _plain(cfg.get("mask_hdu")),
               "bad_value": _plain(cfg.get("bad_value"))}
    if "saturation" in cfg:  # absent: the reader's own default level
        options["saturation"] = _plain(cfg.saturation)
    return options


def _one_line(message: str) -> str:
    """A message on one line (whitespace runs, newlines included, become one space)."""
    return " ".join(str(message).split())


def _plain(value: Any) -> Any:
    """A config value as plain Python (dicts, lists, scalars)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, or None when there is no such file."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _format_options(cfg: DictConfig) -> tuple[str, str]:
    """Check ``format`` and ``partition_by``."""
    fmt = cfg.get("format", "csv")
    if fmt not in FORMATS:
        raise input_error("format", f"must be one of {', '.join(FORMATS)}", found=fmt)
    by = cfg.get("partition_by", "folder")
    if by not in PARTITIONS:
        raise input_error("partition_by", f"must be one of {', '.join(PARTITIONS)}", found=by)
    return fmt, by


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


def _reference(cfg: DictConfig, star_check: Any, files: Sequence[Path]) -> tuple[str | None, Any]:
    """The reference catalogue's path (resolved) and contents for image inputs under ``reference_check``; alerts
    carry their own (``distnr``, ``magnr``). Refuses a catalogue without the check; image inputs without one are
    detected without it, and the log says so."""
    path = cfg.get("reference")
    if star_check is None:
        if path not in (None, ""):
            raise input_error("reference", "a star catalogue is only read with reference_check=stars", found=str(path))
        return None, None
    if path in (None, ""):
        images = [p for p in files if not _is_avro(p)]
        if images:
            log.warning("reference_check: no star catalogue given (reference=ra/dec/mag table), so the %d image "
                        "file(s) are not checked against one; alerts use their own distnr / magnr", len(images))
        return None, None
    catalogue = read_star_catalogue(str(path))
    return str(Path(str(path)).resolve()), catalogue


def _is_avro(path: Path) -> bool:
    """An alert file (which carries its own reference-catalogue fields); a file of no known kind is not."""
    try:
        return input_kind(path) == "avro"
    except InputError:
        return False


def _image_reference(unit: ImageUnit, star_check: Any, catalogue: Any) -> Any:
    """``keep(x, y)`` of one image against the catalogue's stars placed by its WCS; None without the check."""
    if star_check is None or catalogue is None:
        return None
    return star_check.bind(stars_on_image(catalogue, unit.wcs, unit.pixels.shape))


def _image_rows(unit: ImageUnit, cascade: Any, spec: InputSpec, veto: Any, job: DetectJob, *,
                trails: TrailDetector | None = None, check: Any = None, reference: Any = None) -> dict:
    """Catalogue columns of one image's detections: the cascade's points (after the residual ``check`` and the
    ``reference`` catalogue), then (with ``trails``) its trails, each point lying on a found trail merged into it."""
    det = detect_image(unit.pixels, cascade, merge_radius=job.merge_radius, batch_size=job.batch_size, spec=spec,
                       veto=veto, check=check, reference=reference)
    rows = catalogue_rows(det, file=str(unit.file), image=unit.image, wcs=unit.wcs)
    if trails is None:
        return rows
    return trails.rows(unit.pixels, rows, file=str(unit.file), image=unit.image, wcs=unit.wcs, exptime=unit.exptime)


def _alert_rows(unit: AlertUnit, cascade: Any, spec: InputSpec, batch_size: int, *, check: Any = None,
                star_check: Any = None) -> dict:
    """One catalogue row for an alert: its position (0-based quadrant px, sky from the packet) and verdict.

    The stamp is scored with the science-minus-reference sign, so a negative subtraction's fading
    source is negative, as nothing in training ever was. With ``star_check``, an alert on a catalogued star
    (the packet's ``distnr`` / ``magnr``) is not detected.
    """
    alert = unit.alert
    cand = alert.candidate
    stamp = alert.signed_difference
    centre = stamp_centre(stamp.shape, xpos=cand.get("xpos"), ypos=cand.get("ypos"))
    scores = score_stamps([stamp], cascade, centres=[centre], batch_size=batch_size, spec=spec, check=check)

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
    if star_check is not None:
        det["detected"] = det["detected"] & star_check.keep_nearest(value("distnr", float("nan")),
                                                                     value("magnr", float("nan")))
    return catalogue_rows(det, file=str(unit.file), image=alert.candid)


def _write_overlay(out: Path, unit: ImageUnit, rows: dict, *, overwrite: bool) -> Path:
    """Write ``out/overlays/<file>_<image>.png``: the binned image with a circle per point detection and a line
    segment per trail."""
    name = Path(unit.file).name
    for suffix in (".fz", ".gz", ".fits", ".fit", ".fts", ".npz"):
        name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
    path = out / "overlays" / f"{name}_{unit.image}.png"
    trail = np.asarray(rows["kind"], dtype=object) == "trail"
    title = f"{unit.file} [image {unit.image}]: {int((~trail).sum())} detections"
    if trail.any():
        title += f", {int(trail.sum())} trails"
    segments = trail_segments({key: np.asarray(rows[key])[trail] for key in ("x1", "y1", "x2", "y2")})
    figure = overlay_figure(unit.pixels, np.asarray(rows["x"])[~trail], np.asarray(rows["y"])[~trail], title=title,
                            segments=segments)
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


def overlay_figure(image: np.ndarray, x: np.ndarray, y: np.ndarray, *, title: str = "",
                   segments: np.ndarray | None = None) -> Any:
    """A matplotlib Figure of the image (block maxima, 1-99.5 percentile stretch) with circles at ``(x, y)``.

    Axes are in the image's own pixel coordinates; masked pixels are shown in blue. ``segments`` ((N, 2, 2)
    end points ``[[x1, y1], [x2, y2]]`` in image px, e.g. :func:`~neocascade.detection.trails.trail_segments`)
    are drawn as two lines either side of each (a trail), a circle's radius away, so the trail itself stays visible.
    """
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
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
    if segments is not None and len(segments):
        segments = np.asarray(segments, dtype=float)
        offset = OVERLAY_RADIUS * factor  # the circles' radius in image px: the same gap at every binning
        ax.add_collection(LineCollection(np.concatenate([_offset_segments(segments, offset),
                                                         _offset_segments(segments, -offset)]),
                                         colors="orange", linewidths=1.0))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("x (column, px)")
    ax.set_ylabel("y (row, px)")
    figure.colorbar(shown, ax=ax, shrink=0.8, label=f"brightest pixel per {factor}x{factor} block (DN)")
    figure.tight_layout()
    return figure


def _offset_segments(segments: np.ndarray, offset: float) -> np.ndarray:
    """(N, 2, 2) segments moved ``offset`` px perpendicular to themselves (to their left for offset > 0)."""
    d = segments[:, 1] - segments[:, 0]
    norm = np.hypot(d[:, 0], d[:, 1])
    normal = np.stack([-d[:, 1], d[:, 0]], axis=-1) / np.where(norm > 0, norm, 1.0)[:, None]
    return segments + offset * normal[:, None, :]
