"""`make demo`: the seed's whole pipeline on the demo preset, one step after another.

simulate -> candidates + cascade training (stage=boost, model=final) -> evaluation report ->
detection catalogue and overlay on one test image. Each step is the same command a user would
type; the demo only chains them and points them at one folder under ``<outputs>/demo/``.

    python -m neocascade.pipelines.demo [data=demo] [outputs=outputs] [train.py overrides ...]
"""

from __future__ import annotations

import datetime as _dt
import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("neocascade.demo")

REPO = Path(__file__).resolve().parents[3]  # the entry scripts and conf/ live at the repository root
DETECT_FILE = 7  # a test file of every preset (split: train 0-6, val 9, test 7-8)


def _step(title: str, args: list[str]) -> None:
    log.info("==> %s\n    python %s", title, " ".join(args))
    completed = subprocess.run([sys.executable, str(REPO / args[0]), *args[1:]], check=False)
    if completed.returncode != 0:
        raise SystemExit(f"demo: step '{title}' failed with exit status {completed.returncode}")


def _current(path: Path, preset: str) -> bool:
    """Whether ``path`` exists and was written by this simulator version from ``preset`` with its seed."""
    from omegaconf import OmegaConf

    from neocascade.errors import InputError
    from neocascade.io.npz import read_canonical
    from neocascade.simulation import SIMULATOR_VERSION

    if not path.exists():
        return False
    try:
        meta = read_canonical(path).meta
    except InputError:
        return False
    seed = OmegaConf.load(REPO / "conf" / "data" / f"{preset}.yaml").source.seed
    return meta.get("simulator") == SIMULATOR_VERSION and meta.get("seed") == seed and meta.get("preset") == preset


def main(argv: list[str] | None = None) -> int:
    """Run the demo; ``data=`` and ``outputs=`` choose preset and folder, other arguments go to training."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in ("data", "outputs")}
    extra = [a for a in args if a.split("=", 1)[0] not in own]
    preset, outputs = own.get("data", "demo"), Path(own.get("outputs", "outputs"))
    root = outputs / "demo" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    data_dir = outputs / "data" / preset
    common = [f"data={preset}", f"paths.outputs={outputs}"]
    images = data_dir / f"images_{DETECT_FILE}.npz"
    if not _current(images, preset):
        _step("simulate the data set", ["simulate.py", *common, f"out_dir={data_dir}", "overwrite=true"])
    else:
        log.info("==> simulated files already in %s (same simulator and seed)", data_dir)
    train_dir = root / "train"
    _step(
        "train the seed's cascade (final CNN, stage 1 + boost)",
        ["train.py", "model=final", "stage=boost", *common, f"hydra.run.dir={train_dir}", *extra],
    )
    artifact = train_dir / "cascade.pt"
    _step("evaluate on the test files", ["evaluate.py", f"artifact={artifact}", f"paths.outputs={outputs}",
                                         f"out_dir={root / 'eval'}", f"hydra.run.dir={root / 'eval-run'}"])
    _step(
        "detect asteroids in one test file",
        ["detect.py", f"input={images}", f"artifact={artifact}", f"out={root / 'detect'}",
         f"paths.outputs={outputs}", f"hydra.run.dir={root / 'detect-run'}",
         "reference_check=none"],  # simulated pixels without sky coordinates: no star catalogue to place
    )
    log.info("demo finished: report %s, catalogue and overlays %s", root / "eval" / "report.md", root / "detect")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
