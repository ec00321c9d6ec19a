"""Shared test setup: quiet, deterministic, loopback-only."""

import os
import warnings
from pathlib import Path

import pytest
import torch

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")
warnings.filterwarnings("ignore", message=".*settotalmass.*")
torch.set_num_threads(1)  # small networks: one thread, and no stalls when ROS node processes share the cores


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def pendulum_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of a briefly trained InvertedPendulum policy (the node, fault and bad-input tests share it)."""
    from mbmpo_ros.testing import make_bundle

    return make_bundle(tmp_path_factory.mktemp("ros"))
