"""Detect asteroids with a trained cascade, or check it on real ZTF alerts.

    python detect.py input=outputs/data/demo/images_7.npz artifact=outputs/train/<run>/cascade.pt out=outputs/detect/demo
    python detect.py input=outputs/data/demo/images_7.npz trails=default out=outputs/detect/demo_trails
    python detect.py data=ztf_alerts artifact=outputs/train/<run>/cascade.pt
    python detect.py input='night/*.fits.fz' out=outputs/detect/night format=parquet cluster=slurm cluster.jobs=8

A night of files runs on a Dask LocalCluster by default (cluster=none: serial); rerun the same
command into the same out= to resume a run that was killed.
"""

import hydra
from omegaconf import DictConfig

from neocascade.pipelines.detect import run


@hydra.main(version_base="1.3", config_path="conf", config_name="detect")
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
