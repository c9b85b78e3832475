"""Every builder: builds, trains a step, saves, reloads and predicts the same; ensemble assembly."""

from __future__ import annotations

import numpy as np
import keras
import pytest

from fer_utils import model_io, models
from fer_utils.data import CLASS_SETS

# Small input sizes keep the backbones fast on a CPU; the defaults are checked separately.
SMALL = {
    "scratch_cnn": {},
    "resnet50": {"weights": None, "image_size": 32},
    "mobilenetv2": {"weights": None, "image_size": 32},
    "inceptionv3": {"weights": None, "image_size": 75},
}


def _faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 48, 1)).astype("float32")


@pytest.mark.parametrize("kind", list(SMALL))
def test_builder_trains_saves_reloads_identically(kind, tmp_path):
    model = models.build_model(kind, 7, **SMALL[kind])
    assert model.input_shape == (None, 48, 48, 1)
    assert model.output_shape == (None, 7)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    faces = _faces(4)
    before = [w.copy() for w in model.get_weights()]
    model.fit(faces, np.array([0, 1, 2, 3]), batch_size=4, epochs=1, verbose=0)
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert changed > 0, "one training step changed no weight"
    expected = model.predict(faces, verbose=0)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)

    path = model_io.save_model(model, tmp_path / f"{kind}.keras", {"name": kind})
    reloaded = model_io.load_model(path)
    np.testing.assert_allclose(reloaded.predict(faces, verbose=0), expected, rtol=1e-5, atol=1e-6)
    card = model_io.read_model_card(path)
    assert card.parameters_total == model.count_params()
    assert card.file_size_bytes == path.stat().st_size


@pytest.mark.parametrize("class_set", sorted(CLASS_SETS))
@pytest.mark.parametrize("kind", list(SMALL))
def test_output_width_follows_the_class_set(kind, class_set):
    num_classes = len(CLASS_SETS[class_set])
    model = models.build_model(kind, num_classes, **SMALL[kind])
    assert model(_faces(2)).shape == (2, num_classes)


@pytest.mark.parametrize("kind, size", [("resnet50", 224), ("mobilenetv2", 224), ("inceptionv3", 299)])
def test_defaults_follow_the_reference_study(kind, size):
    model = models.build_model(kind, 7, weights=None)
    assert model.input_shape == (None, 48, 48, 1)
    assert model.get_layer("resize").output.shape[1:3] == (size, size)
    assert model.get_layer("gray_to_rgb").output.shape[-1] == 3


def _backbone_layers(model: keras.Model, kind: str) -> list[keras.layers.Layer]:
    names = [layer.name for layer in model.layers]
    return model.layers[names.index(f"{kind}_preprocess") + 1 : names.index("avg_pool")]


@pytest.mark.parametrize(
    "build, kind, expected",
    [
        # weights=None: BatchNorm layers learn too, so the specs apply exactly.
        (lambda: models.build_resnet50(7, weights=None, image_size=32), "resnet50", lambda n: [i >= n - 35 for i in range(n)]),
        (lambda: models.build_mobilenetv2(7, weights=None, image_size=32), "mobilenetv2", lambda n: [i >= 30 for i in range(n)]),
        (lambda: models.build_inceptionv3(7, weights=None, image_size=75), "inceptionv3", lambda n: [i < 90 for i in range(n)]),
    ],
)
def test_trainable_layers_match_the_recipes(build, kind, expected):
    model = build()
    backbone = _backbone_layers(model, kind)
    assert [layer.trainable for layer in backbone] == expected(len(backbone))
    head = model.layers[[l.name for l in model.layers].index("avg_pool"):]
    assert all(layer.trainable for layer in head)


