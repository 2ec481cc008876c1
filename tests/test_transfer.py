"""make transfer: the plan, resuming, refusing a folder of other settings, SNR50 and the table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neocascade.errors import InputError
from neocascade.evaluation.completeness import fit_snr50
from neocascade.pipelines import runner as R
from neocascade.pipelines import transfer as T


def _cfg(tmp_path: Path, *overrides: str):
    cfg = T.load_config([f"out_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
                         f"results={tmp_path / 'results.md'}", "reduced=true", "reduced_images_per_file=2", *overrides])
    cfg.data_overrides = ["data.source.shape=[128,128]", "data.kernel=16"]
    return cfg


def test_plan_trains_each_family_and_measures_every_sky_at_the_stored_threshold(tmp_path):
    cfg = _cfg(tmp_path)
    steps = {s.name: s for s in T.plan(cfg, python="py")}
    skies = ["randomized", "paper", "shifted", "held_crowded", "held_seeing", "held_wings", "held_bright"]
    assert list(steps) == [f"snr_{s}" for s in skies] + ["randomized", "paper"]
    randomized = steps["randomized"]
    train = randomized.commands[0].argv
    assert train[:4] == ["py", "train.py", "experiment=neocascade", "data=paper"] and "sky=randomized" in train
    assert "sky=randomized" not in steps["paper"].commands[0].argv
    assert train[-1] == "stage.members=3" and "stage.members=3" not in steps["paper"].commands[0].argv
    assert not any("stage.members" in a for c in randomized.commands[1:] for a in c.argv)  # train only
    assert "data.source.images_per_file=2" in train and "data.source.shape=[128,128]" in train
    assert "stage.min_precision=0.98" in train
    labels = [c.label for c in randomized.commands]
    assert labels == ["train", *(f"evaluate_{s}" for s in skies), *(f"evaluate_{s}_stars" for s in skies),
                      *(f"speed_{s}" for s in skies)]
    for cmd in randomized.commands[1:15]:  # thresholds come from the artifact: nothing is tuned on a test sky
        assert "eval.operating_point=artifact" in cmd.argv and cmd.done.name == "metrics.json"
    held = next(c for c in randomized.commands if c.label == "evaluate_held_wings").argv
    assert "data=held_wings" in held and "sky=randomized" not in held
    # the second evaluation of each sky adds the reference-catalogue check, into its own folder
    ref = next(c for c in randomized.commands if c.label == "evaluate_shifted_stars").argv
    assert ref[-1] == "reference_check=stars" and any(a.endswith("eval_shifted_stars") for a in ref)
    assert held[-1] == "reference_check=none"  # the first evaluation: without it, whatever evaluate.py's default
    assert [c.label for c in T.plan(_cfg(tmp_path, "reference_check=none"))[-1].commands].count("evaluate_paper") == 1
    assert not any("_stars" in c.label for c in T.plan(_cfg(tmp_path, "reference_check=none"))[-1].commands)
    own = next(c for c in randomized.commands if c.label == "evaluate_randomized").argv
    assert "data=paper" in own and "sky=randomized" in own
    assert steps["snr_held_bright"].commands[0].argv[:5] == ["py", "-m", "neocascade.pipelines.transfer", "snr",
                                                             "data=held_bright"]


def test_bad_options_are_one_line(tmp_path):
    with pytest.raises(InputError, match="skip: names no step"):
        _cfg(tmp_path, "skip=[nothing]")
    with pytest.raises(InputError, match="target_precision"):
        _cfg(tmp_path, "target_precision=0")
    with pytest.raises(InputError, match="family_train_overrides.nosuch: names no training family"):
        _cfg(tmp_path, "family_train_overrides={nosuch:[stage.members=2]}")
    with pytest.raises(InputError, match="reference_check: names no conf/reference_check option"):
        _cfg(tmp_path, "reference_check=ring")
    with pytest.raises(InputError, match="no such key"):
        _cfg(tmp_path, "held=[x]")
    assert [s.name for s in T.plan(_cfg(tmp_path, "skip=[paper,snr_shifted]"))][-1] == "randomized"


def _fake(cwd: Path, calls: list[str]):
    """A runner that makes each command's output file instead of running it."""
    def run(cmd: R.Command, argv: list[str]) -> int:
        calls.append(cmd.label)
        done = cwd / cmd.done
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("{}")
        return 0
    return run


