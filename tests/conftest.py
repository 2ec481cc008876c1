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


@pytest.fixture(autouse=True)
def _quiet_wandb(tmp_path, monkeypatch):
    """Keep wandb off the network and out of the repository in every test."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()
