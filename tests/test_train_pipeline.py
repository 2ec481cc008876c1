"""The training pipeline on the tiny preset: every model x stage, sweeps, DDP, resuming, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from neocascade.errors import InputError
from neocascade.pipelines.train import run, train
from neocascade.training.artifact import load_cascade

ROOT = Path(__file__).resolve().parents[1]
FAST = ["data=tiny", "logger=csv", "trainer.max_epochs=1", "data.n_jobs=1"]
SMALL = {  # narrow networks: the tests check the plumbing, not the science
    "baseline": ["model.widths=[4,4,4]", "model.hidden=[16,8]"],
    "vgg": ["model.widths=[4,4,8,8,8]", "model.depths=[1,1,1,1,1]", "model.hidden=[16,16]"],
    "final": ["model.widths=[4,4,8,8]", "model.hidden=16"],
    "rf": ["model.n_estimators=10"],
}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> str:
    """One tiny candidate cache for every test here (caches key on their config, so sharing is safe)."""
    cache = tmp_path_factory.mktemp("cache")
    dm = instantiate(_compose(*FAST, f"paths.cache={cache}").data)
    dm.prepare_data()
    return str(cache)


def _train(tmp_path: Path, cache: str, *overrides: str) -> dict:
    cfg = _compose(*FAST, f"paths.cache={cache}", f"paths.outputs={tmp_path}", *overrides)
    return train(cfg, run_dir=tmp_path / "run")


def _cli(*args: str, cwd: Path = ROOT, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _check_run(run_dir: Path, report: dict, *, arch1: str, arch2: str | None) -> None:
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["thresholds"] == report["thresholds"] and (run_dir / "config.yaml").is_file()
    cascade = load_cascade(run_dir / "cascade.pt", expected_arch=(arch1, arch2), expected_cutout_size=21)
    assert cascade.threshold1 == report["thresholds"]["stage1"] and cascade.stage2_arch == arch2
    confusion = report["test"]["cascade"]["confusion"]
    assert sum(map(sum, confusion)) == report["counts"]["test"]["candidates"]
    assert report["n_false_positives"] == confusion[0][1] and report["n_false_negatives"] == confusion[1][0]
    assert len(report["false_positives"]) == confusion[0][1]
    for item in report["false_positives"][:3] + report["false_negatives"][:3]:
        assert {"file", "image", "x", "y", "p1", "p2"} <= set(item) and item["file"] in report["split"]["test"]


@pytest.mark.parametrize("model", ["baseline", "vgg", "final", "rf"])
@pytest.mark.parametrize("stage", ["single", "first", "boost"])
def test_every_model_and_stage(model, stage, tiny_cache, tmp_path):
    report = _train(tmp_path, tiny_cache, f"model={model}", f"stage={stage}", *SMALL[model])
    _check_run(tmp_path / "run", report, arch1=model, arch2=model if stage == "boost" else None)
    assert load_cascade(tmp_path / "run" / "cascade.pt").postprocess == {"veto": None}  # veto=none, the seed's
    t1 = report["thresholds"]["stage1"]
    if stage == "single":
        assert t1 == 0.5
    if stage == "boost":
        s2 = report["counts"]["stage2_train"]
        assert 0 < s2["positives"] < s2["candidates"] <= report["counts"]["train"]["candidates"]
        assert report["thresholds"]["stage2"] == 0.5
        assert report["test"]["cascade"]["recall"] <= report["test"]["stage1"]["recall"]


def test_rf_boosted_by_cnn_with_wandb_disabled(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    report = _train(tmp_path, tiny_cache, "experiment=seed_rf_boost", "stage.second_model.widths=[4,4,8,8]", "stage.second_model.hidden=16", "logger=wandb", *SMALL["rf"])
    _check_run(tmp_path / "run", report, arch1="rf", arch2="final")


def test_final_boosted_by_resnet(tiny_cache, tmp_path):
    """A stronger stage 2 of another architecture: trained, saved and reloaded as the cascade's second stage."""
    from neocascade.training.artifact import load_cascade

    report = _train(tmp_path, tiny_cache, "model=final", "stage=boost", "+model@stage.second_model=resnet",
                    "stage.second_model.widths=[4,8]", "stage.second_model.blocks=1", *SMALL["final"])
    _check_run(tmp_path / "run", report, arch1="final", arch2="resnet")
    cascade = load_cascade(tmp_path / "run" / "cascade.pt", expected_arch=("final", "resnet"))
    assert cascade.stage2.hparams["widths"] == [4, 8]


