"""io/ades.py: ADES PSV written and read back, and the published examples of IAU-ADES/ADES-Master parsed."""

from __future__ import annotations

import numpy as np
import pytest

from neocascade.errors import InputError
from neocascade.io.ades import (
    check_observations,
    iso_to_mjd,
    mjd_to_iso,
    read_ades_context,
    read_ades_psv,
    write_ades_psv,
)



def _obs(n: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "trksub": np.array(["nc00001"] * (n - 1) + ["nc00002"])[:n],
        "mjd": 60235.2 + np.sort(rng.uniform(0, 0.05, n)),
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-30, 80, n),
        "mag": np.r_[rng.uniform(17, 21, n - 1), np.nan][:n],
        "band": np.array(["r"] * (n - 1) + [""])[:n],
        "rms_ra": np.full(n, 0.12),
        "rms_dec": np.full(n, 0.15),
        "score": np.ones(n),  # extra keys (a detection table's) are ignored
    }


def test_round_trip_within_format_precision(tmp_path):
    obs = _obs(5)
    path = write_ades_psv(tmp_path / "t.psv", obs, observatory="I41", ast_cat="Gaia3")
    back = read_ades_psv(path)
    np.testing.assert_array_equal(back["trksub"], obs["trksub"])
    np.testing.assert_allclose(back["mjd"], obs["mjd"], atol=0.0005 / 86400 + 1e-9)  # 1 ms
    np.testing.assert_allclose(back["ra"], obs["ra"], atol=5e-7)  # 6 decimals
    np.testing.assert_allclose(back["dec"], obs["dec"], atol=5e-7)
    np.testing.assert_allclose(back["mag"], obs["mag"], atol=0.005)
    assert np.isnan(back["mag"][-1]) and back["band"].tolist() == ["r"] * 4 + [""]
    np.testing.assert_allclose(back["rms_ra"], 0.12) and np.testing.assert_allclose(back["rms_dec"], 0.15)
    assert set(back["stn"]) == {"I41"} and set(back["mode"]) == {"CCD"} and set(back["ast_cat"]) == {"Gaia3"}
    assert np.isnan(back["exptime"]).all() and (back["permid"] == "").all()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["# version=2022", "# observatory", "! mpcCode I41"]
    # rmsMag, permID, exp: no value in any row, no column
    assert [h.strip() for h in lines[3].split("|")] == ["trkSub", "mode", "stn", "obsTime", "ra", "dec", "rmsRA",
                                                        "rmsDec", "astCat", "mag", "band"]
    widths = {len(line.rstrip()) for line in lines[3:]}
    assert len({line.index("|") for line in lines[3:]}) == 1 and max(widths) <= 140
    with pytest.raises(InputError, match="already exists"):
        write_ades_psv(path, obs)
    write_ades_psv(path, obs, overwrite=True)


def test_default_template_alignment(tmp_path):
    obs = {"trksub": np.array(["a1"]), "mjd": np.array([60131.0123]), "ra": np.array([5.5]),
           "dec": np.array([-1.25]), "mag": np.array([19.456]), "band": np.array(["g"]), "exptime": np.array([30.0])}
    lines = write_ades_psv(tmp_path / "a.psv", obs, decimals=6).read_text().splitlines()
    fields = lines[-1].split("|")
    names = [h.strip() for h in lines[-2].split("|")]
    row = dict(zip(names, fields))
    assert row["trkSub"] == "      a1" and row["mode"] == " CCD" and row["stn"] == "I41 "
    assert row["ra"] == "  5.500000 " and row["dec"] == " -1.250000 "  # decimal point in column 4 (D4)
    assert row["obsTime"] == "2023-07-06T00:17:42.720Z" and row["mag"] == "19.46" and row["band"] == "   g"
    assert row["exp"] == "  30" and row["astCat"] == "   Gaia2"
    obs["ra"] = np.array([359.9999999])  # rounds to 360: written as 0, ra < 360 is required
    back = read_ades_psv(write_ades_psv(tmp_path / "w.psv", obs))
    assert back["ra"][0] == 0.0


def test_context_round_trip(tmp_path):
    context = {"observatory": {"name": "Palomar Mountain--ZTF"}, "submitter": {"name": "A. Tester"},
               "observers": {"name": ["A. Tester", "B. Tester"]},
               "telescope": {"design": "Schmidt", "aperture": 1.2, "detector": "CCD"},
               "fundingSource": "None"}
    path = write_ades_psv(tmp_path / "c.psv", _obs(2), context=context)
    (got,) = read_ades_context(path)
    assert got["observatory"] == {"mpcCode": "I41", "name": "Palomar Mountain--ZTF"}
    assert got["observers"] == {"name": ["A. Tester", "B. Tester"]}
    assert got["telescope"] == {"design": "Schmidt", "aperture": "1.2", "detector": "CCD"}
    assert got["fundingSource"] == "None"
    with pytest.raises(InputError, match=r"context\['submitter'\]\['name'\]: bad value"):
        write_ades_psv(tmp_path / "d.psv", _obs(2), context={"submitter": {"name": "a|b"}})
    with pytest.raises(InputError, match="bad element name"):
        write_ades_psv(tmp_path / "d.psv", _obs(2), context={"Bad Name": "x"})


