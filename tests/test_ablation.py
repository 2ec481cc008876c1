"""`make ablation`: plan, a real one-step tiny run (train, evaluate on two presets, speed), the shared results file."""

from __future__ import annotations

import pytest

from neocascade.errors import InputError
from neocascade.pipelines import ablation as A
from neocascade.pipelines import paper as P
from neocascade.pipelines.common import marked_sections, replace_section


def test_plan_trains_tunes_on_validation_and_measures_both_presets(tmp_path):
    cfg = A.load_config(["reduced=true", f"out_dir={tmp_path}"])
    steps = {s.name: s for s in A.plan(cfg, python="PY")}
    assert list(steps)[0] == "seed" and len(steps) == len(cfg.steps)
    train, ev, transfer, speed = steps["peaks"].commands
    assert train.argv[:4] == ["PY", "train.py", "experiment=seed_final_cascade", "selector=peaks"]
    assert "stage.second_precision=0.98" in train.argv and "data.source.images_per_file=10" in train.argv
    for cmd in (ev, transfer):  # the artifact's thresholds, never re-tuned on the measured preset
        assert "eval.operating_point=artifact" in cmd.argv and f"artifact={tmp_path / 'peaks' / 'cascade.pt'}" in cmd.argv
    assert "data=shifted" in transfer.argv and "data=shifted" not in ev.argv
    assert transfer.done == tmp_path / "peaks" / "eval_shifted" / "metrics.json"
    assert speed.argv[1:4] == ["-m", "neocascade.pipelines.ablation", "speed"]
    gated = steps["gated"].commands[0].argv  # one stage behind the gate: its own threshold gets the target
    assert "stage.min_precision=0.98" in gated and not any(a.startswith("stage.second_precision") for a in gated)
    # cumulative: every step keeps the overrides of its base (the step before it unless it names an earlier one)
    specs = list(cfg.steps)
    names = [str(s.name) for s in specs]
    for k, after in enumerate(specs[1:], start=1):
        base = specs[names.index(after.base)] if after.get("base") else specs[k - 1]
        assert names.index(str(base.name)) < k
        assert list(after.overrides)[: len(base.overrides)] == list(base.overrides), after.name
    # a step's own epochs replace the run's
    assert "trainer.max_epochs=5" in steps["veto"].commands[0].argv
    assert "trainer.max_epochs=12" in steps["longer"].commands[0].argv
    assert "veto=streaks" in steps["longer"].commands[0].argv
    with pytest.raises(InputError, match="target_precision: must be a precision"):
        A.load_config(["target_precision=0"])


def test_sections_let_two_generators_share_a_file():
    text = replace_section("# Results\n\nbody\n", "ablation", "| a |")
    assert text.startswith("# Results\n\nbody\n\n<!-- ablation:start -->\n| a |\n<!-- ablation:end -->")
    again = replace_section(text, "ablation", "| b |")
    assert marked_sections(again) == {"ablation": "| b |"} and again.count("ablation:start") == 1
    assert replace_section("", "x", "y") == "<!-- x:start -->\ny\n<!-- x:end -->\n"


def test_tiny_ablation_run_and_paper_rewrite_keeps_its_table(tmp_path):
    """One real step on data=tiny (transfer preset tiny too): every command runs, the table fills in,
    and a make paper rewrite of the same results file keeps the ablation section."""
    results = tmp_path / "docs" / "results.md"
    cfg = A.load_config(["data=tiny", "transfer=tiny", "images_per_file=2", "epochs=1", "val_negatives=200",
                         "target_precision=0.5", "speed.n_images=1", "speed.repeats=1", f"out_dir={tmp_path / 'out'}",
                         f"cache_dir={tmp_path / 'cache'}", f"results={results}"])
    cfg.steps = [cfg.steps[0]]
    cfg.train_overrides = ["model.widths=[4,4,8,8]", "model.hidden=16", "logger=csv"]
    record = A.run_ablation(cfg)
    assert {label: rec["status"] for label, rec in record["seed"].items()} == {
        "train": "done", "evaluate": "done", "transfer": "done", "speed": "done"}
    speed = A.collect(cfg)["seed"]["speed"]
    assert speed["quadrants_per_s"] > 0 and speed["shape"] == [256, 256]
    row = next(line for line in results.read_text().splitlines() if line.startswith("| seed |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 12 and all(c != "—" for c in cells[2:]), row
    found, positives = (int(v) for v in cells[2].split(" / "))
    assert 0 <= found <= positives
    paper = P.load_config(["data=tiny", "images_per_file=2", "epochs=1", f"out_dir={tmp_path / 'paper'}",
                           f"cache_dir={tmp_path / 'cache'}", f"results={results}", "figures_dir=null"])
    paper.steps = []
    P.write_results(paper, cwd=tmp_path)
    text = results.read_text()
    assert text.startswith("# Results: the seed's experiments reproduced") and row in text
