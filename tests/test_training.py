"""End to end: the pipeline learns synthetic faces; runs resume; saving is atomic."""

from __future__ import annotations

import io
import time
import zipfile

import h5py
import numpy as np
import keras
import pytest

from synthetic import CLASS_NAMES_7

from fer_utils import model_io, models
from fer_utils.data import Split
from fer_utils.evaluation import evaluate_model
from fer_utils.pipeline import build_augmentation, make_dataset
from fer_utils.training import TrainConfig, fit_ensemble, train_model


def test_scratch_cnn_learns_synthetic_faces(synthetic_splits, tmp_path):
    # 8 epochs left it still climbing (0.56-0.77 across seeds and CPUs); 20 epochs read 0.91-0.97 over seeds 1-8.
    config = TrainConfig(epochs=20, batch_size=32, optimizer="adam", learning_rate=1e-3, verbose=0, seed=1)
    result = train_model(
        lambda: models.build_scratch_cnn(7, filters=(16, 32, 64), dense_units=(64,), dropout=0.2),
        synthetic_splits["train"], synthetic_splits["val"], config, tmp_path / "run",
        augmentation=build_augmentation(rotation=5, shift=0.05, flip=True, seed=1),
    )
    test = synthetic_splits["test"]
    evaluation = evaluate_model(result.model, test.images, test.labels, CLASS_NAMES_7, tta=True)
    # Chance is 1/7 = 0.14 on held-out faces the model never saw.
    assert evaluation.metrics["plain"]["accuracy"] > 0.8, evaluation.summary()
    assert evaluation.metrics["tta"]["accuracy"] > 0.8
    assert evaluation.metrics["plain"]["macro_f1"] > 0.8
    assert list(result.history.columns[:1]) == ["epoch"] and len(result.history) == result.epochs_run
    assert result.history["val_accuracy"].max() > 0.7
    assert result.summary()["weights_from_epoch"] == result.best_epoch, "EarlyStopping restores the best epoch"
    assert (tmp_path / "run" / "history.csv").exists()
    assert not (tmp_path / "run" / "backup").exists(), "a finished run leaves no backup behind"


