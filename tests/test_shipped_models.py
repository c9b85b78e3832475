"""The models we ship in saved_models/: their cards tell the truth.

Each shipped model is evaluated again on FER2013 PrivateTest (FER2013_CSV) and its accuracy must
match the figure in its model card within half a point, and the five models issue #5 names must
reach its targets. Each network runs once: an ensemble is measured through its head over its
members' answers, and its whole file is checked against that on 512 faces. The cards must also
say how the weights started and where the data came from, and hold a temperature fitted on
PublicTest that brings PrivateTest's ECE to at most 0.03 (re-measured too). Without FER2013_CSV
the evaluation is skipped with a reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fer_utils.calibration import FITTED_ON_FERPLUS, TARGET_ECE, apply_temperature, expected_calibration_error
from fer_utils.card import ModelCard
from fer_utils.compare import collect_cards
from fer_utils.data import load_dataset
from fer_utils.evaluation import predict_proba
from fer_utils.experiment import FERPLUS_FILE, load_card_data
from fer_utils.model_io import ensemble_member_paths, load_ensemble_head, load_model, stored_weights_dtypes

ROOT = Path(__file__).resolve().parent.parent
SAVED_MODELS = ROOT / "saved_models"
FACE_FIGURES = {"sample_faces.png", "explanations.png", "confident_mistakes.png"}  # they show FER2013 faces
CARDS = collect_cards(SAVED_MODELS)
TOLERANCE = 0.005  # half a percentage point
SIZE_BUDGET_BYTES = 225 * 10**6  # issue #5: 'at most 225 MB' (decimal, the stricter reading)
# issue #5's PrivateTest targets (plain accuracy, 7 classes), for the models the demo shows in tabs
TARGETS = {"scratch_cnn": 0.66, "resnet50": 0.62, "mobilenetv2": 0.62, "inceptionv3": 0.62, "ensemble": 0.70}
# Shipped models that temperature scaling leaves above TARGET_ECE on PrivateTest (their cards say by how much);
# strict, so a recalibration that reaches the target must take the model off this list.
CALIBRATION_MISSES = {
    "mobilenetv2": "trained with label smoothing 0.1: over-confident at middle confidences, under-confident at the "
                   "top, which one temperature cannot fix both of (T 1.05, ECE 0.052 -> 0.044; PublicTest 0.058 -> 0.049)",
    "scratch_cnn_deep_long": "PrivateTest ECE 0.092 -> 0.031, just above; 0.016 on PublicTest, where T was fitted",
}
# The same for the second temperature, fitted on answers averaged with the mirror image (what photos are served).
MIRRORED_CALIBRATION_MISSES = {
    "mobilenetv2": "the same label-smoothing shape: T 0.93, ECE 0.038 -> 0.031 on PrivateTest (0.031 on PublicTest too)",
}
ECE_TOLERANCE = 0.005
# issue #21: a network trained on FER+ labels ships only at 83 % or more on FER+ PrivateTest (majority
# vote; published VGG13: 83-84 %), under its own name and folder, never in the FER2013 table
FERPLUS_MODELS = SAVED_MODELS / "ferplus"
FERPLUS_CARDS = collect_cards(FERPLUS_MODELS)
FERPLUS_TARGET = 0.83
ASSEMBLY_CHECK_FACES = 512  # PrivateTest faces the whole ensemble file answers, against its head over its members' answers
shipped = pytest.mark.parametrize("name", list(CARDS) or [pytest.param(None, marks=pytest.mark.skip(reason="no models shipped in saved_models/ yet"))])


@pytest.fixture(scope="module")
def fer2013_by_class_set(fer2013_csv):
    loaded: dict[int, object] = {}

    def get(class_set: int):
        if class_set not in loaded:
            loaded[class_set] = load_dataset(fer2013_csv, class_set)
        return loaded[class_set]

    return get


@pytest.fixture(scope="module")
def private_test_answers(fer2013_by_class_set):
    """Each shipped model's PrivateTest probabilities, computed once per model file: an ensemble's
    come from its head over its members' answers (the same answers its members' own tests check),
    so its eight members are not run a second time; one test ties that to the ensemble file itself."""
    answers: dict[Path, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        card = CARDS[name]
        path = (SAVED_MODELS / card.file).resolve()
        if path not in answers:
            images = fer2013_by_class_set(card.class_set).test.images
            if card.is_ensemble:
                members = [_answers_of_file(member, images, get) for member in ensemble_member_paths(path, card)]
                answers[path] = load_ensemble_head(path).predict(np.concatenate(members, axis=1), batch_size=512, verbose=0)
            else:
                answers[path] = predict_proba(load_model(path), images)
        return answers[path]

    return get


def _answers_of_file(path: Path, images: np.ndarray, get) -> np.ndarray:
    """A member's answers: from the shared cache where it is a shipped model, else from its file."""
    shipped_names = {(SAVED_MODELS / card.file).resolve(): name for name, card in CARDS.items()}
    name = shipped_names.get(path)
    return get(name) if name else predict_proba(load_model(path), images)


