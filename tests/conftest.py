"""Shared fixtures: the ../shared folder (skipped when absent) and small real images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATASETS = SHARED / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"../shared/datasets not found at {SHARED_DATASETS} (real-data tests need the shared folder)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty feature cache for the test, also exported as FEATBENCH_CACHE."""
    path = tmp_path / "cache"
    monkeypatch.setenv("FEATBENCH_CACHE", str(path))
    return path