def test_gated_single_stage_reaches_its_validation_precision(tiny_cache, tmp_path):
    """stage=gated: one CNN behind the peaks selector, threshold picked for a validation precision."""
    from neocascade.training.thresholds import threshold_for_precision

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from neocascade.training.artifact import FP32_FAST, load_cascade

    report = _train(tmp_path, tiny_cache, "model=baseline", "stage=gated", "stage.min_precision=0.6", "veto=streaks",
                    "veto.min_points=7", *SMALL["baseline"])
    _check_run(tmp_path / "run", report, arch1="baseline", arch2=None)
    assert report["stage"] == "gated" and report["thresholds"]["stage2"] is None
    veto = load_cascade(tmp_path / "run" / "cascade.pt").postprocess["veto"]  # detection applies it after the CNN
    assert veto["kind"] == "streaks" and veto["params"]["min_points"] == 7  # stored as a kind, never a _target_
    dm = instantiate(OmegaConf.create(report["config"]["data"]))
    stage = load_cascade(tmp_path / "run" / "cascade.pt").stage1
    batches = list(dm.predict_loader("val"))
    p = np.concatenate([stage.proba(x, options=FP32_FAST) for x, _, _ in batches])
    y = np.concatenate([y.numpy() for _, y, _ in batches]) == 1
    assert report["thresholds"]["stage1"] == pytest.approx(threshold_for_precision(p, y, target_precision=0.6), abs=1e-5)


def test_members_train_an_ensemble_whose_first_member_is_the_single_run(tiny_cache, tmp_path):
    """stage.members=2: two seeds trained one after the other, averaged; member 0 is the one-network run."""
    single = _train(tmp_path / "one", tiny_cache, "model=baseline", "stage=first", *SMALL["baseline"])
    report = _train(tmp_path / "two", tiny_cache, "model=baseline", "stage=first",
                    "stage.members=2", *SMALL["baseline"])
    _check_run(tmp_path / "two" / "run", report, arch1="ensemble", arch2=None)
    assert (tmp_path / "two/run/checkpoints/stage1").is_dir() and (tmp_path / "two/run/checkpoints/stage1-member1").is_dir()
    one = load_cascade(tmp_path / "one/run/cascade.pt").stage1.model
    ens = load_cascade(tmp_path / "two/run/cascade.pt").stage1.model
    first, second = ens.members
    for key, value in one.state_dict().items():
        torch.testing.assert_close(first.state_dict()[key], value, rtol=0, atol=0)
    assert any(not torch.equal(second.state_dict()[k], v) for k, v in one.state_dict().items())  # another seed
    assert report["thresholds"]["stage1"] != single["thresholds"]["stage1"]
    boosted = _train(tmp_path / "boost", tiny_cache, "model=baseline", "stage=boost", "stage.members=2",
                     f"stage.first_ckpt={tmp_path / 'two/run/cascade.pt'}", *SMALL["baseline"])
    assert boosted["architectures"] == {"stage1": "ensemble", "stage2": "ensemble"}
    assert boosted["thresholds"]["stage1"] == report["thresholds"]["stage1"]  # the same stage 1, reused
    with pytest.raises(InputError, match=r"cascade.pt: stage 1 was trained as 'ensemble' \(expected 'final', got baseline\)"):
        _train(tmp_path / "other", tiny_cache, "model=final", "stage=boost", f"stage.first_ckpt={tmp_path / 'two/run/cascade.pt'}")


