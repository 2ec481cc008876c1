"""evaluate.py end to end on data=tiny: report folder, metrics, figures, refusals and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

pytest.importorskip("neocascade.candidates.extract")
pytest.importorskip("neocascade.candidates.footprint")

from neocascade.errors import InputError  # noqa: E402
from neocascade.evaluation.metrics import MISS_REASONS  # noqa: E402
from neocascade.pipelines.evaluate import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = {
    "sigma": 1.0,
    "selector": {"_target_": "neocascade.candidates.footprint.FootprintSelector", "kernel": 16, "stride": 16},
    "kernel": 16,
    "stride": 16,
    "cutout_size": 21,
    "channels": ["filtered"],
    "normalize": "none",
    "label_mode": "centre",
    "label_radius": 1.0,
}


class CentreCascade:
    """A stand-in cascade with exact answers: P = v / (v + level) for the filtered centre value v > 0.

    Stage 2 repeats stage 1 where stage 1 accepted (NaN elsewhere), so P >= 0.5 iff v >= level.
    """

    stage1_arch = "centre"
    stage2_arch = "centre"

    def __init__(self, level: float = 15.0) -> None:
        self.level = level
        self.input_spec = dict(SPEC)
        self.config: dict = {}
        self.threshold1 = 0.3
        self.threshold2 = 0.5

    def score(self, x):
        x = np.asarray(x)
        c = x.shape[-1] // 2
        v = np.maximum(x[:, 0, c, c].astype(np.float64), 0.0)
        p1 = v / (v + self.level)
        return p1, np.where(p1 >= self.threshold1, p1, np.nan)

    def accept(self, p1, p2):
        with np.errstate(invalid="ignore"):
            return (p1 >= self.threshold1) & (p2 >= self.threshold2)


def tiny_artifact(path: Path) -> Path:
    """A real artifact from an untrained, seeded BaselineNet (scores are arbitrary but real)."""
    import torch

    from neocascade.models.baseline import BaselineNet
    from neocascade.training.artifact import save_cascade, stage_record

    torch.manual_seed(0)
    model = BaselineNet(1, 21, widths=(2, 2, 2), hidden=(4, 4))
    config = {"data": {"_target_": "neocascade.data.datamodule.CutoutDataModule", "name": "tiny",
                       "source": {"_target_": "neocascade.data.sources.SimulatedSource", "seed": 7, "n_files": 10,
                                  "images_per_file": 2, "shape": [256, 256], "n_asteroids": 6, "sim": {}},
                       "split": {"train": [0, 1, 2, 3, 4, 5, 6], "val": [9], "test": [7, 8]},
                       "batch_size": 64, "n_jobs": 1}}
    return save_cascade(path, stage1=stage_record(model, 0.0), stage2=stage_record(model, 0.5), input_spec=SPEC,
                        config=config, metrics={})


def config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[
            f"paths.outputs={tmp_path / 'outputs'}", "wandb.mode=disabled", "eval.footprint.n_images=2",
            "eval.footprint.kernels=[8,16,32]", "eval.example_grid=4", "eval.data_figures.tsne_n=40",
            "eval.data_figures.grid=4", "eval.data_figures.n_images=1", *overrides])


@pytest.fixture
def centre_cascade(monkeypatch):
    import neocascade.training.artifact as artifact

    cascade = CentreCascade()
    monkeypatch.setattr(artifact, "load_cascade", lambda path, **kwargs: cascade)
    return cascade


def test_report_with_exact_cascade(tmp_path, centre_cascade):
    cfg = config(tmp_path, "artifact=fake/run1/cascade.pt", "data=tiny", "figures=[standard]",
                 "eval.operating_point=artifact")
    out = evaluate(cfg, run_dir=tmp_path / "run")
    folder = tmp_path / "outputs" / "eval" / "run1"
    names = sorted(p.name for p in folder.iterdir())
    for expected in ("report.md", "metrics.json", "completeness_vs_magnitude.png", "pr_curve.png",
                     "confusion_cascade.png", "footprint_vs_kernel.png", "footprint_vs_magnitude.png",
                     "miss_rate_vs_magnitude.png", "cutouts_tp.png", "cutouts_fp.png"):
        assert expected in names
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["split"]["test"] == [7, 8] and saved["counts"]["test_images"] == 4
    m = saved["metrics"]
    for key in ("test/e2e_completeness", "test/e2e_purity", "test/e2e_false_per_quadrant", "test/e2e_duplicates",
                "test/cascade_precision", "test/cascade_recall@half", "test/e2e_completeness@target",
                "test/stage1_recall"):
        assert key in m
    # the artifact point: stage 2 at 0.5 accepts filtered centres >= 15 DN
    for point in saved["end_to_end"].values():
        assert sum(point["misses"].values()) == point["missed"] == point["injected"] - point["found"]
        assert set(point["misses"]) == set(MISS_REASONS)
        assert point["injected"] == 4 * 6
    art = saved["end_to_end"]["artifact"]
    assert art["found"] > 0 and art["completeness"] == pytest.approx(art["found"] / 24)
    assert m["test/e2e_completeness"] == art["completeness"]  # the plain names follow eval.operating_point
    assert m["test/e2e_found"] == art["found"] and m["test/e2e_injected"] == 24
    # the operating point is read off the validation file at precision >= 0.98 (or inf when unreachable)
    op = saved["operating_point"]
    assert op["target_precision"] == 0.98
    assert op["threshold2_target"] is None or op["val_precision_target"] >= 0.98
    assert [r["kernel_px"] for r in saved["footprint"]] == [8, 16, 32]
    fractions = [r["candidates_per_image"] for r in saved["footprint"]]
    assert fractions == sorted(fractions, reverse=True)  # bigger blocks, fewer candidates
    assert fractions[1] == (256 // 16) ** 2
    assert saved["false_positive_ids"]["count"] == len(saved["false_positive_ids"]["rows"])
    assert set(out["metrics"]) == set(m)  # NaN became null in the file
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"] == m
    md = (folder / "report.md").read_text()
    assert "## Asteroid level, end to end" in md and "![pr_curve](pr_curve.png)" in md
    # a second run refuses the folder; overwrite=true replaces it
    with pytest.raises(InputError, match="report folder already exists"):
        evaluate(cfg, run_dir=tmp_path / "run")
    evaluate(config(tmp_path, "artifact=fake/run1/cascade.pt", "data=tiny", "figures=[]", "overwrite=true"),
             run_dir=tmp_path / "run")
    assert not (folder / "pr_curve.png").exists()


def test_veto_override_drops_accepted_detections(tmp_path, centre_cascade):
    """veto=streaks on the command line: with a line as wide as the image, every image's detections go."""
    base = ["artifact=fake/run1/cascade.pt", "data=tiny", "figures=[]", "eval.operating_point=artifact",
            "residual_check=none", "reference_check=none"]  # the veto alone
    plain = evaluate(config(tmp_path, *base, "name=plain"), run_dir=tmp_path / "run1")
    wide = ["veto=streaks", "veto.min_points=3", "veto.tolerance=400", "veto.min_span=0"]
    vetoed = evaluate(config(tmp_path, *base, "name=vetoed", *wide), run_dir=tmp_path / "run2")
    before, after = plain["metrics"], vetoed["metrics"]
    assert before["test/e2e_vetoed"] == 0 and before["test/e2e_miss_vetoed"] == 0
    assert after["test/e2e_vetoed"] > 0 and after["test/e2e_miss_vetoed"] > 0
    assert after["test/e2e_found"] < before["test/e2e_found"]
    assert after["test/e2e_detections"] < before["test/e2e_detections"]
    md = (tmp_path / "outputs" / "eval" / "vetoed" / "report.md").read_text()
    assert "StreakVeto(min_points=3" in md and "accepted candidates dropped" in md


