"""detect.py end to end on tiny files of every input kind: catalogue, overlays, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hydra import compose, initialize_config_dir

from neocascade.detection.catalogue import CATALOGUE_COLUMNS, read_catalogue
from neocascade.pipelines.detect import detect, run
from test_detection import SELECTOR, blob_image, tan_wcs

REPO = Path(__file__).resolve().parents[1]
SPEC = {"sigma": 1.0, "selector": SELECTOR, "cutout_size": 21, "channels": ["filtered"], "normalize": "none"}


def tiny_artifact(path: Path, *, threshold: float, logit: float = 0.0, veto: dict | None = None) -> Path:
    """A real cascade artifact from an untrained, zeroed BaselineNet: every cutout gets P = sigmoid(logit)."""
    import torch

    from neocascade.models.baseline import BaselineNet
    from neocascade.training.artifact import save_cascade, stage_record

    model = BaselineNet(1, 21, widths=(2, 2, 2), hidden=(4, 4))
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.copy_(torch.tensor([0.0, logit]))
    record = stage_record(model, threshold)
    return save_cascade(path, stage1=record, stage2=record, input_spec=SPEC, config={}, metrics={},
                        postprocess={"veto": veto})


def config(tmp_path: Path, *overrides: str):
    """The detect config; the serial loop unless overridden, since a monkeypatched cascade lives in this process.
    No residual check unless overridden: these hand-made images are points on a flat sky, counted exactly
    (the check has its own tests in test_residuals.py)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("detect", overrides=[f"paths.outputs={tmp_path / 'outputs'}", "progress=false", "cluster=none",
                                            "residual_check=none", *overrides])


def write_npz(path: Path, images: np.ndarray) -> Path:
    from neocascade.io.npz import write_canonical

    return write_canonical(path, images, np.empty((0, 6)), {"source": "test"})


def write_fits(path: Path, image: np.ndarray, *, mask: np.ndarray | None = None) -> Path:
    hdus = [fits.PrimaryHDU(image, header=tan_wcs().to_header())]
    if mask is not None:
        hdus.append(fits.ImageHDU(mask.astype(np.uint8), name="MASK"))
    fits.HDUList(hdus).writeto(path)
    return path


def rows_of(out: Path) -> list[dict]:
    return read_catalogue(out / "catalogue.csv")


def positions(rows: list[dict]) -> list[tuple[str, float, float]]:
    return sorted((r["image"], float(r["x"]), float(r["y"])) for r in rows)


