"""Ship a trained cascade inside the package, so ``python detect.py input=...`` works on a fresh clone.

Usage: ``python -m neocascade.pipelines.ship artifact=RUN/cascade.pt [out=PATH] [overwrite=true]``.
The CNN weights are stored in float16 (:func:`~neocascade.training.artifact.export_cascade`), at most
``MAX_MB``; the provenance (source file and its SHA-256, training config, data preset, the run's evaluation
figures on every preset it was measured on, the veto after the classifier, commit, date) goes into the
artifact and into a JSON file beside it, which also holds the SHA-256 of the shipped file. Paths are stored
relative to the repository (a file outside it by its name alone): the package names no folder of the machine
it was built on.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from neocascade.errors import InputError, input_error
from neocascade.training.artifact import PACKAGED, REPOSITORY, export_cascade, load_cascade, relative_paths
from neocascade.utils.atomic import save_text

log = logging.getLogger("neocascade.ship")

MAX_MB = 15.0  # the shipped cascade must stay small enough for the repository and the wheel
KEYS = ("artifact", "out", "overwrite")
E2E = ("completeness", "completeness_visible", "purity", "false_per_quadrant")


def evaluations(run_dir: Path) -> dict[str, Any]:
    """End-to-end figures of every ``eval*/metrics.json`` report folder of a run folder (Hydra's ``*_run`` copies
    left out), by folder name, with the data preset and the after-classifier checks each was measured with."""
    found = {}
    for path in sorted(run_dir.glob("eval*/metrics.json")):
        if path.parent.name.endswith("_run"):
            continue
        ev = json.loads(path.read_text())
        config = ev.get("config") or {}
        point = (config.get("eval") or {}).get("operating_point", "artifact")
        e2e = (ev.get("end_to_end") or {}).get(point) or {}
        checks = {key: (config.get(key) or {}).get("_target_") for key in ("residual_check", "reference_check")}
        found[path.parent.name] = {
            "report": str(path), "data": (ev.get("data") or {}).get("name"), "operating_point": point,
            **{k: (v.rsplit(".", 1)[-1] if v else None) for k, v in checks.items()}, **{k: e2e.get(k) for k in E2E},
            "m50": (ev.get("m50") or {}).get("m50"), "test_asteroids": (ev.get("counts") or {}).get("test_asteroids")}
    return found


def provenance(artifact: Path) -> dict[str, Any]:
    """Where a cascade came from: file (relative to the repository), hash, config, data preset, evaluations, commit,
    date."""
    import torch

    cascade = load_cascade(artifact)
    config = cascade.config
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                            cwd=Path(__file__).parent).stdout.strip() or None
    info = {
        "source": str(artifact.resolve()),
        "source_sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
        "train_overrides": cascade.metrics.get("overrides"),
        "stages": [cascade.stage1_arch, cascade.stage2_arch],
        "thresholds": [cascade.threshold1, cascade.threshold2],
        "veto": (cascade.postprocess or {}).get("veto"),
        "data": (config.get("data") or {}).get("name"),
        "images_per_file": ((config.get("data") or {}).get("source") or {}).get("images_per_file"),
        "training_metrics": {k: v for k, v in (cascade.metrics.get("metrics") or {}).items() if k.startswith("test/")},
        "evaluations": evaluations(artifact.parent),
        "commit": commit,
        "shipped": _dt.datetime.now().isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
        "weights": "float16",
    }
    return relative_paths(info, REPOSITORY)


def ship(args: Sequence[str]) -> Path:
    """Export ``artifact=`` to ``out=`` (default: the packaged location) with its provenance."""
    own = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep or key not in KEYS:
            raise input_error("ship arguments", f"expected key=value with key one of {list(KEYS)}", found=repr(a))
        own[key] = value
    if "artifact" not in own:
        raise input_error("ship", "needs artifact=<a training run's cascade.pt>")
    artifact, out = Path(own["artifact"]), Path(own.get("out") or PACKAGED)
    overwrite = own.get("overwrite", "false").lower() in ("1", "true", "yes")
    info = provenance(artifact)
    export_cascade(artifact, out, half=True, provenance=info, max_mb=MAX_MB, overwrite=overwrite,
                   relative_to=REPOSITORY)
    shipped = {**info, "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}  # of the .pt beside this JSON
    save_text(out.with_suffix(".json"), json.dumps(shipped, indent=2) + "\n", overwrite=overwrite)
    log.info("shipped %s -> %s (%.2f MB)", artifact, out, out.stat().st_size / 2**20)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        ship(list(sys.argv[1:] if argv is None else argv))
    except InputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