def test_fit_ensemble_keeps_the_head_that_reads_higher_on_the_selection_split(synthetic_splits, tmp_path):
    train, val, test = synthetic_splits["train"], synthetic_splits["val"], synthetic_splits["test"]
    members = []
    for seed, filters in ((1, (16, 32, 64)), (2, (16, 32))):
        config = TrainConfig(epochs=15, batch_size=32, verbose=0, seed=seed, early_stopping_patience=None)
        build = lambda: models.build_scratch_cnn(7, filters=filters, dense_units=(64,), name=f"cnn_{seed}")  # noqa: E731
        members.append(train_model(build, train, val, config, tmp_path / f"member{seed}").model)
    head_config = TrainConfig(epochs=20, batch_size=32, learning_rate=1e-2, verbose=0, reduce_lr_patience=None)

    auto = fit_ensemble(members, train, val, head_config, tmp_path / "auto", combine="auto")
    assert set(auto.val_accuracy) == {"learned", "mean"}
    assert auto.val_accuracy[auto.combine] == max(auto.val_accuracy.values())
    val_accuracy = float(np.mean(auto.model.predict(val.images, verbose=0).argmax(axis=1) == val.labels))
    assert val_accuracy == pytest.approx(auto.val_accuracy[auto.combine], abs=1.5 / len(val))
    assert evaluate_model(auto.model, test.images, test.labels, CLASS_NAMES_7).metrics["plain"]["accuracy"] > 0.7, auto.val_accuracy
    summary = auto.summary()
    assert summary["combine"] == auto.combine and summary["epochs_run"] == auto.training.epochs_run >= 1
    assert auto.combine in summary["notes"][-1] and summary["duration_s"] >= auto.training.duration_s

    # The mean has nothing to train, so it never needs the training faces.
    no_faces = Split(np.empty((0, 48, 48, 1), np.uint8), np.empty(0, np.int64))
    mean = fit_ensemble(members, no_faces, val, head_config, tmp_path / "mean", combine="mean")
    assert mean.combine == "mean" and mean.training is None and mean.history is None
    assert mean.val_accuracy["mean"] == auto.val_accuracy["mean"]
    assert mean.summary()["epochs_run"] == 0 and "no weights" in mean.head_source
    expected = np.mean([m.predict(test.images, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(mean.model.predict(test.images, verbose=0), expected, rtol=1e-5)

    learned = fit_ensemble(members, train, val, head_config, tmp_path / "learned", combine="learned")
    assert learned.combine == "learned" and set(learned.val_accuracy) == {"learned"}
    assert learned.val_accuracy["learned"] > 0.7, "the Dense head learns to combine the members"
    with pytest.raises(ValueError, match="combine must be one of learned, mean, auto"):
        fit_ensemble(members, train, val, head_config, tmp_path / "vote", combine="vote")


class _Crash(keras.callbacks.Callback):
    """Kills training after a given epoch, like a machine that loses power."""

    def __init__(self, after_epoch: int):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after_epoch:
            raise KeyboardInterrupt("simulated crash")


def test_killed_run_resumes_from_its_last_epoch(synthetic_splits, tmp_path):
    config = TrainConfig(epochs=4, batch_size=64, verbose=0, early_stopping_patience=None, reduce_lr_patience=None)
    build = lambda: models.build_scratch_cnn(7, filters=(8,), dense_units=(16,))  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        train_model(build, synthetic_splits["train"], synthetic_splits["val"], config, tmp_path, extra_callbacks=[_Crash(2)])
    assert (tmp_path / "backup").exists()

    seen_epochs = []
    recorder = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen_epochs.append(epoch))
    result = train_model(build, synthetic_splits["train"], synthetic_splits["val"], config, tmp_path, extra_callbacks=[recorder])
    assert result.resumed
    assert seen_epochs == [2, 3], "the resumed run must not repeat finished epochs"
    assert result.history["epoch"].tolist() == [0, 1, 2, 3]
    assert not (tmp_path / "backup").exists()


def test_time_limit_stops_before_an_epoch_would_overrun(synthetic_splits, tmp_path):
    config = TrainConfig(epochs=30, batch_size=64, verbose=0, early_stopping_patience=None, reduce_lr_patience=None,
                         time_limit_minutes=3 / 60)
    slow = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: time.sleep(1.0))
    build = lambda: models.build_scratch_cnn(7, filters=(8,), dense_units=(16,))  # noqa: E731
    started = time.perf_counter()
    result = train_model(build, synthetic_splits["train"], synthetic_splits["val"], config, tmp_path, extra_callbacks=[slow])
    assert 1 <= len(result.history) <= 2, "epochs last over a second, so a 3-second budget allows at most two"
    assert time.perf_counter() - started < 20
    assert any("time limit" in note for note in result.notes)
    with pytest.raises(ValueError, match="time_limit_minutes"):
        TrainConfig(time_limit_minutes=0)


def test_label_smoothing_class_weights_and_sgd(synthetic_splits, tmp_path):
    config = TrainConfig(
        epochs=2, batch_size=64, optimizer="sgd", learning_rate=0.01, label_smoothing=0.1,
        class_weights=True, verbose=0,
    )
    result = train_model(
        lambda: models.build_scratch_cnn(7, filters=(8, 16), dense_units=(16,)),
        synthetic_splits["train"], synthetic_splits["val"], config, tmp_path,
    )
    assert isinstance(result.model.loss, keras.losses.CategoricalCrossentropy)
    assert result.model.optimizer.nesterov
    assert np.isfinite(result.history["loss"]).all()


def test_mixed_precision_builds_bfloat16_layers_and_float32_output(synthetic_splits, tmp_path):
    config = TrainConfig(epochs=1, batch_size=64, verbose=0, mixed_precision=True)
    result = train_model(
        lambda: models.build_scratch_cnn(7, filters=(8,), dense_units=(16,)),
        synthetic_splits["train"], synthetic_splits["val"], config, tmp_path,
    )
    assert result.model.get_layer("stage1_conv1").compute_dtype == "bfloat16"
    assert result.model.get_layer("predictions").compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32", "the global policy is restored"


def test_labels_outside_the_model_are_refused(synthetic_splits, tmp_path):
    train = synthetic_splits["train"]
    with pytest.raises(ValueError, match="labels run from 0 to 6 but the model has 4 outputs"):
        train_model(models.build_scratch_cnn(4), train, train, TrainConfig(epochs=1, verbose=0), tmp_path)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.5)