def test_npz_images_give_rows_overlays_and_summary(tmp_path, fake_cascade):
    images = np.stack([blob_image(sources=((20, 40),)), blob_image(sources=((50, 10), (12, 12)), seed=4)])
    data = write_npz(tmp_path / "images_0.npz", images)
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}")) == 0
    rows = rows_of(out)
    assert list(rows[0]) == list(CATALOGUE_COLUMNS)
    assert positions(rows) == [("0", 40.0, 20.0), ("1", 10.0, 50.0), ("1", 12.0, 12.0)]
    assert {r["detected"] for r in rows} == {"1"} and {r["ra"] for r in rows} == {""}
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["images_0_0.png", "images_0_1.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["detections"], summary["failed"]) == (2, 3, [])


def test_fits_with_wcs_and_mask_hdu(tmp_path, fake_cascade):
    image = blob_image(sources=((16, 32), (48, 48)))
    mask = np.zeros(image.shape, dtype=bool)
    mask[42:55, 42:55] = True  # hides the second source completely
    path = write_fits(tmp_path / "ztf_000_scimrefdiffimg.fits", image, mask=mask)
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input={tmp_path}/*.fits", "artifact=x.pt", f"out={out}", "mask_hdu=MASK")) == 0
    (row,) = rows_of(out)
    assert (row["file"], float(row["x"]), float(row["y"])) == (str(path), 32.0, 16.0)
    assert float(row["ra"]) == pytest.approx(150.0, abs=1e-7) and float(row["dec"]) == pytest.approx(2.0, abs=1e-7)
    # without the mask both sources are found
    assert detect(config(tmp_path, f"input={path}", "artifact=x.pt", f"out={tmp_path / 'nomask'}")) == 0
    assert len(rows_of(tmp_path / "nomask")) == 2


def test_avro_alerts_one_row_each_and_negative_subtraction_rejected(tmp_path, fake_cascade):
    from neocascade.io.alerts import write_test_alert

    stamp = blob_image(shape=(63, 63), sources=((31, 31),))
    folder = tmp_path / "alerts"
    folder.mkdir()
    write_test_alert(folder / "pos.avro", difference=stamp, isdiffpos=True, candid=11, xpos=101.0, ypos=201.0,
                     ra=10.5, dec=-3.25)
    # a negative alert's stamp is stored sign-flipped, so its fading source looks positive as stored
    write_test_alert(folder / "neg.avro", difference=stamp, isdiffpos=False, candid=12, xpos=5.0, ypos=6.0,
                     ra=1.0, dec=2.0)
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input={folder}", "artifact=x.pt", f"out={out}")) == 0
    rows = {r["image"]: r for r in rows_of(out)}
    assert rows["11"]["detected"] == "1" and rows["12"]["detected"] == "0"
    assert (float(rows["11"]["x"]), float(rows["11"]["y"]), float(rows["11"]["ra"])) == (100.0, 200.0, 10.5)
    assert rows["12"]["p2"] == "" and float(rows["12"]["p1"]) == 0.0
    assert not (out / "overlays").exists()


def test_challenge_layout_needs_allow_pickle(tmp_path, fake_cascade, capsys):
    from neocascade.io.challenge import write_challenge

    write_challenge(tmp_path / "challenge", 0, blob_image(sources=((30, 30),))[None], np.empty((0, 6)))
    cfg = config(tmp_path, f"input={tmp_path / 'challenge'}", "artifact=x.pt", f"out={tmp_path / 'a'}",
                 "allow_pickle=true")
    assert detect(cfg) == 0
    assert positions(rows_of(tmp_path / "a")) == [("0", 30.0, 30.0)]
    capsys.readouterr()
    # the only input is bad: exit 2, not 1
    assert detect(config(tmp_path, f"input={tmp_path / 'challenge'}", "artifact=x.pt", f"out={tmp_path / 'b'}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "asteroid_injected_information_0.npz" in err[0] and "allow_pickle=true" in err[0]


def test_bad_images_are_reported_and_skipped(tmp_path, fake_cascade, capsys):
    images = np.stack([np.full((64, 64), np.nan, np.float32), blob_image(sources=((20, 40),))])
    data = write_npz(tmp_path / "images_0.npz", images)
    small = write_fits(tmp_path / "small.fits", np.ones((10, 12), np.float32))
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input=[{data},{small}]", "artifact=x.pt", f"out={out}")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {data}[image 0]: image: every pixel is NaN or infinite (fully masked)",
        f"error: {small}[image 0]: image: 10x12 px is smaller than the cascade's 21x21 cutouts",
    ]
    assert positions(rows_of(out)) == [("1", 40.0, 20.0)]


def test_alert_without_difference_stamp_is_skipped(tmp_path, fake_cascade, capsys):
    from neocascade.io.alerts import write_test_alert

    good = write_test_alert(tmp_path / "good.avro", difference=blob_image(shape=(63, 63), sources=((31, 31),)), candid=1)
    bad = write_test_alert(tmp_path / "bad.avro", difference=None, candid=2)
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input=[{bad},{good}]", "artifact=x.pt", f"out={out}")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "cutoutDifference" in err[0]
    assert [r["image"] for r in rows_of(out)] == ["1"]


def test_existing_output_is_not_overwritten(tmp_path, fake_cascade, capsys):
    data = write_npz(tmp_path / "images_0.npz", blob_image()[None])
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}")) == 0
    before = (out / "catalogue.csv").read_text()
    with pytest.raises(SystemExit) as exit_info:
        run(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}"))
    assert exit_info.value.code == 2
    assert "catalogue.csv: already exists; pass overwrite=true" in capsys.readouterr().err
    assert (out / "catalogue.csv").read_text() == before
    assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}", "overwrite=true")) == 0


def test_real_artifact_thresholds_decide(tmp_path):
    accept_all = tiny_artifact(tmp_path / "all.pt", threshold=0.4)
    reject_all = tiny_artifact(tmp_path / "none.pt", threshold=0.6)
    data = write_npz(tmp_path / "images_0.npz", blob_image(shape=(32, 32), sources=((8, 8),))[None])
    assert detect(config(tmp_path, f"input={data}", f"artifact={accept_all}", f"out={tmp_path / 'a'}",
                         "merge_radius=0")) == 0
    rows = rows_of(tmp_path / "a")
    assert len(rows) == 4  # one footprint peak per 16x16 block, nothing merged
    assert {r["p1"] for r in rows} == {"0.5"} and {r["p2"] for r in rows} == {"0.5"}
    assert detect(config(tmp_path, f"input={data}", f"artifact={reject_all}", f"out={tmp_path / 'b'}")) == 0
    assert rows_of(tmp_path / "b") == []
    assert (tmp_path / "b" / "catalogue.csv").read_text().strip() == ",".join(CATALOGUE_COLUMNS)


def test_the_shipped_cascade_is_the_default(tmp_path, monkeypatch, capsys):
    """No artifact= : the package's shipped cascade; none shipped: one line saying so."""
    import neocascade.training.artifact as artifact
    from neocascade.pipelines.ship import ship

    packaged = tmp_path / "pkg" / "artifacts" / "neocascade.pt"
    monkeypatch.setattr(artifact, "PACKAGED", packaged)
    data = write_npz(tmp_path / "images_0.npz", blob_image(shape=(32, 32), sources=((8, 8),))[None])
    with pytest.raises(SystemExit) as exit_info:
        run(config(tmp_path, f"input={data}", f"out={tmp_path / 'none'}"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: artifact: none given and no cascade is shipped in this package yet")
    ship([f"artifact={tiny_artifact(tmp_path / 'run' / 'cascade.pt', threshold=0.4)}", f"out={packaged}"])
    assert json.loads(packaged.with_suffix(".json").read_text())["veto"] is None  # the provenance names the veto
    assert detect(config(tmp_path, f"input={data}", f"out={tmp_path / 'a'}", "merge_radius=0")) == 0
    assert len(rows_of(tmp_path / "a")) == 4
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["artifact"] == str(packaged)


def test_the_artifacts_veto_applies_unless_overridden(tmp_path):
    """A veto stored in the artifact drops detections by default; veto=none on the command line keeps them."""
    every_line = {"_target_": "neocascade.detection.streaks.StreakVeto", "min_points": 3, "tolerance": 1000.0,
                  "min_span": 0.0}  # any 3 detections of an image are "a streak"
    artifact = tiny_artifact(tmp_path / "cascade.pt", threshold=0.4, veto=every_line)
    data = write_npz(tmp_path / "images_0.npz", blob_image(shape=(32, 32), sources=((8, 8),))[None])
    assert detect(config(tmp_path, f"input={data}", f"artifact={artifact}", f"out={tmp_path / 'a'}", "merge_radius=0")) == 0
    assert rows_of(tmp_path / "a") == []
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["veto"].startswith("StreakVeto(min_points=3")
    assert detect(config(tmp_path, f"input={data}", f"artifact={artifact}", f"out={tmp_path / 'b'}", "merge_radius=0",
                         "veto=none")) == 0
    assert len(rows_of(tmp_path / "b")) == 4


def test_wrong_architecture_is_fatal(tmp_path, capsys):
    artifact = tiny_artifact(tmp_path / "cascade.pt", threshold=0.5)
    data = write_npz(tmp_path / "images_0.npz", blob_image()[None])
    with pytest.raises(SystemExit) as exit_info:
        run(config(tmp_path, f"input={data}", f"artifact={artifact}", f"out={tmp_path / 'o'}", "expected_arch=final"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained as 'baseline', config asks 'final'" in err[0] and "cascade.pt" in err[0]


@pytest.mark.slow
def test_cli_batch_with_a_corrupt_file(tmp_path):
    artifact = tiny_artifact(tmp_path / "cascade.pt", threshold=0.4)
    good = [write_npz(tmp_path / f"images_{k}.npz", blob_image(shape=(32, 32), seed=k)[None]) for k in range(2)]
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  =                    T / not really FITS")
    out = tmp_path / "det"
    proc = subprocess.run(
        [sys.executable, str(REPO / "detect.py"), f"input={tmp_path}", f"artifact={artifact}", f"out={out}",
         "progress=false", "merge_radius=0", "hydra.run.dir=hydra_run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'broken.fits'}: "), proc.stderr
    assert sorted({r["file"] for r in rows_of(out)}) == [str(p) for p in good]


def test_bin_image_nan_aware_block_mean():
    from neocascade.pipelines.detect import bin_image

    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    image[0, 0] = np.nan
    binned, factor = bin_image(image, max_side=3)
    assert factor == 2
    np.testing.assert_array_equal(binned, [[(1 + 5 + 6) / 3, (2 + 3 + 7 + 8) / 4], [13.0, 15.0]])  # last column dropped
    binned, _ = bin_image(np.full((4, 4), np.nan, np.float32), max_side=2)
    assert np.isnan(binned).all()
    binned, _ = bin_image(image, max_side=3, reduce="max")
    np.testing.assert_array_equal(binned, [[6.0, 8.0], [16.0, 18.0]])  # NaN never wins a block


def trail_npz(path: Path) -> tuple[Path, np.ndarray]:
    """A 256x256 npz image (exptime 30 s) holding one 120 px trail and one point source; the trail's end points."""
    from neocascade.io.npz import write_canonical
    from neocascade.simulation.fast_movers import render_long_trail

    image = blob_image(shape=(256, 256), sources=((40, 200),), noise=6.0, seed=11)
    x, y, length, angle = 120.0, 140.0, 120.0, 30.0
    p = render_long_trail(image.shape, x=x, y=y, length=length, angle=angle, flux=20000.0, fwhm=2.2, beta=3.0)
    np.add.at(image, (p.rows, p.cols), p.values.astype(np.float32))
    half = 0.5 * length * np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))])
    ends = np.array([[x, y] - half, [x, y] + half])
    return write_canonical(path, image[None], np.empty((0, 6)), {"source": "test"}, exptime=np.array([30.0])), ends


def test_trails_default_adds_one_trail_row_and_merges_its_points(tmp_path, fake_cascade):
    data, ends = trail_npz(tmp_path / "images_0.npz")
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}", "trails=default")) == 0
    rows = rows_of(out)
    trails = [r for r in rows if r["kind"] == "trail"]
    assert len(trails) == 1 and [r["kind"] for r in rows] == ["point", "trail"]  # the trail's points merged into it
    (trail,) = trails
    found = np.array([[float(trail["x1"]), float(trail["y1"])], [float(trail["x2"]), float(trail["y2"])]])
    if np.abs(found - ends).sum() > np.abs(found[::-1] - ends).sum():
        found = found[::-1]
    np.testing.assert_allclose(found, ends, atol=2.0)
    assert float(trail["rate"]) == pytest.approx(float(trail["length"]) * 1.01 * 2.0, rel=1e-3)  # px -> "/min at 30 s
    (point,) = [r for r in rows if r["kind"] == "point"]
    assert (float(point["x"]), float(point["y"])) == (200.0, 40.0) and point["length"] == "" and point["x1"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trails"].startswith("TrailDetector(") and (summary["detections"], summary["trail_rows"]) == (2, 1)
    assert (out / "overlays" / "images_0_0.png").is_file()


def test_trails_none_gives_the_same_columns_and_no_trail_row(tmp_path, fake_cascade):
    data, _ = trail_npz(tmp_path / "images_0.npz")
    out = tmp_path / "det"
    assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}")) == 0
    rows = rows_of(out)
    assert list(rows[0]) == list(CATALOGUE_COLUMNS) and len(rows) > 2  # the trail's points stay separate detections
    assert {r["kind"] for r in rows} == {"point"} and {r["length"] for r in rows} == {""}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trails"] is None and summary["trail_rows"] == 0


def test_resumed_run_with_other_trail_settings_is_refused(tmp_path, fake_cascade, monkeypatch, capsys):
    from neocascade.pipelines.detect import STATE_DIR, RunFolder

    data, _ = trail_npz(tmp_path / "images_0.npz")
    out = tmp_path / "det"
    with monkeypatch.context() as patch:  # a run killed before it finished: its state stays behind
        patch.setattr(RunFolder, "finish", lambda self: None)
        assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}", "trails=default")) == 0
    assert (out / STATE_DIR).is_dir()
    for other in ("trails=none", "trails.min_snr=9.0"):
        with pytest.raises(SystemExit) as exit_info:
            run(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}", "trails=default", other))
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and "unfinished run with other settings" in err[0], err
    assert detect(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={out}", "trails=default")) == 0  # resumes
    assert json.loads((out / "summary.json").read_text())["resumed_files"] == 1 and not (out / STATE_DIR).exists()


def test_bad_trail_settings_are_one_line(tmp_path, fake_cascade, capsys):
    data, _ = trail_npz(tmp_path / "images_0.npz")
    with pytest.raises(SystemExit) as exit_info:
        run(config(tmp_path, f"input={data}", "artifact=x.pt", f"out={tmp_path / 'det'}", "trails=default",
                   "trails.min_width=5.0"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: trails: cannot build 'neocascade.detection.trails.TrailDetector'") and \
        "min_width <= max_width" in err[0]
    assert not (tmp_path / "det" / "catalogue.csv").exists()


def test_image_units_carry_the_exposure_time(tmp_path):
    from neocascade.detection.inputs import iter_units

    data, _ = trail_npz(tmp_path / "images_0.npz")
    assert [u.exptime for u in iter_units(data)] == [30.0]
    assert [u.exptime for u in iter_units(write_npz(tmp_path / "images_1.npz", blob_image()[None]))] == [None]
    image = blob_image()
    for value, expected in ((30.0, 30.0), (None, None), (0.0, None)):
        header = tan_wcs().to_header()
        if value is not None:
            header["EXPTIME"] = value
        path = tmp_path / f"e{value}.fits"
        fits.PrimaryHDU(image, header=header).writeto(path)
        assert [u.exptime for u in iter_units(path)] == [expected]
