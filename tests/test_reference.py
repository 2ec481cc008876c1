"""The reference-catalogue check: StarCheck, the simulator's catalogue, catalogue files, and the pipelines using it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from hydra import compose, initialize_config_dir

from neocascade.detection.reference import StarCheck, build_star_check
from neocascade.errors import InputError
from neocascade.io.reference import read_star_catalogue, stars_on_image
from neocascade.simulation.config import SimConfig
from neocascade.simulation.quadrant import reference_stars, simulate_image
from test_detect_pipeline import config as detect_pipeline_config
from test_detection import blob_image, tan_wcs
from test_evaluate_pipeline import config as evaluate_pipeline_config

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- StarCheck
def test_star_check_drops_only_candidates_on_bright_stars():
    stars = np.array([[10.0, 10.0, 15.0],    # bright: a candidate on it goes
                      [50.0, 50.0, 19.5],    # too faint to leave a detectable residual
                      [80.0, 20.0, np.nan]])  # unusable row, ignored
    x = np.array([10.9, 11.8, 50.0, 80.0, 200.0])
    y = np.array([10.9, 10.0, 50.0, 20.0, 200.0])
    keep = StarCheck()(x, y, stars)
    np.testing.assert_array_equal(keep, [False, True, True, True, True])  # 1.27 px in, 1.8 px out
    np.testing.assert_array_equal(StarCheck(max_mag=20.0)(x, y, stars), [False, True, False, True, True])
    np.testing.assert_array_equal(StarCheck(radius=2.0)(x, y, stars), [False, False, True, True, True])
    assert StarCheck()(x, y, np.zeros((0, 3))).all() and StarCheck()(x[:0], y[:0], stars).size == 0
    np.testing.assert_array_equal(StarCheck().bind(stars)(x, y), keep)


def test_star_check_from_an_alerts_nearest_source():
    # ZTF's distnr is -999 when nothing is catalogued nearby; magnr may be missing (NaN)
    keep = StarCheck().keep_nearest(np.array([0.3, 0.3, 2.0, -999.0, 0.3]), np.array([16.0, 19.0, 16.0, 16.0, np.nan]))
    np.testing.assert_array_equal(keep, [False, True, True, True, True])


@pytest.mark.parametrize("kwargs, key", [({"radius": 0.0}, "radius"), ({"radius": float("nan")}, "radius"),
                                         ({"max_mag": float("inf")}, "max_mag"), ({"radius": True}, "radius")])
def test_star_check_refuses_bad_settings(kwargs, key):
    with pytest.raises(ValueError, match=key):
        StarCheck(**kwargs)


def test_star_check_refuses_bad_arrays():
    with pytest.raises(ValueError, match="stars"):
        StarCheck()(np.zeros(2), np.zeros(2), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="x, y"):
        StarCheck()(np.zeros(2), np.zeros(3), np.zeros((3, 3)))


def test_build_star_check_from_configs():
    assert build_star_check(None) is None and build_star_check({"_target_": None}) is None
    check = build_star_check({"_target_": "neocascade.detection.reference.StarCheck", "radius": 2.0, "max_mag": 17})
    assert (check.radius, check.max_mag) == (2.0, 17.0)
    with pytest.raises(InputError, match="reference_check._target_"):
        build_star_check({"_target_": "os.system"})
    with pytest.raises(InputError, match="unknown key"):
        build_star_check({"_target_": "neocascade.detection.reference.StarCheck", "radious": 2.0})
    with pytest.raises(InputError, match="reference_check.radius"):
        build_star_check({"_target_": "neocascade.detection.reference.StarCheck", "radius": -1.0})


# ---------------------------------------------------------------------------------------------- simulated catalogue
@pytest.mark.parametrize("batch", [False, True])
def test_reference_stars_are_the_stars_behind_the_residuals(batch):
    """Every pixel the residuals and saturated stars change lies near a catalogued star, and every catalogued
    star inside the image changed some pixel at it; the other components are untouched."""
    extra = dict(batch_residuals=True, star_magnitude_slope=0.3) if batch else {}
    config = SimConfig(shape=(300, 300), n_asteroids=3, star_residual_rate=30000.0, saturated_rate=200.0,
                       star_magnitude_range=(12.0, 16.0), **extra)
    stars = reference_stars(config, seed=3, file_index=1, image_index=2)
    image, _ = simulate_image(config, seed=3, file_index=1, image_index=2)
    plain, _ = simulate_image(dataclasses.replace(config, star_residual_rate=0.0, saturated_rate=0.0), seed=3,
                              file_index=1, image_index=2)
    assert stars.shape[1] == 3 and len(stars) > 20
    assert np.all((stars[:, 2] >= 8.0) & (stars[:, 2] <= 16.0))
    changed = np.abs(np.nan_to_num(image - plain, nan=1e3)) > 0.5
    rows, cols = np.nonzero(changed)
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(stars[:, :2]).query(np.column_stack([cols, rows]))
    assert dist.max() < 40.0  # halos and bleeds of saturated stars reach furthest
    inside = stars[(stars[:, 0] > 2) & (stars[:, 0] < 297) & (stars[:, 1] > 2) & (stars[:, 1] < 297)]
    hit = changed[np.rint(inside[:, 1]).astype(int), np.rint(inside[:, 0]).astype(int)]
    assert hit.mean() > 0.95
    np.testing.assert_array_equal(stars, reference_stars(config, seed=3, file_index=1, image_index=2))


# ---------------------------------------------------------------------------------------------- catalogue files
def write_catalogues(tmp_path: Path) -> dict[str, Path]:
    table = Table({"RA": [150.0, 150.001, 10.0], "Dec": [2.0, 2.0, -30.0], "Mag": [15.0, 17.5, 12.0]})
    paths = {"fits": tmp_path / "stars.fits", "csv": tmp_path / "stars.csv", "parquet": tmp_path / "stars.parquet"}
    table.write(paths["fits"])
    table.write(paths["csv"], format="ascii.csv")
    table.write(paths["parquet"])
    return paths


def test_read_star_catalogue_in_each_format(tmp_path):
    for path in write_catalogues(tmp_path).values():
        cat = read_star_catalogue(path)
        assert len(cat) == 3 and cat.path == path
        np.testing.assert_allclose(cat.mag, [15.0, 17.5, 12.0])


@pytest.mark.parametrize("content, match", [
    ({"ra": [1.0], "dec": [2.0]}, "missing column 'mag'"),
    ({"ra": [1.0], "dec": [2.0], "mag": [np.nan]}, "column 'mag': must be finite"),
    ({"ra": [1.0], "dec": [95.0], "mag": [15.0]}, "column 'dec': must lie in"),
    ({"ra": ["a"], "dec": [2.0], "mag": [15.0]}, "column 'ra': must be numeric"),
    ({"ra": [1.0], "dec": [2.0], "mag": [[15.0, 16.0]]}, "column 'mag': must hold one number per row"),
])
def test_read_star_catalogue_refuses_bad_tables(tmp_path, content, match):
    path = tmp_path / "bad.fits"
    Table(content).write(path)
    with pytest.raises(InputError, match=match) as err:
        read_star_catalogue(path)
    assert str(path) in str(err.value)


def test_read_star_catalogue_refuses_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such star catalogue"):
        read_star_catalogue(tmp_path / "none.fits")
    (tmp_path / "stars.txt").write_text("ra dec mag\n")
    with pytest.raises(InputError, match="not a star catalogue format"):
        read_star_catalogue(tmp_path / "stars.txt")
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  = T garbage")
    with pytest.raises(InputError, match="not a readable star catalogue"):
        read_star_catalogue(tmp_path / "broken.fits")


def test_stars_on_image_through_the_wcs(tmp_path):
    cat = read_star_catalogue(write_catalogues(tmp_path)["fits"])
    stars = stars_on_image(cat, tan_wcs(), (64, 64))
    # crpix (33, 17) is 1-based: (150, 2) lands on 0-based (32, 16); +0.001 deg of RA is 3.6 px to the east (left)
    np.testing.assert_allclose(stars[:, :2], [[32.0, 16.0], [32.0 - 3.6, 16.0]], atol=0.01)
    np.testing.assert_allclose(stars[:, 2], [15.0, 17.5])  # the star on the other side of the sky is left out
    with pytest.raises(ValueError, match="no celestial WCS"):
        stars_on_image(cat, None, (64, 64))


# ---------------------------------------------------------------------------------------------- pipelines
def detect_config(tmp_path: Path, *overrides: str):
    return detect_pipeline_config(tmp_path, "artifact=x.pt", *overrides)


def test_detect_drops_an_image_detection_on_a_catalogued_star(tmp_path, fake_cascade):
    from neocascade.detection.catalogue import read_catalogue
    from neocascade.pipelines.detect import detect

    image = blob_image(sources=((16, 32), (48, 48)))  # (row, col): the first at the WCS reference pixel
    path = tmp_path / "img.fits"
    fits.HDUList([fits.PrimaryHDU(image, header=tan_wcs().to_header())]).writeto(path)
    stars = write_catalogues(tmp_path)["csv"]
    out = tmp_path / "det"
    assert detect(detect_config(tmp_path, f"input={path}", f"out={out}", "reference_check=stars",
                                f"reference={stars}")) == 0
    rows = read_catalogue(out / "catalogue.csv")
    assert [(float(r["x"]), float(r["y"])) for r in rows] == [(48.0, 48.0)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"]["stars"] == 3 and "StarCheck" in summary["reference_check"]
    assert detect(detect_config(tmp_path, f"input={path}", f"out={tmp_path / 'plain'}")) == 0
    assert len(read_catalogue(tmp_path / "plain" / "catalogue.csv")) == 2


def test_detect_refuses_a_catalogue_without_the_check_and_checks_images_only_with_one(tmp_path, fake_cascade, caplog):
    from neocascade.pipelines.detect import detect

    path = tmp_path / "img.fits"
    fits.HDUList([fits.PrimaryHDU(blob_image(sources=((16, 32),)), header=tan_wcs().to_header())]).writeto(path)
    stars = write_catalogues(tmp_path)["fits"]
    with pytest.raises(InputError, match="only read with reference_check=stars"):
        detect(detect_config(tmp_path, f"input={path}", f"out={tmp_path / 'a'}", f"reference={stars}",
                             "reference_check=none"))
    assert detect(detect_config(tmp_path, f"input={path}", f"out={tmp_path / 'b'}")) == 0  # the default: stars
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["reference_check"].startswith("StarCheck") and summary["images_reference_checked"] is False
    assert summary["reference"] is None and "not checked against one" in caplog.text


def test_detect_image_without_wcs_fails_that_image_only(tmp_path, fake_cascade):
    from neocascade.pipelines.detect import detect

    path = tmp_path / "nowcs.fits"
    fits.HDUList([fits.PrimaryHDU(blob_image(sources=((16, 32),)))]).writeto(path)
    stars = write_catalogues(tmp_path)["fits"]
    out = tmp_path / "det"
    assert detect(detect_config(tmp_path, f"input={path}", f"out={out}", "reference_check=stars",
                                f"reference={stars}")) != 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["failed"]) == 1 and "no celestial WCS" in summary["failed"][0]


def test_alert_on_a_catalogued_star_is_not_detected(tmp_path, fake_cascade):
    from neocascade.detection.catalogue import read_catalogue
    from neocascade.io.alerts import write_test_alert
    from neocascade.pipelines.detect import detect

    stamp = blob_image(shape=(63, 63), sources=((31, 31),))
    folder = tmp_path / "alerts"
    folder.mkdir()
    write_test_alert(folder / "star.avro", difference=stamp, candid=1, distnr=0.4, magnr=15.2)
    write_test_alert(folder / "faint.avro", difference=stamp, candid=2, distnr=0.4, magnr=19.5)
    write_test_alert(folder / "none.avro", difference=stamp, candid=3, distnr=-999.0, magnr=-999.0)
    out = tmp_path / "det"
    assert detect(detect_config(tmp_path, f"input={folder}", f"out={out}", "reference_check=stars")) == 0
    rows = {r["image"]: r["detected"] for r in read_catalogue(out / "catalogue.csv")}
    assert rows == {"1": "0", "2": "1", "3": "1"}


def test_alert_evaluation_reference_variant(tmp_path, monkeypatch):
    import neocascade.training.artifact as artifact
    from neocascade.io.alerts import write_test_alert
    from neocascade.pipelines.alerts_eval import evaluate_alerts
    from test_detection import ThresholdCascade

    monkeypatch.setattr(artifact, "load_cascade", lambda path, **kwargs: ThresholdCascade())
    stamp = blob_image(shape=(63, 63), sources=((31, 31),))
    folder = tmp_path / "alerts"
    folder.mkdir()
    write_test_alert(folder / "a.avro", difference=stamp, ssdistnr=1.0, candid=1, magpsf=18.0, distnr=3.0, magnr=14.0)
    write_test_alert(folder / "v.avro", difference=stamp, candid=2, magpsf=18.0, distnr=0.2, magnr=16.0)
    write_test_alert(folder / "s.avro", difference=stamp, candid=3, magpsf=18.0, distnr=5.0, magnr=16.0)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("detect", overrides=[f"paths.outputs={tmp_path / 'outputs'}", "data=ztf_alerts",
                                           f"data.path={folder}", "name=ref", "reference_check=stars"])
    assert evaluate_alerts(cfg) == 0
    out = tmp_path / "outputs" / "eval" / "ztf_alerts" / "ref"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["headline"] == "stamp_history_reference" and "StarCheck" in metrics["reference_check"]
    assert metrics["known_asteroid_recall"]["rate"] == 1.0
    assert metrics["other_positive_rate"]["rate"] == 0.5  # the one on a 16 mag star goes
    assert metrics["variants"]["stamp_history"]["other_positive_rate"]["rate"] == 1.0
    assert "stamp + history + reference" in (out / "alerts_report.md").read_text()


def evaluate_config(tmp_path: Path, *overrides: str):
    return evaluate_pipeline_config(tmp_path, "figures=[]", "artifact=fake/run1/cascade.pt", "data=tiny",
                                    "eval.operating_point=artifact", "residual_check=none", *overrides)


def test_evaluate_reference_check_uses_each_images_own_stars(tmp_path, monkeypatch):
    """An absurdly wide check (every star, 400 px) drops detections near any star: vetoed and counted as misses;
    the default one (evaluate.py's default), on the same crowded images, drops almost no asteroid."""
    import neocascade.training.artifact as artifact
    from neocascade.pipelines.evaluate import evaluate
    from test_evaluate_pipeline import CentreCascade

    monkeypatch.setattr(artifact, "load_cascade", lambda path, **kwargs: CentreCascade())
    crowded = "+data.source.sim.star_residual_rate=3000"
    plain = evaluate(evaluate_config(tmp_path, crowded, "name=plain", "reference_check=none"),
                     run_dir=tmp_path / "r1")["metrics"]
    wide = evaluate(evaluate_config(tmp_path, crowded, "name=wide", "reference_check=stars",
                                    "reference_check.radius=400", "reference_check.max_mag=99"),
                    run_dir=tmp_path / "r2")["metrics"]
    default = evaluate(evaluate_config(tmp_path, crowded, "name=default"), run_dir=tmp_path / "r3")["metrics"]
    assert plain["test/e2e_vetoed"] == 0
    assert wide["test/e2e_found"] == 0 < plain["test/e2e_found"] and wide["test/e2e_detections"] == 0
    assert wide["test/e2e_vetoed"] > 0
    assert default["test/e2e_found"] >= plain["test/e2e_found"] - 1 and default["test/e2e_vetoed"] > 0
    assert default["test/e2e_detections"] < plain["test/e2e_detections"]  # residuals of bright stars dropped
    md = (tmp_path / "outputs" / "eval" / "wide" / "report.md").read_text()
    assert "StarCheck(radius=400.0, max_mag=99.0)" in md


def test_star_reader_refuses_a_source_without_a_catalogue():
    from neocascade.pipelines.checks import star_reader

    with pytest.raises(InputError, match="reference_check: needs a reference catalogue"):
        star_reader(object(), None, key="reference_check")


def test_evaluate_without_a_catalogue_runs_without_the_check(tmp_path, monkeypatch, caplog):
    """A data source with no reference catalogue (image files) is evaluated without the default check, and the
    log and the report say so."""
    import neocascade.training.artifact as artifact
    from neocascade.data.sources import SimulatedSource
    from neocascade.pipelines.evaluate import evaluate
    from test_evaluate_pipeline import CentreCascade

    monkeypatch.setattr(artifact, "load_cascade", lambda path, **kwargs: CentreCascade())
    monkeypatch.delattr(SimulatedSource, "reference_stars")
    crowded = "+data.source.sim.star_residual_rate=3000"
    result = evaluate(evaluate_config(tmp_path, crowded, "name=nocat"), run_dir=tmp_path / "r1")
    assert result["metrics"]["test/e2e_vetoed"] == 0 and "no reference catalogue" in caplog.text
    md = (tmp_path / "outputs" / "eval" / "nocat" / "report.md").read_text()
    assert "StarCheck" not in md
