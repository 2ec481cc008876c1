"""`make paper`: config and plan, a real resumable tiny run, and the results rendering from fake step outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException

from neocascade.errors import InputError
from neocascade.pipelines import paper as P

TINY = ["data=tiny", "images_per_file=2", "epochs=1", "val_negatives=200", "study.tsne_n=0"]


def _tiny_cfg(root: Path, *, steps: list[dict] | None = None, extra: tuple[str, ...] = ()):
    cfg = P.load_config([*TINY, f"out_dir={root / 'out'}", f"cache_dir={root / 'cache'}",
                         f"results={root / 'docs' / 'results.md'}", f"figures_dir={root / 'docs' / 'figures'}", *extra])
    if steps is not None:
        cfg.steps = steps
    cfg.notes = ""
    return cfg


# ---------------------------------------------------------------------------------------------- config, plan
def test_reduced_override_and_unknown_key(tmp_path):
    cfg = P.load_config(["reduced=true"])
    assert P.images_per_file(cfg) == cfg.reduced_images_per_file == 10
    assert P.images_per_file(P.load_config([])) == 100
    assert "data.source.images_per_file=10" in P.data_overrides(cfg)
    with pytest.raises(InputError, match="paper.yaml: no_such_key: no such key"):
        P.load_config(["no_such_key=1"])
    with pytest.raises(InputError, match="expected key=value"):
        P.load_config(["reduced"])
    with pytest.raises(InputError, match="images_per_file: must be a positive integer"):
        P.load_config(["images_per_file=0"])


def test_plan_is_the_commands_a_user_types(tmp_path):
    cfg = P.load_config(["reduced=true", f"out_dir={tmp_path}"])
    steps = {s.name: s for s in P.plan(cfg, python="PY")}
    assert list(steps)[:2] == ["cache", "study"]
    train, ev = steps["final"].commands
    assert train.argv[:3] == ["PY", "train.py", "experiment=seed_final_cascade"]
    assert f"hydra.run.dir={tmp_path / 'final'}" in train.argv
    assert "data.val_negatives=5000" in train.argv and "data.source.images_per_file=10" in train.argv
    assert train.done == tmp_path / "final" / "cascade.pt"
    assert ev.argv[1] == "evaluate.py" and f"artifact={tmp_path / 'final' / 'cascade.pt'}" in ev.argv
    assert ev.done == tmp_path / "final" / "eval" / "metrics.json"
    assert [c.label for c in steps["rf_single"].commands] == ["train"]  # evaluate: false
    assert steps["cache"].commands[0].argv[1:4] == ["-m", "neocascade.pipelines.paper", "cache"]


def test_skip_leaves_steps_out(tmp_path):
    names = [s.name for s in P.plan(P.load_config(["skip=[vgg,rf_single]"]), python="PY")]
    assert "vgg" not in names and "rf_single" not in names and "final" in names
    with pytest.raises(InputError, match="skip: names no step"):
        P.load_config(["skip=[nope]"])


def test_resume_args_prefers_stage2(tmp_path):
    assert P.resume_args(tmp_path) == []
    for stage in ("stage1", "stage2"):
        (tmp_path / "checkpoints" / stage).mkdir(parents=True)
        (tmp_path / "checkpoints" / stage / "last.ckpt").write_bytes(b"x")
    assert P.resume_args(tmp_path) == [f"ckpt_path={tmp_path / 'checkpoints' / 'stage2' / 'last.ckpt'}"]


def test_run_plan_stops_a_step_after_a_failure_and_records_it(tmp_path):
    a, b = tmp_path / "a.done", tmp_path / "b.done"
    steps = [P.Step("s", "train", [P.Command("train", ["py", "x"], a, tmp_path / "l"),
                                   P.Command("evaluate", ["py", "y"], b, tmp_path / "l")]),
             P.Step("t", "train", [P.Command("train", ["py", "z"], tmp_path / "c.done", tmp_path / "l")])]
    calls = []

    def runner(cmd, argv):
        calls.append(argv[1])
        if argv[1] == "z":
            (tmp_path / "c.done").write_text("{}")
        return 1 if argv[1] == "x" else 0

    record = P.run_plan(steps, record_path=tmp_path / "steps.json", runner=runner, cwd=tmp_path)
    assert calls == ["x", "z"]
    assert record["s"]["train"]["status"] == "failed" and "evaluate" not in record["s"]
    assert record["t"]["train"]["status"] == "done"
    assert json.loads((tmp_path / "steps.json").read_text()) == record


# ---------------------------------------------------------------------------------------------- a real tiny run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """cache, then the baseline trained on data=tiny: real subprocesses, twice (evaluate.py has its own tests)."""
    root = tmp_path_factory.mktemp("paper")
    steps = [{"name": "cache", "kind": "cache"},
             {"name": "baseline", "kind": "train", "overrides": ["experiment=seed_baseline"], "evaluate": False}]
    cfg = _tiny_cfg(root, steps=steps)
    first = P.run_paper(cfg)
    second = P.run_paper(cfg)
    return root, cfg, first, second


def test_tiny_run_then_rerun_skips_every_finished_step(tiny_run):
    root, cfg, first, second = tiny_run
    statuses = {(s, c): r["status"] for s, e in first.items() for c, r in e.items()}
    assert statuses == {("cache", "cache"): "done", ("baseline", "train"): "done"}
    # the rerun ran nothing: every entry keeps the record of the run that made it, plus when it was skipped
    for step, entry in second.items():
        for label, rec in entry.items():
            assert rec["status"] == "done" and "last_skipped" in rec
            assert (rec["wall_s"], rec["finished"]) == (first[step][label]["wall_s"], first[step][label]["finished"])
    assert first["baseline"]["train"]["wall_s"] > 0
    text = (root / "docs" / "results.md").read_text()
    assert "| baseline/train | `python train.py experiment=seed_baseline data=tiny" in text
    assert "| baseline single CNN: precision | 0.849 | " in text and "(REDUCED" not in text


def test_val_negatives_caps_validation_to_a_fixed_draw(tmp_path):
    from hydra.utils import instantiate

    overrides = ["data=tiny", "data.source.images_per_file=1", f"paths.cache={tmp_path}", "data.val_negatives=25"]
    data = P._compose_train(overrides).data
    dm = instantiate(data)
    idx = dm.val_subsample()
    labels = dm.candidates("val").label
    assert np.array_equal(idx, np.sort(idx))
    assert int((labels[idx] == 0).sum()) == 25
    assert set(np.flatnonzero(labels == 1)) <= set(idx.tolist())
    assert np.array_equal(idx, instantiate(data).val_subsample())
    assert len(dm.val_dataloader().dataset) == idx.size
    keep = np.zeros(len(labels), dtype=bool)
    keep[:10] = True
    dm.restrict("val", keep)
    assert set(dm.val_subsample().tolist()) <= set(range(10))
    with pytest.raises(InstantiationException, match="data.val_negatives: must be null or an integer >= 0"):
        instantiate(data, val_negatives=-1)


# ---------------------------------------------------------------------------------------------- results rendering
def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _fake_outputs(out: Path, *, baseline_precision: float) -> None:
    _write(out / "cache" / "done.json", {"counts": {"train": {"files": [0, 1]}, "val": {"files": [9]},
                                                    "test": {"files": [7, 8], "candidates": 75000, "positives": 380}}})
    _write(out / "study" / "done.json", {"footprint": [{"kernel_px": 30, "fraction": 0.97, "candidates_per_image": 10404},
                                                       {"kernel_px": 50, "fraction": 0.951, "candidates_per_image": 3721}],
                                         "footprint_images": 20, "tsne_accuracy": 0.731})
    (out / "study" / "figures").mkdir(parents=True)
    (out / "study" / "figures" / "tsne.png").write_bytes(b"png")
    metrics = {"baseline": (baseline_precision, 0.95), "baseline_cascade": (0.96, 0.93), "vgg": (0.98, 0.94),
               "final": (0.97, 0.96), "rf_boost": (0.9, 0.9)}
    for name, (p, r) in metrics.items():
        _write(out / name / "metrics.json", {"metrics": {"test/cascade_precision": p - 0.5, "test/stage1_recall": 0.99},
                                             "thresholds": {"stage1": 0.25}, "architectures": {"stage1": "final", "stage2": "final"}})
        _write(out / name / "eval" / "metrics.json", {
            "config": {"eval": {"operating_point": "artifact"}},
            "metrics": {"test/cascade_precision": p, "test/cascade_recall": r, "test/cascade_f1": 2 * p * r / (p + r),
                        "test/cascade_precision@target": 0.99, "test/cascade_recall@target": 0.5},
            "end_to_end": {"artifact": {"completeness": 0.915, "false_per_quadrant": 1.25},
                           "target": {"completeness": 0.9, "false_per_quadrant": 0.5}},
            "m50": {"m50": 20.41, "m50_err": 0.05}, "operating_point": {"target_precision": 0.98}})
    (out / "final" / "eval" / "confusion_cascade.png").write_bytes(b"png")
    _write(out / "rf_single" / "metrics.json", {"metrics": {"test/cascade_f1": 0.412}})
    _write(out / "steps.json", {"baseline": {"train": {"status": "done", "wall_s": 61.0, "argv": ["python", "train.py", "x=1"]},
                                             "evaluate": {"status": "skipped", "wall_s": 30.0, "argv": ["python", "evaluate.py"]}}})


def test_results_render_side_by_side_reduced_with_figures(tmp_path):
    cfg = P.load_config(["reduced=true", f"out_dir={tmp_path / 'out'}", f"results={tmp_path / 'docs' / 'results.md'}",
                         f"figures_dir={tmp_path / 'docs' / 'figures'}"])
    cfg.notes = "hardened: none needed"
    _fake_outputs(tmp_path / "out", baseline_precision=0.85)
    path = P.write_results(cfg)
    text = path.read_text()
    assert text.startswith("# Results: the seed's experiments reproduced (REDUCED: 10 images per file)")
    assert "**REDUCED RUN**: 10 of 100 quadrants per file (100 quadrants in all" in text
    assert "| footprint (kernel 50): fraction of asteroids proposed | ≈ 0.95 | 0.951 |" in text
    assert "| baseline single CNN: precision | 0.849 | 0.850 |" in text
    assert "| final cascade: recall | 0.971 | 0.960 |" in text
    assert "| end-to-end recall (final cascade, asteroids found / injected) | ≈ 0.92 | 0.915 |" in text
    assert "| random forest F1 (alone, P >= 0.5) | ≈ 0.91 | 0.412 |" in text
    assert "| t-SNE + k-means accuracy | ≈ 0.75 | 0.731 |" in text
    assert "75000 (380 positive); the seed's: 360000 (1959 positive)" in text
    assert "| final | 0.915 | — | — | 1.25 | 20.41 ± 0.05 | 0.900 | 0.50 |" in text
    assert "| final | final → final | 0.2500 | 0.990 | 0.970 | 0.960 | 0.965 | 0.990 | 0.500 |" in text
    assert "| baseline/train | `python train.py x=1` | done | 61 |" in text
    assert "Total wall time of the steps: 91 s" in text
    assert "![final: confusion_cascade](figures/final-confusion_cascade.png)" in text
    assert "![study: tsne](figures/study-tsne.png)" in text
    assert (tmp_path / "docs" / "figures" / "study-tsne.png").read_bytes() == b"png"
    assert "within the calibration bounds" in text
    assert "## Calibration loop\n\nhardened: none needed" in text


def test_results_flag_a_too_easy_simulator(tmp_path):
    cfg = P.load_config([f"out_dir={tmp_path / 'out'}", "results=null"])
    cfg.notes = ""
    _fake_outputs(tmp_path / "out", baseline_precision=0.95)
    found = P.collect(cfg)
    assert P.calibration_flags(cfg, found) == ["baseline precision 0.950 > 0.93: the simulator is too easy (harden it)"]
    text = P.render_results(cfg, found)
    assert "REDUCED" not in text
    assert "| final | 0.915 | — | — | 1.25 | 20.41 ± 0.05 | 0.900 | 0.50 |" in text
    ev = json.loads((tmp_path / "out" / "final" / "eval" / "metrics.json").read_text())
    ev["operating_point"]["reached"] = False  # no stage-2 threshold reached the target precision
    (tmp_path / "out" / "final" / "eval" / "metrics.json").write_text(json.dumps(ev))
    text = P.render_results(cfg, P.collect(cfg))
    assert "| final | 0.915 | — | — | 1.25 | 20.41 ± 0.05 | — | — |" in text
    assert "| final | final → final | 0.2500 | 0.990 | 0.970 | 0.960 | 0.965 | — | — |" in text
    assert P.write_results(cfg) is None


def test_a_run_refuses_a_folder_made_with_other_settings(tmp_path):
    """A full run must not resume into a reduced run's folder and report its steps as full-scale."""
    out = tmp_path / "out"
    reduced = P.load_config(["reduced=true", f"out_dir={out}"])
    P.check_run_settings(reduced, out)
    P.check_run_settings(reduced, out)  # the same settings resume
    with pytest.raises(InputError, match=r"other data_overrides .*pass another out_dir="):
        P.check_run_settings(P.load_config([f"out_dir={out}"]), out)
    with pytest.raises(InputError, match="other epochs"):
        P.check_run_settings(P.load_config(["reduced=true", "epochs=7", f"out_dir={out}"]), out)
    legacy = tmp_path / "legacy"
    (legacy / "final").mkdir(parents=True)
    with pytest.raises(InputError, match="holds step folders but no run.json"):
        P.check_run_settings(reduced, legacy)
