"""io/mpc80.py: the MPC 80-column format written and read back, checked line for line against published examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neocascade.errors import InputError
from neocascade.io.ades import iso_to_mjd
from neocascade.io.mpc80 import (
    format_date,
    format_dec,
    format_ra,
    pack_number,
    read_mpc80,
    unpack_number,
    write_mpc80,
)



def _observation_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if len(line) == 80]


def test_band_conversions_example_written_exactly(tmp_path, published_examples):
    """ADES-Master tests/input/band_conversions.xml -> tests/expected/band_conversions.obs, reproduced byte for byte."""
    obs = {"trksub": np.array(["A10TlFw", "A10TlFw"]),
           "mjd": iso_to_mjd(["2023-03-07T09:29:20.88Z", "2023-03-07T09:33:28.07Z"]),
           "ra": np.array([256.566210, 256.567400]), "dec": np.array([-19.007690, -19.007770]),
           "mag": np.array([14.26, 14.14]), "band": np.array(["VR", "Sg"]),
           "rms_ra": np.array([0.136, 0.135])}  # no column for it in this format: dropped
    header = {"CON": "A. Stronomer, University of Science", "OBS": "A. Stronomer", "MEA": "A. Stronomer"}
    path = write_mpc80(tmp_path / "b.obs", obs, observatory="XXX", ast_cat="Gaia2", header=header)
    assert path.read_text() == (published_examples / "band_conversions.obs").read_text()


def test_numbered_object_standard_precision_written_back(tmp_path, published_examples):
    src = read_mpc80(published_examples / "85_test.obs")
    assert src["header"]["COD"] == ["J38"] and src["header"]["NET"] == ["Gaia-DR2"]
    assert src["header"]["TEL"] == ["0.25-m f/8.1 Ritchey-Chretien + CCD"]
    assert set(src["permid"]) == {"85"} and set(src["trksub"]) == {""} and set(src["ast_cat"]) == {"Gaia2"}
    np.testing.assert_allclose(src["mjd"][0], 60008.99841, atol=1e-9)
    np.testing.assert_allclose(src["ra"][0], (9 + 14 / 60 + 47.01 / 3600) * 15, atol=1e-12)
    np.testing.assert_allclose(src["dec"][0], 1 + 24 / 60 + 38.9 / 3600, atol=1e-12)
    assert src["mag"][0] == 12.4 and src["band"][0] == "G" and src["mode"][0] == "CCD"
    path = write_mpc80(tmp_path / "85.obs", src, observatory="J38", time_decimals=5, ra_decimals=2, dec_decimals=1,
                       mag_decimals=1)
    assert _observation_lines(path) == _observation_lines(published_examples / "85_test.obs")


def test_provisional_designation_mixed_precision_written_back(tmp_path, published_examples):
    src = read_mpc80(published_examples / "K20Q04A_test.obs")
    assert src["header"] == {} and set(src["trksub"]) == {"K20Q04A"} and src["disc"].tolist()[:2] == ["*", ""]
    assert set(src["ref"]) == {"~44BV"} and set(src["stn"]) == {"F51", "H21"}
    assert set(src["ast_cat"][src["stn"] == "F51"]) == {"Gaia1"} and set(src["ast_cat"][src["stn"] == "H21"]) == {"UCAC3"}
    published = _observation_lines(published_examples / "K20Q04A_test.obs")
    # Pan-STARRS (F51) lines are high precision; H21 lines give 0.01 s, 0.1" and 0.1 mag
    for stn, (cat, ra_d, dec_d, mag_d) in {"F51": ("Gaia1", 3, 2, 2), "H21": ("UCAC3", 2, 1, 1)}.items():
        rows = src["stn"] == stn
        part = {key: value[rows] for key, value in src.items() if key != "header"}
        path = write_mpc80(tmp_path / f"{stn}.obs", part, observatory=stn, ast_cat=cat, ra_decimals=ra_d,
                           dec_decimals=dec_d, mag_decimals=mag_d)
        assert _observation_lines(path) == [line for line in published if line.endswith(stn)]


def test_round_trip_within_format_precision(tmp_path):
    rng = np.random.default_rng(3)
    n = 50
    obs = {"trksub": np.array([f"nc{i // 3:05d}" for i in range(n)]), "mjd": 60235.2 + rng.uniform(0, 0.1, n),
           "ra": np.r_[rng.uniform(0, 360, n - 3), 359.99999999, 0.0, 180.0],
           "dec": np.r_[rng.uniform(-89, 89, n - 3), -1e-7, -89.999999, 90.0],
           "mag": np.where(rng.uniform(size=n) < 0.7, rng.uniform(15, 21, n), np.nan), "band": np.full(n, "r")}
    path = write_mpc80(tmp_path / "r.obs", obs)
    lines = path.read_text().splitlines()
    assert lines[0] == "COD I41" and all(len(line) == 80 and line.endswith("I41") for line in lines[1:])
    back = read_mpc80(path)
    np.testing.assert_array_equal(back["trksub"], obs["trksub"])
    np.testing.assert_allclose(back["mjd"], obs["mjd"], atol=0.5e-6 + 1e-10)  # 1e-6 day
    dra = (back["ra"] - obs["ra"] + 180) % 360 - 180
    assert np.all(np.abs(dra * np.cos(np.radians(obs["dec"]))) * 3600 <= 0.0005 * 15 + 1e-9)  # 0.001 s of RA
    np.testing.assert_allclose(back["dec"], obs["dec"], atol=0.005 / 3600 + 1e-12)  # 0.01"
    np.testing.assert_allclose(back["mag"], obs["mag"], atol=0.005)
    assert back["band"].tolist() == ["r" if np.isfinite(m) else "" for m in obs["mag"]]
    assert back["mode"][0] == "CCD" and back["ast_cat"][0] == "Gaia2" and back["stn"][0] == "I41"
    assert lines[-3][32:56] == "00 00 00.000+00 00 00.00"  # 359.99999999 wraps; -1e-7 deg rounds to +0
    with pytest.raises(InputError, match="already exists"):
        write_mpc80(path, obs)


def test_sexagesimal_and_date_rounding_carry():
    assert format_ra(np.array([359.99999999, 15.0, 0.0]), decimals=3) == ["00 00 00.000", "01 00 00.000", "00 00 00.000"]
    assert format_ra(np.array([(59.9996 / 3600) * 15]), decimals=3) == ["00 01 00.000"]
    assert format_dec(np.array([-1e-9, -0.5, 89.9999999]), decimals=2) == ["+00 00 00.00", "-00 30 00.00", "+90 00 00.00"]
    assert format_date(np.array([60131.9999999]), decimals=6) == ["2023 07 07.000000"]
    assert format_date(np.array([51544.5]), decimals=5) == ["2000 01 01.50000"]


@pytest.mark.parametrize(("number", "packed"), [("1", "00001"), ("99999", "99999"), ("100000", "A0000"),
                                                ("360017", "a0017"), ("619999", "z9999"), ("620000", "~0000"),
                                                ("3140113", "~AZaz"), ("15396335", "~zzzz")])
def test_number_packing(number, packed):
    assert pack_number(number) == packed and unpack_number(packed) == number


def test_bad_inputs(tmp_path):
    obs = {"trksub": np.array(["toolong8"]), "mjd": np.array([60235.2]), "ra": np.array([1.0]), "dec": np.array([2.0])}
    with pytest.raises(InputError, match=r"obs\['trksub'\] row 0: bad value \(expected 1 to 7 letters or digits"):
        write_mpc80(tmp_path / "x.obs", obs)
    obs["trksub"] = np.array(["ok"])
    with pytest.raises(InputError, match="ast_cat: no 80-column code"):
        write_mpc80(tmp_path / "x.obs", obs, ast_cat="NOPE")
    with pytest.raises(InputError, match="observatory: bad MPC code"):
        write_mpc80(tmp_path / "x.obs", obs, observatory="I41a")
    with pytest.raises(InputError, match="ra_decimals: unsupported precision"):
        write_mpc80(tmp_path / "x.obs", obs, ra_decimals=4)
    with pytest.raises(InputError, match="header: unknown keyword 'FOO'"):
        write_mpc80(tmp_path / "x.obs", obs, header={"FOO": "bar"})
    with pytest.raises(InputError, match=r"obs\['band'\] row 0: no one-character 80-column band"):
        write_mpc80(tmp_path / "x.obs", {**obs, "mag": np.array([19.0]), "band": np.array(["xyz"])})
    with pytest.raises(InputError, match=r"obs\['provid'\]: unpacked provisional designations are not packed here"):
        write_mpc80(tmp_path / "x.obs", {**obs, "provid": np.array(["2020 QA4"])})
    with pytest.raises(InputError, match=r"obs\['permid'\] row 0: not a packable minor-planet number"):
        write_mpc80(tmp_path / "x.obs", {**obs, "permid": np.array(["12a"])})
    assert not (tmp_path / "x.obs").exists()


def test_bad_files(tmp_path):
    obs = {"trksub": np.array(["nc00001"]), "mjd": iso_to_mjd(["2023-10-18T05:59:52.20Z"]),
           "ra": np.array([221.19588]), "dec": np.array([-1.41083])}
    written = write_mpc80(tmp_path / "good.obs", obs, observatory="I41", header={"OBS": "N. Cascade"})
    good = written.read_text().splitlines()
    i = next(k for k, line in enumerate(good) if len(line) == 80)
    head, line, n = good[:i], good[i], i + 1

    def check(lines, message):
        path = tmp_path / "bad.obs"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(InputError, match=message):
            read_mpc80(path)

    assert read_mpc80(written)["ra"].size == 1
    check(head + [line[:79]], rf"line {n}: not an 80-column observation \(expected 80 characters, got 79\)")
    check(head + [line[:15] + "2023 13 05.99841" + line[31:]], rf"line {n}: bad date in columns 16-32")
    check(head + [line[:32] + "25 14 47.01 " + line[44:]], rf"line {n}: RA out of range")
    check(head + [line[:44] + " 01 24 38.9 " + line[56:]], rf"line {n}: bad Dec")
    check(head + [line[:14] + "S" + line[15:]], rf"line {n}: record type 'S' .* is not supported")
    with pytest.raises(InputError, match="no such file"):
        read_mpc80(tmp_path / "absent.obs")
