"""Issue 17, items 2, 3, 5, 8 and 11: output folders, options, unique run folders, non-physical pixels, clean logs."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from neocascade.errors import InputError
from neocascade.utils.atomic import atomic_path, check_output_dir, save_text
from neocascade.utils.options import (
    validate_detect_options, validate_evaluate_options, validate_simulate_options, validate_train_options,
)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY_TRAIN = ["data=tiny", "logger=csv", "trainer.max_epochs=1", "data.n_jobs=1", "stage=single", "model=baseline",
              "model.widths=[4,4,4]", "model.hidden=[16,8]"]


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _cli(script: str, *args: str, cwd: Path, stdout=subprocess.PIPE, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------ item 2: output folders
def test_check_output_dir_accepts_a_new_folder_and_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_dir(target, key="out") == target
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []


def test_check_output_dir_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"^out: .*/f is a file \(expected a folder\)$"):
        check_output_dir(tmp_path / "f", key="out")


def test_check_output_dir_refuses_a_parent_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"^out_dir: .*/f/x/y cannot be created: .*/f is a file \(expected a folder\)$"):
        check_output_dir(tmp_path / "f" / "x" / "y", key="out_dir")


def test_check_output_dir_refuses_a_folder_without_write_permission(tmp_path, monkeypatch):
    # tests run as root, which ignores chmod: ask os.access what an ordinary user would hear
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(InputError, match=r"^out: .*/new is not writable: no permission to write in "):
        check_output_dir(tmp_path / "new", key="out")


def test_check_output_dir_refuses_a_read_only_file_system(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(InputError, match=r"is not writable: cannot write in .* \(Read-only file system\)$"):
        check_output_dir(tmp_path, key="hydra.run.dir")


def test_atomic_writes_under_a_file_are_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"/f/sub/report.md: cannot be written \((File exists|Not a directory)\)$"):
        save_text(tmp_path / "f" / "sub" / "report.md", "text")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match=r"d: is a folder \(expected a file name\)"):
        with atomic_path(tmp_path / "d", overwrite=True):
            pass


def test_simulate_into_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    from neocascade.pipelines.simulate import run

    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as stop:
        run(_compose("simulate", "data=tiny", f"out_dir={tmp_path / 'f'}", "files=[0]"))
    assert stop.value.code == 2
    assert re.fullmatch(r"error: out_dir: .*/f is a file \(expected a folder\)\n", capsys.readouterr().err)


def test_evaluate_into_a_file_is_refused_before_any_work(tmp_path, capsys):
    from neocascade.pipelines.evaluate import evaluate
    from neocascade.training.artifact import PACKAGED

    (tmp_path / "f").write_text("x")
    cfg = _compose("evaluate", f"artifact={PACKAGED}", f"out_dir={tmp_path / 'f' / 'report'}", f"paths.outputs={tmp_path}")
    with pytest.raises(InputError, match=r"^out_dir: .*/f/report cannot be created: .*/f is a file"):
        evaluate(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_unwritable_run_folders_are_one_line_and_exit_2(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = _cli("train.py", "data=tiny", f"paths.outputs={tmp_path / 'f' / 'outputs'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.fullmatch(r"error: hydra.run.dir: .*/f/outputs/train/[\d_-]+ cannot be created: .*/f is a file "
                        r"\(expected a folder\)\n", proc.stderr)
    proc = _cli("simulate.py", "data=tiny", "files=[0]", f"out_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'f'}",
                cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == f"error: hydra.run.dir: {tmp_path / 'f'} is a file (expected a folder)\n"


# ------------------------------------------------------------------------------------------ item 3: options
@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=-1", "error: trainer.max_epochs: must be a positive integer; -1 (Lightning's 'no limit') would "
                              "train forever (got -1)\n"),
    ("data.neg_ratio=0", "error: data.neg_ratio: must be a number > 0 (got 0)\n"),
])
def test_train_cli_refuses_senseless_options(override, message, tmp_path):
    proc = _cli("train.py", "data=tiny", "logger=csv", override, f"paths.outputs={tmp_path}", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, message)
    assert not (tmp_path / "cache").exists()  # refused before the data were touched


@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=0", "trainer.max_epochs: must be a positive integer"),
    ("trainer.max_epochs=null", "trainer.max_epochs: must be a positive integer"),
    ("data.neg_ratio=-0.5", r"data.neg_ratio: must be a number > 0 \(got -0.5\)"),
    ("data.cutout_size=20", r"data.cutout_size: must be an odd integer >= 3 \(got 20\)"),
    ("data.cutout_size=1", r"data.cutout_size: must be an odd integer >= 3 \(got 1\)"),
    ("data.kernel=0", r"data.kernel: must be a positive integer \(got 0\)"),
    ("data.stride=-5", r"data.stride: must be a positive integer \(got -5\)"),
    ("data.sigma=-1", r"data.sigma: must be a number >= 0 \(got -1\)"),
    ("data.label_radius=0", r"data.label_radius: must be a number > 0 \(got 0\)"),
    ("data.batch_size=0", r"data.batch_size: must be a positive integer \(got 0\)"),
    ("data.kernel=abc", r"data.kernel: must be a positive integer \(got 'abc'\)"),
    ("data.source.n_asteroids=-1", r"data.source.n_asteroids: must be an integer >= 0 \(got -1\)"),
    ("stage=first", r"stage.min_recall: must lie in \(0, 1\] \(got 0\)", ),
    ("stage.members=0", r"stage.members: must be a positive integer \(got 0\)"),
    ("optimizer.lr=0", r"optimizer.lr: must be a number > 0 \(got 0\)"),
    ("model.widths=[4,0,8,8]", r"model.widths: must be a non-empty list of values each a positive integer"),
    ("selector=peaks", r"data.selector.threshold: must be a number > 0 \(got 0\)"),
    ("veto=streaks", r"veto.tolerance: must be a number > 0 \(got -1\)"),
    ("seed=-1", r"seed: must be an integer in 0..4294967295 \(got -1\)"),
])
def test_train_options_refused_in_one_line(override, message):
    extra = {"stage=first": ["stage.min_recall=0"], "selector=peaks": ["data.selector.threshold=0"],
             "veto=streaks": ["veto.tolerance=-1"]}.get(override, [])
    cfg = _compose("train", "data=tiny", override, *extra)
    with pytest.raises(InputError, match=f"^{message}"):
        validate_train_options(cfg)


def _options(group: str) -> list[str]:
    paths = [p for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_")]
    if group == "data":  # training presets build on _base or paper (as in test_configs); others feed detect or link
        paths = [p for p in paths if "- _base" in p.read_text() or "- paper" in p.read_text()]
    return sorted(p.stem for p in paths)


@pytest.mark.parametrize("group, option", [(g, o) for g in ("data", "selector", "model", "stage", "trainer", "veto",
                                                            "experiment") for o in _options(g)])
def test_every_shipped_train_option_passes(group, option):
    validate_train_options(_compose("train", f"{group}={option}"))


def test_shipped_evaluate_simulate_detect_options_pass():
    validate_evaluate_options(_compose("evaluate", "artifact=x.pt"))
    validate_evaluate_options(_compose("evaluate", "artifact=x.pt", "data=shifted", "veto=streaks"))
    for preset in sorted(p.stem for p in (CONF / "data").glob("*.yaml") if p.stem not in ("_base", "ztf_alerts")):
        validate_simulate_options(_compose("simulate", f"data={preset}"))
    validate_detect_options(_compose("detect"))
    validate_detect_options(_compose("detect", "data=ztf_alerts", "mask_hdu=MASK", "bad_value=0"))


@pytest.mark.parametrize("name, override, message", [
    ("evaluate", "eval.target_precision=0", r"eval.target_precision: must lie in \(0, 1\] \(got 0\)"),
    ("evaluate", "eval.match_radius=0", r"eval.match_radius: must be a number > 0 \(got 0\)"),
    ("evaluate", "eval.mag_step=-0.25", r"eval.mag_step: must be a number > 0 \(got -0.25\)"),
    ("evaluate", "eval.batch_size=0", r"eval.batch_size: must be a positive integer \(got 0\)"),
    ("evaluate", "eval.footprint.kernels=[10,0]", r"eval.footprint.kernels: must be a list of values each a positive"),
    ("simulate", "data.source.n_files=0", r"data.source.n_files: must be a positive integer \(got 0\)"),
    ("simulate", "data.source.images_per_file=-2", r"data.source.images_per_file: must be a positive integer \(got -2\)"),
    ("simulate", "data.source.n_asteroids=-1", r"data.source.n_asteroids: must be an integer >= 0 \(got -1\)"),
    ("detect", "batch_size=0", r"batch_size: must be a positive integer \(got 0\)"),
    ("detect", "merge_radius=-1", r"merge_radius: must be a number >= 0 \(got -1\)"),
    ("detect", "max_overlays=-1", r"max_overlays: must be an integer >= 0 \(got -1\)"),
    ("detect", "saturation=0", r"saturation: must be a number > 0 \(got 0\)"),
    ("detect", "saturation=inf", r"saturation: must be a number > 0 \(got inf\)"),
    ("detect", "mask_hdu=-1", r"mask_hdu: must be null, an HDU index >= 0 or an EXTNAME \(got -1\)"),
])
def test_evaluate_simulate_detect_options_refused(name, override, message):
    base = {"evaluate": ["artifact=x.pt"], "simulate": ["data=tiny"], "detect": []}[name]
    validate = {"evaluate": validate_evaluate_options, "simulate": validate_simulate_options,
                "detect": validate_detect_options}[name]
    with pytest.raises(InputError, match=f"^{message}"):
        validate(_compose(name, *base, override))


# ------------------------------------------------------------------------------------------ item 5: run folders
def test_unique_dir_never_hands_out_a_folder_twice(tmp_path):
    from neocascade.pipelines import common

    base = str(tmp_path / "2026-01-01_00-00-00")
    first = common.unique_dir(base)
    assert first == base and Path(first).is_dir()
    assert common.unique_dir(base) == first  # asked again in one process (Hydra copies configs): the same folder
    common._UNIQUE_DIRS.pop(base)  # as another process would see it: the folder exists
    assert common.unique_dir(base) == f"{base}-2" and Path(f"{base}-2").is_dir()
    assert common.unique_dir(str(tmp_path / "missing_parent" / "run")) == str(tmp_path / "missing_parent" / "run")
    (tmp_path / "f").write_text("x")
    assert common.unique_dir(str(tmp_path / "f" / "run")) == str(tmp_path / "f" / "run")  # left to OutputDirCheck


def test_run_and_sweep_folders_use_unique_dir_and_keep_sweep_subdirs():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    from omegaconf import OmegaConf

    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert hydra["run"]["dir"].startswith("${unique_dir:${paths.outputs}/${task}/${now:")
    assert hydra["sweep"]["dir"].startswith("${unique_dir:${paths.outputs}/multirun/${task}/${now:")
    assert hydra["sweep"]["subdir"] == "${hydra.job.num}_${hydra.job.override_dirname}"


@pytest.mark.slow
def test_two_concurrent_runs_get_two_folders(tmp_path):
    env = dict(os.environ, WANDB_MODE="disabled")
    procs = [subprocess.Popen([sys.executable, str(ROOT / "simulate.py"), "data=tiny", "files=[0]", f"out_dir={tmp_path / f'd{k}'}",
                               f"hydra.run.dir=${{unique_dir:{tmp_path / 'run'}}}"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    folders = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run"))
    assert folders == ["run", "run-2"]
    for name in folders:  # each run wrote its own log, once
        assert (tmp_path / name / "simulate.log").read_text().count("wrote 1 file(s)") == 1


@pytest.mark.slow
def test_multirun_keeps_one_sweep_folder_with_numbered_jobs(tmp_path):
    proc = _cli("simulate.py", "-m", "data=tiny", "files=[0]", "layout=canonical,challenge", f"paths.outputs={tmp_path}",
                "out_dir=${paths.outputs}/data_${layout}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweeps = list((tmp_path / "multirun" / "simulate").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir())
    assert [j.split(",")[0] for j in jobs] == ["0_data=tiny", "1_data=tiny"] and "layout=challenge" in jobs[1]


# ------------------------------------------------------------------------------------------ item 8: pixels
def test_mask_invalid_masks_saturated_and_absurd_pixels():
    from neocascade.preprocess.filters import ABSURD_DN, mask_invalid

    image = np.array([[1.0, 2e6, -2e6], [1e30, np.inf, 5.0]], dtype=np.float32)
    out = mask_invalid(image, saturation=1e6)
    assert np.isnan(out).tolist() == [[False, True, True], [True, True, False]]
    kept = mask_invalid(image)  # no level given: only the absurd ones
    assert np.isnan(kept).tolist() == [[False, False, False], [True, True, False]] and 1e6 < ABSURD_DN < 1e30
    assert image[0, 1] == 2e6  # the input is untouched
    with pytest.raises(ValueError, match="saturation: must be a finite number > 0"):
        mask_invalid(image, saturation=0)


def _quadrant(rng: np.random.Generator, *, patch: float) -> np.ndarray:
    image = rng.normal(0.0, 6.0, size=(256, 256)).astype(np.float32)
    image[100:105, 140:145] = patch
    return image


def test_a_1e30_patch_is_no_asteroid_for_the_shipped_cascade(rng):
    from neocascade.detection.detector import detect_image
    from neocascade.training.artifact import PACKAGED, load_cascade

    cascade = load_cascade(PACKAGED)
    det = detect_image(_quadrant(rng, patch=1e30), cascade)
    near = np.hypot(det["x"] - 142, det["y"] - 102) < 15
    assert not near.any(), det["p2"][near]


def test_every_input_kind_masks_saturated_pixels(tmp_path, rng):
    from astropy.io import fits

    from neocascade.detection.inputs import iter_units
    from neocascade.io.alerts import write_test_alert
    from neocascade.io.npz import write_canonical

    image = _quadrant(rng, patch=3e6)
    write_canonical(tmp_path / "images_0.npz", image[None], np.zeros((0, 6)), {})
    (unit,) = iter_units(tmp_path / "images_0.npz")
    assert np.isnan(unit.pixels[100:105, 140:145]).all() and np.isfinite(unit.pixels[:100]).all()
    (unit,) = iter_units(tmp_path / "images_0.npz", saturation=None)
    assert np.isfinite(unit.pixels).all()  # 3e6 DN is no absurd value, only above the default level

    header = fits.Header({"SATURATE": 50.0})
    fits.PrimaryHDU(image, header=header).writeto(tmp_path / "diff.fits")
    (unit,) = iter_units(tmp_path / "diff.fits", saturation=None)  # the header's level wins
    assert np.isnan(unit.pixels[100:105, 140:145]).all() and np.isnan(unit.pixels).sum() == 25

    stamp = rng.normal(0.0, 6.0, size=(63, 63)).astype(np.float32)
    science = stamp + 100.0
    stamp[30:33, 30:33] = 1e30
    science[0, 0] = 2e6  # saturated in the science stamp: its difference pixel cannot be trusted
    write_test_alert(tmp_path / "a.avro", difference=stamp, science=science, template=np.zeros_like(stamp))
    (unit,) = iter_units(tmp_path / "a.avro")
    assert np.isnan(unit.alert.difference).sum() == 10 and np.isnan(unit.alert.difference[0, 0])


def test_fits_saturate_card_must_be_a_positive_number(tmp_path):
    from astropy.io import fits

    from neocascade.io.fits import read_fits_image

    fits.PrimaryHDU(np.ones((8, 8), np.float32), header=fits.Header({"SATURATE": -1.0})).writeto(tmp_path / "bad.fits")
    with pytest.raises(InputError, match=r"bad.fits: header SATURATE must be a positive number \(DN\) \(got -1.0\)"):
        read_fits_image(tmp_path / "bad.fits")
    pixels = np.full((8, 8), 7.0, np.float32)
    pixels[2, 3] = -9.0
    fits.PrimaryHDU(pixels).writeto(tmp_path / "ok.fits")
    read = read_fits_image(tmp_path / "ok.fits", saturation=8.0)  # no card: the level asked for
    assert (read.saturation, read.n_saturated) == (8.0, 1) and np.isnan(read.image[2, 3])
    assert read_fits_image(tmp_path / "ok.fits").n_saturated == 0


# ------------------------------------------------------------------------------------------ item 11: clean logs
def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]


@pytest.mark.slow
def test_train_log_holds_each_line_once_and_stderr_no_deprecation(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # as make paper runs a step: stdout appended to <run>/train.log, the file Hydra's job log writes too
    with open(run_dir / "train.log", "a") as log_file:
        proc = _cli("train.py", *TINY_TRAIN, f"paths.outputs={tmp_path}", f"hydra.run.dir={run_dir}", cwd=tmp_path,
                    stdout=log_file)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [line for line in (run_dir / "train.log").read_text().splitlines() if line.startswith("[")]
    assert sum("run folder:" in line for line in records) == 2  # logged at start and end, each once
    assert all(a != b for a, b in zip(records, records[1:]))
    for word in ("FutureWarning", "DeprecationWarning", "LeafSpec", "deprecated"):
        assert word not in proc.stderr, proc.stderr
