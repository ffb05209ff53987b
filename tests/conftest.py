"""Shared pytest fixtures: torch thread limits and the synthetic dataset generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)  # the CI machine has 2 cores; more threads only add contention


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of the default small synthetic twin (ROOT/cityscapes, ROOT/DSEC_Night), prepared and indexed.

    Generated once per test session; tests must treat it as read-only (copy it to modify files).
    """
    from cmda.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0)
    return root
