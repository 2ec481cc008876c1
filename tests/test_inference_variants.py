"""Inference variants of the cascade (training/artifact.py): the default decides exactly as plain fp32.

Tolerances: fp32 channels-last and any batch size give the fp32 scores to |ΔP| <= 1e-5 (float32
rounding); bf16 gives them to |ΔP| <= 1e-2 and, through the fp32 recheck near each threshold, the
same accept/reject decisions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neocascade.models.final import FinalNet
from neocascade.training.artifact import REFERENCE, InferenceOptions, load_cascade, save_cascade, stage_record

SPEC = {"sigma": 1.0, "cutout_size": 21, "channels": ["filtered"], "normalize": "none",
        "selector": {"_target_": "neocascade.candidates.footprint.FootprintSelector", "kernel": 50, "stride": 50}}


def _inputs(n: int = 400, seed: int = 0) -> np.ndarray:
    """Noise cutouts (DN-like scale) with a bright PSF-like centre on a third of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=6.0, size=(n, 1, 21, 21)).astype(np.float32)
    yy, xx = np.mgrid[-10:11, -10:11]
    psf = np.exp(-(xx**2 + yy**2) / (2 * 1.2**2)).astype(np.float32)
    x[: n // 3, 0] += rng.uniform(20, 400, size=(n // 3, 1, 1)).astype(np.float32) * psf
    return x


def _reference_probs(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x)), 1)[:, 1].double().numpy()