def test_pipeline_batches_augments_and_one_hots(synthetic_splits):
    split: Split = synthetic_splits["val"]
    plain = make_dataset(split.images, split.labels, batch_size=10)
    x, y = next(iter(plain))
    assert x.dtype == "float32" and x.shape == (10, 48, 48, 1) and y.shape == (10,)
    np.testing.assert_array_equal(x.numpy(), split.images[:10].astype("float32"))

    augment = build_augmentation(rotation=15, shift=0.15, zoom=0.15, flip=True, seed=0)
    augmented = make_dataset(split.images, split.labels, 10, training=True, augmentation=augment, num_classes=7, seed=0)
    xa, ya = next(iter(augmented))
    assert ya.shape == (10, 7) and np.allclose(ya.numpy().sum(axis=1), 1)
    assert xa.numpy().min() >= 0 and xa.numpy().max() <= 255
    total = sum(int(b[0].shape[0]) for b in augmented)
    assert total == len(split)
    assert build_augmentation(flip=False) is None
    with pytest.raises(ValueError, match="fractions of the image"):
        build_augmentation(shift=15)
    with pytest.raises(ValueError, match="rotation must be >= 0"):
        build_augmentation(rotation=-5)


def test_photo_conditions_degrade_faces_as_photos_do():
    """Brightness, contrast, blur, JPEG and occlusion each change faces the way they say, only in training."""
    rng = np.random.default_rng(0)
    gray = np.full((64, 48, 48, 1), 128.0, np.float32)
    edge = np.zeros((64, 48, 48, 1), np.float32)
    edge[:, :, 24:] = 200.0
    noise = rng.uniform(0, 255, (64, 48, 48, 1)).astype(np.float32)

    def apply(faces, **options):
        layer = build_augmentation(flip=False, seed=3, **options)
        assert np.array_equal(layer(faces, training=False).numpy(), faces)  # inference is untouched
        out = layer(faces, training=True).numpy()
        assert out.min() >= 0 and out.max() <= 255
        return out

    bright = apply(gray, brightness=0.3)  # a whole face lighter or darker, still flat
    assert np.ptp(bright.reshape(64, -1), axis=1).max() < 1e-3 and bright.std() > 10
    contrast = apply(edge, contrast=0.5)  # the step between the halves grows or shrinks
    steps = contrast[:, 0, 40, 0] - contrast[:, 0, 5, 0]
    assert steps.min() < 190 and steps.max() > 210
    blurred = apply(edge, blur=1.0)  # a hard edge becomes a ramp
    assert all(len(np.unique(face[10, 18:30, 0].round(1))) > 2 for face in blurred)
    jpeg = apply(noise, jpeg_quality=20)  # half the faces re-encoded, badly
    changed = np.abs(jpeg - noise).mean(axis=(1, 2, 3)) > 5
    assert 0.25 < changed.mean() < 0.75
    occluded = apply(noise, occlusion=1.0)  # one small rectangle per face
    area = (np.abs(occluded - noise) > 0.5).mean(axis=(1, 2, 3))
    assert area.min() > 0 and area.max() < 0.15

    chain = build_augmentation(rotation=10, flip=True, brightness=0.2, occlusion=0.5, seed=0)
    assert [type(layer).__name__ for layer in chain.layers] == ["RandomBrightness", "RandomErasing", "RandomAffine"]
    with pytest.raises(ValueError, match="blur must be between 0 and 1"):
        build_augmentation(blur=2)
    with pytest.raises(ValueError, match="lowest JPEG quality"):
        build_augmentation(jpeg_quality=100)