@pytest.mark.parametrize("overrides, message", [
    (["stage.members=0"], "error: stage.members: must be a positive integer (got 0)\n"),
    (["model=rf", "stage.members=2"], "error: stage.members: averages CNNs; a random forest is an ensemble already (got 2)\n"),
])
def test_bad_members_are_one_line(overrides, message, tmp_path, capsys, monkeypatch):
    cfg = _compose(*FAST, "stage=first", *overrides, f"paths.outputs={tmp_path}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run(cfg)
    assert exit_info.value.code == 2 and capsys.readouterr().err == message


def test_boost_reuses_a_stage1_artifact(tiny_cache, tmp_path):
    first = _train(tmp_path / "a", tiny_cache, "model=baseline", "stage=first", *SMALL["baseline"])
    report = _train(tmp_path / "b", tiny_cache, "model=baseline", "stage=boost", f"stage.first_ckpt={tmp_path / 'a/run/cascade.pt'}", *SMALL["baseline"])
    assert report["thresholds"]["stage1"] == first["thresholds"]["stage1"]  # same model, same validation file
    assert not (tmp_path / "b/run/checkpoints/stage1").exists()


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    cfg = _compose(*FAST, "stage=first", "stage.min_recall=1.5", f"paths.outputs={tmp_path}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run(cfg)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: stage.min_recall: must lie in (0, 1] (got 1.5)\n"


@pytest.mark.slow
def test_resume_after_kill_keeps_finished_epochs(tiny_cache, tmp_path):
    killed = tmp_path / "killed"
    args = [*FAST, "model=baseline", *SMALL["baseline"], "stage=single", "trainer.max_epochs=3", f"paths.cache={tiny_cache}", f"paths.outputs={tmp_path}"]
    kill = ["+callbacks.kill._target_=neocascade.training.callbacks.KillAfter", "+callbacks.kill.epoch=1", "+callbacks.kill.batches=1"]
    proc = _cli(*args, *kill, f"hydra.run.dir={killed}")
    assert proc.returncode == -9, proc.stderr[-3000:]
    last = killed / "checkpoints/stage1/last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0 and not (killed / "metrics.json").exists()
    steps_per_epoch = saved["global_step"]
    cfg = _compose(*args, f"ckpt_path={last}")
    train(cfg, run_dir=tmp_path / "resumed")
    final = torch.load(last, weights_only=True)  # the resumed stage keeps its checkpoint folder
    assert final["global_step"] == 3 * steps_per_epoch  # three full epochs of steps, none repeated
    with open(tmp_path / "resumed/csv/train/metrics.csv") as fh:
        epochs = {int(float(row["epoch"])) for row in csv.DictReader(fh) if row.get("epoch")}
    assert epochs == {1, 2}  # epoch 0 came from the checkpoint, nothing was redone or lost


@pytest.mark.slow
def test_multirun_writes_summary(tiny_cache, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _cli("-m", *FAST, "model=baseline", *SMALL["baseline"], "stage=single", "data.sigma=0.5,1", f"paths.cache={tiny_cache}",
                f"paths.outputs={tmp_path}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(row["data.sigma"] for row in rows) == ["0.5", "1"]
    f1 = [float(row["test/cascade_f1"] or "nan") for row in rows]
    assert f1 == sorted(f1, reverse=True)
    assert (sweep / "summary.md").read_text().startswith("| job | ")
    for row in rows:
        assert row["dir"].startswith(f"{row['job']}_") and "data.sigma=" in row["dir"]
        assert (sweep / row["dir"] / "metrics.json").is_file()


@pytest.mark.slow
def test_ddp_two_cpu_processes(tiny_cache, tmp_path):
    run_dir = tmp_path / "ddp"
    proc = _cli(*FAST, "model=baseline", *SMALL["baseline"], "stage=boost", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                f"paths.cache={tiny_cache}", f"paths.outputs={tmp_path}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["counts"]["stage2_train"]["candidates"] > 0
    assert load_cascade(run_dir / "cascade.pt").stage2_arch == "baseline"
