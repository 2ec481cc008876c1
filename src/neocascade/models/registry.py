"""Architecture name → class, so a checkpoint's stored ``arch`` and ``hparams`` rebuild its model."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from neocascade.errors import InputError
from neocascade.models.baseline import BaselineNet
from neocascade.models.ensemble import EnsembleNet
from neocascade.models.final import FinalNet
from neocascade.models.resnet import ResidualNet
from neocascade.models.vgg import AlteredVGG16

CNN_ARCHS: dict[str, type[nn.Module]] = {
    BaselineNet.arch: BaselineNet,
    AlteredVGG16.arch: AlteredVGG16,
    FinalNet.arch: FinalNet,
    ResidualNet.arch: ResidualNet,
}
ENSEMBLE_ARCH = EnsembleNet.arch  # members of the CNN_ARCHS, averaged (stage.members > 1)
FOREST_ARCH = "rf"  # RandomForestStage (models/forest.py): not an nn.Module, restored with from_state
ARCHS = (*CNN_ARCHS, ENSEMBLE_ARCH, FOREST_ARCH)


def build_model(arch: str, hparams: Mapping[str, Any]) -> nn.Module:
    """Build the CNN named ``arch`` from its stored ``hparams()`` (untrained weights).

    An ``ensemble`` is rebuilt from its members' stored ``arch`` and ``hparams``. Raises ValueError naming
    ``arch`` for an unknown or non-CNN architecture.
    """
    if arch == ENSEMBLE_ARCH:
        members = hparams.get("members")
        if not isinstance(members, (list, tuple)) or not all(isinstance(m, Mapping) and "arch" in m for m in members):
            raise ValueError("hparams: an ensemble needs members, a list of {arch, hparams}")
        return EnsembleNet([build_model(m["arch"], m.get("hparams") or {}) for m in members])
    if arch not in CNN_ARCHS:
        raise ValueError(f"arch: unknown CNN architecture {arch!r} (expected one of {sorted(CNN_ARCHS)})")
    return CNN_ARCHS[arch](**dict(hparams))


def model_state(model: nn.Module) -> dict:
    """A CNN as plain containers: ``{"arch", "hparams", "state_dict"}``, safe for ``torch.load(weights_only=True)``."""
    return {
        "arch": model.arch,
        "hparams": model.hparams(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def model_from_state(state: Mapping[str, Any]) -> nn.Module:
    """Rebuild a CNN from :func:`model_state`'s dict, weights loaded strictly, in eval mode."""
    model = build_model(state["arch"], state["hparams"])
    model.load_state_dict(state["state_dict"], strict=True)
    return model.eval()


def check_architecture(
    source: object,
    arch: str,
    hparams: Mapping[str, Any],
    *,
    expected_arch: str | None = None,
    in_channels: int | None = None,
    cutout_size: int | None = None,
) -> None:
    """Raise InputError naming ``source`` when a stored model does not fit the configuration.

    Parameters
    ----------
    source : str or Path
        The checkpoint or artifact, named in the message.
    arch, hparams : str, mapping
        What the file was trained as (``model.arch``, ``model.hparams()``).
    expected_arch, in_channels, cutout_size : optional
        What the configuration asks for; None skips that check.

    Notes
    -----
    Messages read ``stage1.ckpt: trained as 'baseline', config asks 'final'`` or
    ``stage1.ckpt: trained for cutout_size 21, config asks 25``.
    """
    if expected_arch is not None and arch != expected_arch:
        raise InputError(f"{source}: trained as '{arch}', config asks '{expected_arch}'")
    for key, want in (("in_channels", in_channels), ("cutout_size", cutout_size)):
        if want is not None and hparams.get(key) != want:
            raise InputError(f"{source}: trained for {key} {hparams.get(key)}, config asks {want}")
