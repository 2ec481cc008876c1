"""A small residual CNN for 21×21 cutouts: a stronger stage 2 than the seed's plain stacks.

Padded 3×3 convolutions keep the cutout's full resolution in the first stage, where a faint, short trail
and a PSF-like transient differ by a pixel or two; identity shortcuts let the deeper stack train from
scratch at the seed's learning rate; global average pooling keeps the head small and lets any cutout
size through.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from neocascade.models._common import int_list, positive_int


class ResidualBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1, strided) shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResidualNet(nn.Module):
    """Stem conv, ``len(widths)`` stages of ``blocks`` residual blocks, global average pool, linear head.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for the filtered cutout, 2 for filtered and raw).
    cutout_size : int
        Cutout side S in px; the input is (B, in_channels, S, S). Any S ≥ 2**(len(widths) - 1).
    widths : ints
        Channels of each stage; every stage after the first halves the map (stride 2).
    blocks : int
        Residual blocks per stage.

    Notes
    -----
    Maps for S = 21 with the default widths (32, 64, 128): 21 → 11 → 6, 128 features after the pool,
    ~0.6 M parameters (FinalNet: ~1.2 M, mostly its 2048 × 512 linear layer). Output: logits (B, 2),
    class 1 = asteroid.
    """

    arch = "resnet"

    def __init__(
        self, in_channels: int, cutout_size: int, *, widths: Sequence[int] = (32, 64, 128), blocks: int = 2
    ) -> None:
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.cutout_size = positive_int("cutout_size", cutout_size)
        self.widths = int_list("widths", widths)
        self.blocks = positive_int("blocks", blocks)
        smallest = 2 ** (len(self.widths) - 1)
        if self.cutout_size < smallest:
            raise ValueError(
                f"cutout_size: must be at least {smallest} for {len(self.widths)} ResidualNet stages, got {self.cutout_size}"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(self.in_channels, self.widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(self.widths[0]),
            nn.ReLU(inplace=True),
        ]
        previous = self.widths[0]
        for i, width in enumerate(self.widths):
            for j in range(self.blocks):
                layers.append(ResidualBlock(previous, width, stride=2 if i > 0 and j == 0 else 1))
                previous = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, 2))

    def hparams(self) -> dict:
        """Constructor arguments as plain containers: ``ResidualNet(**net.hparams())`` rebuilds it."""
        return {
            "in_channels": self.in_channels,
            "cutout_size": self.cutout_size,
            "widths": list(self.widths),
            "blocks": self.blocks,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map cutouts (B, in_channels, S, S) to class logits (B, 2)."""
        return self.classifier(self.features(x))
