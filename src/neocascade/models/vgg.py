"""The seed's altered VGG16, sized for 21×21 cutouts."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from neocascade.models._common import int_list, nonnegative_float, positive_int


class AlteredVGG16(nn.Module):
    """VGG16's 13 convolutions in 5 blocks, altered for small cutouts.

    What was altered from VGG16 (224×224 RGB input, 5 max-pools, 4096-4096-1000 classifier), and why:

    - Only the first ``pools`` blocks (3 by default) end in a 2×2 max-pool: a 21-px cutout can be
      halved three times (21 → 10 → 5 → 2); blocks 4 and 5 keep their 3×3 padded convolutions at 2×2.
    - Narrower blocks (32-64-128-128-256 channels instead of 64-128-256-512-512): a 2-class problem
      on a few hundred pixels does not need VGG16's 138 M parameters.
    - Batch normalisation after every convolution, so the 13-layer stack trains from scratch at the
      seed's learning rate without ImageNet weights.
    - A smaller classifier (256-256-2 with dropout instead of 4096-4096-1000).

    Parameters
    ----------
    in_channels : int
        Input channels (1 for the filtered cutout, 2 for filtered and raw).
    cutout_size : int
        Cutout side S in px; the input is (B, in_channels, S, S). Must survive ``pools`` halvings
        (S ≥ 8 with 3 pools).
    widths : 5 ints
        Output channels of the convolutions in each block.
    depths : 5 ints
        Convolutions per block; VGG16's (2, 2, 3, 3, 3) gives its 13 convolutions.
    pools : int
        How many of the first blocks end in a 2×2 max-pool (0 to 5).
    hidden : list of int
        Units of the hidden linear layers before the 2-way output.
    dropout : float
        Dropout probability before each hidden linear layer, as in VGG.

    Notes
    -----
    All convolutions are 3×3, stride 1, padding 1 (VGG's). Output: logits (B, 2), class 1 = asteroid.
    """

    arch = "vgg"

    def __init__(
        self,
        in_channels: int,
        cutout_size: int,
        *,
        widths: Sequence[int] = (32, 64, 128, 128, 256),
        depths: Sequence[int] = (2, 2, 3, 3, 3),
        pools: int = 3,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.cutout_size = positive_int("cutout_size", cutout_size)
        self.widths = int_list("widths", widths)
        self.depths = int_list("depths", depths, length=len(self.widths))
        if isinstance(pools, bool) or not isinstance(pools, int) or not 0 <= pools <= len(self.widths):
            raise ValueError(f"pools: must be an integer from 0 to {len(self.widths)}, got {pools!r}")
        self.pools = int(pools)
        self.hidden = int_list("hidden", hidden) if len(hidden) else []
        self.dropout = nonnegative_float("dropout", dropout, below=1.0)
        side = self.cutout_size
        for _ in range(self.pools):
            side //= 2
        if side < 1:
            raise ValueError(
                f"cutout_size: must be at least {2 ** self.pools} for AlteredVGG16 with {self.pools} pools, "
                f"got {self.cutout_size}"
            )
        layers: list[nn.Module] = []
        channels = self.in_channels
        for block, (width, depth) in enumerate(zip(self.widths, self.depths)):
            for _ in range(depth):
                layers += [
                    nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            if block < self.pools:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        units = channels * side * side
        for width in self.hidden:
            head += [nn.Dropout(self.dropout), nn.Linear(units, width), nn.ReLU(inplace=True)]
            units = width
        head.append(nn.Linear(units, 2))
        self.classifier = nn.Sequential(*head)

    def hparams(self) -> dict:
        """Constructor arguments as plain containers: ``AlteredVGG16(**net.hparams())`` rebuilds it."""
        return {
            "in_channels": self.in_channels,
            "cutout_size": self.cutout_size,
            "widths": list(self.widths),
            "depths": list(self.depths),
            "pools": self.pools,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map cutouts (B, in_channels, S, S) to class logits (B, 2)."""
        return self.classifier(self.features(x))
