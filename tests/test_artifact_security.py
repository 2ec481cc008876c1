"""An artifact is data: crafted selectors, vetoes, configs and checkpoints are refused with one line and no effect.

Every crafted artifact carries a payload that would create or truncate a marker file if anything read from it
were instantiated (the first test shows the payloads are live); the marker must never change.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neocascade.errors import InputError
from neocascade.models.baseline import BaselineNet
from neocascade.models.final import FinalNet
from neocascade.training import specs
from neocascade.training.artifact import (PACKAGED, REPOSITORY, check_resume, export_cascade, load_cascade,
                                          relative_paths, save_cascade, stage_record)

STREAKS = "neocascade.detection.streaks.StreakVeto"
PEAKS = "neocascade.candidates.peaks.PeakSelector"
SPEC = {"sigma": 1.0, "selector": {"kind": "footprint", "params": {"kernel": 16, "stride": 16}}, "cutout_size": 21,
        "channels": ["filtered"], "normalize": "none"}
MARKER_TEXT = "untouched\n"


class _Open:
    """Unpickling this opens ``path`` for writing: creates or truncates it (the attack the marker detects)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file whose content must survive, beside the path a payload would create (``<marker>.new``)."""
    path = tmp_path / "marker.txt"
    path.write_text(MARKER_TEXT)
    return path


def _untouched(marker: Path) -> bool:
    return marker.read_text() == MARKER_TEXT and not marker.with_suffix(".new").exists()


def crafted(marker: Path) -> dict[str, dict]:
    """Hostile selector / veto configs, by name; each would touch ``marker`` if instantiated."""
    new = str(marker.with_suffix(".new"))
    pickled = marker.parent / "payload.npy"
    if not pickled.exists():
        np.save(pickled, np.array([_Open(new)], dtype=object), allow_pickle=True)
    code = f"open({new!r}, 'w')"
    saved = io.BytesIO()
    torch.save(_Open(new), saved)  # a torch file whose unpickling opens the marker
    return {
        "torch.load": {"_target_": "torch.load", "weights_only": False,
                       "f": {"_target_": "io.BytesIO", "initial_bytes": saved.getvalue()}},
        "open_w": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
        "numpy.load": {"_target_": "numpy.load", "file": str(pickled), "allow_pickle": True},
        "os.system": {"_target_": "os.system", "command": f"touch {new}"},
        "exec": {"_target_": "builtins.exec", "_args_": [code]},
        "nested_target": {"_target_": STREAKS, "min_points": {"_target_": "builtins.exec", "_args_": [code]}},
        "args": {"_target_": STREAKS, "_args_": [6]},
        "partial": {"_target_": STREAKS, "_partial_": True},
        "recursive": {"_target_": STREAKS, "_recursive_": False},
        "unknown_key": {"_target_": STREAKS, "min_points": 6, "shell": "touch x"},
        "unknown_kind": {"kind": "os.system", "params": {"command": f"touch {new}"}},
        "kind_nested": {"kind": "streaks", "params": {"min_points": {"_target_": "builtins.exec", "_args_": [code]}}},
        "kind_target_param": {"kind": "streaks", "params": {"_target_": "builtins.exec"}},
        "kind_extra_key": {"kind": "streaks", "params": {}, "_target_": "builtins.exec"},
        "kind_string": {"kind": "streaks", "params": {"min_points": "6"}},
        "kind_inf": {"kind": "streaks", "params": {"tolerance": math.inf}},
    }


PAYLOADS = ("torch.load", "open_w", "numpy.load", "os.system", "exec", "nested_target", "args", "partial", "recursive",
            "unknown_key", "unknown_kind", "kind_nested", "kind_target_param", "kind_extra_key", "kind_string",
            "kind_inf")


def tiny_net(in_channels: int = 1) -> BaselineNet:
    torch.manual_seed(0)
    return BaselineNet(in_channels, 21, widths=(2, 2, 2), hidden=(4, 4)).eval()


def save_payload(path: Path, **changes) -> Path:
    """A valid one-stage artifact (plain ``torch.save``, as an attacker would write it) with ``changes`` applied."""
    record = stage_record(tiny_net(), 0.5)
    payload = {"format": "neocascade-cascade", "version": 1, "stage1": record, "stage2": None,
               "input_spec": json.loads(json.dumps(SPEC)), "config": {}, "metrics": {}, "postprocess": {"veto": None}}
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = payload
        for key in parents:
            node = node[key]
        node[last] = value
    torch.save(payload, path)
    return path


def test_the_payloads_are_live(marker):
    """Instantiated the way artifacts used to be, these payloads do touch the marker: the tests below can fail."""
    from hydra.utils import instantiate

    configs = crafted(marker)
    instantiate(configs["open_w"]).close()
    assert marker.read_text() == ""  # truncated
    marker.write_text(MARKER_TEXT)
    instantiate(configs["torch.load"]).close()  # the unpickled "object" is the opened file
    assert marker.with_suffix(".new").exists()
    marker.with_suffix(".new").unlink()
    instantiate(configs["numpy.load"])[0].close()
    assert marker.with_suffix(".new").exists()
    marker.with_suffix(".new").unlink()


@pytest.mark.parametrize("name", PAYLOADS)
@pytest.mark.parametrize("where", ["postprocess.veto", "input_spec.selector"])
def test_crafted_specs_are_refused_at_load_without_effect(tmp_path, marker, name, where):
    config = crafted(marker)[name]
    path = save_payload(tmp_path / "crafted.pt", **{where: config})
    torch.load(path, weights_only=True)  # loadable as data: the refusal below is the validation's
    with pytest.raises(InputError) as info:
        load_cascade(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: {where}")
    assert _untouched(marker)


@pytest.mark.parametrize("name", PAYLOADS)
def test_crafted_specs_are_refused_by_the_builders(marker, name):
    """Objects standing in for a cascade (built in memory, never loaded) go through the same fixed set."""
    from neocascade.detection import detector

    config = crafted(marker)[name]

    class Cascade:
        input_spec = {**SPEC, "selector": config}
        postprocess = {"veto": config}

    with pytest.raises(InputError, match=r"^cascade\.postprocess\.veto"):
        detector.cascade_veto(Cascade())
    with pytest.raises(InputError, match=r"^cascade\.input_spec\.selector"):
        detector.input_spec(Cascade())
    with pytest.raises(InputError, match="^veto"):
        specs.veto_spec(config, source="veto")
    assert _untouched(marker)


def test_refusal_messages_name_file_key_and_value(tmp_path, marker):
    configs = crafted(marker)
    cases = {
        "torch.load": r"postprocess.veto._target_: not one of the project's veto classes .*got 'torch.load'\)$",
        "args": r"postprocess.veto._args_: keys starting with '_' are not allowed",
        "nested_target": r"postprocess.veto.min_points: nested values are not allowed .*got dict\)$",
        "unknown_key": r"postprocess.veto.shell: unknown parameter of StreakVeto",
        "unknown_kind": r"postprocess.veto.kind: unknown veto \(expected \['streaks'\], got 'os.system'\)$",
        "kind_string": r"postprocess.veto.params.min_points: wrong type \(expected an integer, got '6'\)$",
        "kind_inf": r"postprocess.veto.params.tolerance: must be finite",
    }
    for name, pattern in cases.items():
        path = save_payload(tmp_path / f"{name}.pt", **{"postprocess.veto": configs[name]})
        with pytest.raises(InputError, match=f"^{path}: {pattern}"):
            load_cascade(path)
    peaks = {"kind": "peaks", "params": {"threshold": 5.0}}
    path = save_payload(tmp_path / "missing.pt", **{"input_spec.selector": peaks})
    with pytest.raises(InputError, match=r"input_spec.selector.params.min_distance: missing parameter of PeakSelector"):
        load_cascade(path)
    path = save_payload(tmp_path / "range.pt", **{"postprocess.veto": {"kind": "streaks", "params": {"min_points": 1}}})
    with pytest.raises(InputError, match=r"postprocess.veto: StreakVeto refuses its parameters"):
        load_cascade(path)
    assert _untouched(marker)


def test_old_artifacts_load_by_exact_class_path(tmp_path):
    """A ``_target_`` of the project's own classes (artifacts written before kinds) is translated, nothing else."""
    path = save_payload(tmp_path / "old.pt", **{
        "input_spec.selector": {"_target_": PEAKS, "threshold": 5.0, "min_distance": 5, "noise_box": 64},
        "postprocess.veto": {"_target_": STREAKS, "min_points": 7}})
    cascade = load_cascade(path)
    assert cascade.input_spec["selector"] == {"kind": "peaks", "params": {"threshold": 5.0, "min_distance": 5,
                                                                           "noise_box": 64}}
    assert cascade.postprocess["veto"] == {"kind": "streaks", "params": {"min_points": 7}}
    for near in (PEAKS + " ", "neocascade.candidates.PeakSelector", PEAKS.lower(), STREAKS + "Extra"):
        path = save_payload(tmp_path / "near.pt", **{"input_spec.selector": {"_target_": near, "threshold": 5.0,
                                                                              "min_distance": 5}})
        with pytest.raises(InputError, match="not one of the project's selector classes"):
            load_cascade(path)
    with pytest.raises(InputError, match=r"input_spec.selector._target_: not one of the project's selector classes"):
        load_cascade(save_payload(tmp_path / "swap.pt", **{"input_spec.selector": {"_target_": STREAKS}}))
    shipped = load_cascade(PACKAGED)  # the shipped cascade is such an old artifact
    assert shipped.input_spec["selector"]["kind"] == "peaks" and shipped.postprocess["veto"]["kind"] == "streaks"