def _pattern() -> np.ndarray:
    image = np.zeros((1, 48, 48, 1), np.float32)
    image[0, 10:20, 5:15] = 255.0  # a bright square left of centre
    return image


def test_random_affine_flip_mirrors_and_rotation_keeps_the_centre():
    from fer_utils.pipeline import RandomAffine

    image = _pattern()
    flips = [RandomAffine(flip=True, seed=s)(image, training=True).numpy() for s in range(12)]
    mirrored = image[:, :, ::-1]
    assert any(np.allclose(f, mirrored) for f in flips) and any(np.allclose(f, image) for f in flips)
    assert np.array_equal(RandomAffine(rotation=30, flip=False)(image, training=False), image)

    centre = np.zeros((1, 48, 48, 1), np.float32)
    centre[0, 20:28, 20:28] = 255.0
    rotated = RandomAffine(rotation=30, flip=False, seed=3)(centre, training=True).numpy()
    assert rotated[0, 23:25, 23:25].min() > 200, "rotation is about the image centre"

    shifted = RandomAffine(shift=0.2, flip=False, seed=5)(image, training=True).numpy()
    assert not np.allclose(shifted, image)
    # A shift moves the square; it neither grows nor vanishes (nearest fill only repeats the dark border).
    assert abs((shifted > 127).sum() - (image > 127).sum()) <= 0.35 * (image > 127).sum()


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    model = models.build_scratch_cnn(7, filters=(8,), dense_units=(8,))
    target = tmp_path / "model.keras"
    model_io.save_model(model, target, {"name": "model"})
    original = target.read_bytes()

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        model_io.save_model(model, target, {"name": "model"})
    assert target.read_bytes() == original, "the previous model is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.keras"], "no partial file left"


def test_saved_model_leaves_out_the_optimizer_state(synthetic_splits, tmp_path):
    config = TrainConfig(epochs=1, optimizer="adam", verbose=0, early_stopping_patience=None, reduce_lr_patience=None)
    result = train_model(lambda: models.build_scratch_cnn(7, filters=(8, 16), dense_units=(16,)),
                         synthetic_splits["train"], synthetic_splits["val"], config, tmp_path / "work")
    target = model_io.save_model(result.model, tmp_path / "model.keras", {"name": "model"})
    with zipfile.ZipFile(target) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
        assert "optimizer" not in weights and "layers" in weights, "Adam's moments would triple the shipped files"
    faces = synthetic_splits["test"].images[:8].astype("float32")
    np.testing.assert_allclose(model_io.load_model(target)(faces), result.model(faces, training=False), atol=1e-6)
    assert result.model.optimizer is not None, "the trained model itself is left as it was"


def test_load_model_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        model_io.load_model(tmp_path / "missing.keras")
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.keras is damaged: it is not a complete .keras archive"):
        model_io.load_model(junk)
    with pytest.raises(ValueError, match="use the .keras format"):
        model_io.save_model(models.build_scratch_cnn(7), tmp_path / "model.h5")


