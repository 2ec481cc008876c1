"""Shared fixtures: tiny seeded images built in memory, and an isolated outputs folder."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed generator, so every test sees the same 'random' numbers."""
    return np.random.default_rng(12345)


@pytest.fixture
def noise_image(rng: np.random.Generator) -> np.ndarray:
    """128x128 float32 Gaussian sky noise, sigma 6 DN (the simulator's median)."""
    return rng.normal(0.0, 6.0, size=(128, 128)).astype(np.float32)


@pytest.fixture
def fake_cascade(monkeypatch):
    """Replace artifact loading, in this process, by the exact-answer ThresholdCascade (accepts filtered centre
    > 20 DN) of test_detection.py."""
    import neocascade.training.artifact as artifact
    from test_detection import ThresholdCascade

    cascade = ThresholdCascade()
    monkeypatch.setattr(artifact, "load_cascade", lambda path, **kwargs: cascade)
    return cascade


@pytest.fixture(autouse=True)
def _quiet_wandb(tmp_path, monkeypatch):
    """Keep wandb off the network and out of the repository in every test."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()


@pytest.fixture
def published_examples():
    """The folder of published ADES / MPC 80-column examples (IAU-ADES/ADES-Master), or skip the test.

    They are another project's files, so they are not committed here: the folder is
    ``$NEOCASCADE_ADES_EXAMPLES`` or ``../shared/data/ades_examples`` beside the checkout, holding
    ``2023MQ5.psv``, ``goodades1.psv``, ``goodthree.psv`` (ADES PSV) and ``85_test.obs``,
    ``K20Q04A_test.obs``, ``band_conversions.obs`` (80-column) from that repository's tests.
    """
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("NEOCASCADE_ADES_EXAMPLES") or root.parent / "shared" / "data" / "ades_examples")
    if not (folder / "2023MQ5.psv").is_file():
        pytest.skip(f"published ADES examples not found in {folder} (set NEOCASCADE_ADES_EXAMPLES)")
    return folder
