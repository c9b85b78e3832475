"""Temperature scaling: the fit finds a known temperature, ECE measures what it should, the CLI updates cards."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from matplotlib.figure import Figure
from synthetic import write_synthetic_fer_csv

from fer_utils import calibration, experiment, model_io, models
from fer_utils.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    reliability_diagram,
    reliability_grid,
)
from fer_utils.card import ModelCard
from fer_utils.compare import collect_cards
from fer_utils.data import load_dataset
from fer_utils.evaluation import predict_proba

CALIBRATION_KEYS = {"method", "temperature", "fitted_on", "bins", "test_ece_before", "test_ece_after", "test_nll_before",
                    "test_nll_after", "val_ece_before", "val_ece_after", "data_sha256"}


def _calibrated_samples(rng: np.random.Generator, n: int = 20_000, k: int = 7, spread: float = 2.0):
    """Probabilities and labels drawn from them: calibrated by construction."""
    logits = rng.normal(0.0, spread, (n, k))
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    labels = (proba.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return proba, labels


def test_an_over_confident_classifier_gets_its_temperature_back(rng):
    proba, labels = _calibrated_samples(rng)
    sharpened = apply_temperature(proba, 0.5)  # logits doubled: over-confident
    assert expected_calibration_error(sharpened, labels) > 0.1
    temperature = fit_temperature(sharpened, labels)
    assert temperature == pytest.approx(2.0, rel=0.1)
    fixed = apply_temperature(sharpened, temperature)
    assert expected_calibration_error(fixed, labels) < 0.02
    np.testing.assert_array_equal(fixed.argmax(axis=1), sharpened.argmax(axis=1))
    assert negative_log_likelihood(fixed, labels) < negative_log_likelihood(sharpened, labels)
    # logits give the same T: log p differs from them by a per-row constant the softmax ignores
    shifted_logits = np.log(sharpened) + rng.normal(0, 3, (len(labels), 1))
    assert fit_temperature(shifted_logits, labels, inputs="logits") == pytest.approx(temperature, rel=1e-4)
    assert fit_temperature(shifted_logits, labels) == pytest.approx(temperature, rel=1e-4), "auto: not probabilities"


def test_calibrated_samples_have_near_zero_ece_and_keep_temperature_one(rng):
    proba, labels = _calibrated_samples(rng)
    assert expected_calibration_error(proba, labels) < 0.015
    assert fit_temperature(proba, labels) == pytest.approx(1.0, rel=0.05)
    np.testing.assert_allclose(apply_temperature(proba, 1.0), proba, atol=1e-12)


def test_bins_hold_confidences_at_the_edges():
    one_hot = np.eye(7)[[0, 1, 2, 3]]  # confidence exactly 1.0
    stats = reliability_bins(one_hot, [0, 1, 2, 4], bins=15)
    assert stats.count.tolist() == [0] * 14 + [4], "1.0 falls in the last bin, not beyond it"
    assert stats.accuracy[-1] == 0.75 and stats.confidence[-1] == 1.0
    assert expected_calibration_error(one_hot, [0, 1, 2, 4]) == pytest.approx(0.25)
    assert expected_calibration_error(one_hot, [0, 1, 2, 3]) == 0.0
    uniform = np.full((2, 5), 0.2)  # confidence 0.2, exactly on an edge of 5 bins: (0, 0.2] is the first
    assert reliability_bins(uniform, [0, 1], bins=5).count.tolist() == [2, 0, 0, 0, 0]
    # by hand: 0.9 right and 0.7 wrong, in two bins of half the faces each: (0.1 + 0.7) / 2
    two = np.array([[0.9, 0.1, 0.0], [0.7, 0.2, 0.1]])
    assert expected_calibration_error(two, [0, 1]) == pytest.approx(0.4)
    assert np.isnan(reliability_bins(two, [0, 1]).accuracy[0]), "empty bins are marked, not zero"
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        reliability_bins(two, [0, 1], bins=0)


def test_apply_temperature_keeps_zero_probabilities_finite_and_refuses_bad_input():
    proba = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], np.float32)
    softened = apply_temperature(proba, 2.0)
    assert np.all(np.isfinite(softened)) and np.allclose(softened.sum(axis=1), 1.0)
    assert softened[0].argmax() == 0 and softened[1, 2] < 1e-20
    assert np.isfinite(negative_log_likelihood(proba, [2, 2]))
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(proba, 0.0)
    with pytest.raises(ValueError, match="rows summing to 1"):
        apply_temperature(proba * 3, 1.5)
    with pytest.raises(ValueError, match="2 labels for 3 rows"):
        fit_temperature(np.full((3, 2), 0.5), [0, 1])


def test_reliability_diagram_shows_before_and_after_with_their_ece(rng):
    proba, labels = _calibrated_samples(rng, n=2_000)
    sharpened = apply_temperature(proba, 0.5)
    single = reliability_diagram(sharpened, labels, title="one")
    both = reliability_diagram(sharpened, labels, calibrated=proba, title="both", temperature=2.0)
    assert isinstance(both, Figure) and len(single.axes) == 2 and len(both.axes) == 4
    legends = [text.get_text() for ax in both.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    assert f"before: accuracy (ECE {expected_calibration_error(sharpened, labels):.3f})" in legends
    assert f"after (T = 2.000): accuracy (ECE {expected_calibration_error(proba, labels):.3f})" in legends


# --------------------------------------------------------------------------- the command on a model folder
def _tiny_cnn(seed: int, sharpen: float) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = models.build_scratch_cnn(7, filters=(4, 8), dense_units=(8,), dropout=0.0, l2=0.0)
    kernel = model.layers[-1].kernel  # a larger last layer: confident, mostly wrong (untrained), so T > 1
    kernel.assign(kernel.numpy() * sharpen)
    return model


@pytest.fixture()
def model_folder(tmp_path):
    """Two untrained CNNs (one without a predictions file) and their mean ensemble, with cards."""
    csv = write_synthetic_fer_csv(tmp_path / "faces.csv", (("Training", 2, 31), ("PublicTest", 30, 32), ("PrivateTest", 30, 33)))
    data = load_dataset(csv)
    folder = tmp_path / "models"
    paths = []
    for name, seed, sharpen in (("cnn_a", 1, 40.0), ("cnn_b", 2, 20.0)):
        model = _tiny_cnn(seed, sharpen)
        test = predict_proba(model, data.test.images)
        card = experiment.model_card(name, "scratch_cnn", dataset=data, parameters={"data": {"class_set": 7}}, weights=None,
                                     metrics={"test": {"plain": {"accuracy": float(np.mean(test.argmax(1) == data.test.labels))}}})
        paths.append(model_io.save_model(model, folder / f"{name}.keras", card))
        if name == "cnn_a":
            experiment.save_predictions(experiment.predictions_path(folder, name), test, None, data.class_names)
    ensemble = models.build_ensemble([model_io.load_model(p) for p in paths], head=models.build_ensemble_head(2, 7, combine="mean"))
    test = predict_proba(ensemble, data.test.images)
    card = experiment.model_card("ensemble", "ensemble", dataset=data, parameters={}, weights=None, metrics={})
    model_io.save_ensemble(ensemble, folder / "ensemble.keras", paths, card)
    experiment.save_predictions(experiment.predictions_path(folder, "ensemble"), test, None, data.class_names)
    return csv, data, folder


def test_cli_writes_the_calibration_block_and_figure_and_a_second_run_changes_nothing(model_folder, tmp_path, capsys):
    csv, data, folder = model_folder
    reports = tmp_path / "reports"
    before = {name: ModelCard.read(folder / f"{name}.keras") for name in ("cnn_a", "cnn_b", "ensemble")}
    files_before = {path.name: path.read_bytes() for path in folder.glob("*.keras")}

    assert calibration.main([str(folder), "--data", str(csv), "--reports-dir", str(reports)]) == 0
    output = capsys.readouterr().out
    rows = [line for line in output.splitlines() if line.startswith("| cnn_") or line.startswith("| ensemble")]
    assert len(rows) == 3

    for name, card_before in before.items():
        card = ModelCard.read(folder / f"{name}.keras")
        block = card.calibration
        assert card_before.calibration is None and card.temperature == block["temperature"] > 0
        assert card.to_dict() == {**card_before.to_dict(), "calibration": block}, "nothing but the calibration block changes in a card"
        assert list(card.to_dict()) == [*card_before.to_dict(), "calibration"], "the other keys keep their order"
        assert CALIBRATION_KEYS <= set(block)
        assert block["method"] == "temperature" and block["fitted_on"] == "PublicTest" and block["bins"] == 15
        assert block["data_sha256"] == data.checksum
        assert (reports / name / "reliability.png").read_bytes()[:4] == b"\x89PNG"
        assert (folder / f"{name}.json").stat().st_mode & 0o777 == 0o644
    assert {path.name: path.read_bytes() for path in folder.glob("*.keras")} == files_before, "model files untouched"

    # the block's figures are what the functions give on the same probabilities: T from PublicTest only
    a = ModelCard.read(folder / "cnn_a.keras").calibration
    model = model_io.load_model(folder / "cnn_a.keras")
    val = predict_proba(model, data.val.images)
    assert a["temperature"] == pytest.approx(fit_temperature(val, data.val.labels), rel=1e-9)
    assert a["temperature"] > 1.5, "the sharpened model is over-confident"
    shipped = experiment.load_predictions(experiment.predictions_path(folder, "cnn_a"))["proba"]
    assert a["test_probabilities"] == "cnn_a_predictions.npz"
    assert a["test_ece_after"] == pytest.approx(expected_calibration_error(apply_temperature(shipped, a["temperature"]), data.test.labels))
    assert a["test_ece_after"] < a["test_ece_before"] and a["test_nll_after"] < a["test_nll_before"]
    assert a["test_accuracy"] == before["cnn_a"].headline().accuracy, "argmax unchanged"
    b = ModelCard.read(folder / "cnn_b.keras").calibration
    assert b["test_probabilities"] == "predicted from the model file" and b["predictions_sha256"] is None

    # a second T for answers averaged with the mirror image (what photos are served), fitted on PublicTest's
    mirrored = a["mirrored"]
    val_mirrored = predict_proba(model, data.val.images, tta="flip")
    assert mirrored["temperature"] == pytest.approx(fit_temperature(val_mirrored, data.val.labels), rel=1e-9)
    assert mirrored["val_ece_before"] == pytest.approx(expected_calibration_error(val_mirrored, data.val.labels), abs=1e-9)
    assert mirrored["val_ece_before"] != pytest.approx(a["val_ece_before"], abs=1e-3), "measured on the mirrored answers"
    test_mirrored = predict_proba(model, data.test.images, tta="flip")
    assert mirrored["test_ece_after"] == pytest.approx(
        expected_calibration_error(apply_temperature(test_mirrored, mirrored["temperature"]), data.test.labels), abs=1e-6)
    assert ModelCard.read(folder / "cnn_a.keras").temperature_for(mirrored=True) == mirrored["temperature"]
    assert "mirrored (flip TTA)" in output

    cards_after = {path.name: path.read_bytes() for path in folder.glob("*.json")}
    figure_after = (reports / "cnn_a" / "reliability.png").read_bytes()
    assert calibration.main([str(folder), "--data", str(csv), "--reports-dir", str(reports)]) == 0
    assert {path.name: path.read_bytes() for path in folder.glob("*.json")} == cards_after, "idempotent"
    assert (reports / "cnn_a" / "reliability.png").read_bytes() == figure_after


def test_reliability_grid_draws_calibrated_models_and_notes_the_others(model_folder, tmp_path):
    csv, data, folder = model_folder
    assert calibration.main([str(folder), "--data", str(csv), "--reports-dir", str(tmp_path / "r"), "--only", "cnn_a", "ensemble"]) == 0
    cards = collect_cards(folder)
    figure, notes = reliability_grid(cards, folder)
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    assert notes == ["cnn_b: not calibrated (no calibration in its card): run python -m fer_utils.calibration"]
    experiment.save_predictions(experiment.predictions_path(folder, "cnn_a"), np.full((len(data.test), 7), 1 / 7), None, data.class_names)
    figure, notes = reliability_grid(cards, folder)
    assert len(figure.axes) == 1 and any(note.startswith("cnn_a: its predictions changed") for note in notes)
    assert reliability_grid({"cnn_b": cards["cnn_b"]}, folder)[0] is None


def test_cli_refuses_another_copy_of_the_data_and_a_missing_file(model_folder, tmp_path, capsys):
    csv, data, folder = model_folder
    other = write_synthetic_fer_csv(tmp_path / "other.csv", (("Training", 2, 41), ("PublicTest", 5, 42), ("PrivateTest", 5, 43)))
    assert calibration.main([str(folder), "--data", str(other), "--reports-dir", str(tmp_path / "r"), "--only", "cnn_b"]) == 1
    assert "cnn_b was measured on another copy of the data" in capsys.readouterr().out
    assert "calibration" not in json.loads((folder / "cnn_b.json").read_text())
    with pytest.raises(SystemExit):
        calibration.main([str(folder), "--data", str(tmp_path / "nowhere.csv")])
    assert "no FER2013 at" in capsys.readouterr().err
