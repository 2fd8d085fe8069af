"""Shared fixtures: paths of the repository, the shipped family and the configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "models"
CONFIGS = MODELS / "configs"
FMNIST = MODELS / "fmnist"


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    return FMNIST


@pytest.fixture(scope="session")
def configs_dir() -> Path:
    return CONFIGS