def test_pretrained_partial_backbone_keeps_batchnorm_frozen():
    layers = [keras.layers.Dense(1), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    models.set_trainable(layers, "last:2", freeze_batchnorm=True)
    assert [l.trainable for l in layers] == [False, False, True]
    models.set_trainable(layers, "all", freeze_batchnorm=True)
    assert all(l.trainable for l in layers)


def test_set_trainable_rejects_bad_specs():
    layers = [keras.layers.Dense(1) for _ in range(5)]
    models.set_trainable(layers, "last:2")
    assert [l.trainable for l in layers] == [False, False, False, True, True]
    models.set_trainable(layers, "after:1")
    assert [l.trainable for l in layers] == [False, True, True, True, True]
    with pytest.raises(ValueError, match="asks for 9 layers but the backbone has 5"):
        models.set_trainable(layers, "first:9")
    with pytest.raises(ValueError, match="trainable must be"):
        models.set_trainable(layers, "top:3")


def test_vgg_variant_is_the_same_builder_with_other_arguments():
    vgg = models.build_scratch_cnn(7, filters=(64, 128, 256, 512), convs_per_stage=2, batch_norm=True)
    convs = [l for l in vgg.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert any(isinstance(l, keras.layers.BatchNormalization) for l in vgg.layers)
    plain = models.build_scratch_cnn(7)
    dense = plain.get_layer("dense1")
    assert dense.kernel_regularizer.l2 == pytest.approx(0.001)
    assert plain.get_layer("dropout").rate == pytest.approx(0.4)


def test_from_scratch_backbones_use_faster_batchnorm_statistics(tmp_path):
    """MobileNetV2's ImageNet momentum (0.999) left its validation accuracy at chance for epochs on FER2013."""

    def momenta(model):
        return {l.momentum for l in model.layers if isinstance(l, keras.layers.BatchNormalization)}

    scratch = models.build_mobilenetv2(7, weights=None, image_size=32)
    assert momenta(scratch) == {0.99}
    path = model_io.save_model(scratch, tmp_path / "mobilenetv2.keras", {"model": "mobilenetv2"})
    assert momenta(model_io.load_model(path)) == {0.99}

    source = keras.Model(scratch.inputs, scratch.get_layer("out_relu").output)
    weights_file = tmp_path / "mobilenet_notop.weights.h5"
    source.save_weights(weights_file)
    pretrained = models.build_mobilenetv2(7, weights=str(weights_file), image_size=32)
    assert momenta(pretrained) == {0.999}  # fine-tuning keeps the backbone's own setting


def test_imagenet_download_failure_explains_what_to_do(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/resnet.h5: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(models.WeightsUnavailableError) as info:
        models.build_resnet50(7, image_size=32)
    message = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert ".keras/models" in message and "weights=None" in message


def test_local_weights_file_is_loaded(tmp_path):
    source = models.build_mobilenetv2(7, weights=None, image_size=32)
    backbone = keras.Model(source.inputs, source.get_layer("out_relu").output)
    weights_file = tmp_path / "mobilenet_notop.weights.h5"
    backbone.save_weights(weights_file)
    rebuilt = models.build_mobilenetv2(7, weights=str(weights_file), image_size=32)
    np.testing.assert_array_equal(
        rebuilt.get_layer("Conv1").get_weights()[0], source.get_layer("Conv1").get_weights()[0]
    )
    with pytest.raises(ValueError, match="does not exist"):
        models.build_mobilenetv2(7, weights=str(tmp_path / "missing.h5"), image_size=32)


def test_unknown_model_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.build_model("vgg")
    with pytest.raises(ValueError, match="inceptionv3 needs image_size >= 75"):
        models.build_inceptionv3(7, weights=None, image_size=48)
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        models.build_scratch_cnn(1)


def test_ensemble_concatenates_frozen_members_and_saves_only_its_head(tmp_path):
    members = [
        models.build_scratch_cnn(4, name="cnn_a"),
        models.build_scratch_cnn(4, filters=(16, 32), name="cnn_b"),
        models.build_mobilenetv2(4, weights=None, image_size=32),
    ]
    member_paths = [model_io.save_model(m, tmp_path / f"{m.name}.keras") for m in members]
    ensemble = models.build_ensemble(members)
    assert not any(w.trainable for m in members for w in m.weights)
    assert len(ensemble.trainable_weights) == 2  # the head's kernel and bias
    faces = _faces(3)
    member_probs = np.concatenate([m.predict(faces, verbose=0) for m in members], axis=1)
    _, head = models.ensemble_parts(ensemble)
    np.testing.assert_allclose(ensemble.predict(faces, verbose=0), head.predict(member_probs, verbose=0), rtol=1e-5)

    path = model_io.save_ensemble(ensemble, tmp_path / "ensemble.keras", member_paths, {"name": "ensemble"})
    assert path.stat().st_size < min(p.stat().st_size for p in member_paths) / 10
    reloaded = model_io.load_model(path)
    np.testing.assert_allclose(reloaded.predict(faces, verbose=0), ensemble.predict(faces, verbose=0), rtol=1e-5)
    card = model_io.read_model_card(path)
    assert card.ensemble_members == ["cnn_a.keras", "cnn_b.keras", "mobilenetv2.keras"]

    # Retraining a member without retraining the ensemble is caught on load.
    model_io.save_model(models.build_scratch_cnn(4, name="cnn_a"), member_paths[0])
    with pytest.raises(ValueError, match="trained on a different 'cnn_a.keras'"):
        model_io.load_model(path)


def test_ensemble_takes_two_models_of_one_kind(tmp_path):
    """A second scratch CNN (another seed or width) keeps the builder's name; the ensemble still assembles."""
    keras.utils.set_random_seed(5)
    first, second = models.build_scratch_cnn(4, filters=(8, 16)), models.build_scratch_cnn(4, filters=(16, 32))
    assert first.name == second.name
    member_paths = [model_io.save_model(m, tmp_path / f"{file}.keras") for m, file in ((first, "a"), (second, "b"))]
    ensemble = models.build_ensemble([first, second])
    faces = _faces(3)
    member_probs = np.concatenate([first.predict(faces, verbose=0), second.predict(faces, verbose=0)], axis=1)
    members, head = models.ensemble_parts(ensemble)
    assert len(members) == 2
    np.testing.assert_allclose(ensemble.predict(faces, verbose=0), head.predict(member_probs, verbose=0), rtol=1e-5)
    path = model_io.save_ensemble(ensemble, tmp_path / "ensemble.keras", member_paths, {"name": "ensemble"})
    np.testing.assert_allclose(model_io.load_model(path).predict(faces, verbose=0), ensemble.predict(faces, verbose=0), rtol=1e-5)


def test_mean_ensemble_averages_member_probabilities_and_its_file_has_no_weights(tmp_path):
    keras.utils.set_random_seed(3)
    members = [models.build_scratch_cnn(4, filters=(8,), name="cnn_a"), models.build_scratch_cnn(4, filters=(16,), name="cnn_b")]
    member_paths = [model_io.save_model(m, tmp_path / f"{m.name}.keras") for m in members]
    head = models.build_ensemble_head(2, 4, combine="mean")
    assert head.weights == [] and models.ensemble_combine(head) == "mean"
    ensemble = models.build_ensemble(members, head=head)
    faces = _faces(5)
    expected = np.mean([m.predict(faces, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict(faces, verbose=0), expected, rtol=1e-5)

    path = model_io.save_ensemble(ensemble, tmp_path / "ensemble.keras", member_paths, {"name": "ensemble"})
    assert model_io.read_model_card(path).ensemble_combine == "mean"
    np.testing.assert_allclose(model_io.load_model(path).predict(faces, verbose=0), expected, rtol=1e-5)  # safe mode
    learned = models.build_ensemble(members)
    assert models.ensemble_combine(models.ensemble_parts(learned)[1]) == "learned"
    with pytest.raises(ValueError, match="unknown ensemble combine 'vote'"):
        models.build_ensemble_head(2, 4, combine="vote")


def test_ensemble_members_must_agree_on_classes():
    with pytest.raises(ValueError, match="disagree on the number of classes"):
        models.build_ensemble([models.build_scratch_cnn(4), models.build_scratch_cnn(7, name="b")])