def test_cosine_schedule_decays_to_one_percent_without_plateau_cuts(synthetic_splits, tmp_path):
    config = TrainConfig(epochs=3, batch_size=64, learning_rate=0.01, optimizer="sgd", lr_schedule="cosine",
                         verbose=0, early_stopping_patience=None, reduce_lr_patience=1)
    build = lambda: models.build_scratch_cnn(7, filters=(8,), dense_units=(16,))  # noqa: E731
    rates = []
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: rates.append(float(keras.ops.convert_to_numpy(
            recorder.model.optimizer.learning_rate))))
    result = train_model(build, synthetic_splits["train"], synthetic_splits["val"], config, tmp_path,
                         extra_callbacks=[recorder])
    assert len(result.history) == 3
    assert result.summary()["weights_from_epoch"] == 3, "no EarlyStopping: the model keeps the last epoch"
    assert rates[0] < 0.01 and rates[0] > rates[1] > rates[2], rates
    np.testing.assert_allclose(rates[-1], 0.01 * 0.01, rtol=1e-3)  # alpha=0.01 at the last step
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_weight_averaging_validates_and_ends_with_the_averaged_weights(synthetic_splits, tmp_path):
    config = TrainConfig(epochs=3, batch_size=64, learning_rate=3e-3, ema_momentum=0.9, verbose=0,
                         early_stopping_patience=0, reduce_lr_patience=0)
    build = lambda: models.build_scratch_cnn(7, filters=(8,), dense_units=(16,))  # noqa: E731
    live = {}  # the weights as trained, at the end of the last epoch (SwapEMAWeights swaps only around validation)
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: live.update(weights=[v.numpy() for v in recorder.model.trainable_variables]))
    val = synthetic_splits["val"]
    result = train_model(build, synthetic_splits["train"], val, config, tmp_path, extra_callbacks=[recorder])
    model = result.model
    averages = model.optimizer._model_variables_moving_average
    for variable, average in zip(model.trainable_variables, averages):
        np.testing.assert_allclose(variable.numpy(), average.numpy(), err_msg="the model ends with the averages")
    moved = [not np.allclose(w, v.numpy()) for w, v in zip(live["weights"], model.trainable_variables)]
    assert any(moved), "the averaged weights are not the last trained ones"
    loss, accuracy = model.evaluate(make_dataset(val.images, val.labels, 64), verbose=0)
    last = result.history.iloc[-1]
    assert last["val_loss"] == pytest.approx(loss, rel=1e-4), "validation read the averaged weights"
    assert last["val_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    with pytest.raises(ValueError, match="early_stopping_patience 0"):
        TrainConfig(ema_momentum=0.999, early_stopping_patience=5)
    with pytest.raises(ValueError, match="ema_momentum must be in"):
        TrainConfig(ema_momentum=1.0, early_stopping_patience=0)


def test_a_killed_weight_averaging_run_resumes_with_its_averages(synthetic_splits, tmp_path):
    """The averages are optimizer state: a resumed run must carry on from the ones the crash left,
    not start again as a fresh copy of the weights (which would shorten the average to the resumed part)."""
    config = TrainConfig(epochs=4, batch_size=64, learning_rate=3e-3, ema_momentum=0.9, verbose=0,
                         early_stopping_patience=0, reduce_lr_patience=0)
    build = lambda: models.build_scratch_cnn(7, filters=(8,), dense_units=(16,))  # noqa: E731
    train, val = synthetic_splits["train"], synthetic_splits["val"]

    def state(model):
        return ([v.numpy() for v in model.trainable_variables],
                [v.numpy() for v in model.optimizer._model_variables_moving_average], int(model.optimizer.iterations))

    at_crash = {}
    keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: at_crash.update(state=state(keep.model)))
    with pytest.raises(KeyboardInterrupt):
        train_model(build, train, val, config, tmp_path, extra_callbacks=[keep, _Crash(2)])
    weights, averages, steps = at_crash["state"]
    assert steps > 0 and not all(np.allclose(w, a) for w, a in zip(weights, averages))

    at_resume = {}
    probe = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: at_resume.update(state=state(probe.model)))
    result = train_model(build, train, val, config, tmp_path, extra_callbacks=[probe])
    resumed_weights, resumed_averages, resumed_steps = at_resume["state"]
    assert result.resumed and result.history["epoch"].tolist() == [0, 1, 2, 3]
    assert resumed_steps == steps, "the optimizer's step count (and with it the averages' warm-up) carries on"
    for saved, restored in zip(weights, resumed_weights):
        np.testing.assert_array_equal(restored, saved, err_msg="the trained weights are restored, not the averages")
    for saved, restored in zip(averages, resumed_averages):
        np.testing.assert_array_equal(restored, saved, err_msg="the averages are restored")
    for variable, average in zip(result.model.trainable_variables, result.model.optimizer._model_variables_moving_average):
        np.testing.assert_allclose(variable.numpy(), average.numpy(), err_msg="the resumed run also ends with the averages")