def test_real_artifact_uses_its_stored_data_and_data_figures(tmp_path):
    from threadpoolctl import threadpool_limits

    artifact = tiny_artifact(tmp_path / "train" / "cascade.pt")
    cfg = config(tmp_path, f"artifact={artifact}", "figures=data", f"out_dir={tmp_path / 'rep'}")
    with threadpool_limits(1):  # the t-SNE: deterministic and quick on a busy machine
        out = evaluate(cfg, run_dir=tmp_path / "run")
    assert out["data"]["name"] == "tiny" and out["split"]["val"] == [9]
    names = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert names == ["cutouts_negatives.png", "cutouts_positives.png", "metrics.json", "pixel_boxplots.png",
                     "report.md", "tsne.png"]
    assert out["counts"]["test_candidates"] == 4 * (256 // 16) ** 2


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"artifact={tmp_path / 'missing.pt'}", f"paths.outputs={tmp_path}",
         "wandb.mode=disabled"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.pt: no such cascade artifact" in lines[0]


def test_unknown_figure_set_is_refused(tmp_path, centre_cascade):
    with pytest.raises(InputError, match="figures: unknown figure set 'boxes'"):
        evaluate(config(tmp_path, "artifact=fake/x.pt", "data=tiny", "figures=boxes"), run_dir=tmp_path)
