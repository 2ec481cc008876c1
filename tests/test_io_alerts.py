"""io/alerts.py: real ZTF packets and tiny synthetic ones."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from neocascade.errors import InputError
from neocascade.io.alerts import (
    Alert,
    decode_stamp,
    iter_alerts,
    make_test_record,
    read_alert,
    read_alerts,
    write_test_alert,
    write_test_alerts,
)

ZTF_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf_alerts"  # ../shared beside the checkout


def _stamp(value: float = 5.0, shape: tuple[int, int] = (9, 7)) -> np.ndarray:
    stamp = np.zeros(shape, dtype=np.float32)
    stamp[shape[0] // 2, shape[1] // 2] = value
    stamp[0, 0] = np.nan
    return stamp


def _real_alerts() -> list[Path]:
    files = sorted(ZTF_DIR.glob("*.avro")) if ZTF_DIR.is_dir() else []
    if not files:
        pytest.skip(f"{ZTF_DIR} not present")
    return files


def test_synthetic_alert_round_trip(tmp_path):
    diff, sci, ref = _stamp(5.0), _stamp(8.0), _stamp(3.0)
    path = write_test_alert(
        tmp_path / "a.avro", difference=diff, science=sci, template=ref, candid=42, ssdistnr=2.5, magpsf=18.5
    )
    alert = read_alert(path)
    assert isinstance(alert, Alert)
    assert alert.path == path and alert.candid == 42 and alert.object_id == "ZTF23test"
    assert alert.isdiffpos is True
    assert alert.candidate["magpsf"] == 18.5 and alert.candidate["rb"] == 0.9
    for got, want in ((alert.difference, diff), (alert.science, sci), (alert.template, ref)):
        assert got.dtype == np.float32 and got.shape == (9, 7)
        np.testing.assert_array_equal(got, want)  # NaN positions compare equal
    np.testing.assert_array_equal(alert.signed_difference, diff)
    assert alert.is_known_asteroid


def test_negative_alert_signed_difference(tmp_path):
    diff = _stamp(5.0)
    alert = read_alert(write_test_alert(tmp_path / "n.avro", difference=diff, isdiffpos=False))
    assert alert.isdiffpos is False
    np.testing.assert_array_equal(alert.difference, diff)
    np.testing.assert_array_equal(alert.signed_difference, -diff)
    assert alert.science is None and alert.template is None


@pytest.mark.parametrize(("ssdistnr", "known"), [(-999.0, False), (0.0, True), (5.0, True), (5.01, False), (60.0, False)])
def test_is_known_asteroid(tmp_path, ssdistnr, known):
    alert = read_alert(write_test_alert(tmp_path / "s.avro", difference=_stamp(), ssdistnr=ssdistnr))
    assert alert.is_known_asteroid is known


@pytest.mark.parametrize(("flag", "expected"), [("t", True), ("1", True), ("f", False), ("0", False)])
def test_isdiffpos_spellings(tmp_path, flag, expected):
    path = write_test_alert(tmp_path / "d.avro", difference=_stamp(), isdiffpos=flag)
    assert read_alert(path).isdiffpos is expected


def test_multi_record_file_and_dedupe(tmp_path):
    records = [make_test_record(difference=_stamp(float(c)), candid=c) for c in (1, 2, 3)]
    multi = write_test_alerts(tmp_path / "multi.avro", records)
    assert [a.candid for a in read_alerts(multi)] == [1, 2, 3]
    with pytest.raises(InputError, match="expected exactly one alert record"):
        read_alert(multi)
    write_test_alert(tmp_path / "dup.avro", difference=_stamp(), candid=2)
    write_test_alert(tmp_path / "new.avro", difference=_stamp(), candid=7)
    assert sorted(a.candid for a in iter_alerts(tmp_path)) == [1, 2, 3, 7]
    assert [a.candid for a in iter_alerts([multi, multi])] == [1, 2, 3]


def test_write_refuses_overwrite(tmp_path):
    path = write_test_alert(tmp_path / "a.avro", difference=_stamp())
    with pytest.raises(InputError, match="already exists"):
        write_test_alert(path, difference=_stamp())
    write_test_alert(path, difference=_stamp(), candid=9, overwrite=True)
    assert read_alert(path).candid == 9


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_alert(tmp_path / "absent.avro")


def test_not_avro(tmp_path):
    path = tmp_path / "junk.avro"
    path.write_text("this is not avro")
    with pytest.raises(InputError, match=r"junk\.avro: not a readable avro file"):
        read_alert(path)


def test_truncated_avro(tmp_path):
    full = write_test_alert(tmp_path / "full.avro", difference=_stamp(shape=(40, 40)))
    data = full.read_bytes()
    path = tmp_path / "cut.avro"
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(InputError, match=r"cut\.avro: (truncated|not a readable)"):
        read_alert(path)


def test_missing_difference_stamp(tmp_path):
    path = write_test_alert(tmp_path / "nodiff.avro", difference=None, science=_stamp(), candid=77)
    with pytest.raises(InputError, match=r"nodiff\.avro: candid 77: record has no 'cutoutDifference' stamp"):
        read_alert(path)


def test_undecodable_stamp(tmp_path):
    record = make_test_record(difference=_stamp(), candid=5)
    record["cutoutDifference"]["stampData"] = gzip.compress(b"not a fits file at all" * 10)
    path = write_test_alerts(tmp_path / "bad.avro", [record])
    with pytest.raises(InputError, match=r"bad\.avro: candid 5 cutoutDifference: stamp is not a decodable FITS"):
        read_alert(path)
    record["cutoutDifference"]["stampData"] = b"\x1f\x8b garbage"
    path = write_test_alerts(tmp_path / "bad2.avro", [record])
    with pytest.raises(InputError, match="stamp is not a decodable FITS"):
        read_alert(path)


def test_bad_isdiffpos(tmp_path):
    path = write_test_alert(tmp_path / "x.avro", difference=_stamp(), isdiffpos="maybe")
    with pytest.raises(InputError, match="unreadable 'isdiffpos'"):
        read_alert(path)


def test_decode_stamp_rejects_empty():
    with pytest.raises(InputError, match="stamp has no data"):
        decode_stamp(b"")


def test_real_packets():
    files = _real_alerts()
    alerts = [read_alert(f) for f in files[:20]]
    for alert in alerts:
        assert alert.candid > 0 and alert.object_id.startswith("ZTF")
        assert alert.difference.dtype == np.float32 and alert.difference.ndim == 2
        assert alert.science.shape == alert.difference.shape == alert.template.shape
        assert alert.candidate["candid"] == alert.candid
        assert alert.isdiffpos is (alert.candidate["isdiffpos"] in ("t", "1"))


def test_real_negative_packet_is_flipped():
    files = _real_alerts()
    negative = next((a for f in files for a in read_alerts(f) if not a.isdiffpos), None)
    if negative is None:
        pytest.skip("no negative alert in the sample")
    np.testing.assert_array_equal(negative.signed_difference, -negative.difference)


def test_prv_candidates_round_trip_and_previous_detections(tmp_path):
    history = [
        {"jd": 2460235.70, "candid": 11, "ra": 10.0, "dec": 20.0, "magpsf": 18.2, "isdiffpos": "t", "fid": 1},
        {"jd": 2460235.80, "candid": None, "diffmaglim": 20.5, "fid": 2},  # an upper limit: not a detection
        {"jd": 2460235.90, "candid": 12, "ra": 10.0001, "dec": 20.0, "magpsf": None, "isdiffpos": "f"},
        {"jd": None, "candid": 13, "ra": 10.0, "dec": 20.0},  # no time: left out
    ]
    path = write_test_alert(tmp_path / "h.avro", difference=_stamp(), prv_candidates=history, jdstarthist=2460235.7)
    alert = read_alert(path)
    assert len(alert.prv_candidates) == 4 and alert.prv_candidates[1]["diffmaglim"] == 20.5
    assert alert.candidate["jdstarthist"] == 2460235.7
    det = alert.previous_detections()
    np.testing.assert_array_equal(det["jd"], [2460235.70, 2460235.90])
    np.testing.assert_array_equal(det["isdiffpos"], [True, False])
    assert det["magpsf"][0] == 18.2 and np.isnan(det["magpsf"][1])
    none = read_alert(write_test_alert(tmp_path / "n.avro", difference=_stamp()))
    assert none.prv_candidates == () and none.previous_detections()["jd"].size == 0


def test_prv_candidates_not_a_list():
    from neocascade.io.alerts import _parse_record

    record = make_test_record(difference=_stamp(), candid=8)
    record["prv_candidates"] = {"jd": 1.0}
    with pytest.raises(InputError, match="candid 8: 'prv_candidates' is not a list of records"):
        _parse_record(Path("p.avro"), record, 0)


def test_real_packets_carry_history():
    files = _real_alerts()
    alerts = [read_alert(f) for f in files[:20]]
    assert all("jdstarthist" in a.candidate and "ndethist" in a.candidate for a in alerts)
    assert any(len(a.prv_candidates) > 0 for a in alerts)
    for alert in alerts:
        det = alert.previous_detections()
        assert np.all(np.isfinite(det["ra"])) and np.all(np.abs(det["jd"] - alert.candidate["jd"]) < 31)  # 30-day window