def test_new_artifacts_store_kinds(tmp_path):
    """save_cascade writes ``{kind, params}`` whatever form it is given; an unknown class is refused before writing."""
    record = stage_record(tiny_net(), 0.5)
    legacy = {**SPEC, "selector": {"_target_": PEAKS, "threshold": 5.0, "min_distance": 5}}
    path = save_cascade(tmp_path / "cascade.pt", stage1=record, stage2=None, input_spec=legacy, config={}, metrics={},
                        postprocess={"veto": {"_target_": STREAKS, "min_points": 7}})
    raw = torch.load(path, weights_only=True)
    assert raw["input_spec"]["selector"] == {"kind": "peaks", "params": {"threshold": 5.0, "min_distance": 5}}
    assert raw["postprocess"]["veto"] == {"kind": "streaks", "params": {"min_points": 7}}
    with pytest.raises(InputError, match=r"^postprocess.veto._target_: not one of the project's veto classes"):
        save_cascade(tmp_path / "bad.pt", stage1=record, stage2=None, input_spec=SPEC, config={}, metrics={},
                     postprocess={"veto": {"_target_": "my.own.Veto"}})
    assert not (tmp_path / "bad.pt").exists()


# ------------------------------------------------------------------------------ item 4: parts that don't fit
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stage1.threshold": "0.5"}, r"stage 1 threshold: must be a number .*got '0.5'\)$"),
        ({"stage1.threshold": math.nan}, r"stage 1 threshold: must be a probability in \[0, 1\]"),
        ({"stage1.threshold": -math.inf}, r"stage 1 threshold: must be a probability"),
        ({"stage1.threshold": 1.5}, r"stage 1 threshold: must be a probability"),
        ({"stage1.threshold": True}, r"stage 1 threshold: must be a number"),
        ({"input_spec.cutout_size": 25},
         r"input_spec.cutout_size disagrees with the stage 1 network \(expected 21 px, got 25\)$"),
        ({"input_spec.channels": ["filtered", "raw"]}, r"input_spec.channels disagree with the stage 1 network "
                                                      r"\(expected 1 channel\(s\), got \['filtered', 'raw'\]\)$"),
        ({"input_spec.sigma": "1.0"}, r"input_spec.sigma: must be a finite number >= 0"),
        ({"input_spec.sigma": math.inf}, r"input_spec.sigma: must be a finite number >= 0"),
        ({"input_spec.channels": ["blue"]}, r"input_spec.channels: unknown channel 'blue'"),
        ({"input_spec.normalize": "zscore"}, r"input_spec.normalize: unknown normalisation"),
        ({"input_spec.noise_box": 0}, r"input_spec.noise_box: must be a positive integer"),
        ({"input_spec.label_mode": "${oc.env:HOME}"}, r"input_spec.label_mode: interpolations are not allowed"),
        ({"input_spec.selector": None}, r"input_spec.selector: no candidate selector stored"),
        ({"stage1.hparams": {"in_channels": 1, "cutout_size": 21, "_target_": "builtins.exec"}},
         r"stage 1 weights do not fit 'baseline'"),
        ({"postprocess": "rm -rf"}, r"postprocess: expected a mapping"),
    ],
)
def test_parts_that_do_not_fit_are_refused_at_load(tmp_path, changes, message):
    path = save_payload(tmp_path / "cascade.pt", **changes)
    with pytest.raises(InputError, match=f"^{path}: {message}"):
        load_cascade(path)


