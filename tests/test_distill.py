"""Distillation: soft targets mix the teacher in, reach training, and are cached by teacher."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fer_utils import distill, model_io, models
from fer_utils.data import Split
from fer_utils.evaluation import predict_proba
from fer_utils.training import TrainConfig, train_model


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)


def test_mixed_targets_are_distributions_between_the_labels_and_the_teacher():
    rng = np.random.default_rng(0)
    teacher = rng.dirichlet(np.full(7, 0.3), size=50).astype(np.float32)
    labels = rng.integers(0, 7, size=50)
    one_hot = np.eye(7, dtype=np.float32)[labels]

    np.testing.assert_allclose(distill.mix_targets(labels, teacher, 0.0), one_hot)
    np.testing.assert_allclose(distill.mix_targets(labels, teacher, 1.0), teacher, atol=1e-6)
    half = distill.mix_targets(labels, teacher, 0.5, temperature=2.0)
    np.testing.assert_allclose(half.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(half, 0.5 * one_hot + 0.5 * distill.soften(teacher, 2.0), atol=1e-6)

    softened = distill.soften(teacher, 2.0)
    assert (softened.argmax(axis=1) == teacher.argmax(axis=1)).all(), "softening keeps the teacher's answer"
    assert (_entropy(softened) > _entropy(teacher)).all(), "and spreads its mass"
    assert (_entropy(distill.soften(teacher, 0.5)) < _entropy(teacher)).all()


def test_bad_distillation_settings_are_refused_clearly():
    labels, teacher = np.zeros(3, dtype=int), np.full((3, 7), 1 / 7)
    with pytest.raises(ValueError, match="distill_weight"):
        distill.mix_targets(labels, teacher, 1.5)
    with pytest.raises(ValueError, match="temperature"):
        distill.soften(teacher, 0)
    with pytest.raises(ValueError, match=r"\(4, classes\)"):
        distill.mix_targets(np.zeros(4, dtype=int), teacher, 0.5)
    with pytest.raises(FileNotFoundError, match="teacher"):
        distill.teacher_probabilities("no/such/teacher.keras", np.zeros((2, 48, 48, 1)))
    assert distill.distillation_targets("", None, 0.5, 2.0) == (None, None)


@pytest.mark.slow  # trains
def test_a_student_learns_what_its_soft_targets_say_not_the_labels(synthetic_splits, tmp_path):
    # A teacher that "believes" every face is the next class: a student trained on it alone
    # (weight 1) must answer with the teacher's class on faces it never saw, which only
    # happens if the soft targets, not the labels, are what training fits.
    train, val, test = synthetic_splits["train"], synthetic_splits["val"], synthetic_splits["test"]
    shifted = (train.labels + 1) % 7
    teacher = np.full((len(train), 7), 0.1 / 6, dtype=np.float32)
    teacher[np.arange(len(train)), shifted] = 0.9
    targets = distill.mix_targets(train.labels, teacher, weight=1.0, temperature=1.0)
    config = TrainConfig(epochs=20, batch_size=32, optimizer="adam", learning_rate=1e-3, verbose=0, seed=1,
                         early_stopping_patience=None, reduce_lr_patience=None)
    result = train_model(
        lambda: models.build_scratch_cnn(7, filters=(16, 32, 64), dense_units=(64,), dropout=0.2),
        train, val, config, tmp_path / "run", train_targets=targets,
    )
    answers = predict_proba(result.model, test.images).argmax(axis=1)
    assert (answers == (test.labels + 1) % 7).mean() > 0.8
    assert (answers == test.labels).mean() < 0.1

    with pytest.raises(ValueError, match="train_targets must be shaped"):
        train_model(lambda: models.build_scratch_cnn(7, filters=(8,), dense_units=(8,)), train, val, config,
                    tmp_path / "bad", train_targets=targets[:10])


def test_teacher_probabilities_are_flip_averaged_and_cached_per_teacher_and_images(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 48, 48, 1)).astype(np.float32)
    teacher = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                                keras.layers.Dense(7, activation="softmax")])
    teacher_path = tmp_path / "teacher.keras"
    teacher.save(teacher_path)
    cache = tmp_path / "cache"

    first = distill.teacher_probabilities(teacher_path, images, cache)
    np.testing.assert_allclose(first, predict_proba(teacher, images, tta=True), atol=1e-5)
    assert len(list(cache.glob("teacher-*-tta.npz"))) == 1

    def no_loading(*args, **kwargs):
        raise AssertionError("the cached probabilities should have been used")

    monkeypatch.setattr(model_io, "load_model", no_loading)
    np.testing.assert_array_equal(distill.teacher_probabilities(teacher_path, images, cache), first)
    with pytest.raises(AssertionError, match="cached"):  # other faces: recomputed, not reused
        distill.teacher_probabilities(teacher_path, images[:6], cache)
    monkeypatch.undo()

    split = Split(images.astype(np.uint8), np.arange(12) % 7)
    targets, record = distill.distillation_targets(teacher_path, split, 0.5, 2.0, cache)
    assert targets.shape == (12, 7)
    assert record["weight"] == 0.5 and record["temperature"] == 2.0 and record["teacher"] == "teacher.keras"
    assert 0.0 <= record["teacher_train_accuracy"] <= 1.0
