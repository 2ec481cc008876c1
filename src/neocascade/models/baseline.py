"""The seed's first CNN: three 3×3 convolutions and three linear layers."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from neocascade.models._common import int_list, positive_int


class BaselineNet(nn.Module):
    """Three 3×3 convolutions (stride 1, padding 1 on the first only) and three linear layers.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for the filtered cutout, 2 for filtered and raw).
    cutout_size : int
        Cutout side S in px; the input is (B, in_channels, S, S). At least 5.
    widths : 3 ints
        Output channels of the three convolutions.
    hidden : 2 ints
        Units of the first two linear layers; the third maps to the 2 class logits.

    Notes
    -----
    Padding 1 keeps the first layer at S×S; the two unpadded ones shrink it to (S-4)×(S-4), so the
    flattened size is ``widths[2] * (S-4)**2`` (17×17 for the seed's 21-px cutouts). There is no pooling,
    as in the seed. Output: logits (B, 2), class 1 = asteroid.
    """

    arch = "baseline"

    def __init__(
        self,
        in_channels: int,
        cutout_size: int,
        *,
        widths: Sequence[int] = (16, 32, 64),
        hidden: Sequence[int] = (128, 32),
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.cutout_size = positive_int("cutout_size", cutout_size)
        self.widths = int_list("widths", widths, length=3)
        self.hidden = int_list("hidden", hidden, length=2)
        side = self.cutout_size - 4
        if side < 1:
            raise ValueError(f"cutout_size: must be at least 5 for BaselineNet, got {self.cutout_size}")
        c1, c2, c3 = self.widths
        self.features = nn.Sequential(
            nn.Conv2d(self.in_channels, c1, 3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3, stride=1, padding=0),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * side * side, self.hidden[0]),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden[0], self.hidden[1]),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden[1], 2),
        )

    def hparams(self) -> dict:
        """Constructor arguments as plain containers: ``BaselineNet(**net.hparams())`` rebuilds it."""
        return {
            "in_channels": self.in_channels,
            "cutout_size": self.cutout_size,
            "widths": list(self.widths),
            "hidden": list(self.hidden),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map cutouts (B, in_channels, S, S) to class logits (B, 2)."""
        return self.classifier(self.features(x))
