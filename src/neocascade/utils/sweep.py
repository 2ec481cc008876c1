"""Sweep summary: one table row per job of a Hydra multirun, written when the sweep ends.

Configured as a Hydra callback in ``conf/hydra/default.yaml``; it reads every job's
``metrics.json`` (written atomically by the training pipeline) and writes ``summary.csv`` and
``summary.md`` into the sweep folder, sorted by the target metric.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from neocascade.utils.atomic import save_text

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """``["data.kernel=30", "+x=1"]`` -> ``{"data.kernel": "30", "x": "1"}`` (prefixes ``+``/``~`` dropped)."""
    out = {}
    for item in overrides:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Read every ``<sweep_dir>/*/metrics.json``; a job without one is skipped (it failed)."""
    jobs = []
    for path in sorted(Path(sweep_dir).glob(f"*/{METRICS_FILE}")):
        with open(path) as fh:
            report = json.load(fh)
        jobs.append({"dir": path.parent.name, "report": report})
    return jobs


def summary_rows(jobs: list[dict[str, Any]], *, target: str, columns: Sequence[str], mode: str = "max") -> list[dict]:
    """One row per job: job number, the overridden values, the target and extra metric columns.

    Rows are sorted by ``target`` (descending for ``mode="max"``), jobs lacking it (NaN) last.
    """
    rows = []
    for job in jobs:
        report = job["report"]
        metrics = report.get("metrics", {})
        row: dict[str, Any] = {"job": report.get("job_num", job["dir"])}
        row.update(parse_overrides(report.get("overrides", [])))
        for name in (target, *columns):
            row[name] = metrics.get(name, float("nan"))
        row["dir"] = job["dir"]
        rows.append(row)
    sign = -1.0 if mode == "max" else 1.0

    def key(row: dict) -> tuple[bool, float]:
        value = row[target]
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (missing, 0.0 if missing else sign * float(value))

    return sorted(rows, key=key)


def _header(rows: list[dict]) -> list[str]:
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k not in header)
    return header


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def write_summary(sweep_dir: str | Path, rows: list[dict]) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.md`` (a markdown table) into ``sweep_dir`` atomically."""
    sweep_dir = Path(sweep_dir)
    header = _header(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(row.get(k, "")) for k in header) + " |" for row in rows]
    csv_path = save_text(sweep_dir / "summary.csv", buffer.getvalue(), overwrite=True)
    md_path = save_text(sweep_dir / "summary.md", "\n".join(lines) + "\n", overwrite=True)
    return csv_path, md_path


class SweepSummary(Callback):
    """Hydra callback: write the sweep table when a multirun ends.

    Parameters
    ----------
    target : str
        Metric the rows are sorted by (a key of ``metrics.json``'s ``metrics``).
    mode : {"max", "min"}
        Whether higher or lower ``target`` is better.
    columns : list of str
        Further metrics shown beside the target.
    """

    def __init__(self, *, target: str = "test/cascade_f1", mode: str = "max", columns: Sequence[str] = ()) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode: expected 'max' or 'min', got {mode!r}")
        self.target = target
        self.mode = mode
        self.columns = list(columns)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Collect the jobs' reports and write the summary into ``hydra.sweep.dir``."""
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect_jobs(sweep_dir)
        if not jobs:
            log.warning("sweep summary: no %s under %s (did every job fail?)", METRICS_FILE, sweep_dir)
            return
        rows = summary_rows(jobs, target=self.target, columns=self.columns, mode=self.mode)
        csv_path, md_path = write_summary(sweep_dir, rows)
        log.info("sweep summary (%d jobs, sorted by %s): %s, %s", len(rows), self.target, csv_path, md_path)
