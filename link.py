"""Link a night of revisits into tracklets: detect in every image, link each field, write tracklets and ADES.

    python link.py input=outputs/data/night out=outputs/link/night link.threshold=0.3
"""

import hydra
from omegaconf import DictConfig

from neocascade.pipelines.night import run


@hydra.main(version_base="1.3", config_path="conf", config_name="link")
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
