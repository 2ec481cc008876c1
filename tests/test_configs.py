"""Every file of every config group composes with conf/train.yaml, and its objects build."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from neocascade.pipelines.train import _check_stage
from neocascade.utils.instantiate import instantiate_callbacks, instantiate_filled, wandb_mode_from_env

CONF = Path(__file__).resolve().parents[1] / "conf"
TRAIN_GROUPS = ("data", "selector", "model", "optimizer", "stage", "trainer", "logger", "callbacks", "experiment")


def _options(group: str) -> list[str]:
    paths = [p for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_")]
    if group == "data":  # training presets build on _base or paper; others (ztf_alerts) feed detect.py and evaluate.py
        paths = [p for p in paths if "- _base" in p.read_text() or "- paper" in p.read_text()]
    return sorted(p.stem for p in paths)


def _compose(*overrides: str, hydra: bool = False, tmp: Path | None = None):
    base = ["data=tiny", f"paths.outputs={tmp or 'outputs'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*base, *overrides], return_hydra_config=hydra)


@pytest.mark.parametrize("group,option", [(g, o) for g in TRAIN_GROUPS for o in _options(g)])
def test_every_option_composes_and_resolves(group, option, tmp_path):
    overrides = [f"{group}={option}"] if group != "data" else [f"data={option}"]
    cfg = _compose(*overrides, tmp=tmp_path)
    assert OmegaConf.to_yaml(cfg, resolve=True)
    _check_stage(cfg.stage)


@pytest.mark.parametrize("option", _options("data"))
def test_data_modules_build(option, tmp_path):
    cfg = _compose(f"data={option}", tmp=tmp_path)
    dm = instantiate(cfg.data)
    assert dm.in_channels == len(cfg.data.channels)
    assert dm.input_spec["cutout_size"] == cfg.data.cutout_size


@pytest.mark.parametrize("option", _options("selector"))
def test_selectors_build(option, tmp_path):
    cfg = _compose(f"selector={option}", tmp=tmp_path)
    assert callable(instantiate(cfg.data.selector))


@pytest.mark.parametrize("option", _options("model"))
def test_models_and_optimizer_build(option, tmp_path):
    cfg = _compose(f"model={option}", tmp=tmp_path)
    model = instantiate(cfg.model, in_channels=1, cutout_size=21)
    assert model.arch in ("baseline", "vgg", "final", "resnet", "rf") and model.hparams()["cutout_size"] == 21
    if hasattr(model, "parameters"):
        optimizer = instantiate(cfg.optimizer)(model.parameters())
        assert optimizer.defaults["lr"] == cfg.optimizer.lr
        classifier = instantiate(cfg.classifier)(model, instantiate(cfg.optimizer))
        assert classifier.hparams["arch"] == model.arch


@pytest.mark.parametrize("option", _options("trainer"))
def test_trainers_build_on_cpu(option, tmp_path, monkeypatch):
    for key, value in {"SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4"}.items():
        monkeypatch.setenv(key, value)  # trainer=slurm reads its rank from SLURM's variables
    cfg = _compose(f"trainer={option}", "trainer.accelerator=cpu", tmp=tmp_path)
    trainer = instantiate_filled(cfg.trainer, fill={"default_root_dir": str(tmp_path)}, logger=False, callbacks=[])
    assert trainer.max_epochs == cfg.trainer.max_epochs and trainer.default_root_dir == str(tmp_path)


@pytest.mark.parametrize("option", _options("logger"))
def test_loggers_build_offline(option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = _compose(f"logger={option}", tmp=tmp_path)
    logger = instantiate_filled(wandb_mode_from_env(cfg.logger), fill={"save_dir": str(tmp_path), "name": "run", "version": "v"})
    assert Path(logger.save_dir) == tmp_path


def test_wandb_mode_env_wins(monkeypatch, tmp_path):
    cfg = _compose("logger=wandb", "logger.offline=false", tmp=tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode_from_env(cfg.logger).offline is True
    monkeypatch.setenv("WANDB_MODE", "disabled")
    node = wandb_mode_from_env(cfg.logger)
    assert node.offline is False and node.mode == "disabled"


def test_callbacks_build_and_disable(tmp_path):
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    cfg = _compose(tmp=tmp_path)
    built = instantiate_callbacks(cfg.callbacks, fill={"dirpath": str(tmp_path)})
    assert [type(c) for c in built] == [ModelCheckpoint]
    assert built[0].monitor == "val/ap" and built[0].save_last and Path(built[0].dirpath) == tmp_path.resolve()
    cfg = _compose("callbacks.early_stopping.enabled=true", "callbacks.checkpoint.monitor=val/f1", tmp=tmp_path)
    built = instantiate_callbacks(cfg.callbacks, fill={"dirpath": str(tmp_path)})
    assert isinstance(built[1], EarlyStopping) and built[1].monitor == "val/f1"


@pytest.mark.parametrize(
    "experiment,arch1,stage,arch2",
    [
        ("seed_baseline", "BaselineNet", "single", None),
        ("seed_vgg", "AlteredVGG16", "boost", None),
        ("seed_rf_boost", "RandomForestStage", "boost", "FinalNet"),
        ("seed_final_cascade", "FinalNet", "boost", None),
        ("neocascade", "ResidualNet", "gated", None),
    ],
)
def test_experiments(experiment, arch1, stage, arch2, tmp_path):
    assert experiment in _options("experiment")
    cfg = _compose(f"experiment={experiment}", tmp=tmp_path)
    assert cfg.model._target_.endswith(arch1) and cfg.stage.name == stage
    second = cfg.stage.get("second_model")
    assert (second is None and arch2 is None) or second._target_.endswith(arch2)


def test_defaults_and_hydra_folders(tmp_path):
    cfg = _compose(hydra=True, tmp=tmp_path)
    assert (cfg.model._target_, cfg.stage.name, cfg.trainer.accelerator, cfg.seed) == (
        "neocascade.models.final.FinalNet", "boost", "cpu", 2021)
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["subdir"] == "${hydra.job.num}_${hydra.job.override_dirname}"
    assert cfg.hydra.callbacks.sweep_summary._target_ == "neocascade.utils.sweep.SweepSummary"
    assert _compose(tmp=tmp_path).data.name == "tiny"


@pytest.mark.parametrize("launcher,target", [("joblib", "Joblib"), ("local", "Joblib"), ("submitit_slurm", "Slurm"), ("slurm", "Slurm")])
def test_launchers_compose(launcher, target, tmp_path):
    cfg = _compose(f"hydra/launcher={launcher}", hydra=True, tmp=tmp_path)
    assert target in cfg.hydra.launcher._target_


def test_stage_check_refuses_both_thresholds(tmp_path):
    from neocascade.errors import InputError

    cfg = _compose("stage=first", "stage.threshold=0.3", tmp=tmp_path)
    with pytest.raises(InputError, match="stage.threshold / stage.min_recall / stage.min_precision: set exactly one"):
        _check_stage(cfg.stage)
    with pytest.raises(InputError, match="set exactly one"):
        _check_stage(_compose("stage=gated", "stage.min_recall=0.9", tmp=tmp_path).stage)
    with pytest.raises(InputError, match="stage.min_precision: must lie in"):
        _check_stage(_compose("stage=gated", "stage.min_precision=1.5", tmp=tmp_path).stage)
    with pytest.raises(InputError, match="stage.min_precision: is for one-stage runs"):
        _check_stage(_compose("stage=boost", "stage.min_recall=null", "stage.min_precision=0.9", tmp=tmp_path).stage)


@pytest.mark.parametrize("kernel", [30, 70])
def test_kernel_sweep_tiles_the_image(kernel, tmp_path):
    """`-m data.kernel=30,50,70` moves the stride with the kernel unless data.stride is given."""
    selector = instantiate(_compose(f"data.kernel={kernel}", tmp=tmp_path).data.selector)
    assert (selector.kernel, selector.stride) == (kernel, kernel)
    selector = instantiate(_compose(f"data.kernel={kernel}", "data.stride=10", tmp=tmp_path).data.selector)
    assert (selector.kernel, selector.stride) == (kernel, 10)


def test_shifted_preset_is_paper_with_another_sky(tmp_path):
    """The transfer preset keeps paper's layout and asteroids but changes PSF, noise and artifacts."""
    from neocascade.preprocess.noise import robust_noise
    from neocascade.simulation import SimConfig, simulate_image

    paper = _compose("data=paper", tmp=tmp_path).data
    shifted = _compose("data=shifted", tmp=tmp_path).data
    assert shifted.name == "shifted" and shifted.source.seed != paper.source.seed
    for key in ("n_files", "images_per_file", "shape", "n_asteroids"):
        assert shifted.source[key] == paper.source[key]
    assert shifted.split == paper.split and shifted.source.sim.transient_rate == paper.source.sim.transient_rate
    sims = [SimConfig(**OmegaConf.to_container(d.source.sim), shape=(512, 512)) for d in (paper, shifted)]
    assert sims[1].moffat_beta_range[1] < sims[0].moffat_beta_range[0]  # another profile, not only a width
    assert (sims[0].magnitude_mean, sims[0].magnitude_range) == (sims[1].magnitude_mean, sims[1].magnitude_range)
    noise = [robust_noise(simulate_image(sim, seed=3, file_index=0, image_index=0)[0]) for sim in sims]
    assert noise[1] > 1.1 * noise[0]