def test_infinite_threshold_means_accept_nothing(tmp_path):
    """``inf`` is what training stores when no threshold reaches its target: it loads and accepts nothing."""
    cascade = load_cascade(save_payload(tmp_path / "cascade.pt", **{"stage1.threshold": math.inf}))
    p1, p2 = cascade.score(np.random.default_rng(0).normal(size=(5, 1, 21, 21)).astype(np.float32))
    assert not cascade.accept(p1, p2).any()


def _checkpoint(path: Path, net: torch.nn.Module) -> Path:
    """A Lightning-style checkpoint of a CutoutClassifier around ``net`` (what ``ckpt_path=`` points at)."""
    from neocascade.training.classifier import CutoutClassifier

    module = CutoutClassifier(net, None)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": 0}, path)
    return path


def test_resume_checkpoint_of_another_model_is_one_line(tmp_path):
    from neocascade.training.classifier import CutoutClassifier

    configured = CutoutClassifier(FinalNet(1, 21, widths=[4, 4, 8, 8], hidden=16), None)
    check_resume(_checkpoint(tmp_path / "same.ckpt", FinalNet(1, 21, widths=[4, 4, 8, 8], hidden=16)), configured)
    other = _checkpoint(tmp_path / "other.ckpt", tiny_net())
    with pytest.raises(InputError, match=r"other.ckpt: trained as 'baseline', config asks 'final'$"):
        check_resume(other, configured)
    wider = _checkpoint(tmp_path / "wider.ckpt", FinalNet(1, 21, widths=[4, 4, 8, 8], hidden=32))
    with pytest.raises(InputError, match=r"wider.ckpt: trained as another 'final' \(expected model .*'hidden': 16"):
        check_resume(wider, configured)
    ckpt = torch.load(tmp_path / "same.ckpt", weights_only=True)
    name = [k for k in ckpt["state_dict"] if k.endswith("bias")][-1]
    ckpt["state_dict"][name] = torch.zeros(3)
    torch.save(ckpt, tmp_path / "shapes.ckpt")
    with pytest.raises(InputError, match=rf"shapes.ckpt: weights do not fit the configured model \({name}\) "
                                         r"\(expected \(2,\), got \(3,\)\)$"):
        check_resume(tmp_path / "shapes.ckpt", configured)