@shipped
def test_shipped_model_matches_its_card_on_private_test(name, fer2013_by_class_set, private_test_answers):
    card = CARDS[name]
    data = fer2013_by_class_set(card.class_set)
    assert data.checksum == card.data_sha256, "the card was made from another copy of FER2013"
    assert list(data.class_names) == card.class_names
    proba = private_test_answers(name)
    accuracy = float(np.mean(proba.argmax(axis=1) == data.test.labels))
    claimed = card.headline().accuracy
    assert abs(accuracy - claimed) <= TOLERANCE, f"{name}: measured {accuracy:.4f} on PrivateTest, card says {claimed:.4f}"
    if name in TARGETS:
        assert accuracy >= TARGETS[name], f"{name}: measured {accuracy:.4f} on PrivateTest, below its target {TARGETS[name]:.2f}"
    calibration = card.calibration
    ece = expected_calibration_error(apply_temperature(proba, card.temperature), data.test.labels, calibration["bins"])
    assert abs(ece - calibration["test_ece_after"]) <= ECE_TOLERANCE, \
        f"{name}: PrivateTest ECE after T is {ece:.4f}, card says {calibration['test_ece_after']:.4f}"
    if name not in CALIBRATION_MISSES:
        assert ece <= TARGET_ECE, f"{name}: PrivateTest ECE after T is {ece:.4f}, above {TARGET_ECE}"
    with np.load(SAVED_MODELS / f"{name}_predictions.npz") as stored:  # the mirrored answers' T is checked on these
        assert np.abs(stored["proba"] - proba).max() <= 1e-4, "the stored predictions are this model file's"


@pytest.mark.parametrize("name", [name for name, card in CARDS.items() if card.is_ensemble] or [
    pytest.param(None, marks=pytest.mark.skip(reason="no ensemble shipped in saved_models/"))])
def test_the_ensemble_file_answers_as_its_head_over_its_members(name, fer2013_by_class_set, private_test_answers):
    """The figures above compose an ensemble from its members' answers; the shipped file, loaded
    whole as the demo and CLI load it, must give the same answers."""
    card = CARDS[name]
    faces = fer2013_by_class_set(card.class_set).test.images[:ASSEMBLY_CHECK_FACES]
    whole = predict_proba(load_model(SAVED_MODELS / card.file), faces)
    assert np.abs(whole - private_test_answers(name)[:ASSEMBLY_CHECK_FACES]).max() <= 1e-4


def _mirrored_params():
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=MIRRORED_CALIBRATION_MISSES[name]))
            if name in MIRRORED_CALIBRATION_MISSES else name for name in CARDS] or [
        pytest.param(None, marks=pytest.mark.skip(reason="no models shipped in saved_models/ yet"))]


