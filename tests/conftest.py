"""Shared fixtures: synthetic faces the models can learn, and the real FER2013 path if set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

from synthetic import synthetic_faces  # noqa: E402

# the demo tests' session fixtures (small trained models, the launched app, test photos), for every module
from demo_fixtures import app_url, client, models, photos  # noqa: E402,F401

from fer_utils.data import Split  # noqa: E402


# Slow: tests that run notebooks, a launched server, a browser, training (the demo's small models
# included) or the shipped models. `python -m pytest -m "not slow"` is the quick run during
# development; CI runs everything. Two ways a test is marked:
#   * SLOW_MODULES: files whose every test is slow;
#   * @pytest.mark.slow on the test, where a file mixes quick and slow tests.
SLOW_MODULES = {
    "test_notebooks", "test_demo_models", "test_demo_live", "test_demo_browser",
    "test_model_checks", "test_distribute", "test_shipped_models", "test_training", "test_models",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def synthetic_splits() -> dict[str, Split]:
    """Train/val/test splits of synthetic faces over all seven FER2013 classes."""
    splits = {}
    for name, n_per_class, seed in (("train", 60, 1), ("val", 15, 2), ("test", 20, 3)):
        images, labels = synthetic_faces(n_per_class, classes=range(7), seed=seed)
        splits[name] = Split(images, labels)
    return splits


@pytest.fixture(scope="session")
def fer2013_csv() -> Path:
    """The real FER2013 CSV from FER2013_CSV; tests that need it skip when it is absent."""
    value = os.environ.get("FER2013_CSV")
    if not value:
        pytest.skip("FER2013_CSV is not set: point it at fer2013.csv(.gz) to run the real-data tests")
    path = Path(value)
    if not path.is_file():
        pytest.skip(f"FER2013_CSV={value} does not exist")
    return path


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