def test_empty_observations_write_a_readable_file(tmp_path):
    empty = {"trksub": np.array([], dtype=str), "mjd": np.zeros(0), "ra": np.zeros(0), "dec": np.zeros(0)}
    back = read_ades_psv(write_ades_psv(tmp_path / "e.psv", empty))
    assert back["mjd"].size == 0 and back["trksub"].size == 0


@pytest.mark.parametrize(("change", "message"), [
    (lambda o: o.pop("ra"), "missing key 'ra'"),
    (lambda o: o.update(trksub=np.array(["toolong99"] * 3)), r"obs\['trksub'\] row 0: bad value"),
    (lambda o: o.update(trksub=np.array(["a b", "x", "y"])), r"obs\['trksub'\] row 0"),
    (lambda o: o.update(ra=np.array([1.0, 360.0, 2.0])), r"obs\['ra'\] row 1: bad value \(expected ra in \[0, 360\)"),
    (lambda o: o.update(dec=np.array([1.0, 2.0, np.nan])), r"obs\['dec'\] row 2"),
    (lambda o: o.update(mjd=np.array([60000.0, 60000.0, 2460236.5])), r"obs\['mjd'\] row 2"),
    (lambda o: o.update(band=np.array(["r", "", "r"])), r"obs\['band'\] row 1"),
    (lambda o: o.update(rms_ra=np.array([0.1, -0.1, 0.1])), r"obs\['rms_ra'\] row 1"),
    (lambda o: o.update(mag=np.array([19.0, 19.0])), r"obs\['mag'\]: must be a 1-D array as long as 'mjd'"),
    (lambda o: o.update(mjd=np.array(["a", "b", "c"])), r"obs\['mjd'\]: must be numbers"),
])
def test_bad_observations(tmp_path, change, message):
    obs = _obs(3)
    obs["mag"], obs["band"] = np.array([19.0, 19.5, 20.0]), np.array(["r", "g", "r"])
    change(obs)
    with pytest.raises(InputError, match=message):
        write_ades_psv(tmp_path / "bad.psv", obs)
    assert not (tmp_path / "bad.psv").exists()


def test_bad_options(tmp_path):
    with pytest.raises(InputError, match="observatory: bad value"):
        write_ades_psv(tmp_path / "o.psv", _obs(), observatory="I4")
    with pytest.raises(InputError, match="decimals: bad value"):
        write_ades_psv(tmp_path / "o.psv", _obs(), decimals=12)
    with pytest.raises(InputError, match="time_decimals: bad value"):
        write_ades_psv(tmp_path / "o.psv", _obs(), time_decimals=7)
    with pytest.raises(InputError, match="ast_cat: bad value"):
        write_ades_psv(tmp_path / "o.psv", _obs(), ast_cat="Gaia|3")
    with pytest.raises(InputError, match="must be a dict"):
        check_observations([1, 2])


def test_time_conversion_rounds_in_integer_units():
    mjd = np.array([60131.0, 60131.0 + 59.9996 / 86400, 51544.5])
    assert mjd_to_iso(mjd, decimals=3).tolist() == ["2023-07-06T00:00:00.000Z", "2023-07-06T00:01:00.000Z",
                                                     "2000-01-01T12:00:00.000Z"]
    assert mjd_to_iso(mjd[:1], decimals=0).tolist() == ["2023-07-06T00:00:00Z"]
    np.testing.assert_allclose(iso_to_mjd(["2000-01-01T12:00:00Z", "2023-07-06T00:17:43.77Z"]),
                               [51544.5, 60131 + (17 * 60 + 43.77) / 86400], rtol=0, atol=1e-11)
    with pytest.raises(InputError, match="bad obsTime"):
        iso_to_mjd(["2023-07-06 00:17:43Z"])
    with pytest.raises(ValueError, match="decimals"):
        mjd_to_iso(mjd, decimals=7)


