"""experiment.finish_run and fer_utils.members: what a training notebook writes at the end of a run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from synthetic import write_synthetic_fer_csv

from fer_utils import experiment, models
from fer_utils.evaluation import predict_proba
from fer_utils.members import check_input, find_members, load_members
from fer_utils.model_io import load_model, read_model_card, write_model_card
from fer_utils.training import TrainConfig, fit_ensemble, train_model

SPLITS = (("Training", 6, 1), ("PublicTest", 3, 2), ("PrivateTest", 3, 3))  # 42, 21 and 21 faces
FILE_FACTS = {"file", "file_size_bytes", "file_sha256", "weights_dtype", "parameters_total", "saved_at"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny scratch CNN after one epoch on synthetic faces: not good, but a real TrainResult."""
    folder = tmp_path_factory.mktemp("experiment")
    data = experiment.load_data(write_synthetic_fer_csv(folder / "faces.csv", SPLITS), 7, 0, 42)
    config = TrainConfig(epochs=1, batch_size=16, verbose=0, jit_compile=False, early_stopping_patience=None)
    build = lambda: models.build_model("scratch_cnn", data.num_classes, filters=[4], dense_units=[8])  # noqa: E731
    return data, config, train_model(build, data.train, data.val, config, folder / "work")


@pytest.fixture(scope="module")
def finished(trained, tmp_path_factory):
    """finish_run as 01_scratch_cnn calls it, at half precision, with the batch runner listening."""
    data, config, result = trained
    folder = tmp_path_factory.mktemp("finished")
    parameters = {"model": {"filters": [4], "dense_units": [8]}, "training": config.to_dict(),
                  "augmentation": {"rotation": 0.0, "shift": 0.0, "zoom": 0.0, "flip": False},
                  "data": {"data_path": "faces.csv", "class_set": 7, "limit": 0}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(experiment.RESULT_FILE_ENV, str(folder / "result.json"))
        run = experiment.finish_run(
            result, data, model_name="tiny_cnn", kind="scratch_cnn", parameters=parameters,
            output_dir=folder / "models", reports_dir=folder / "reports", weights_dtype="float16", explain_faces=2,
        )
    return data, result, parameters, folder, run


def test_the_card_holds_what_the_notebooks_wrote(finished):
    data, result, parameters, folder, run = finished
    card = read_model_card(folder / "models" / "tiny_cnn.keras")
    expected = experiment.model_card("tiny_cnn", "scratch_cnn", dataset=data, parameters=parameters, weights=None,
                                     metrics={}, training=result.summary())
    assert set(card) == set(expected) | FILE_FACTS
    for key in ("name", "kind", "display_name", "class_names", "input", "weights_source", "data", "notes"):
        assert card[key] == json.loads(json.dumps(expected[key])), key
    assert card["parameters"] == json.loads(json.dumps(parameters))
    assert card["training"] == json.loads(json.dumps(result.summary()))
    assert card["weights_dtype"] == "float16" and card["weights_source"].startswith("random initialisation")
    assert set(card["metrics"]) == {"val", "test"} and set(card["metrics"]["test"]) == {"plain", "tta"}
    assert card["metrics"]["test"]["plain"]["n"] == 21
    assert card["metrics"]["test"]["plain"]["accuracy"] == run.test_metrics["accuracy"]


def test_the_card_measures_the_file_as_stored(finished):
    data, _, _, folder, run = finished
    stored = load_model(run.model_path)
    accuracy = np.mean(predict_proba(stored, data.test.images).argmax(axis=1) == data.test.labels)
    assert accuracy == read_model_card(run.model_path)["metrics"]["test"]["plain"]["accuracy"]


def test_every_standard_figure_is_drawn_saved_and_returned(finished):
    _, _, _, folder, run = finished
    assert list(run.figures) == list(experiment.STANDARD_FIGURES) and run.skipped == {}
    for name in experiment.STANDARD_FIGURES:
        path = folder / "reports" / "tiny_cnn" / f"{name}.png"
        assert run.figure_path(name) == path
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5_000, name


def test_predictions_results_and_the_report(finished):
    data, _, _, folder, run = finished
    stored = np.load(folder / "models" / "tiny_cnn_predictions.npz")
    assert stored["proba"].shape == stored["proba_tta"].shape == (21, 7)
    assert stored["class_names"].tolist() == list(data.class_names)
    np.testing.assert_allclose(stored["proba"], run.evaluations["test"].proba, atol=1e-6)
    recorded = json.loads((folder / "result.json").read_text())
    assert recorded["key_metric"] == "test_accuracy" and recorded["value"] == run.test_metrics["accuracy"]
    assert recorded["macro_f1"] == run.test_metrics["macro_f1"] and recorded == json.loads(json.dumps(run.result))
    assert recorded["outputs"] == [str(run.model_path), str(run.card_path), str(run.predictions_path), str(run.reports)]
    assert list(run.report.index[:7]) == list(data.class_names) and run.report["support"].sum() > 0
    assert "tiny_cnn.keras: PrivateTest accuracy" in repr(run)


def test_show_displays_the_saved_images_and_names_a_figure_that_was_not_drawn(finished, capsys, monkeypatch):
    import IPython.display

    *_, run = finished
    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    run.show()
    assert [image.format for image in shown] == ["png"] * len(experiment.STANDARD_FIGURES)
    assert shown[0].data == run.figure_path("training_curves").read_bytes(), "an image, not '<Figure size ...>'"
    run.show("no_such_figure")
    assert "no_such_figure: not drawn" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown figure"):
        experiment.draw_figures(None, None, None, None, "x", "reports", names=("confusion",))


def test_an_ensemble_of_checked_members_keeps_only_its_head(finished, tmp_path, capsys):
    data, _, _, folder, _ = finished
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    for name in ("first", "second"):  # one trained file under two names: members need not differ
        shutil.copy(folder / "models" / "tiny_cnn.keras", models_dir / f"{name}.keras")
        shutil.copy(folder / "models" / "tiny_cnn.json", models_dir / f"{name}.json")
    paths = find_members(["first", "second"], models_dir)
    members = load_members(paths, data.class_names)
    assert members.names == ["first", "second"] and "parameters" in members.describe()
    config = TrainConfig(epochs=1, batch_size=16, verbose=0)
    result = fit_ensemble(members.models, data.train, data.val, config, tmp_path / "work", combine="mean")
    run = experiment.finish_run(
        result, data, model_name="ensemble", kind="ensemble", parameters={"members": members.names},
        output_dir=models_dir, reports_dir=tmp_path / "reports", member_paths=paths,
        weights_source=members.weights_source(result.head_source),
        figures=("training_curves", "confusion_matrix_normalized", "roc_curves"),
    )
    assert "training_curves: no training history" in capsys.readouterr().out
    assert list(run.figures) == ["confusion_matrix_normalized", "roc_curves"] and "training_curves" in run.skipped
    assert sorted(p.name for p in (tmp_path / "reports" / "ensemble").iterdir()) == ["confusion_matrix_normalized.png", "roc_curves.png"]
    card = read_model_card(run.model_path)
    assert card["ensemble"]["members"] == ["first.keras", "second.keras"]
    assert card["weights_source"].startswith("mean of the members' probabilities (no weights); members: first: random")
    predicted = members.predicted_classes(data.test.images)
    assert set(predicted) == {"first", "second"} and predicted["first"].shape == (21,)


def test_member_checks_fail_before_anything_is_fitted(finished, tmp_path):
    data, _, _, folder, _ = finished
    with pytest.raises(FileNotFoundError, match=r"train the members first .*missing: \[.*absent.keras"):
        find_members(["absent"], folder / "models")
    shutil.copy(folder / "models" / "tiny_cnn.keras", tmp_path / "bare.keras")
    with pytest.raises(FileNotFoundError, match="members without a model card"):
        find_members(["bare"], tmp_path)
    card = read_model_card(folder / "models" / "tiny_cnn.keras")
    for name, change, message in (
        ("four", {"class_names": ["happy", "sad", "surprise", "neutral"]}, "four was trained on classes"),
        ("stale", {"file_sha256": "0" * 64}, "describes another file"),
    ):
        shutil.copy(folder / "models" / "tiny_cnn.keras", tmp_path / f"{name}.keras")
        write_model_card(tmp_path / f"{name}.keras", {**card, **change})
        with pytest.raises(ValueError, match=message):
            load_members(find_members([name], tmp_path), data.class_names)
    resized = models.build_model("scratch_cnn", 7, filters=[4], dense_units=[8])
    check_input("fine", resized)
    import keras

    other = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(7)])
    with pytest.raises(ValueError, match=r"odd takes input of shape \(32, 32, 1\)"):
        check_input("odd", other)