def test_a_rerun_resumes_and_runs_only_what_is_missing(tmp_path):
    cfg = _cfg(tmp_path, "held_out=[held_bright]")
    del cfg.families["paper"]
    steps = T.plan(cfg)
    calls: list[str] = []
    record = R.run_plan(steps, record_path=tmp_path / "out" / R.STEPS_FILE, runner=_fake(tmp_path, calls), cwd=tmp_path)
    assert len(calls) == 2 + 1 + 2 + 2 + 2 and record["randomized"]["train"]["status"] == "done"
    (tmp_path / steps[-1].commands[2].done).unlink()  # one evaluation lost: only it runs again
    again: list[str] = []
    record = R.run_plan(steps, record_path=tmp_path / "out" / R.STEPS_FILE, runner=_fake(tmp_path, again), cwd=tmp_path)
    assert again == [steps[-1].commands[2].label]
    assert record["randomized"]["train"]["status"] == "done" and "last_skipped" in record["randomized"]["train"]


def test_a_folder_made_with_other_settings_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    out = Path(cfg.out_dir)
    R.check_run_settings(cfg, out, settings=T.run_settings(cfg), step_names=cfg.step_names)
    assert json.loads((out / R.RUN_FILE).read_text())["images_per_file"] == 2
    R.check_run_settings(cfg, out, settings=T.run_settings(cfg), step_names=cfg.step_names)  # same settings: fine
    full = _cfg(tmp_path, "reduced=false")
    with pytest.raises(InputError, match="holds steps of a run with other images_per_file"):
        R.check_run_settings(full, out, settings=T.run_settings(full), step_names=full.step_names)
    fresh = tmp_path / "unrecorded"
    (fresh / "randomized").mkdir(parents=True)
    with pytest.raises(InputError, match="no run.json"):
        R.check_run_settings(cfg, fresh, settings=T.run_settings(cfg), step_names=cfg.step_names)


def test_fit_snr50_recovers_a_known_threshold():
    rng = np.random.default_rng(0)
    snr = 10 ** rng.uniform(0.0, 2.0, 4000)
    found = rng.random(4000) < 1.0 / (1.0 + (5.0 / snr) ** 6)  # 50 % at SNR 5
    value, err = fit_snr50(snr, found)
    assert value == pytest.approx(5.0, rel=0.05) and 0 < err < 0.5
    assert np.isnan(fit_snr50(snr, np.ones(4000, dtype=bool))[0])
    with pytest.raises(ValueError, match="same length"):
        fit_snr50(snr, found[:3])