@pytest.mark.parametrize("name", _mirrored_params())
def test_answers_averaged_with_the_mirror_image_have_their_own_temperature_that_meets_the_target(name, fer2013_by_class_set):
    """Photos are served as the mean of a face's and its mirror image's answers (softer than one
    pass), shown with a second T fitted on PublicTest's such answers; re-measured on PrivateTest
    from the stored flip-TTA predictions (which the test above ties to the model file)."""
    card = CARDS[name]
    data = fer2013_by_class_set(card.class_set)
    mirrored = card.calibration["mirrored"]
    assert card.temperature_for(mirrored=True) == mirrored["temperature"] != card.temperature
    with np.load(SAVED_MODELS / f"{name}_predictions.npz") as stored:
        proba_tta = stored["proba_tta"]
    assert float(np.mean(proba_tta.argmax(axis=1) == data.test.labels)) == pytest.approx(card.headline().accuracy_tta, abs=1e-6)
    ece = expected_calibration_error(apply_temperature(proba_tta, mirrored["temperature"]), data.test.labels, 15)
    assert ece == pytest.approx(mirrored["test_ece_after"], abs=1e-6)
    assert ece <= TARGET_ECE, f"{name}: mirrored answers' PrivateTest ECE after T is {ece:.4f}, above {TARGET_ECE}"


@shipped
def test_shipped_card_is_complete_and_honest(name):
    card = CARDS[name]
    assert card.data["source"].startswith("fer2013"), "shipped models are trained on the real FER2013"
    assert not card.ferplus_csv, "a FER+ model belongs in saved_models/ferplus/, not the FER2013 table"
    assert card.data["split_sizes"]["test"] == 3_589, "PrivateTest is reported whole"
    for split in ("val", "test"):
        for mode in ("plain", "tta"):
            assert 1 / len(card.class_names) < card.metric(split, mode, "accuracy") <= 1
            assert 0 < card.metric(split, mode, "macro_f1") <= 1
    weights = card.weights_source
    if not card.is_ensemble:
        assert "random initialisation" in weights or "imagenet" in weights.lower()
        assert stored_weights_dtypes(SAVED_MODELS / card.file) == {card.stored_weights_dtype}, "the card says how the file stores its weights"
        assert card.training["duration_s"] < 2.5 * 3600, "every shipped run must fit 2.5 h on the CPU machine"
        for stage in card.stages:  # earlier runs a continued model built on
            assert stage["duration_s"] < 2.5 * 3600
        if "continued_from" in card.training:
            assert card.training["continued_from"]["weights_source"] == weights, "the first stage's start is stated"
            assert card.training_totals()[0] == card.training["epochs_run"] + sum(stage["epochs_run"] for stage in card.stages)
    predictions = SAVED_MODELS / f"{name}_predictions.npz"
    assert predictions.exists(), "the comparison notebook reads these"
    with np.load(predictions) as stored:
        assert "labels" not in stored.files, "FER2013's labels must not be redistributed"
        assert stored["proba"].shape == (3_589, len(card.class_names))


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=CALIBRATION_MISSES[name])) if name in CALIBRATION_MISSES else name
    for name in CARDS
] or [pytest.param(None, marks=pytest.mark.skip(reason="no models shipped in saved_models/ yet"))])
def test_shipped_card_has_a_temperature_fitted_on_public_test_that_meets_the_target(name):
    card = CARDS[name]
    calibration = card.calibration
    assert calibration, f"{name}: no calibration block; run python -m fer_utils.calibration saved_models"
    assert calibration["method"] == "temperature" and calibration["fitted_on"] == "PublicTest"
    assert card.temperature == calibration["temperature"] > 0 and calibration["bins"] == 15
    assert calibration["data_sha256"] == card.data_sha256, "fitted on the data the card's figures come from"
    assert calibration["test_accuracy"] == card.headline().accuracy, "T leaves the predicted class alone"
    ece_before, ece_after = card.calibration_ece()
    assert ece_after <= TARGET_ECE, f"{name}: PrivateTest ECE {ece_before:.3f} -> {ece_after:.3f} after T, above {TARGET_ECE}"


def test_saved_models_fit_the_size_budget():
    files = [path for path in SAVED_MODELS.rglob("*") if path.is_file()]  # saved_models/ferplus/ too
    assert sum(path.stat().st_size for path in files) <= SIZE_BUDGET_BYTES
    for card_file in SAVED_MODELS.glob("*.json"):
        assert (SAVED_MODELS / ModelCard.read(card_file).file).exists(), f"{card_file.name} describes a model that is not shipped"