@pytest.fixture(scope="module")
def cascade_and_x(tmp_path_factory):
    """A small random-weight FinalNet cascade whose thresholds sit inside the score distribution."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net1, net2 = FinalNet(1, 21, widths=[8, 16, 16, 16], hidden=32).eval(), FinalNet(1, 21, widths=[8, 8, 8, 8], hidden=16).eval()
    x = _inputs()
    t1 = float(np.quantile(_reference_probs(net1, x), 0.5))  # many scores close to both thresholds
    t2 = float(np.quantile(_reference_probs(net2, x), 0.5))
    path = save_cascade(tmp_path_factory.mktemp("variants") / "cascade.pt", stage1=stage_record(net1, t1),
                        stage2=stage_record(net2, t2), input_spec=SPEC, config={}, metrics={})
    return load_cascade(path), x


def _scores(cascade, x, options):
    cascade.set_inference(options)
    p1, p2 = cascade.score(x)
    return p1, p2, cascade.accept(p1, p2)


def test_default_variant_decides_as_fp32(cascade_and_x):
    cascade, x = cascade_and_x
    r1, r2, ref = _scores(cascade, x, REFERENCE)
    p1, p2, dec = _scores(cascade, x, InferenceOptions())
    assert ref.any() and (~ref).any()
    np.testing.assert_array_equal(dec, ref)
    np.testing.assert_array_equal(np.isnan(p2), np.isnan(r2))  # stage 2 saw the same candidates
    assert np.abs(p1 - r1).max() <= 1e-2
    both = np.isfinite(r2)
    assert np.abs(p2[both] - r2[both]).max() <= 1e-2


def test_reference_equals_the_bare_network(cascade_and_x):
    cascade, x = cascade_and_x
    r1, _, _ = _scores(cascade, x, REFERENCE)
    np.testing.assert_allclose(r1, _reference_probs(cascade.stage1.model, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch_size", [7, 256, 1024])
def test_fp32_channels_last_and_batch_size_keep_scores(cascade_and_x, batch_size):
    cascade, x = cascade_and_x
    r1, r2, ref = _scores(cascade, x, REFERENCE)
    p1, p2, dec = _scores(cascade, x, InferenceOptions(precision="fp32", channels_last=True, batch_size=batch_size))
    np.testing.assert_allclose(p1, r1, rtol=0, atol=1e-5)
    np.testing.assert_allclose(p2, r2, rtol=0, atol=1e-5)  # NaN where stage 1 rejected, in both


def test_bf16_recheck_rescored_near_threshold_in_fp32(cascade_and_x):
    cascade, x = cascade_and_x
    r1, _, _ = _scores(cascade, x, REFERENCE)
    margin = 0.01
    p1, _, _ = _scores(cascade, x, InferenceOptions(precision="bf16", recheck_margin=margin))
    raw, _, _ = _scores(cascade, x, InferenceOptions(precision="bf16", recheck_margin=0.0))
    near = np.abs(raw - cascade.threshold1) < margin
    assert near.any()
    np.testing.assert_allclose(p1[near], r1[near], rtol=0, atol=1e-5)  # recomputed in fp32
    np.testing.assert_array_equal(p1[~near], raw[~near])  # the rest keep their bf16 score
    assert np.abs(raw - r1).max() <= 1e-2


def test_empty_input_and_auto_resolution(cascade_and_x):
    cascade, _ = cascade_and_x
    cascade.set_inference(InferenceOptions())
    p1, p2 = cascade.score(np.zeros((0, 1, 21, 21), np.float32))
    assert p1.shape == p2.shape == (0,)
    assert InferenceOptions(precision="auto").resolved_precision(torch.device("cuda")) == "fp32"
    assert InferenceOptions(precision="bf16").resolved_precision(torch.device("cpu")) == "bf16"


@pytest.mark.parametrize(
    "kwargs, match",
    [({"precision": "fp16"}, "precision"), ({"batch_size": 0}, "batch_size"), ({"batch_size": True}, "batch_size"),
     ({"recheck_margin": -0.1}, "recheck_margin"), ({"recheck_margin": 1.0}, "recheck_margin")],
)
def test_bad_options_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InferenceOptions(**kwargs)


def test_set_inference_changes_single_fields(cascade_and_x):
    cascade, _ = cascade_and_x
    cascade.set_inference(REFERENCE).set_inference(batch_size=64)
    assert cascade.inference == InferenceOptions(precision="fp32", channels_last=False, batch_size=64, recheck_margin=0.0)
    with pytest.raises(TypeError):
        cascade.set_inference(threads=2)


def test_training_scores_use_exact_fp32_in_the_fast_layout():
    """Thresholds are picked on score_loader's output: it must equal the fp32 reference, not bf16."""
    import torch

    from neocascade.models.final import FinalNet
    from neocascade.training.artifact import REFERENCE, StageModel
    from neocascade.training.cascade import score_loader

    torch.manual_seed(0)
    net = FinalNet(1, 21).eval()
    stage = StageModel(arch=net.arch, hparams=net.hparams(), model=net, threshold=0.5)
    x = torch.randn(300, 1, 21, 21)
    batches = [(x[i:i + 128], torch.zeros(len(x[i:i + 128]), dtype=torch.long), torch.arange(i, min(i + 128, 300)))
               for i in range(0, 300, 128)]
    (probs,), _ = score_loader([stage], batches, 300)
    np.testing.assert_allclose(probs, stage.proba(x, options=REFERENCE), atol=1e-5)


def test_bf16_scoring_at_a_threshold_keeps_fp32_decisions():
    """Stage 2's training set and train.py's test report use bf16 with the recheck: fp32's decisions exactly."""
    import torch

    from neocascade.models.final import FinalNet
    from neocascade.training.artifact import REFERENCE, InferenceOptions, StageModel
    from neocascade.training.cascade import score_loader

    torch.manual_seed(1)
    net = FinalNet(1, 21).eval()
    stage = StageModel(arch=net.arch, hparams=net.hparams(), model=net, threshold=0.5)
    x = torch.randn(400, 1, 21, 21) * 3
    ref = stage.proba(x, options=REFERENCE)
    threshold = float(np.median(ref))  # half the candidates on each side, many close to it
    batches = [(x[i:i + 100], torch.ones(len(x[i:i + 100]), dtype=torch.long), torch.arange(i, i + 100))
               for i in range(0, 400, 100)]
    (probs,), label = score_loader([stage], batches, 400, options=InferenceOptions(precision="bf16"),
                                   thresholds=[threshold])
    assert label.all()
    np.testing.assert_array_equal(probs >= threshold, ref >= threshold)
    np.testing.assert_allclose(probs, ref, atol=1e-2)
    with pytest.raises(ValueError, match="thresholds: expected 1, got 2"):
        score_loader([stage], batches, 400, thresholds=[0.5, 0.5])