# ------------------------------------------------------------------------------ the real entry points
REPO = Path(__file__).resolve().parents[1]


def _cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def _one_line_exit_2(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


@pytest.mark.parametrize(("name", "where"), [("torch.load", "postprocess.veto"), ("open_w", "input_spec.selector")])
def test_detect_py_refuses_crafted_artifacts(tmp_path, marker, name, where):
    from neocascade.io.npz import write_canonical

    data = write_canonical(tmp_path / "images_0.npz", np.zeros((1, 64, 64), np.float32), np.empty((0, 6)),
                           {"source": "t"})
    path = save_payload(tmp_path / "crafted.pt", **{where: crafted(marker)[name]})
    out = tmp_path / "out"
    result = _cli("detect.py", f"input={data}", f"artifact={path}", f"out={out}", f"paths.outputs={tmp_path / 'o'}",
                  "progress=false", cwd=tmp_path)
    _one_line_exit_2(result, "crafted.pt", where)
    assert _untouched(marker) and not (out / "catalogue.csv").exists()


def test_evaluate_py_refuses_a_crafted_artifact(tmp_path, marker):
    path = save_payload(tmp_path / "crafted.pt", **{"postprocess.veto": crafted(marker)["numpy.load"]})
    result = _cli("evaluate.py", f"artifact={path}", f"paths.outputs={tmp_path / 'o'}", cwd=tmp_path)
    _one_line_exit_2(result, "crafted.pt: postprocess.veto._target_", "numpy.load")
    assert _untouched(marker)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": "MARKER_SOURCE"}, "config.data.source._target_: not one of the project's data classes"),
        ({"source": {"_target_": "neocascade.data.sources.ChallengeSource", "directory": ".", "allow_pickle": True}},
         "config.data.source.allow_pickle: a stored config may not unpickle files"),
        ({"source": {"_target_": "neocascade.data.sources.NpzSource", "_args_": ["x"]}},
         "config.data.source._args_: keys starting with '_' are not allowed"),
        ({"name": "${oc.env:HOME}"}, "config.data.name: interpolations are not allowed"),
    ],
)
def test_evaluate_refuses_a_crafted_training_config(tmp_path, marker, data, message):
    """``evaluate.py`` builds the data from the artifact's stored config: only the project's data classes."""
    from hydra import compose, initialize_config_dir

    from neocascade.pipelines.evaluate import evaluate

    if data.get("source") == "MARKER_SOURCE":
        data = {"source": crafted(marker)["open_w"]}
    config = {"data": {"_target_": "neocascade.data.datamodule.CutoutDataModule", **data}}
    path = save_payload(tmp_path / "crafted.pt", config=config)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"artifact={path}", f"paths.outputs={tmp_path / 'o'}"])
    with pytest.raises(InputError, match=f"^{path}: {message}"):
        evaluate(cfg, run_dir=tmp_path / "run")
    assert _untouched(marker)


