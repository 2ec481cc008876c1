"""Measure the trail detector on a long-trail preset: completeness by length and SNR, false trails, satellites.

    python evaluate_trails.py data=long_trails n_images=100 out=outputs/eval/trails/long_trails
"""

import hydra
from omegaconf import DictConfig

from neocascade.pipelines.trails import run


@hydra.main(version_base="1.3", config_path="conf", config_name="trails_eval")
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
