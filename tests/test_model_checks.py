"""The models folder: a card must match its model, broken cards and damaged files say what is wrong (issue #19, 10-13)."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

TESTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from demo_fixtures import MEMBERS, trained_models_dir  # noqa: E402


@pytest.fixture()
def folder(tmp_path):
    for path in trained_models_dir().iterdir():
        shutil.copy(path, tmp_path)
    return tmp_path


def load(folder):
    from fer_utils.serving import load_models

    return load_models(folder, warm_up=False)


def test_a_card_that_describes_another_file_refuses_that_model(folder):
    shutil.copy(folder / "resnet50.keras", folder / "scratch_cnn.keras")  # the old card stays beside it
    models = load(folder)
    assert "scratch_cnn" not in models.models
    reason = models.missing["scratch_cnn"]
    assert "scratch_cnn.json" in reason and "describes another file" in reason
    assert "resnet50" in models.models  # the others still serve


def test_a_card_with_the_wrong_parameter_count_is_refused(folder):
    from fer_utils.card import ModelCard

    card = ModelCard.read(folder / "resnet50.json")
    card.file_sha256 = None  # no checksum to refuse it by: the parameter count must
    card.parameters_total = 123
    card.write(folder / "resnet50.json")
    reason = load(folder).missing["resnet50"]
    assert "resnet50.json records 123 parameters" in reason


@pytest.mark.parametrize("text, message", [("{not json", "is not valid JSON"), ("[1, 2]", "holds a JSON list")])
def test_a_broken_card_names_the_card_and_what_is_wrong(folder, text, message):
    (folder / "scratch_cnn.json").write_text(text)
    models = load(folder)
    reason = models.missing["scratch_cnn"]
    assert "scratch_cnn.json" in reason and message in reason and "fix the card or delete it" in reason
    assert "'list' object" not in reason and "Expecting property name" not in reason.split("(")[0]


def test_a_model_without_a_card_still_serves(folder):
    (folder / "inceptionv3.json").unlink()
    assert "inceptionv3" in load(folder).models


def test_a_truncated_model_is_called_damaged_and_the_ensemble_names_it(folder):
    data = (folder / "scratch_cnn.keras").read_bytes()
    (folder / "scratch_cnn.keras").write_bytes(data[: len(data) // 2])
    models = load(folder)
    assert "is damaged" in models.missing["scratch_cnn"] and "File not found" not in models.missing["scratch_cnn"]
    ensemble_reason = models.missing["ensemble"]
    assert "its member scratch_cnn.keras could not be loaded" in ensemble_reason and "damaged" in ensemble_reason


def test_reasons_never_show_the_servers_paths(folder):
    (folder / "mobilenetv2.keras").write_bytes(b"not a keras file")
    (folder / "scratch_cnn.json").write_text("{")
    models = load(folder)
    assert models.missing
    for reason in models.missing.values():
        assert str(folder) not in reason and str(pathlib.Path(folder).resolve()) not in reason


def test_the_app_shows_calibrated_probabilities_and_the_ensemble_combines_raw_ones(folder):
    """A card's temperature changes what people see, not the predicted class or the ensemble's inputs."""
    import numpy as np

    from fer_utils.calibration import apply_temperature
    from fer_utils.card import ModelCard
    from fer_utils.serving import predict_all
    from synthetic import synthetic_face

    for name, temperature in (("scratch_cnn", 2.0), ("ensemble", 1.5)):
        card = ModelCard.read(folder / f"{name}.json")
        card.calibration = {"method": "temperature", "temperature": temperature, "fitted_on": "PublicTest"}
        card.write(folder / f"{name}.json")
    models = load(folder)
    face = synthetic_face(3, np.random.default_rng(0))
    by_key = {p.key: p for p in predict_all(models, face)}
    scratch = by_key["scratch_cnn"]
    raw = models.models["scratch_cnn"].predict(face)
    np.testing.assert_allclose(scratch.raw, raw, atol=1e-6)
    np.testing.assert_allclose(scratch.probabilities, apply_temperature(raw[None], 2.0)[0], atol=1e-5)
    assert scratch.probabilities.max() < raw.max() and scratch.label == models.models["scratch_cnn"].class_names[int(raw.argmax())]
    ensemble = models.models["ensemble"]
    head_raw = ensemble.combine([models.models[key].predict(face) for key in MEMBERS])  # raw member outputs
    np.testing.assert_allclose(by_key["ensemble"].raw, head_raw, atol=1e-5)
    np.testing.assert_allclose(by_key["ensemble"].probabilities, apply_temperature(head_raw[None], 1.5)[0], atol=1e-5)
    assert by_key["resnet50"].raw is None  # no temperature on its card: shown as the model gives it


def test_the_no_models_page_does_not_show_the_servers_path(tmp_path):
    import json as _json

    from demo.app import build_demo

    folder = tmp_path / "empty_models"
    folder.mkdir()
    config = _json.dumps(build_demo(folder).config)
    assert "No models found" in config and "empty_models" in config
    assert str(tmp_path) not in config