def test_no_fer2013_faces_are_committed():
    """The licence keeps FER2013 out of the repository: no figure of its faces, no copy of the data."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = [Path(line) for line in listed.stdout.splitlines()]
    assert not [path for path in tracked if path.name in FACE_FIGURES]
    assert not [path for path in tracked if "fer2013" in path.name.lower() and path.suffix in (".csv", ".gz", ".npz")]
    for name in FACE_FIGURES:
        ignored = subprocess.run(["git", "check-ignore", "-q", f"reports/scratch_cnn/{name}"], cwd=ROOT)
        assert ignored.returncode == 0, f"{name} must stay git-ignored"


ferplus_shipped = pytest.mark.parametrize("name", list(FERPLUS_CARDS) or [
    pytest.param(None, marks=pytest.mark.skip(reason="no FER+ model shipped in saved_models/ferplus/"))])


@pytest.fixture(scope="module")
def ferplus_votes(fer2013_csv) -> Path:
    """FER+'s votes: FERPLUS_CSV, else fer2013new.csv.gz beside FER2013_CSV; skip when absent."""
    path = Path(os.environ.get("FERPLUS_CSV") or fer2013_csv.with_name(FERPLUS_FILE))
    if not path.is_file():
        pytest.skip(f"no FER+ votes at {path}: set FERPLUS_CSV to fer2013new.csv(.gz)")
    return path


@ferplus_shipped
def test_shipped_ferplus_model_matches_its_card_on_ferplus_private_test(name, fer2013_csv, ferplus_votes):
    card = FERPLUS_CARDS[name]
    data = load_card_data(card, fer2013_csv, ferplus_votes)
    assert data.checksum == card.data_sha256, "the card was made from another copy of FER2013"
    assert data.split_sizes() == card.data["split_sizes"], "the same FER+ splits (validation carved from Training)"
    proba = predict_proba(load_model(FERPLUS_MODELS / card.file), data.test.images)
    accuracy = float(np.mean(proba.argmax(axis=1) == data.test.labels))
    claimed = card.headline().accuracy
    assert abs(accuracy - claimed) <= TOLERANCE, f"{name}: measured {accuracy:.4f} on FER+ PrivateTest, card says {claimed:.4f}"
    assert accuracy >= FERPLUS_TARGET, f"{name}: {accuracy:.4f} on FER+ PrivateTest, below {FERPLUS_TARGET}"
    calibration = card.calibration
    assert calibration["fitted_on"] == FITTED_ON_FERPLUS, "no PublicTest vote reaches calibration either"
    ece = expected_calibration_error(apply_temperature(proba, card.temperature), data.test.labels, calibration["bins"])
    assert abs(ece - calibration["test_ece_after"]) <= ECE_TOLERANCE and ece <= TARGET_ECE
    with np.load(FERPLUS_MODELS / f"{name}_predictions.npz") as stored:
        assert np.abs(stored["proba"] - proba).max() <= 1e-4, "the stored predictions are this model file's"
        proba_tta = stored["proba_tta"]
    mirrored = calibration["mirrored"]  # photos: the mean of the face's and its mirror's answers, with their own T
    ece = expected_calibration_error(apply_temperature(proba_tta, mirrored["temperature"]), data.test.labels, 15)
    assert ece == pytest.approx(mirrored["test_ece_after"], abs=1e-6) and ece <= TARGET_ECE


@ferplus_shipped
def test_shipped_ferplus_card_says_where_its_labels_came_from(name):
    card = FERPLUS_CARDS[name]
    assert card.ferplus_csv and any("FER+ majority vote" in note for note in card.data["notes"])
    assert card.data["dropped"]["ferplus_publictest_unused"] == 3_589, "no PublicTest vote reached training or selection"
    assert name not in CARDS, "never in the FER2013 table"
    assert "random initialisation" in card.weights_source
    assert stored_weights_dtypes(FERPLUS_MODELS / card.file) == {card.stored_weights_dtype}
    assert card.training["duration_s"] < 2.5 * 3600
    with np.load(FERPLUS_MODELS / f"{name}_predictions.npz") as stored:
        assert "labels" not in stored.files and stored["proba"].shape == (card.data["split_sizes"]["test"], 7)
