"""The README's `make demo` chain (simulate -> train -> evaluate -> detect) end to end, on the tiny preset."""

from __future__ import annotations

import csv

import pytest

from neocascade.pipelines import demo


@pytest.mark.slow
def test_demo_chain_on_tiny_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # every path the demo writes must follow outputs=, none the working folder
    out = tmp_path / "out"
    assert demo.main(["data=tiny", f"outputs={out}", "trainer.max_epochs=1", "logger=csv"]) == 0
    (run,) = (out / "demo").iterdir()
    assert (run / "train" / "cascade.pt").is_file() and (run / "train" / "metrics.json").is_file()
    report = (run / "eval" / "report.md").read_text()
    assert "Asteroid level, end to end" in report
    with open(run / "detect" / "catalogue.csv", newline="") as fh:
        assert csv.DictReader(fh).fieldnames[:4] == ["file", "image", "x", "y"]
    assert list((run / "detect" / "overlays").glob("*.png"))
    assert demo._current(out / "data" / "tiny" / "images_7.npz", "tiny")
    assert not (tmp_path / "outputs").exists()
