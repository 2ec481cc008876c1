"""The report's final CNN: four unpadded 3×3 convolutions, two average pools, one 512-unit layer."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from neocascade.models._common import int_list, positive_int

# (kernel, stride) of each layer that shrinks the map, in order: conv1, conv2, pool1, conv3, pool2, conv4
_SHRINK = ((3, 1), (3, 1), (3, 1), (3, 1), (2, 2), (3, 1))


def final_feature_side(cutout_size: int) -> int:
    """Side of FinalNet's last feature map for an S×S input (4 for S = 21); < 1 when S is too small."""
    side = cutout_size
    for kernel, stride in _SHRINK:
        side = (side - kernel) // stride + 1
    return side


def _min_cutout_size() -> int:
    size = 1
    while final_feature_side(size) < 1:
        size += 1
    return size


MIN_CUTOUT_SIZE = _min_cutout_size()  # 14 px: the smallest input that leaves a 1×1 map after conv 4


class FinalNet(nn.Module):
    """The report's final CNN.

    conv1 → conv2 → avg-pool(3, stride 1) → conv3 → avg-pool(2, stride 2) → conv4 → linear(hidden) → linear(2).
    Every convolution is 3×3, stride 1, without padding, followed by ReLU; the pools have no padding.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for the filtered cutout, 2 for filtered and raw).
    cutout_size : int
        Cutout side S in px; the input is (B, in_channels, S, S). At least 14.
    widths : 4 ints
        Output channels of the four convolutions.
    hidden : int
        Units of the single hidden linear layer (512 in the report).

    Notes
    -----
    Map sides for S = 21: 19, 17, pool 15, 13, pool 6, 4, so 128 × 4 × 4 = 2048 features with the
    default widths. Odd and even S both work; the flattened size is computed from S. Output: logits
    (B, 2), class 1 = asteroid.
    """

    arch = "final"

    def __init__(
        self,
        in_channels: int,
        cutout_size: int,
        *,
        widths: Sequence[int] = (32, 64, 64, 128),
        hidden: int = 512,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.cutout_size = positive_int("cutout_size", cutout_size)
        self.widths = int_list("widths", widths, length=4)
        self.hidden = positive_int("hidden", hidden)
        side = final_feature_side(self.cutout_size)
        if side < 1:
            raise ValueError(
                f"cutout_size: must be at least {MIN_CUTOUT_SIZE} for FinalNet "
                f"(4 unpadded 3x3 convs and 2 pools), got {self.cutout_size}"
            )
        c1, c2, c3, c4 = self.widths
        self.features = nn.Sequential(
            nn.Conv2d(self.in_channels, c1, 3, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(kernel_size=3, stride=1, padding=0),
            nn.Conv2d(c2, c3, 3, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c3, c4, 3, stride=1, padding=0),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c4 * side * side, self.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden, 2),
        )

    def hparams(self) -> dict:
        """Constructor arguments as plain containers: ``FinalNet(**net.hparams())`` rebuilds it."""
        return {
            "in_channels": self.in_channels,
            "cutout_size": self.cutout_size,
            "widths": list(self.widths),
            "hidden": self.hidden,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map cutouts (B, in_channels, S, S) to class logits (B, 2)."""
        return self.classifier(self.features(x))