def test_a_real_training_data_config_passes_the_check():
    """What train.py stores under ``config.data`` (selector included) is accepted, with class paths from the fixed set."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    for selector in ("footprint", "grid", "peaks"):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["data=tiny", f"selector={selector}"])
        data = OmegaConf.to_container(cfg.data, resolve=True)
        checked = specs.check_data_config(data, source="cascade.pt: config.data")
        assert checked == data
    with pytest.raises(InputError, match=r"^c.pt: config.data.selector._target_: not one of the project's selector"):
        specs.check_data_config({**data, "selector": {"_target_": "os.system"}}, source="c.pt: config.data")


def test_train_py_refuses_a_checkpoint_of_another_architecture(tmp_path):
    """``ckpt_path=`` of a baseline while the config asks for final: one line naming the checkpoint, exit 2."""
    ckpt = _checkpoint(tmp_path / "baseline.ckpt", tiny_net())
    result = _cli("train.py", "data=tiny", "logger=csv", "trainer.max_epochs=1", "data.n_jobs=1", "model=final",
                  "model.widths=[4,4,8,8]", "model.hidden=16", f"ckpt_path={ckpt}", f"paths.outputs={tmp_path / 'o'}",
                  f"paths.cache={tmp_path / 'cache'}", cwd=tmp_path)
    _one_line_exit_2(result, "baseline.ckpt: trained as 'baseline', config asks 'final'")


# ------------------------------------------------------------------------------ item 10: no machine paths
def _strings(obj, found: list[str]) -> list[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _strings(key, found)
            _strings(value, found)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _strings(value, found)
    elif isinstance(obj, str):
        found.append(obj)
    return found


def _machine_paths(strings: list[str]) -> list[str]:
    return [s for s in strings if os.path.isabs(s) or os.path.isabs(s.partition("=")[2]) or str(REPOSITORY) in s]


def test_the_shipped_cascade_names_no_machine_path():
    info = json.loads(PACKAGED.with_suffix(".json").read_text())
    payload = torch.load(PACKAGED, map_location="cpu", weights_only=True)
    plain = {k: v for k, v in payload.items() if k not in ("stage1", "stage2")}
    assert _machine_paths(_strings(info, [])) == [] and _machine_paths(_strings(plain, [])) == []
    assert info["source"] == "outputs/transfer_m3/randomized/cascade.pt"  # relative to the repository, with its hash
    assert len(info["source_sha256"]) == 64
    assert info["sha256"] == hashlib.sha256(PACKAGED.read_bytes()).hexdigest()
    assert {k: v for k, v in info.items() if k != "sha256"} == payload["provenance"]


def test_export_stores_paths_relative_to_the_repository(tmp_path):
    record = stage_record(tiny_net(), 0.5)
    inside, outside = REPOSITORY / "outputs" / "run", tmp_path / "elsewhere" / "best.ckpt"
    src = save_cascade(tmp_path / "cascade.pt", stage1=record, stage2=None, input_spec=SPEC,
                       config={"paths": {"cache": str(inside / "cache")}, "overrides": [f"paths.cache={outside}"]},
                       metrics={"run_dir": str(inside), "stage1_checkpoint": str(outside), "n": 3})
    dst = export_cascade(src, tmp_path / "ship.pt", provenance={"source": str(inside / "cascade.pt")},
                         relative_to=REPOSITORY)
    cascade = load_cascade(dst)
    assert cascade.metrics == {"run_dir": "outputs/run", "stage1_checkpoint": "best.ckpt", "n": 3}
    assert cascade.config == {"paths": {"cache": "outputs/run/cache"}, "overrides": ["paths.cache=best.ckpt"]}
    assert cascade.provenance == {"source": "outputs/run/cascade.pt"}
    assert relative_paths(["a=b", "rel/x", 1.5, None], REPOSITORY) == ["a=b", "rel/x", 1.5, None]
