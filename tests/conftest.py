"""Shared fixtures: synthetic faces the models can learn, and the real FER2013 path if set."""

from __future__ import annotations

import os
import sys
import warnings
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
# development; CI runs everything. Three ways a test is marked:
#   * SLOW_MODULES: files whose every test is slow;
#   * @pytest.mark.slow in the file, where a file mixes quick and slow tests (test_demo_compare,
#     test_demo_about, test_demo_server, test_demo_hardening; test_demo_photos has no slow test);
#   * SLOW_TESTS: single tests, by module and function name, in files that other work owns.
SLOW_MODULES = {
    "test_notebooks", "test_demo_models", "test_demo_live", "test_demo_browser",
    "test_model_checks", "test_distribute", "test_shipped_models", "test_training", "test_models",
}
SLOW_TESTS = {
    "test_half_precision": {  # each trains small CNNs with train_model (~8-15 s apiece)
        "test_float16_file_is_half_the_size_and_loads_exactly_the_rounded_model",
        "test_convert_restores_a_member_measures_it_again_and_updates_its_ensemble",
        "test_convert_reports_each_bad_model_and_goes_on",
        "test_convert_does_not_paper_over_a_retrained_member",
    },
    "test_synthetic": {"test_learnable_by_small_cnn"},  # trains a CNN for 8 epochs
    "test_distill": {"test_a_student_learns_what_its_soft_targets_say_not_the_labels"},  # trains 20 epochs
    "test_tta": {  # trains the demo's small models (tests/demo_fixtures.py) when nothing else has
        "test_the_report_measures_an_ensemble_from_its_members_as_the_ensemble_computes_itself",
    },
}


def pytest_collection_modifyitems(config, items):
    checked = set()
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in SLOW_TESTS and module not in checked:  # a renamed test would silently turn quick
            checked.add(module)
            for name in sorted(SLOW_TESTS[module]):
                if not hasattr(item.module, name):
                    warnings.warn(f"tests/conftest.py SLOW_TESTS names {module}.{name}, which does not exist",
                                  pytest.PytestWarning, stacklevel=1)
        if module in SLOW_MODULES or getattr(item, "originalname", item.name) in SLOW_TESTS.get(module, ()):
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
