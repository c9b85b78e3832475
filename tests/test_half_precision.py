"""Half-precision storage: half the file, the same predictions as the rounded model, cards re-measured."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import synthetic_faces, write_fer_csv, write_synthetic_fer_csv

from fer_utils import convert, experiment, model_io, models
from fer_utils.card import ModelCard
from fer_utils.data import load_dataset
from fer_utils.files import file_sha256
from fer_utils.evaluation import evaluate_model, predict_proba
from fer_utils.training import TrainConfig, train_model

QUICK = dict(epochs=6, optimizer="adam", verbose=0, early_stopping_patience=None, reduce_lr_patience=None)


def _train_cnn(train, val, work_dir, seed: int, filters=(16, 32)):
    config = TrainConfig(seed=seed, **QUICK)
    build = lambda: models.build_scratch_cnn(7, filters=filters, dense_units=(32,), dropout=0.1, l2=0.0)  # noqa: E731
    return train_model(build, train, val, config, work_dir).model


@pytest.mark.slow  # trains
def test_float16_file_is_half_the_size_and_loads_exactly_the_rounded_model(synthetic_splits, tmp_path):
    model = _train_cnn(synthetic_splits["train"], synthetic_splits["val"], tmp_path / "work", seed=1)
    faces, labels = synthetic_splits["test"].images, synthetic_splits["test"].labels
    trained = predict_proba(model, faces)
    assert np.mean(trained.argmax(1) == labels) > 0.4, "the model learned something worth storing"
    full = model_io.save_model(model, tmp_path / "full.keras", {"name": "full"})

    model_io.round_weights(model, "float16")
    rounded = predict_proba(model, faces)
    half = model_io.save_model(model, tmp_path / "half.keras", {"name": "half"}, weights_dtype="float16")

    assert model_io.stored_weights_dtypes(full) == {"float32"} and model_io.stored_weights_dtypes(half) == {"float16"}
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert ModelCard.read(half).weights_dtype == "float16"
    reloaded = model_io.load_model(half)
    assert all(w.dtype == "float32" for w in reloaded.weights if "seed" not in w.path), "layers compute in float32"
    np.testing.assert_array_equal(predict_proba(reloaded, faces), rounded)
    np.testing.assert_allclose(rounded, trained, atol=5e-3)
    assert np.mean(rounded.argmax(1) == trained.argmax(1)) >= 0.97


def test_float16_refuses_weights_beyond_its_range_and_keeps_the_old_file(tmp_path):
    model = models.build_scratch_cnn(7, filters=(8,), dense_units=(8,))
    target = model_io.save_model(model, tmp_path / "model.keras", {"name": "model"}, weights_dtype="float16")
    before = target.read_bytes()
    kernel = model.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, 1e6, np.float32))
    with pytest.raises(ValueError, match=r"beyond float16's range .* weights_dtype='float32'"):
        model_io.save_model(model, target, {"name": "model"}, weights_dtype="float16")
    with pytest.raises(ValueError, match="beyond float16's range"):
        model_io.round_weights(model, "float16")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.keras"], "no partial file left"
    with pytest.raises(ValueError, match="weights_dtype must be one of float32, float16; got 'int8'"):
        model_io.save_model(model, tmp_path / "other.keras", weights_dtype="int8")


@pytest.fixture()
def trained_folder(tmp_path):
    """Two scratch CNNs and their ensemble, saved with cards, predictions and figures as the notebooks save them."""
    csv = write_synthetic_fer_csv(tmp_path / "faces.csv", (("Training", 40, 21), ("PublicTest", 10, 22), ("PrivateTest", 12, 23)))
    data = load_dataset(csv)
    folder, reports = tmp_path / "models", tmp_path / "reports"
    paths = []
    for name, seed, filters in (("cnn_a", 1, (16, 32)), ("cnn_b", 2, (8, 16))):
        model = _train_cnn(data.train, data.val, tmp_path / "work" / name, seed, filters)
        paths.append(_save_like_a_notebook(model, name, "scratch_cnn", data, folder, reports))
    members = [model_io.load_model(path) for path in paths]
    ensemble = models.build_ensemble(members, head=models.build_ensemble_head(2, 7, combine="mean"))
    test = evaluate_model(ensemble, data.test.images, data.test.labels, data.class_names)
    card = experiment.model_card("ensemble", "ensemble", dataset=data, parameters={}, weights=None,
                                 metrics={"val": evaluate_model(ensemble, data.val.images, data.val.labels, data.class_names).metrics,
                                          "test": test.metrics})
    model_io.save_ensemble(ensemble, folder / "ensemble.keras", paths, card)
    experiment.save_predictions(experiment.predictions_path(folder, "ensemble"), test.proba, test.proba_tta, data.class_names)
    return csv, data, folder, reports


def _save_like_a_notebook(model, name, kind, data, folder, reports):
    val = evaluate_model(model, data.val.images, data.val.labels, data.class_names)
    test = evaluate_model(model, data.test.images, data.test.labels, data.class_names)
    card = experiment.model_card(name, kind, dataset=data, parameters={"data": {"class_set": 7}}, weights=None,
                                 metrics={"val": val.metrics, "test": test.metrics})
    path = model_io.save_model(model, folder / f"{name}.keras", card)
    experiment.save_predictions(experiment.predictions_path(folder, name), test.proba, test.proba_tta, data.class_names)
    (reports / name).mkdir(parents=True, exist_ok=True)
    (reports / name / "confusion_matrix_normalized.png").write_bytes(b"drawn before the conversion")
    return path


@pytest.mark.slow  # trains
def test_convert_restores_a_member_measures_it_again_and_updates_its_ensemble(trained_folder, capsys):
    csv, data, folder, reports = trained_folder
    member, other, ensemble = folder / "cnn_a.keras", folder / "cnn_b.keras", folder / "ensemble.keras"
    card_before = ModelCard.read(member)
    other_before = other.read_bytes()

    assert convert.main([str(member), "--data", str(csv), "--reports-dir", str(reports)]) == 0
    output = capsys.readouterr().out
    assert "test plain accuracy" in output and "ensemble.keras: measuring again" in output
    assert "predicted class changed on" in output

    card = ModelCard.read(member)
    assert card.weights_dtype == "float16" and model_io.stored_weights_dtypes(member) == {"float16"}
    assert card.file_size_bytes < 0.6 * card_before.file_size_bytes
    assert card.storage["before"]["metrics"] == convert.headline_metrics(card_before.metrics) == card_before.headline_metrics()
    assert card.converted_from_sha256 == card_before.file_sha256 != card.file_sha256
    stored = model_io.load_model(member)
    measured = evaluate_model(stored, data.test.images, data.test.labels, data.class_names)
    assert card.headline().accuracy == measured.metrics["plain"]["accuracy"]
    assert card.headline().macro_f1_tta == measured.metrics["tta"]["macro_f1"]
    np.testing.assert_allclose(np.load(folder / "cnn_a_predictions.npz")["proba"], measured.proba, atol=1e-6)
    assert (reports / "cnn_a" / "confusion_matrix_normalized.png").read_bytes()[:4] == b"\x89PNG", "the figure is redrawn"
    assert other.read_bytes() == other_before, "a model not named is left alone"

    ensemble_card = ModelCard.read(ensemble)
    assert ensemble_card.member_sha256 == [file_sha256(member), file_sha256(other)]
    assert ensemble_card.storage["before"]["member_sha256"][0] == card_before.file_sha256
    reloaded = model_io.load_model(ensemble)  # checks the members' checksums
    accuracy = np.mean(predict_proba(reloaded, data.test.images).argmax(1) == data.test.labels)
    assert ensemble_card.headline().accuracy == pytest.approx(accuracy)


@pytest.mark.slow  # trains
def test_convert_reports_each_bad_model_and_goes_on(trained_folder, tmp_path, capsys):
    csv, data, folder, reports = trained_folder
    where = ["--data", str(csv), "--reports-dir", str(reports)]
    assert convert.main([str(folder / "cnn_a.keras"), *where]) == 0
    capsys.readouterr()
    code = convert.main([str(folder / "cnn_a.keras"), str(folder / "ensemble.keras"), str(tmp_path / "missing.keras"),
                         str(folder / "cnn_b.keras"), *where])
    output = capsys.readouterr().out
    assert code == 1
    assert "already stores its weights as float16" in output
    assert "is an ensemble: its file holds only the head; convert its members" in output
    assert "no model card" in output
    assert ModelCard.read(folder / "cnn_b.keras").weights_dtype == "float16", "the good one still ran"
    model_io.load_model(folder / "ensemble.keras")

    x, y = synthetic_faces(5, seed=99)
    other_copy = write_fer_csv(tmp_path / "other.csv", x, y, ["Training", "PublicTest", "PrivateTest", "Training", "Training"] * 7)
    copied = ModelCard.read(folder / "cnn_b.keras").copy()
    copied.name, copied.weights_dtype = "cnn_c", "float32"
    model_io.save_model(model_io.load_model(folder / "cnn_b.keras"), folder / "cnn_c.keras", copied)
    assert convert.main([str(folder / "cnn_c.keras"), "--data", str(other_copy), "--reports-dir", str(reports)]) == 1
    assert "was measured on another copy of the data" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        convert.main([str(folder / "cnn_c.keras"), "--data", str(tmp_path / "nowhere.csv")])
    assert "no FER2013 at" in capsys.readouterr().err


@pytest.mark.slow  # trains
def test_convert_does_not_paper_over_a_retrained_member(trained_folder, capsys):
    """Only a conversion of the very file the ensemble was trained on may update its checksums."""
    csv, data, folder, reports = trained_folder
    retrained = _train_cnn(data.train, data.val, folder.parent / "work" / "again", seed=7, filters=(8, 16))
    _save_like_a_notebook(retrained, "cnn_b", "scratch_cnn", data, folder, reports)
    assert convert.main([str(folder / "cnn_b.keras"), "--data", str(csv), "--reports-dir", str(reports)]) == 1
    assert "trained on a different 'cnn_b.keras', not one this command converted" in capsys.readouterr().out
    with pytest.raises(ValueError, match="trained on a different 'cnn_b.keras'"):
        model_io.load_model(folder / "ensemble.keras")