def test_a_run_continues_from_a_saved_model_and_its_card_keeps_the_lineage(synthetic_splits, tmp_path):
    from fer_utils import experiment

    train, val = synthetic_splits["train"], synthetic_splits["val"]
    build = lambda: models.build_scratch_cnn(7, filters=(16, 32), dense_units=(32,), dropout=0.1)  # noqa: E731
    first_config = TrainConfig(epochs=3, batch_size=32, verbose=0, early_stopping_patience=None, seed=3)
    first = train_model(build, train, val, first_config, tmp_path / "first")
    path = model_io.save_model(first.model, tmp_path / "model.keras",
                               {"weights_source": "random initialisation (weights=None)",
                                "parameters": {"training": first_config.to_dict()},
                                "training": first.summary()})
    first_val = first.model.evaluate(val.images, val.labels, verbose=0)[1]

    start = experiment.StartingPoint(str(path))
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append(probe.model.evaluate(val.images, val.labels, verbose=0)[1]))
    config = TrainConfig(epochs=2, batch_size=32, learning_rate=2e-4, lr_schedule="cosine", verbose=0,
                         early_stopping_patience=None)
    result = train_model(start.factory(lambda: pytest.fail("must load, not build")), train, val, config,
                         tmp_path / "second", extra_callbacks=[probe])
    assert seen[0] == pytest.approx(first_val, abs=1e-6), "the second stage starts from the saved weights"
    assert result.history["val_accuracy"].max() >= first_val - 0.05

    record = start.training_record(result)
    assert record["total_epochs"] == 5
    assert record["total_duration_s"] == pytest.approx(first.duration_s + result.duration_s, abs=0.2)
    assert record["continued_from"]["sha256"] == model_io.file_sha256(path)
    assert record["continued_from"]["weights_source"].startswith("random initialisation")
    assert [stage["epochs_run"] for stage in record["stages"]] == [3]

    assert experiment.StartingPoint("").factory(build) is build
    with pytest.raises(FileNotFoundError, match="init_model"):
        experiment.StartingPoint(str(tmp_path / "missing.keras"))


def test_a_later_stage_carries_the_weights_to_a_larger_input(synthetic_splits, tmp_path):
    from fer_utils import experiment

    train, val = synthetic_splits["train"], synthetic_splits["val"]
    options = dict(weights=None, trainable="all", head=[], dropout=0.3)
    small = models.build_model("mobilenetv2", 7, image_size=32, **options)
    path = model_io.save_model(small, tmp_path / "mobilenetv2.keras",
                               {"parameters": {"model": {"image_size": 32}, "training": {"epochs": 1}},
                                "training": {"epochs_run": 1, "duration_s": 1.0}})
    assert models.input_size(small) == 32

    start = experiment.StartingPoint(str(path))
    larger = start.factory(lambda: models.build_model("mobilenetv2", 7, image_size=48, **options), 48)()
    assert models.input_size(larger) == 48
    assert len(larger.weights) == len(small.weights)
    for carried, saved in zip(larger.weights, small.weights):
        np.testing.assert_array_equal(carried.numpy(), saved.numpy())

    config = TrainConfig(epochs=1, batch_size=32, verbose=0, early_stopping_patience=None)
    result = train_model(start.factory(lambda: models.build_model("mobilenetv2", 7, image_size=48, **options), 48),
                         train, val, config, tmp_path / "second")
    assert models.input_size(result.model) == 48
    assert start.training_record(result)["stages"][0]["model"] == {"image_size": 32}

    same = start.factory(lambda: pytest.fail("same size: must load, not build"), 32)()
    assert models.input_size(same) == 32

    cnn = models.build_scratch_cnn(7, filters=(8,), dense_units=(8,))
    cnn_path = model_io.save_model(cnn, tmp_path / "cnn.keras", {})
    cnn_start = experiment.StartingPoint(str(cnn_path))
    with pytest.raises(ValueError, match="differ in more than the input size"):
        cnn_start.factory(lambda: models.build_scratch_cnn(7, filters=(8,), dense_units=(8,), image_size=64), 64)()