def test_snr50_matches_missed_asteroids_and_refuses_other_data(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    snr = 10 ** rng.uniform(0.0, 1.7, n)
    table = np.column_stack([np.full(n, 7.0), np.arange(n) % 2, rng.uniform(0, 100, n), rng.uniform(0, 100, n),
                             np.full(n, 19.0), snr])
    np.savez(tmp_path / "snr.npz", table=table, columns=np.array(["file", "image", "x", "y", "magnitude", "snr"]))
    missed = table[snr < 6.0]
    rows = [{"file": int(r[0]), "image": int(r[1]), "x": float(r[2]), "y": float(r[3])} for r in missed]
    value, _ = T.snr50(tmp_path / "snr.npz", {"missed_asteroids": {"count": len(rows), "rows": rows}})
    assert value == pytest.approx(6.0, rel=0.1)
    assert T.snr50(tmp_path / "snr.npz", {"missed_asteroids": {"count": len(rows) + 1, "rows": rows}}) == (None, None)
    assert T.snr50(tmp_path / "none.npz", {"missed_asteroids": {"count": 0, "rows": []}}) == (None, None)
    # completeness above the cut: every asteroid at SNR >= 6 was found, except one on dead pixels, which is left out
    assert T.completeness_above(tmp_path / "snr.npz", {"missed_asteroids": {"count": len(rows), "rows": rows}}) == 1.0
    bright = table[snr >= 6.0][:2]
    extra = [{"file": int(r[0]), "image": int(r[1]), "x": float(r[2]), "y": float(r[3]), "reason": reason}
             for r, reason in zip(bright, ("dead", "stage1_rejected"))]
    ev = {"missed_asteroids": {"count": len(rows) + 2, "rows": rows + extra}}
    n_bright = int((snr >= 6.0).sum())
    assert T.completeness_above(tmp_path / "snr.npz", ev) == pytest.approx((n_bright - 2) / (n_bright - 1))
    assert T.completeness_above(tmp_path / "snr.npz", ev, cut=1e9) is None
    # a table without the matched-filter column (written before it) gives no matched SNR50, the peak one still
    assert T.snr50(tmp_path / "snr.npz", ev, column="mf_snr") == (None, None) and T.snr50(tmp_path / "snr.npz", ev)[0]
    np.savez(tmp_path / "snr7.npz", table=np.column_stack([table, 2 * snr]), columns=np.array(T.SNR_COLUMNS))
    value, _ = T.snr50(tmp_path / "snr7.npz", {"missed_asteroids": {"count": len(rows), "rows": rows}}, column="mf_snr")
    assert value == pytest.approx(12.0, rel=0.1)


def test_table_renders_every_family_and_sky(tmp_path):
    cfg = _cfg(tmp_path, "held_out=[held_bright]")
    ev = {"end_to_end": {"artifact": {"completeness": 0.9, "completeness_visible": 0.95, "purity": 0.97,
                                      "false_per_quadrant": 0.1}},
          "m50": {"m50": 20.1}, "counts": {"test_candidates": 300, "test_images": 3}}
    found = {"randomized/held_bright": {"eval": ev, "speed": {"quadrants_per_s": 2.5}, "snr50": 5.2, "mf_snr50": 7.4,
                                        "above_cut": 0.99}}
    text = T.render_table(cfg, found)
    assert "| randomized | held_bright | yes | 0.900 | 0.950 | 0.970 | 0.10 | 20.10 | 5.2 | 7.4 | 0.990 | 100 | 2.50 |" in text
    assert "| paper | paper | no | — |" in text and "REDUCED" in text


def test_results_get_one_table_per_evaluation_variant(tmp_path):
    cfg = _cfg(tmp_path, "held_out=[held_bright]")
    for folder, purity in (("eval_held_bright", 0.91), ("eval_held_bright_stars", 0.99)):
        ev = {"end_to_end": {"artifact": {"completeness": 0.9, "completeness_visible": 0.95, "purity": purity,
                                          "false_per_quadrant": 0.1}}}
        path = tmp_path / "out" / "randomized" / folder / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(ev))
    T.write_results(cfg, cwd=tmp_path)
    text = (tmp_path / "results.md").read_text()
    plain = text[text.index("<!-- transfer:start -->"):text.index("<!-- transfer:end -->")]
    stars = text[text.index("<!-- transfer-stars:start -->"):text.index("<!-- transfer-stars:end -->")]
    assert "| randomized | held_bright | yes | 0.900 | 0.950 | 0.910 |" in plain
    assert "| randomized | held_bright | yes | 0.900 | 0.950 | 0.990 |" in stars and "reference_check=stars" in stars
    assert "without the reference check (`reference_check=none`)" in plain and "without the reference" not in stars
    assert f"Held-out skies ({', '.join(cfg.held_out)})" in plain


def test_snr_and_speed_subtasks_on_tiny_data(tmp_path):
    out = tmp_path / "snr"
    result = T.snr_task(["data=tiny", "data.source.images_per_file=1", f"out={out}"])
    with np.load(out / T.SNR_FILE, allow_pickle=False) as z:
        table = z["table"]
    assert result["asteroids"] == len(table) == 2 * 6  # test files 7 and 8, one image each, 6 asteroids
    assert table.shape[1] == len(T.SNR_COLUMNS) and set(table[:, 0]) == {7.0, 8.0} and np.all(table[:, 5] > 0)
    # the matched filter sums the whole PSF: above the peak SNR on this nearly white noise, within a PSF's few pixels
    assert np.all(table[:, 6] > table[:, 5]) and np.all(table[:, 6] < 10 * table[:, 5])
    with pytest.raises(InputError, match="needs out="):
        T.snr_task(["data=tiny"])