def test_published_psv_2023mq5_parses_and_writes_back(published_examples):
    obs = read_ades_psv(published_examples / "2023MQ5.psv")
    assert obs["provid"].tolist() == ["2023 MQ5", "2023 MQ5"] and obs["stn"].tolist() == ["J95", "J95"]
    np.testing.assert_allclose(obs["mjd"][0], 60131 + (17 * 60 + 43.77) / 86400, atol=1e-11)
    np.testing.assert_allclose(obs["ra"], [273.13141, 273.15447]) and np.testing.assert_allclose(obs["dec"], [40.61177, 40.59873])
    np.testing.assert_allclose(obs["rms_ra"], [0.11, 0.14]) and np.testing.assert_allclose(obs["exptime"], [658, 1316])
    assert obs["mag"][0] == 20.2 and np.isnan(obs["mag"][1]) and obs["band"].tolist() == ["G", ""]
    assert obs["photCat"].tolist() == ["Gaia2", ""] and obs["nStars"].tolist() == ["183", "178"]
    context = read_ades_context(published_examples / "2023MQ5.psv")[0]
    assert context["observatory"] == {"mpcCode": "J95", "name": "Great Shefford"}
    assert context["software"]["astrometry"] == "Astrometrica 4.12.0.448"


def test_published_psv_values_written_back_field_for_field(tmp_path, published_examples):
    """Our writer reproduces every field it supports of the published 2023 MQ5 records, value text for value text."""
    src = read_ades_psv(published_examples / "2023MQ5.psv")
    obs = {"trksub": np.array(["MQ5"] * 2), "mjd": src["mjd"], "ra": src["ra"], "dec": src["dec"],
           "rms_ra": src["rms_ra"], "rms_dec": src["rms_dec"], "mag": np.array([20.2, np.nan]),
           "rms_mag": src["rms_mag"], "band": src["band"], "exptime": src["exptime"], "provid": src["provid"]}
    ours = write_ades_psv(tmp_path / "w.psv", obs, observatory="J95", decimals=5, time_decimals=2)

    def records(path):
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith(("#", "!"))]
        names = [t.strip() for t in lines[0].split("|")]
        return [dict(zip(names, (t.strip() for t in line.split("|")))) for line in lines[1:]]

    published, written = records(published_examples / "2023MQ5.psv"), records(ours)
    for pub, wri in zip(published, written):
        for name in ("provID", "mode", "stn", "obsTime", "ra", "dec", "rmsRA", "rmsDec", "astCat", "rmsMag", "band", "exp"):
            assert wri.get(name, "") == pub[name], name
    assert written[0]["mag"] == "20.20" and float(published[0]["mag"]) == 20.2  # we print mag to 0.01


@pytest.mark.parametrize("name", ["goodades1.psv", "goodthree.psv"])
def test_published_multi_block_files(name, published_examples):
    obs = read_ades_psv(published_examples / name)
    n_blocks = len(read_ades_context(published_examples / name))
    assert obs["mjd"].size > 0 and np.all(np.isfinite(obs["mjd"]))
    assert obs["block"].max() == n_blocks - 1 and np.all(np.diff(obs["block"]) >= 0)
    if name == "goodades1.psv":
        assert obs["mjd"].size == 8 and obs["ra"][0] == 0.0 and obs["dec"][0] == 90.0
        offset = np.isnan(obs["ra"])
        assert offset.sum() == 1 and obs["obsCenter"][offset][0] == "Jupiter" and obs["deltaRA"][offset][0] == "0.01"
        assert obs["remarks"][0] == "High winds affected tracking" and obs["trksub"][0] == "aa"
    else:
        assert n_blocks == 3 and obs["stn"][0] == "G95"
        np.testing.assert_allclose(obs["mjd"][0] % 1, (12 * 3600 + 32 * 60 + 34.123457) / 86400, atol=1e-11)


def test_bad_psv_files(tmp_path):
    def check(text, message):
        path = tmp_path / "x.psv"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=message):
            read_ades_psv(path)

    head = "# version=2022\n# observatory\n! mpcCode I41\n"
    keys = "trkSub|mode|stn|obsTime|ra|dec|astCat\n"
    check("trkSub|obsTime\n", "does not start with an ADES '# version=' line")
    check(head + "a1| CCD|I41|2023-01-01T00:00:00Z|1|2|Gaia2\n", r"line 4: data record before any keyword record")
    check(head + keys + "a1| CCD|I41|2023-01-01T00:00:00Z|1|2\n", r"line 5: wrong number of fields \(expected 7, got 6\)")
    check(head + keys + "a1| CCD|I41|2023-01-01 00:00:00|1|2|Gaia2\n", "bad obsTime")
    check(head + keys + "a1| CCD|I41|2023-01-01T00:00:00Z|1x|2|Gaia2\n", r"line 5: ra is not a number")
    check(head + keys + "a1| CCD|I41|2023-01-01T00:00:00Z|1|95|Gaia2\n", r"line 5: dec out of range")
    check("# version=2022\n! mpcCode I41\n", "'!' record outside a '#' context element")
    with pytest.raises(InputError, match="no such file"):
        read_ades_psv(tmp_path / "absent.psv")
