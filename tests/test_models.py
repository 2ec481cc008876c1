"""Models: shapes, layer structure, hyperparameters as plain containers, the array forest, configs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.ensemble import RandomForestClassifier
from torch import nn

from neocascade.errors import InputError
from neocascade.models import AlteredVGG16, BaselineNet, EnsembleNet, FinalNet, ResidualNet
from neocascade.models import forest as forest_module
from neocascade.models.forest import ArrayForest, RandomForestStage, forest_to_arrays
from neocascade.models.registry import build_model, check_architecture, model_from_state, model_state

CONF = Path(__file__).resolve().parents[1] / "conf"
CNNS = (BaselineNet, AlteredVGG16, FinalNet, ResidualNet)


def _layers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("cls", CNNS)
@pytest.mark.parametrize("size", [21, 16])
@pytest.mark.parametrize("channels", [1, 2])
def test_forward_gives_two_logits(cls, size, channels):
    torch.manual_seed(0)
    model = cls(channels, size).eval()
    out = model(torch.randn(3, channels, size, size))
    assert out.shape == (3, 2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", CNNS)
def test_hparams_are_plain_and_rebuild_the_model(cls):
    model = cls(2, 21)
    hp = model.hparams()
    assert json.loads(json.dumps(hp)) == hp
    twin = cls(**hp)
    assert twin.hparams() == hp
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model.arch in ("baseline", "vgg", "final", "resnet")


def test_hparams_accept_hydra_lists():
    cfg = OmegaConf.create({"widths": [8, 8, 8, 8], "hidden": 16})
    model = FinalNet(1, 21, widths=cfg.widths, hidden=cfg.hidden)
    assert type(model.hparams()["widths"]) is list


def test_final_layer_structure():
    model = FinalNet(1, 21)
    sequence = [m for m in model.features if not isinstance(m, nn.ReLU)]
    kinds = [type(m).__name__ for m in sequence]
    assert kinds == ["Conv2d", "Conv2d", "AvgPool2d", "Conv2d", "AvgPool2d", "Conv2d"]
    convs = _layers(model, nn.Conv2d)
    assert [c.out_channels for c in convs] == [32, 64, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (0, 0) for c in convs)
    pool1, pool2 = _layers(model, nn.AvgPool2d)
    assert (pool1.kernel_size, pool1.stride, pool1.padding) == (3, 1, 0)
    assert (pool2.kernel_size, pool2.stride, pool2.padding) == (2, 2, 0)
    hidden, output = _layers(model, nn.Linear)
    assert (hidden.in_features, hidden.out_features) == (128 * 4 * 4, 512)  # 21 -> 19 17 15 13 6 4
    assert (output.in_features, output.out_features) == (512, 2)
    assert len(_layers(model, nn.ReLU)) == 5


def test_resnet_structure_and_shortcuts():
    model = ResidualNet(1, 21)
    blocks = [m for m in model.modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 6  # 3 stages x 2 blocks
    strided = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(strided) == 2 and all(b.body[0].stride == (2, 2) for b in strided)
    assert model.features(torch.zeros(1, 1, 21, 21)).shape == (1, 128, 6, 6)  # 21 -> 11 -> 6
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in FinalNet(1, 21).parameters())
    with pytest.raises(ValueError, match="cutout_size: must be at least 4"):
        ResidualNet(1, 3)
    with pytest.raises(ValueError, match="blocks: must be a positive integer"):
        ResidualNet(1, 21, blocks=0)


def test_resnet_block_is_identity_plus_residual():
    """With the body's last BatchNorm zeroed, a block passes its (ReLU'd) input straight through."""
    from neocascade.models.resnet import ResidualBlock

    block = ResidualBlock(4, 4).eval()
    nn.init.zeros_(block.body[4].weight)
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_final_flattened_size_follows_cutout_size():
    assert _layers(FinalNet(1, 25), nn.Linear)[0].in_features == 128 * 6 * 6  # 25 -> 23 21 19 17 8 6
    assert _layers(FinalNet(1, 14), nn.Linear)[0].in_features == 128  # the smallest size: a 1x1 map


def test_final_rejects_too_small_cutouts():
    with pytest.raises(ValueError, match="cutout_size: must be at least 14"):
        FinalNet(1, 13)


def test_baseline_structure():
    model = BaselineNet(1, 21)
    assert [c.padding for c in _layers(model, nn.Conv2d)] == [(1, 1), (0, 0), (0, 0)]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in _layers(model, nn.Conv2d))
    linears = _layers(model, nn.Linear)
    assert len(linears) == 3
    assert linears[0].in_features == 64 * 17 * 17
    assert linears[-1].out_features == 2


def test_vgg_structure():
    model = AlteredVGG16(1, 21)
    assert len(_layers(model, nn.Conv2d)) == 13
    assert len(_layers(model, nn.BatchNorm2d)) == 13
    assert len(_layers(model, nn.MaxPool2d)) == 3
    assert _layers(model, nn.Linear)[0].in_features == 256 * 2 * 2  # 21 -> 10 -> 5 -> 2
    with pytest.raises(ValueError, match="cutout_size: must be at least 8"):
        AlteredVGG16(1, 7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"widths": [8, 8]}, "widths: must have 4 entries"),
        ({"widths": [8, 0, 8, 8]}, r"widths\[1\]: must be a positive integer"),
        ({"hidden": 2.5}, "hidden: must be a positive integer"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FinalNet(1, 21, **kwargs)
    with pytest.raises(ValueError, match="in_channels"):
        BaselineNet(0, 21)


def test_model_state_round_trip_with_weights_only():
    torch.manual_seed(1)
    model = FinalNet(2, 21, widths=[4, 4, 4, 4], hidden=8).eval()
    buffer = io.BytesIO()
    torch.save(model_state(model), buffer)
    buffer.seek(0)
    twin = model_from_state(torch.load(buffer, weights_only=True))
    x = torch.randn(5, 2, 21, 21)
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)


def test_build_model_and_check_architecture():
    assert isinstance(build_model("baseline", BaselineNet(1, 21).hparams()), BaselineNet)
    with pytest.raises(ValueError, match="arch: unknown CNN architecture 'densenet'"):
        build_model("densenet", {})
    hp = FinalNet(1, 21).hparams()
    check_architecture("s.ckpt", "final", hp, expected_arch="final", in_channels=1, cutout_size=21)
    with pytest.raises(InputError, match=r"^s.ckpt: trained as 'final', config asks 'vgg'$"):
        check_architecture("s.ckpt", "final", hp, expected_arch="vgg")
    with pytest.raises(InputError, match=r"^s.ckpt: trained for cutout_size 21, config asks 25$"):
        check_architecture("s.ckpt", "final", hp, cutout_size=25)
    with pytest.raises(InputError, match=r"^s.ckpt: trained for in_channels 1, config asks 2$"):
        check_architecture("s.ckpt", "final", hp, in_channels=2)


def test_ensemble_averages_member_probabilities():
    torch.manual_seed(3)
    a, b = FinalNet(2, 21, widths=[4, 4, 4, 4], hidden=8).eval(), ResidualNet(2, 21, widths=[4, 8], blocks=1).eval()
    ens = EnsembleNet([a, b]).eval()
    x = torch.randn(6, 2, 21, 21)
    with torch.no_grad():
        expected = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
        torch.testing.assert_close(torch.softmax(ens(x), 1), expected, rtol=1e-5, atol=1e-6)
        solo = EnsembleNet([a, a]).eval()  # identical members: the member's own probabilities
        torch.testing.assert_close(torch.softmax(solo(x), 1), torch.softmax(a(x), 1), rtol=1e-5, atol=1e-6)
    assert (ens.in_channels, ens.cutout_size) == (2, 21)


def test_ensemble_round_trips_through_the_registry():
    torch.manual_seed(4)
    ens = EnsembleNet([ResidualNet(1, 21, widths=[4, 8], blocks=1), ResidualNet(1, 21, widths=[4, 8], blocks=1)]).eval()
    state = model_state(ens)
    assert state["arch"] == "ensemble" and [m["arch"] for m in state["hparams"]["members"]] == ["resnet", "resnet"]
    assert json.loads(json.dumps(state["hparams"])) == state["hparams"]  # plain containers
    assert any(k.startswith("members.1.") for k in state["state_dict"])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    twin = model_from_state(torch.load(buffer, weights_only=True))
    x = torch.randn(3, 1, 21, 21)
    torch.testing.assert_close(twin(x), ens(x), rtol=0, atol=0)


@pytest.mark.parametrize("members, match", [
    ([], "at least 2"),
    (["resnet"], "at least 2"),
    ([nn.Linear(2, 2), nn.Linear(2, 2)], r"members\[0\]: expected a CNN"),
    ([FinalNet(1, 21), FinalNet(2, 21)], "one input shape"),
    ([FinalNet(1, 21), FinalNet(1, 25)], "one input shape"),
])
def test_ensemble_rejects_bad_members(members, match):
    with pytest.raises(ValueError, match=match):
        EnsembleNet(members)
    pair = EnsembleNet([FinalNet(1, 21), FinalNet(1, 21)])
    with pytest.raises(ValueError, match="cannot contain another ensemble"):
        EnsembleNet([pair, pair])
    with pytest.raises(ValueError, match="needs members"):
        build_model("ensemble", {"members": "resnet"})


# ---- configs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cls"), [("baseline", BaselineNet), ("vgg", AlteredVGG16), ("final", FinalNet)])
def test_model_configs_instantiate(name, cls):
    cfg = OmegaConf.create({"seed": 3, "model": OmegaConf.load(CONF / "model" / f"{name}.yaml")})
    model = instantiate(cfg.model, in_channels=2, cutout_size=21)
    assert isinstance(model, cls) and model.arch == name
    assert json.loads(json.dumps(model.hparams())) == model.hparams()


def test_rf_and_optimizer_configs_instantiate():
    cfg = OmegaConf.create(
        {"seed": 3, "model": OmegaConf.load(CONF / "model" / "rf.yaml"), "optimizer": OmegaConf.load(CONF / "optimizer" / "adam.yaml")}
    )
    stage = instantiate(cfg.model, in_channels=1, cutout_size=21)
    assert isinstance(stage, RandomForestStage) and stage.random_state == 3 and stage.arch == "rf"
    optimizer = instantiate(cfg.optimizer)(nn.Linear(2, 2).parameters())
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["weight_decay"] == 1e-5


# ---- random forest ---------------------------------------------------------------------------------
def _forest_data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 5, 5)).astype(np.float32)
    y = (x[:, 0, 2, 2] + 0.7 * rng.normal(size=n) > 0.3).astype(np.int64)
    return x, y


def test_array_forest_hand_made_tree():
    # root: x[1] <= 0 -> leaf [1, 0]; else x[0] <= 2 -> leaf [0.25, 0.75] else leaf [0, 1]
    arrays = {
        "children_left": np.array([1, -1, 3, -1, -1]),
        "children_right": np.array([2, -1, 4, -1, -1]),
        "feature": np.array([1, -2, 0, -2, -2]),
        "threshold": np.array([0.0, -2.0, 2.0, -2.0, -2.0]),
        "value": np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8], [0.25, 0.75], [0.0, 1.0]]),
        "node_offsets": np.array([0, 5]),
        "classes": np.array([0, 1]),
        "n_features": np.array(2),
    }
    forest = ArrayForest(arrays)
    x = np.array([[5.0, -1.0], [1.0, 0.0], [2.0, 3.0], [2.5, 3.0]])
    np.testing.assert_array_equal(forest.predict_proba(x), [[1, 0], [1, 0], [0.25, 0.75], [0, 1]])
    assert forest.max_depth == 2
    assert forest.predict_proba(np.zeros((0, 2))).shape == (0, 2)
    with pytest.raises(ValueError, match=r"X: must have shape \(N, 2\)"):
        forest.predict_proba(np.zeros((3, 3)))


@pytest.mark.parametrize("max_depth", [None, 3])
def test_array_forest_equals_sklearn(max_depth, monkeypatch):
    x, y = _forest_data()
    flat = x.reshape(len(x), -1)
    fitted = RandomForestClassifier(n_estimators=7, max_depth=max_depth, random_state=0).fit(flat, y)
    test_x = np.random.default_rng(1).normal(size=(300, 25))
    monkeypatch.setattr(forest_module, "_CHUNK_CELLS", 7 * 64)  # several chunks of 64 samples
    ours = ArrayForest(forest_to_arrays(fitted)).predict_proba(test_x)
    np.testing.assert_allclose(ours, fitted.predict_proba(test_x), rtol=0, atol=1e-6)


def test_forest_arrays_are_plain_and_normalised():
    x, y = _forest_data()
    arrays = forest_to_arrays(RandomForestClassifier(n_estimators=3, random_state=0).fit(x.reshape(len(x), -1), y))
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    np.testing.assert_allclose(arrays["value"].sum(axis=1), 1.0)
    assert arrays["node_offsets"][0] == 0 and arrays["node_offsets"].size == 4


def test_random_forest_stage_round_trip_without_pickle(tmp_path):
    x, y = _forest_data()
    stage = RandomForestStage(1, 5, n_estimators=5, random_state=0).fit(x, y)
    p = stage.predict_proba(x[:50])
    assert p.shape == (50,) and np.all((p >= 0) & (p <= 1))
    # torch: tensors and plain containers only
    buffer = io.BytesIO()
    torch.save(stage.to_state(as_tensors=True), buffer)
    buffer.seek(0)
    restored = RandomForestStage.from_state(torch.load(buffer, weights_only=True))
    np.testing.assert_array_equal(restored.predict_proba(x[:50]), p)
    assert restored.hparams() == stage.hparams()
    # numpy: npz without pickle
    state = stage.to_state()
    np.savez(tmp_path / "rf.npz", **state["arrays"])
    with np.load(tmp_path / "rf.npz", allow_pickle=False) as npz:
        again = RandomForestStage.from_state({"arch": "rf", "hparams": state["hparams"], "arrays": dict(npz)})
    np.testing.assert_array_equal(again.predict_proba(x[:50]), p)


def test_random_forest_stage_checks_input():
    x, y = _forest_data(60)
    stage = RandomForestStage(n_estimators=2).fit(x, y)
    assert (stage.in_channels, stage.cutout_size) == (1, 5)
    with pytest.raises(ValueError, match="X: cutout_size must be 5, got 7"):
        stage.predict_proba(np.zeros((2, 1, 7, 7)))
    with pytest.raises(ValueError, match="y: must contain both classes"):
        RandomForestStage(n_estimators=2).fit(x, np.zeros(60, dtype=int))
    with pytest.raises(ValueError, match="not fitted"):
        RandomForestStage().predict_proba(x)
    with pytest.raises(ValueError, match="state: must be a random-forest state"):
        RandomForestStage.from_state({"arch": "final"})
