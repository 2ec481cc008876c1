"""ZTF alert evaluation: group masks, rates with Wilson intervals, and the report pipeline on test packets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from neocascade.detection.alerts import (
    alert_masks,
    alert_metrics,
    previous_detections,
    rate,
    scalar_alert_metrics,
    stationary_by_history,
)
from test_detection import ThresholdCascade, blob_image

REPO = Path(__file__).resolve().parents[1]


def test_rate_wilson_interval_known_values():
    half = rate(np.array([True] * 5 + [False] * 5))
    assert (half["n"], half["k"], half["rate"]) == (10, 5, 0.5)
    np.testing.assert_allclose(half["ci95"], [0.2366, 0.7634], atol=1e-4)
    none = rate(np.zeros(0, dtype=bool))
    assert none["n"] == 0 and np.isnan(none["rate"])
    assert rate(np.ones(4, dtype=bool))["ci95"][1] == 1.0


def test_alert_masks_follow_the_readme_rules():
    table = {
        "isdiffpos": np.array([True, True, False, True, True, True]),
        "ssdistnr": np.array([0.0, 5.0, 1.0, 5.1, -999.0, 2.0]),
        "rb": np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.3]),
    }
    masks = alert_masks(table)
    assert masks["known_asteroid"].tolist() == [True, True, False, False, False, True]
    assert masks["negative"].tolist() == [False, False, True, False, False, False]
    assert masks["low_rb"].tolist() == [False, False, False, False, False, True]
    assert masks["other"].tolist() == [False, False, False, True, True, False]


def test_alert_metrics_exact_counts_and_magnitude_bins():
    masks = {
        "known_asteroid": np.array([1, 1, 1, 0, 0, 0, 0], bool),
        "negative": np.array([0, 0, 0, 1, 1, 0, 0], bool),
        "low_rb": np.zeros(7, bool),
        "other": np.array([0, 0, 0, 0, 0, 1, 1], bool),
    }
    scores = {"p1": np.array([0.9, 0.8, 0.1, 0.9, 0.2, 0.9, 0.1]),
              "detected": np.array([1, 0, 0, 1, 0, 1, 0], bool)}
    mag = np.array([17.0, 19.2, 20.1, 18.0, 19.9, 19.0, 20.5])
    m = alert_metrics(scores, masks, magpsf=mag, threshold1=0.5, mag_edges=[19.0, 20.0])
    assert (m["known_asteroid_recall"]["k"], m["known_asteroid_recall"]["n"]) == (1, 3)
    assert (m["known_asteroid_stage1_recall"]["k"], m["known_asteroid_stage1_recall"]["n"]) == (2, 3)
    assert (m["negative_rejection"]["k"], m["negative_rejection"]["n"]) == (1, 2)
    assert m["low_rb_rejection"]["n"] == 0
    assert m["other_positive_rate"]["rate"] == 0.5
    bins = {tuple(b["bin"]): b for b in m["by_magnitude"]}
    assert list(bins) == [(-np.inf, 19.0), (19.0, 20.0), (20.0, np.inf)]
    assert bins[(19.0, 20.0)]["known_asteroid_recall"]["n"] == 1 and bins[(19.0, 20.0)]["other_positive_rate"]["k"] == 1
    assert scalar_alert_metrics(m)["ztf_alerts/negative_rejection"] == 0.5
    with pytest.raises(ValueError, match="mag_edges"):
        alert_metrics(scores, masks, magpsf=mag, threshold1=0.5, mag_edges=[20.0, 19.0])


@pytest.fixture
def alert_folder(tmp_path):
    from neocascade.io.alerts import write_test_alert

    bright = blob_image(shape=(63, 63), sources=((31, 31),))
    faint = blob_image(shape=(63, 63), sources=((31, 31),), amplitude=5.0)
    folder = tmp_path / "alerts"
    folder.mkdir()
    write_test_alert(folder / "a1.avro", difference=bright, ssdistnr=1.0, candid=1, magpsf=18.0)
    write_test_alert(folder / "a2.avro", difference=faint, ssdistnr=2.0, candid=2, magpsf=20.2)
    write_test_alert(folder / "a2_again.avro", difference=faint, ssdistnr=2.0, candid=2, magpsf=20.2)
    write_test_alert(folder / "n1.avro", difference=bright, isdiffpos=False, candid=3, magpsf=18.5)
    write_test_alert(folder / "o1.avro", difference=bright, candid=4, magpsf=19.5)
    # a variable star: first detected at this position 10 days before (jdstarthist)
    write_test_alert(folder / "o2.avro", difference=bright, candid=6, magpsf=19.0, jd=2460236.0, jdstarthist=2460226.0)
    # an edge stamp: cut at the quadrant's low x edge, the alert sits 31 px before its end
    edge = blob_image(shape=(63, 50), sources=((31, 18),))
    write_test_alert(folder / "a3.avro", difference=edge, ssdistnr=0.5, candid=5, xpos=19.0, ypos=1000.0, magpsf=19.1)
    (folder / "broken.avro").write_bytes(b"Obj\x01 truncated")
    return folder


def test_alert_evaluation_pipeline(tmp_path, alert_folder, monkeypatch, capsys):
    import neocascade.training.artifact as artifact
    from neocascade.pipelines.alerts_eval import evaluate_alerts

    monkeypatch.setattr(artifact, "load_cascade", lambda path, **kwargs: ThresholdCascade())
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("detect", overrides=[f"paths.outputs={tmp_path / 'outputs'}", "data=ztf_alerts",
                                           f"data.path={alert_folder}", "artifact=runs/r1/train/cascade.pt"])
    assert evaluate_alerts(cfg) == 1  # the broken file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.avro" in err[0]
    out = tmp_path / "outputs" / "eval" / "ztf_alerts" / "train"  # the artifact's folder, as evaluate.py names reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_alerts"], metrics["n_duplicates"], metrics["n_failed"]) == (6, 1, 1)
    assert metrics["group_sizes"] == {"known_asteroid": 3, "negative": 1, "low_rb": 0, "other": 2}
    assert (metrics["known_asteroid_recall"]["k"], metrics["known_asteroid_recall"]["n"]) == (2, 3)
    assert metrics["negative_rejection"]["rate"] == 1.0
    assert metrics["negative_as_stored_acceptance"]["rate"] == 1.0  # the sign is what rejects it
    assert metrics["headline"] == "stamp_history_reference" and metrics["history"]["n_stationary"] == 1  # the default
    assert metrics["other_positive_rate"]["rate"] == 0.5  # the variable star is stationary
    assert metrics["variants"]["stamp"]["other_positive_rate"]["rate"] == 1.0
    assert metrics["scalars"]["ztf_alerts_stamp/other_positive_rate"] == 1.0
    assert metrics["scalars"]["ztf_alerts/other_positive_rate"] == 0.5
    report = (out / "alerts_report.md").read_text()
    assert "| metric | stamp only | stamp + history |" in report and "within 30 min" in report
    rows = (out / "alerts.csv").read_text().splitlines()
    assert "stationary" in rows[0].split(",") and sum(r.split(",")[0] == "6" for r in rows) == 1
    for name in ("alerts_report.md", "alerts.csv", "missed_asteroids.png", "accepted_negatives.png"):
        assert (out / name).stat().st_size > 0
    assert "known_asteroid_recall" in (out / "alerts_report.md").read_text()
    with pytest.raises(ValueError, match="already exists"):
        evaluate_alerts(cfg)


def test_alert_evaluation_stamp_only(tmp_path, alert_folder, monkeypatch):
    import neocascade.training.artifact as artifact
    from neocascade.pipelines.alerts_eval import evaluate_alerts

    monkeypatch.setattr(artifact, "load_cascade", lambda path, **kwargs: ThresholdCascade())
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("detect", overrides=[f"paths.outputs={tmp_path / 'outputs'}", "data=ztf_alerts",
                                           f"data.path={alert_folder}", "data.history=false", "name=plain",
                                           "reference_check=none"])
    assert evaluate_alerts(cfg) == 1
    metrics = json.loads((tmp_path / "outputs" / "eval" / "ztf_alerts" / "plain" / "metrics.json").read_text())
    assert metrics["headline"] == "stamp" and metrics["other_positive_rate"]["rate"] == 1.0
    assert metrics["variants"]["stamp_history"]["other_positive_rate"]["rate"] == 0.5


def _history_case():
    """Four alerts at (10, 20) deg: no history, an old jdstarthist, a matched old detection, a far one."""
    jd = 2460236.0
    table = {"jd": np.full(4, jd), "ra": np.full(4, 10.0), "dec": np.full(4, 20.0),
             "jdstarthist": np.array([np.nan, jd - 31 / 1440, jd - 29 / 1440, jd])}
    previous = {"alert": np.array([2, 2, 3, 3]),
                "jd": np.array([jd - 1.0, jd - 5 / 1440, jd - 2.0, jd + 3.0]),
                "ra": np.array([10.0 + 1.0 / 3600 / np.cos(np.radians(20.0)), 10.0, 10.0, 10.0]),
                "dec": np.array([20.0, 20.0, 20.0 + 2.0 / 3600, 20.0])}
    return table, previous


def test_stationary_by_history_exact():
    table, previous = _history_case()
    flags = stationary_by_history(table, previous)  # window 1.5" / 3"/h = 30 min
    # 0: nothing known; 1: first detected 31 min before; 2: a detection 1" away a day before;
    # 3: a detection 2" away (outside 1.5") and one 3 days *after* (not history)
    np.testing.assert_allclose(flags["history_span_min"], [0.0, 31.0, 1440.0, 0.0], atol=1e-3)
    assert flags["stationary"].tolist() == [False, True, True, False]
    slow = stationary_by_history(table, previous, min_rate_arcsec_per_hour=1.5)  # window 60 min
    assert slow["stationary"].tolist() == [False, False, True, False]
    wide = stationary_by_history(table, previous, match_arcsec=2.5)  # window 50 min, the 2" detection matches
    assert wide["stationary"].tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="must be positive"):
        stationary_by_history(table, previous, min_rate_arcsec_per_hour=0.0)


def test_previous_detections_flattens_in_alert_order(tmp_path):
    from neocascade.io.alerts import read_alert, write_test_alert

    stamp = np.zeros((9, 9), dtype=np.float32)
    prv = [{"jd": 1.0, "candid": 5, "ra": 1.0, "dec": 2.0}, {"jd": 2.0, "candid": None, "diffmaglim": 20.0}]
    alerts = [read_alert(write_test_alert(tmp_path / f"{i}.avro", difference=stamp, candid=i + 1,
                                          prv_candidates=prv if i != 1 else None)) for i in range(3)]
    flat = previous_detections(alerts)
    assert flat["alert"].tolist() == [0, 2] and flat["jd"].tolist() == [1.0, 1.0]
    assert previous_detections([])["alert"].size == 0
