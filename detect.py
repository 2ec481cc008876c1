"""Detect asteroids with a trained cascade, or check it on real ZTF alerts.

    python detect.py input=outputs/data/demo/images_7.npz artifact=outputs/train/<run>/cascade.pt out=outputs/detect/demo
    python detect.py data=ztf_alerts artifact=outputs/train/<run>/cascade.pt
"""

import hydra
from omegaconf import DictConfig

from neocascade.pipelines.detect import run


@hydra.main(version_base="1.3", config_path="conf", config_name="detect")
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
