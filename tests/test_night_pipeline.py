"""The night pipeline (link.py) on a tiny synthetic night: one field, three visits, two movers, one transient."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from neocascade.errors import InputError
from neocascade.io.ades import read_ades_psv
from neocascade.io.npz import write_canonical
from neocascade.io.observation import Observation
from neocascade.pipelines.night import link_night, run
from neocascade.simulation.streaks import render_trail

ROOT = Path(__file__).resolve().parents[1]
SIZE = 256
SCALE = 1.01 / 3600.0
TIMES = 60100.25 + np.array([0.0, 25.0, 50.0]) / 1440.0
EXPTIME = 30.0


def _wcs(epoch: int) -> np.ndarray:
    """TAN WCS row of a visit: 1.01 arcsec/px, RA to -x, a few px of pointing offset per visit."""
    return np.array([150.0, 20.0, 128.5 + 3.0 * epoch, 128.5 - 2.0 * epoch, -SCALE, 0.0, 0.0, SCALE])


def _paint(image: np.ndarray, x: float, y: float, flux: float, length: float = 0.0, angle: float = 0.0) -> None:
    stamp, r0, c0 = render_trail(x, y, length=length, angle=angle, fwhm=2.0, beta=2.5)
    h, w = stamp.shape
    image[r0:r0 + h, c0:c0 + w] += flux * stamp


def _night(folder: Path, *, keys: bool = True) -> Path:
    """Write a 3-image night file: movers 0 (0.6 deg/day) and 1 (1.2 deg/day), a supernova, noise."""
    rng = np.random.default_rng(7)
    images = rng.normal(0.0, 6.0, (3, SIZE, SIZE)).astype(np.float32)
    start = {0: (220.0, 80.0, 0.6, 70.0), 1: (200.0, 220.0, 1.2, 160.0)}  # x0, y0 at epoch 0, rate deg/day, pa
    truth, stationary = [], []
    obs0 = Observation(mjd=TIMES[0], exptime=EXPTIME, wcs=_wcs(0))
    sn_ra, sn_dec = obs0.pixel_to_sky(120.0, 190.0)
    for e in range(3):
        obs = Observation(mjd=TIMES[e], exptime=EXPTIME, wcs=_wcs(e))
        for oid, (x0, y0, rate, pa) in start.items():
            ra0, dec0 = obs0.pixel_to_sky(x0, y0)
            dt = TIMES[e] - TIMES[0]
            a = np.deg2rad(pa)
            ra = ra0 + rate * dt * np.sin(a) / np.cos(np.deg2rad(dec0))
            dec = dec0 + rate * dt * np.cos(a)
            x, y = (float(v) for v in obs.sky_to_pixel(ra, dec))
            length = rate * EXPTIME / 86400 / SCALE
            angle = float(np.rad2deg(np.arctan2(np.cos(a), -np.sin(a))) % 180.0)
            _paint(images[e], x, y, 4000.0, length, angle)
            truth.append([e, x, y, 17.0 + oid, length, angle, oid])
        x, y = (float(v) for v in obs.sky_to_pixel(sn_ra, sn_dec))
        _paint(images[e], x, y, 4000.0)
        stationary.append([e, x, y, 17.5, 100])
    path = folder / "night_field7.npz"
    extra = dict(obs_mjd=TIMES, exptime=np.full(3, EXPTIME), wcs=np.stack([_wcs(e) for e in range(3)]),
                 field=np.full(3, 7), epoch=np.arange(3), stationary=np.array(stationary)) if keys else {}
    write_canonical(path, images, np.array(truth) if keys else np.array(truth)[:, :6], {"preset": "test"}, **extra)
    return path


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="link", overrides=[
            f"input={tmp_path / 'night'}", f"out={tmp_path / 'out'}", "progress=false", "link.threshold=0.3",
            "link.pair_min_score=0.5", *overrides,
        ])


@pytest.fixture
def night(tmp_path: Path) -> Path:
    (tmp_path / "night").mkdir()
    return _night(tmp_path / "night")


def test_night_links_movers_and_flags_transient(tmp_path, night):
    metrics = link_night(_cfg(tmp_path))
    out = tmp_path / "out"
    with open(out / "detections.csv") as fh:
        det = list(csv.DictReader(fh))
    movers = [r for r in det if r["object_id"] != "-1"]
    assert len(movers) == 6
    per_object = {o: {r["tracklet"] for r in movers if r["object_id"] == o} for o in ("0", "1")}
    assert all(len(t) == 1 and "-1" not in t for t in per_object.values()) and per_object["0"] != per_object["1"]
    sn = [r for r in det if r["transient_id"] == "100"]
    assert len(sn) == 3 and all(r["stationary"] == "1" and r["tracklet"] == "-1" for r in sn)
    link = metrics["linking"]
    assert link["n_findable"] == 2 and link["completeness"] == 1.0 and link["tracklet_purity"] == 1.0
    assert link["stationary_share"] == 1.0 and link["transients_flagged"] == 1.0
    assert metrics["after_linking"]["completeness"] == 1.0
    with open(out / "tracklets.csv") as fh:
        tracklets = list(csv.DictReader(fh))
    rates = sorted(float(t["rate"]) for t in tracklets)
    np.testing.assert_allclose(rates, [0.6, 1.2], rtol=0.05)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["counts"]["tracklets"] == 2 and saved["single_exposure"]["purity_target"] == 0.98
    for name in ("sky_field7.png", "completeness_vs_rate.png", "completeness_vs_magnitude.png"):
        assert (out / "figures" / name).stat().st_size > 0
    psv = (out / "tracklets.psv").read_text()
    assert "I41" in psv and psv.count("\n") >= 6
    back = read_ades_psv(out / "tracklets.psv")
    assert len(set(back["trksub"].tolist())) == 2 and back["ra"].size == 6
    assert sum(" t00000" in line for line in (out / "tracklets.mpc80").read_text().splitlines()) == 6


def test_refuses_to_overwrite_and_bad_files(tmp_path, night):
    link_night(_cfg(tmp_path, "figures=false"))
    with pytest.raises(InputError, match="already exists"):
        link_night(_cfg(tmp_path, "figures=false"))
    plain = tmp_path / "plain"
    plain.mkdir()
    _night(plain, keys=False)
    with pytest.raises(InputError, match="not a night file: missing key"):
        link_night(_cfg(tmp_path, f"input={plain}", f"out={tmp_path / 'o2'}"))
    with pytest.raises(SystemExit) as exc:
        run(_cfg(tmp_path, f"input={tmp_path / 'nothing'}", f"out={tmp_path / 'o3'}"))
    assert exc.value.code == 2
    with pytest.raises(InputError, match="link.threshold"):
        link_night(_cfg(tmp_path, "link.threshold=1.5", f"out={tmp_path / 'o4'}"))


def test_entry_script_bad_input_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "link.py"), f"input={tmp_path / 'missing'}",
                           f"out={tmp_path / 'o'}", "hydra.run.dir=" + str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in proc.stderr


def test_simulated_night_tiny_end_to_end(tmp_path):
    """simulate.py data=night_tiny, then link.py with the shipped cascade: the shared format holds end to end."""
    from neocascade.pipelines.simulate import simulate_dataset

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        sim = compose(config_name="simulate", overrides=["data=night_tiny", f"out_dir={tmp_path / 'night'}"])
    simulate_dataset(sim)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="link", overrides=[f"input={tmp_path / 'night'}", f"out={tmp_path / 'out'}",
                                                     "progress=false", "figures=false"])
    metrics = link_night(cfg)
    link = metrics["linking"]
    assert link["n_findable"] >= 10
    assert link["completeness"] >= 0.8 and link["tracklet_purity"] >= 0.8
    assert link["transients_flagged"] == 1.0 and link["asteroid_stationary_share"] == 0.0
    assert metrics["after_linking"]["completeness"] > metrics["single_exposure"]["completeness"]
