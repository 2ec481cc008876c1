"""Cascade artifact round trips and refusals, threshold picking, and the sweep summary table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neocascade.errors import InputError
from neocascade.models.baseline import BaselineNet
from neocascade.models.final import FinalNet
from neocascade.models.forest import RandomForestStage
from neocascade.training.artifact import REFERENCE, load_cascade, save_cascade, stage_record
from neocascade.training.thresholds import threshold_for_precision, threshold_for_recall
from neocascade.utils.sweep import collect_jobs, parse_overrides, summary_rows, write_summary

SPEC = {"sigma": 1.0, "cutout_size": 21, "channels": ["filtered"], "normalize": "none",
        "selector": {"kind": "footprint", "params": {"kernel": 16, "stride": 16}}}


def _nets(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    return BaselineNet(1, 21, widths=[4, 4, 4], hidden=[8, 8]).eval(), FinalNet(1, 21, widths=[2, 2, 2, 2], hidden=4).eval()


def _save(path, stage1, stage2, **kw):
    return save_cascade(path, stage1=stage1, stage2=stage2, input_spec=SPEC, config={"seed": 1}, metrics={"m": np.float32(0.5)}, **kw)


def _x(n: int = 40, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 21, 21)).astype(np.float32)


def test_round_trip_scores_match_models(tmp_path):
    net1, net2 = _nets()
    x = _x()
    with torch.no_grad():
        q1 = torch.softmax(net1(torch.from_numpy(x)), 1)[:, 1].double().numpy()
        q2 = torch.softmax(net2(torch.from_numpy(x)), 1)[:, 1].double().numpy()
    t1 = float(np.sort(q1)[len(q1) // 2])  # half the cutouts pass stage 1
    path = _save(tmp_path / "cascade.pt", stage_record(net1, t1), stage_record(net2, 0.5))
    cascade = load_cascade(path, expected_arch=("baseline", "final"), expected_cutout_size=21)
    p1, p2 = cascade.set_inference(REFERENCE).score(x)  # exact fp32; the fast default is tested in test_inference_variants
    np.testing.assert_allclose(p1, q1, rtol=1e-6)
    keep = q1 >= t1
    assert np.isnan(p2[~keep]).all() and (~keep).any()
    np.testing.assert_allclose(p2[keep], q2[keep], rtol=1e-6)
    np.testing.assert_array_equal(cascade.accept(p1, p2), keep & (q2 >= 0.5))
    assert (cascade.stage1_arch, cascade.stage2_arch, cascade.threshold1, cascade.threshold2) == ("baseline", "final", t1, 0.5)
    assert cascade.preprocess == SPEC and cascade.metrics == {"m": 0.5}
    empty1, empty2 = cascade.score(np.zeros((0, 1, 21, 21), np.float32))
    assert empty1.shape == empty2.shape == (0,)


def test_forest_stage_is_stored_as_arrays(tmp_path):
    x = _x(60)
    y = (x[:, 0, 10, 10] > 0).astype(int)
    forest = RandomForestStage(1, 21, n_estimators=5, random_state=0).fit(x, y)
    _, net2 = _nets()
    path = _save(tmp_path / "c.pt", stage_record(forest, 0.3), stage_record(net2, 0.5))
    cascade = load_cascade(path, expected_arch="rf")
    p1, _ = cascade.score(x)
    np.testing.assert_allclose(p1, forest.predict_proba(x))
    raw = torch.load(path, weights_only=True)  # no pickled objects: plain containers and tensors only
    assert all(isinstance(v, torch.Tensor) for v in raw["stage1"]["state"].values())


def test_one_stage_artifact_accepts_on_stage1(tmp_path):
    net1, _ = _nets()
    path = _save(tmp_path / "one.pt", stage_record(net1, 0.5), None)
    cascade = load_cascade(path)
    p1, p2 = cascade.score(_x())
    keep = p1 >= 0.5
    np.testing.assert_array_equal(p2[keep], p1[keep])
    np.testing.assert_array_equal(cascade.accept(p1, p2), keep)
    assert cascade.stage2_arch is None and cascade.threshold2 == 0.5


def test_ensemble_stage_round_trips_and_runs_every_inference_variant(tmp_path):
    """An averaged stage (stage.members > 1) is stored, exported in fp16 and scored like any CNN."""
    from neocascade.models import EnsembleNet
    from neocascade.training.artifact import InferenceOptions, export_cascade

    a, _ = _nets(0)
    b, _ = _nets(1)
    ens = EnsembleNet([a, b]).eval()
    x = _x()
    with torch.no_grad():
        expected = ((torch.softmax(a(torch.from_numpy(x)), 1) + torch.softmax(b(torch.from_numpy(x)), 1)) / 2)[:, 1].numpy()
    path = _save(tmp_path / "ens.pt", stage_record(ens, 0.5), None)
    cascade = load_cascade(path, expected_arch="ensemble")
    p1, _ = cascade.set_inference(REFERENCE).score(x)
    np.testing.assert_allclose(p1, expected, rtol=1e-5, atol=1e-7)
    fast, _ = cascade.set_inference(InferenceOptions(precision="fp32", channels_last=True)).score(x)
    np.testing.assert_allclose(fast, expected, rtol=1e-4, atol=1e-6)
    bf16, _ = cascade.set_inference(InferenceOptions(precision="bf16")).score(x)
    assert np.abs(bf16 - expected).max() < 2e-2
    half = load_cascade(export_cascade(path, tmp_path / "ship.pt"))
    assert [m.arch for m in half.stage1.model.members] == ["baseline", "baseline"]
    assert np.abs(half.set_inference(REFERENCE).score(x)[0] - expected).max() < 1e-2
    with pytest.raises(InputError, match="trained as 'ensemble', config asks 'baseline'"):
        load_cascade(path, expected_arch="baseline")


def test_refusals_name_the_file(tmp_path):
    net1, net2 = _nets()
    path = _save(tmp_path / "cascade.pt", stage_record(net1, 0.5), stage_record(net2, 0.5))
    with pytest.raises(InputError, match="cascade.pt: already exists"):
        _save(path, stage_record(net1, 0.5), None)
    _save(path, stage_record(net1, 0.5), stage_record(net2, 0.5), overwrite=True)
    with pytest.raises(InputError, match=r"cascade.pt \(stage 1\): trained as 'baseline', config asks 'final'"):
        load_cascade(path, expected_arch="final")
    with pytest.raises(InputError, match=r"cascade.pt \(stage 2\): trained as 'final', config asks 'vgg'"):
        load_cascade(path, expected_arch=(None, "vgg"))
    with pytest.raises(InputError, match="trained for cutout_size 21, config asks 25"):
        load_cascade(path, expected_cutout_size=25)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt.pt: not a readable cascade artifact"):
        load_cascade(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(InputError, match="other.pt: not a cascade artifact"):
        load_cascade(other)
    with pytest.raises(InputError, match="missing.pt: no such cascade artifact"):
        load_cascade(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 1, 21, 21\)"):
        load_cascade(path).score(np.zeros((2, 2, 21, 21), np.float32))


def test_wrong_weights_are_refused(tmp_path):
    net1, net2 = _nets()
    record = stage_record(net1, 0.5)
    record["hparams"] = dict(record["hparams"], hidden=[8, 4])
    path = _save(tmp_path / "bad.pt", record, stage_record(net2, 0.5))
    with pytest.raises(InputError, match=r"bad.pt: stage 1 weights do not fit 'baseline'"):
        load_cascade(path)


def test_threshold_for_recall_exact():
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8])
    labels = np.array([0, 1, 0, 1, 1, 0])
    assert threshold_for_recall(probs, labels, min_recall=1.0) == 0.2
    assert threshold_for_recall(probs, labels, min_recall=0.6) == 0.4  # 2 of 3 positives
    assert threshold_for_recall(probs, labels, min_recall=0.3) == 0.9
    ramp = np.arange(100) / 100
    assert threshold_for_recall(ramp, np.ones(100), min_recall=0.99) == 0.01  # 99/100 counts as 0.99
    with pytest.raises(ValueError, match="labels: no positive"):
        threshold_for_recall(probs, np.zeros(6), min_recall=0.9)
    with pytest.raises(ValueError, match="min_recall"):
        threshold_for_recall(probs, labels, min_recall=0.0)


def test_threshold_for_precision_exact():
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8])
    labels = np.array([0, 1, 0, 1, 1, 0])
    assert threshold_for_precision(probs, labels, target_precision=1.0) == 0.9
    assert threshold_for_precision(probs, labels, target_precision=0.6) == 0.2  # 3 of 5 at >= 0.2
    assert threshold_for_precision(probs, np.zeros(6), target_precision=0.5) == float("inf")


def test_sweep_summary_table(tmp_path):
    for num, (kernel, f1) in enumerate([(30, 0.5), (50, 0.9), (70, None)]):
        job = tmp_path / f"{num}_data.kernel={kernel}"
        job.mkdir()
        report = {"job_num": num, "overrides": [f"data.kernel={kernel}", "data=tiny"], "metrics": {"test/cascade_f1": f1}}
        (job / "metrics.json").write_text(json.dumps(report))
    (tmp_path / "3_failed").mkdir()
    rows = summary_rows(collect_jobs(tmp_path), target="test/cascade_f1", columns=["test/x"])
    assert [r["data.kernel"] for r in rows] == ["50", "30", "70"]  # best first, missing value last
    csv_path, md_path = write_summary(tmp_path, rows)
    assert csv_path.read_text().splitlines()[0] == "job,data.kernel,data,test/cascade_f1,test/x,dir"
    md = md_path.read_text().splitlines()
    assert md[0] == "| job | data.kernel | data | test/cascade_f1 | test/x | dir |" and len(md) == 5
    assert parse_overrides(["+a.b=1", "c=x=y"]) == {"a.b": "1", "c": "x=y"}


def test_export_halves_cnn_weights_keeps_decisions_and_records_provenance(tmp_path):
    """The shipped form: float16 CNN weights (about half the file), same decisions, provenance read back."""
    import torch

    from neocascade.models.final import FinalNet
    from neocascade.training.artifact import export_cascade, load_cascade, save_cascade, stage_record

    torch.manual_seed(0)
    record = stage_record(FinalNet(1, 21).eval(), 0.5)
    src = save_cascade(tmp_path / "cascade.pt", stage1=record, stage2=record, input_spec=SPEC,
                       config={"data": {"name": "tiny"}}, metrics={})
    dst = export_cascade(src, tmp_path / "ship" / "neocascade.pt", provenance={"data": "tiny", "m50": 20.1})
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    full, half = load_cascade(src), load_cascade(dst)
    assert half.provenance == {"data": "tiny", "m50": 20.1} and full.provenance == {}
    assert next(half.stage1.model.parameters()).dtype == torch.float32  # widened on load
    x = torch.randn(500, 1, 21, 21) * 4
    p_full, p_half = full.stage1.proba(x), half.stage1.proba(x)
    assert np.abs(p_full - p_half).max() < 1e-2
    threshold = float(np.median(p_full))
    assert ((p_full >= threshold) != (p_half >= threshold)).sum() <= 5  # only scores within fp16 rounding of it
    with pytest.raises(InputError, match="would take .* MB"):
        export_cascade(src, tmp_path / "big.pt", max_mb=0.01)
    assert not (tmp_path / "big.pt").exists() and not list(tmp_path.glob(".big.pt*"))
    with pytest.raises(InputError, match="already exists"):
        export_cascade(src, dst)


def test_ship_records_each_evaluation_folder_with_its_checks(tmp_path):
    from neocascade.pipelines.ship import evaluations

    def report(folder: str, purity: float, reference: str | None) -> None:
        path = tmp_path / folder / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps({
            "config": {"eval": {"operating_point": "artifact"},
                       "residual_check": {"_target_": "neocascade.detection.residuals.RingCheck"},
                       "reference_check": {"_target_": reference}},
            "data": {"name": "paper"}, "end_to_end": {"artifact": {"completeness": 0.9, "purity": purity}},
            "counts": {"test_asteroids": 10}}))

    report("eval_paper", 0.97, None)
    report("eval_paper_stars", 0.99, "neocascade.detection.reference.StarCheck")
    report("eval_paper_stars_run", 0.5, None)  # Hydra's copy in the run folder
    found = evaluations(tmp_path)
    assert sorted(found) == ["eval_paper", "eval_paper_stars"]
    assert (found["eval_paper"]["purity"], found["eval_paper"]["reference_check"]) == (0.97, None)
    assert (found["eval_paper_stars"]["purity"], found["eval_paper_stars"]["reference_check"]) == (0.99, "StarCheck")
    assert found["eval_paper"]["residual_check"] == "RingCheck" and found["eval_paper"]["data"] == "paper"
