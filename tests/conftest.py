"""Shared test setup: quiet, deterministic, loopback-only."""

import os
import warnings

import pytest
import torch

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "egl")
warnings.filterwarnings("ignore", message=".*settotalmass.*")
torch.set_num_threads(1)  # small networks: one thread, and no stalls when ROS node processes share the cores


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
