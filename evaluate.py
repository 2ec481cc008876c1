"""Evaluate a trained cascade on its test files: metrics, completeness curves, figures and a report.

Example (after `python train.py`; the report lands in outputs/eval/<run folder name>/):

    python evaluate.py artifact=outputs/train/<run>/cascade.pt
"""

import hydra
from omegaconf import DictConfig

from neocascade.pipelines.evaluate import run


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Compose conf/evaluate.yaml with the command-line overrides and run the evaluation pipeline."""
    return run(cfg)


if __name__ == "__main__":
    main()
