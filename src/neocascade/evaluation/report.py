"""The evaluation report folder: report.md, metrics.json and the figures as PNG, written atomically.

The folder is built beside its target and renamed into place, so a reader sees the whole report
or none. An existing report folder is never touched unless ``overwrite=True``; without it
:func:`write_report` raises an :class:`~neocascade.errors.InputError` naming the folder (an
evaluation run's name is the user's choice, so silently picking another would hide which
report is which).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from matplotlib.figure import Figure

from neocascade.errors import input_error
from neocascade.utils.atomic import json_default

FIGURE_DPI = 110


def figure_png(fig: Figure, *, dpi: int = FIGURE_DPI) -> bytes:
    """Render a figure to PNG bytes (tight bounding box, so no label is clipped)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def check_report_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse an existing report folder unless ``overwrite``; return the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise input_error(path, "report folder already exists; pass overwrite=true or another out_dir")
    return path


def write_report(
    out_dir: str | os.PathLike,
    *,
    markdown: str,
    metrics: Mapping[str, Any],
    figures: Mapping[str, Figure] | None = None,
    extra_json: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``report.md``, ``metrics.json``, ``<name>.png`` per figure and ``<name>.json`` extras.

    Parameters
    ----------
    out_dir : path
        The report folder; must not exist unless ``overwrite``.
    markdown : str
        Report text (see :func:`render_markdown`).
    metrics : mapping
        JSON-able results (numpy scalars and arrays are converted; NaN becomes null).
    figures : mapping of name to Figure
        Saved as ``<name>.png`` (tight bounding box, :data:`FIGURE_DPI`).
    extra_json : mapping of name to mapping
        More JSON files (e.g. the IDs of false positives and negatives).
    overwrite : bool
        Replace an existing folder (the old one is removed only after the new one is complete).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out = check_report_dir(out_dir, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / "report.md").write_text(markdown)
        (tmp / "metrics.json").write_text(to_json(metrics))
        for name, payload in (extra_json or {}).items():
            (tmp / f"{name}.json").write_text(to_json(payload))
        for name, fig in (figures or {}).items():
            (tmp / f"{name}.png").write_bytes(figure_png(fig))
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _nan_to_none(obj: Any) -> Any:
    """Replace float NaN/inf by None (strict JSON has neither), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def to_json(obj: Any) -> str:
    """Indented strict JSON of results containing numpy values; NaN and inf become null."""
    plain = json.loads(json.dumps(obj, default=json_default, allow_nan=True))
    return json.dumps(_nan_to_none(plain), indent=2, allow_nan=False) + "\n"


# ----------------------------------------------------------------------------- markdown
def _fmt(value: Any, digits: int = 4) -> str:
    """A table cell: ints as is, floats to ``digits`` decimals, NaN/None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def classification_table(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per (report, class) with precision, recall, F1, support, and the report's accuracy."""
    rows = []
    for name, rep in reports.items():
        for cls in ("positive", "negative"):
            r = rep[cls]
            rows.append([name, cls, r["precision"], r["recall"], r["f1"], r["support"], rep["accuracy"]])
    return _table(["classifier", "class", "precision", "recall", "F1", "support", "accuracy"], rows)


def confusion_table(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """TN, FP, FN, TP of each classification report."""
    rows = [[name, *[int(v) for v in (*rep["confusion"][0], *rep["confusion"][1])]] for name, rep in reports.items()]
    return _table(["classifier", "TN", "FP", "FN", "TP"], rows)


def end_to_end_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Completeness, purity, false detections per quadrant, duplicates per operating point."""
    rows = [
        [name, r["completeness"], r["completeness_visible"], r["purity"], r["false_per_quadrant"], r["duplicates"],
         r["found"], r["injected"], r["detections"]]
        for name, r in results.items()
    ]
    return _table(["operating point", "completeness", "completeness (not dead)", "purity", "false / quadrant",
                   "duplicates", "found", "injected", "detections"], rows)


def misses_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Count of missed asteroids per reason and operating point; rows add up to ``missed``."""
    reasons = list(next(iter(results.values()))["misses"]) if results else []
    rows = [[name, *[r["misses"][k] for k in reasons], r["missed"]] for name, r in results.items()]
    return _table(["operating point", *[k.replace("_", " ") for k in reasons], "missed (total)"], rows)


def render_markdown(results: Mapping[str, Any], *, figures: list[str] | None = None) -> str:
    """The report text from the evaluation results dict built by the evaluate pipeline.

    Expected keys: ``title``, ``summary`` (list of (key, value) lines), ``operating_point`` (dict),
    ``candidate`` (name -> classification report), ``end_to_end`` (name -> :func:`end_to_end`
    scalars), ``m50`` (dict), optional ``footprint`` (table rows) and ``notes`` (list of str).
    """
    parts = [f"# {results.get('title', 'Evaluation report')}", ""]
    for key, value in results.get("summary", []):
        parts.append(f"- **{key}**: {_fmt(value)}")
    op = results.get("operating_point")
    if op:
        parts += ["", "## Operating point (chosen on the validation file)", "",
                  _table(list(op.keys()), [list(op.values())])]
    cand = results.get("candidate", {})
    if cand:
        parts += ["", "## Candidate level (test files)", "", classification_table(cand), "", "### Confusion matrices",
                  "", confusion_table(cand)]
    e2e = results.get("end_to_end", {})
    if e2e:
        parts += ["", "## Asteroid level, end to end (test files)", "",
                  "An asteroid is found when a final (merged) detection lies within the match radius of its "
                  "trail segment. Completeness counts every injected asteroid, dead and never-proposed ones "
                  "included.", "", end_to_end_table(e2e), "", "### Why asteroids were missed", "", misses_table(e2e)]
    m50 = results.get("m50")
    if m50:
        parts += ["", "## Completeness vs magnitude: logistic fit", "",
                  "f(m) = c / (1 + exp((m - m50) / w)), unbinned maximum likelihood; errors from the inverse "
                  "Hessian; binned points carry Clopper–Pearson ±1σ intervals.", "",
                  _table(list(m50.keys()), [list(m50.values())])]
    fp = results.get("footprint")
    if fp:
        parts += ["", "## Footprint selector vs kernel size (subsample of test images)", "",
                  _table(list(fp[0].keys()), [list(r.values()) for r in fp])]
    for note in results.get("notes", []):
        parts += ["", f"> {note}"]
    if figures:
        parts += ["", "## Figures", ""] + [f"![{name}]({name}.png)" for name in figures]
    return "\n".join(parts) + "\n"
