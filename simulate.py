"""Write a simulated ZTF-like data set.

Example: ``python simulate.py data=tiny out_dir=outputs/data/tiny files=[0,1] overwrite=true``
"""

import hydra
from omegaconf import DictConfig

from neocascade.pipelines.simulate import run


@hydra.main(version_base="1.3", config_path="conf", config_name="simulate")
def main(cfg: DictConfig) -> int:
    return run(cfg)


if __name__ == "__main__":
    main()
