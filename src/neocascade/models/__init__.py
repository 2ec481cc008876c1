"""Classifiers: plain ``nn.Module`` CNNs (cutouts (B, C, S, S) → logits (B, 2)) and the random forest.

Each model has ``arch`` (its short name) and ``hparams()`` (its constructor arguments as plain containers),
so a checkpoint can be checked against, and rebuilt from, the configured architecture (``registry``).
``forest`` (scikit-learn) is imported on demand only.
"""

from neocascade.models.baseline import BaselineNet
from neocascade.models.ensemble import EnsembleNet
from neocascade.models.final import FinalNet
from neocascade.models.resnet import ResidualNet
from neocascade.models.vgg import AlteredVGG16

__all__ = ["AlteredVGG16", "BaselineNet", "EnsembleNet", "FinalNet", "ResidualNet"]
