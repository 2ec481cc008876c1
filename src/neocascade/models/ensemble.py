"""An ensemble of independently trained CNNs of one stage: their class probabilities averaged.

Members trained from different seeds make different mistakes on the faint, ambiguous candidates near the
operating threshold; averaging their probabilities smooths those out at the cost of one forward pass
per member. The ensemble is an ordinary ``nn.Module`` returning logits, so artifacts, inference options
and thresholds treat it as any other CNN.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class EnsembleNet(nn.Module):
    """Average the softmax of ``members``; return its log, so a softmax of the output is that average.

    Parameters
    ----------
    members : sequence of nn.Module
        Two or more CNNs with ``arch``, ``hparams()``, and one input shape (``in_channels``,
        ``cutout_size`` agree); an ensemble cannot be a member.

    Notes
    -----
    ``hparams()`` lists each member's ``arch`` and ``hparams``; :func:`models.registry.build_model`
    rebuilds the ensemble from it, and the state dict names member k's weights ``members.k.…``.
    """

    arch = "ensemble"

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"members: an ensemble needs at least 2 networks, got {len(members)}")
        for k, net in enumerate(members):
            if not isinstance(net, nn.Module) or not hasattr(net, "hparams") or not hasattr(net, "arch"):
                raise ValueError(f"members[{k}]: expected a CNN with arch and hparams(), got {type(net).__name__}")
            if net.arch == self.arch:
                raise ValueError(f"members[{k}]: an ensemble cannot contain another ensemble")
        shapes = {(int(net.in_channels), int(net.cutout_size)) for net in members}
        if len(shapes) != 1:
            raise ValueError(f"members: all must take one input shape (in_channels, cutout_size), got {sorted(shapes)}")
        self.in_channels, self.cutout_size = shapes.pop()
        self.members = nn.ModuleList(members)

    def hparams(self) -> dict:
        """Input shape and each member's ``{"arch", "hparams"}``, as plain containers."""
        return {
            "in_channels": self.in_channels,
            "cutout_size": self.cutout_size,
            "members": [{"arch": net.arch, "hparams": net.hparams()} for net in self.members],
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log of the members' mean class probabilities (B, 2): logits whose softmax is that mean."""
        logp = torch.stack([torch.log_softmax(net(x).float(), dim=1) for net in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))
