"""`python simulate.py`: simulate a preset's files and write them to disk, one file at a time.

Images of a file are streamed one by one into a memory map beside the target and then packaged, so
peak memory stays at about one quadrant even for the paper preset (100 quadrants = 3.8 GB a file).
A preset with a ``revisits`` block (``data=night``) writes sequences instead: file ``k`` is field
``k`` observed ``images_per_file`` times, with time, exposure, WCS and object ids
(:mod:`neocascade.simulation.revisits`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from neocascade.errors import InputError, input_error
from neocascade.pipelines.common import report_input_errors
from neocascade.simulation import SIMULATOR_VERSION, SimConfig, draw_conditions, simulate_image
from neocascade.utils.atomic import check_output_dir, check_writable
from neocascade.utils.options import validate_simulate_options

if TYPE_CHECKING:
    from neocascade.simulation.revisits import RevisitConfig

log = logging.getLogger("neocascade.simulate")

LAYOUTS = ("canonical", "challenge")


@report_input_errors()
def run(cfg: DictConfig) -> int:
    """Simulate and write the files of ``cfg.data``; bad input becomes one ``error: ...`` stderr line and exit 2."""
    written = simulate_dataset(cfg)
    log.info("wrote %d file(s) to %s", len(written), Path(str(cfg.out_dir)).resolve())
    return 0


def simulate_dataset(cfg: DictConfig) -> list[Path]:
    """Write every requested file of a simulated preset; return the paths written."""
    validate_simulate_options(cfg)
    target = str(OmegaConf.select(cfg, "data.source._target_", default=""))
    if not target.endswith("SimulatedSource"):
        raise input_error("data.source", "simulate.py needs a simulated preset", expected="SimulatedSource",
                          found=target or "nothing")
    layout = str(cfg.layout)
    if layout not in LAYOUTS:
        raise input_error("layout", "unknown layout", expected=" | ".join(LAYOUTS), found=layout)
    source = instantiate(cfg.data.source, seed=cfg.seed)
    config: SimConfig = source.config
    revisits = _revisit_config(cfg)
    if revisits is not None and layout != "canonical":
        raise input_error("layout", "sequences (data.revisits) are written only as canonical npz", found=layout)
    files = _file_subset(cfg.files, source.n_files)
    out_dir = check_output_dir(str(cfg.out_dir), key="out_dir")
    overwrite = bool(cfg.overwrite)
    targets = {k: _targets(out_dir, k, layout) for k in files}
    for paths in targets.values():  # refuse before simulating anything
        for path in paths:
            check_writable(path, overwrite=overwrite)
    written = []
    for k in files:
        start = time.perf_counter()
        meta = {
            "preset": str(cfg.data.name),
            "seed": int(source.seed),
            "file_index": k,
            "n_images": source.images_per_file,
            "zero_point": config.zero_point,
            "simulator": SIMULATOR_VERSION,
            "sim": config.to_dict(),
        }
        if revisits is None:
            meta["conditions"] = [_conditions(config, source.seed, k, i) for i in range(source.images_per_file)]
            write_file(out_dir, k, config, seed=source.seed, n_images=source.images_per_file, meta=meta,
                       layout=layout, overwrite=overwrite)
        else:
            write_revisits(out_dir, k, config, revisits, seed=source.seed, n_epochs=source.images_per_file,
                           meta=meta, overwrite=overwrite)
        written.extend(targets[k])
        log.info("file %d: %d images in %.1f s -> %s", k, source.images_per_file, time.perf_counter() - start,
                 targets[k][0])
    return written


def write_file(
    out_dir: Path, k: int, config: SimConfig, *, seed: int, n_images: int, meta: dict[str, Any], layout: str,
    overwrite: bool,
) -> None:
    """Simulate file ``k`` image by image into a temporary memory map, then write it in ``layout``."""
    with _scratch_images(out_dir, k, (n_images, *config.shape)) as images:
        truths = [np.zeros((0, 6))]
        for i in range(n_images):
            images[i], truth = simulate_image(config, seed=seed, file_index=k, image_index=i)
            truths.append(truth)
        images.flush()
        truth = np.concatenate(truths, axis=0)
        if layout == "canonical":
            from neocascade.io.npz import write_canonical

            write_canonical(out_dir / f"images_{k}.npz", images, truth, meta, overwrite=overwrite)
        else:
            from neocascade.io.challenge import write_challenge

            write_challenge(out_dir, k, images, truth, overwrite=overwrite)
        del images


def write_revisits(
    out_dir: Path, k: int, config: SimConfig, revisits: RevisitConfig, *, seed: int, n_epochs: int,
    meta: dict[str, Any], overwrite: bool,
) -> None:
    """Simulate field ``k`` (``n_epochs`` visits) into a temporary memory map, then write it as canonical npz."""
    from neocascade.io.npz import write_canonical
    from neocascade.simulation.revisits import simulate_revisits

    with _scratch_images(out_dir, k, (n_epochs, *config.shape)) as images:
        seq = simulate_revisits(config, revisits, seed=seed, field_index=k, n_epochs=n_epochs, out=images)
        images.flush()
        meta = {**meta, "field": k, "revisits": revisits.to_dict(), "objects": seq.objects,
                "transients": seq.transients,
                "conditions": [{"noise_rms": c.noise_rms, "fwhm": c.fwhm, "beta": c.beta,
                                "dead_border": list(c.dead_border)} for c in seq.conditions]}
        write_canonical(out_dir / f"images_{k}.npz", images, seq.truth, meta, overwrite=overwrite,
                        obs_mjd=seq.obs_mjd, exptime=seq.exptime, wcs=seq.wcs, field=seq.field, epoch=seq.epoch,
                        stationary=seq.stationary)
        del images, seq


@contextlib.contextmanager
def _scratch_images(out_dir: Path, k: int, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """A float32 memory map of ``shape`` in a hidden temporary file of ``out_dir`` (created), removed afterwards."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".images_{k}.", suffix=".npy", dir=out_dir)
    os.close(fd)
    try:
        yield np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _revisit_config(cfg: DictConfig) -> RevisitConfig | None:
    """``data.revisits`` as a :class:`RevisitConfig`, or None when the preset simulates single images."""
    node = OmegaConf.select(cfg, "data.revisits", default=None)
    if node is None:
        return None
    from neocascade.simulation.revisits import RevisitConfig

    values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(values, dict):
        raise input_error("data.revisits", "must be a mapping of RevisitConfig knobs", found=type(values).__name__)
    try:
        return RevisitConfig(**values)
    except TypeError as exc:
        raise input_error("data.revisits", f"unknown or missing knob: {exc}") from None
    except ValueError as exc:
        raise InputError(f"data.{exc}") from None


def _targets(out_dir: Path, k: int, layout: str) -> tuple[Path, ...]:
    """The file(s) file ``k`` becomes in ``layout``."""
    if layout == "canonical":
        return (out_dir / f"images_{k}.npz",)
    from neocascade.io.challenge import challenge_paths

    return tuple(challenge_paths(out_dir, k))


def _file_subset(files: Any, n_files: int) -> list[int]:
    """The requested file numbers, checked against the preset."""
    if files is None:
        return list(range(n_files))
    values = OmegaConf.to_container(files) if isinstance(files, DictConfig) or OmegaConf.is_config(files) else files
    if isinstance(values, int):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise input_error("files", "must be null or a non-empty list of file numbers", found=files)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n_files:
            raise input_error("files", f"file numbers must be integers in 0..{n_files - 1}", found=v)
        out.append(int(v))
    return sorted(set(out))


def _conditions(config: SimConfig, seed: int, k: int, i: int) -> dict[str, Any]:
    """Noise, PSF and dead border of one image, for the file metadata."""
    cond = draw_conditions(config, seed=seed, file_index=k, image_index=i)
    return {"noise_rms": cond.noise_rms, "fwhm": cond.fwhm, "beta": cond.beta, "dead_border": list(cond.dead_border)}
