"""`make demo`: the seed's whole pipeline on the demo preset, one step after another.

simulate -> candidates + cascade training (stage=boost, model=final) -> evaluation report ->
detection catalogue and overlay on one test image. Each step is the same command a user would
type; the demo only chains them and points them at one demo folder under outputs/demo/.
"""

from __future__ import annotations

import datetime as _dt
import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("neocascade.demo")


def _step(title: str, args: list[str]) -> None:
    log.info("==> %s\n    python %s", title, " ".join(args))
    completed = subprocess.run([sys.executable, *args], check=False)
    if completed.returncode != 0:
        raise SystemExit(f"demo: step '{title}' failed with exit status {completed.returncode}")


def _current(path: Path) -> bool:
    """Whether ``path`` exists and was written by this simulator version with the demo preset's seed."""
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
    seed = OmegaConf.load(Path("conf/data/demo.yaml")).source.seed
    return meta.get("simulator") == SIMULATOR_VERSION and meta.get("seed") == seed and meta.get("preset") == "demo"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; extra arguments (Hydra overrides) are passed to the training step."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    extra = list(sys.argv[1:] if argv is None else argv)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path("outputs/demo") / stamp
    data_dir = Path("outputs/data/demo")
    if not _current(data_dir / "images_7.npz"):
        _step("simulate the demo data set", ["simulate.py", "data=demo", f"out_dir={data_dir}", "overwrite=true"])
    else:
        log.info("==> simulated demo files already in %s (same simulator and seed)", data_dir)
    train_dir = root / "train"
    _step(
        "train the seed's cascade (final CNN, stage 1 + boost)",
        ["train.py", "model=final", "stage=boost", "data=demo", f"hydra.run.dir={train_dir}", *extra],
    )
    artifact = train_dir / "cascade.pt"
    _step("evaluate on the test files", ["evaluate.py", f"artifact={artifact}", f"out_dir={root / 'eval'}"])
    _step(
        "detect asteroids on one demo image",
        ["detect.py", f"input={data_dir / 'images_7.npz'}", f"artifact={artifact}", f"out={root / 'detect'}"],
    )
    log.info("demo finished: everything is under %s", root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
