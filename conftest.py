"""Workspace-wide pytest set-up: `gpu` tests skip without CUDA; each xdist worker uses one
torch thread (2 workers on 2 cores), and tests never write into the real runs/ or data/."""

import os

import pytest
import torch

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "shared"))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker `gpu`)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNS_ROOT", str(tmp_path / "runs"))
    yield


@pytest.fixture
def shared_dir():
    """../shared beside the checkout (real annotation files); tests using it skip when absent."""
    if not os.path.isdir(SHARED):
        pytest.skip("../shared is absent (a user's clone has none)")
    return SHARED