def test_every_ablation_step_composes_and_builds(tmp_path):
    """The ablation's train.py overrides are valid configs whose data modules and models build."""
    from neocascade.pipelines.ablation import load_config, plan

    for step in plan(load_config([]), python="PY"):
        argv = [a for a in step.commands[0].argv[2:] if not a.startswith(("hydra.", "data=", "data.source."))]
        cfg = _compose(*argv, "data=tiny", tmp=tmp_path)
        _check_stage(cfg.stage)
        dm = instantiate(cfg.data)
        second = cfg.stage.get("second_model") or cfg.model
        instantiate(second, in_channels=dm.in_channels, cutout_size=dm.cutout_size)


@pytest.mark.parametrize("config,group", [("detect", "cluster"), ("detect", "trails"), ("link", "link"),
                                          ("train", "sky")])
def test_every_option_of_the_newer_groups_composes(config, group, tmp_path):
    """cluster, trails, link and sky: every file composes with its entry point, and what it names builds."""
    from hydra.utils import instantiate

    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        overrides = [f"{group}={option}", f"paths.outputs={tmp_path}"]
        if config == "link":
            overrides.append("input=x")
        if config == "train":
            overrides.append("data=tiny")
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config, overrides=overrides)
        node = cfg[group] if group != "sky" else cfg.data.source.sim.get("sky")
        if group in ("trails", "link") and node.get("_target_"):
            built = instantiate(node)
            assert type(built).__name__ in ("TrailDetector", "Linker")
        elif group == "cluster":
            assert str(node._target_).startswith("neocascade.pipelines.cluster.")
        elif group == "sky" and option == "randomized":
            assert "psf" in node.axes


@pytest.mark.parametrize("preset", ["night", "night_val", "night_tiny", "long_trails", "long_trails_dev",
                                    "held_crowded", "held_seeing", "held_wings", "held_bright"])
def test_newer_data_presets_compose_for_simulation(preset, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("simulate", overrides=[f"data={preset}", f"paths.outputs={tmp_path}"])
    assert cfg.data.name == preset and cfg.data.source.seed not in (7, 2021)
