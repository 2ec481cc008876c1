"""Train a classifier or the two-stage cascade; everything lands in the run folder under outputs/.

Example (the seed's cascade on the demo preset, a few CPU minutes):

    python train.py model=final stage=boost
"""

import hydra
from omegaconf import DictConfig

from neocascade.pipelines.train import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Compose conf/train.yaml with the command-line overrides and run the training pipeline."""
    return run(cfg)


if __name__ == "__main__":
    main()
