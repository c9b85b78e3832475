"""Folding batch normalisations into convolutions: the same answers, fewer layers, and only where it is exact."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from fer_utils.folding import fold_batch_norms, foldable_pairs  # noqa: E402


def _trained_like(model: keras.Model) -> keras.Model:
    """Give every batch normalisation statistics far from the defaults, as training would."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 2.0, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.5, channels))
    return model


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv_a")(inputs)  # BN folds in (no bias yet)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)  # depthwise, with a bias
    x = keras.layers.BatchNormalization(center=False, name="bn_dw")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv_relu")(x)  # activation first: cannot fold
    x = keras.layers.BatchNormalization(scale=False, name="bn_after_relu")(x)
    branch = keras.layers.Conv2D(6, 1, name="conv_shared")(x)  # used twice: cannot fold
    y = keras.layers.BatchNormalization(name="bn_shared")(branch)
    x = keras.layers.Add()([y, branch])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return _trained_like(keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x)))


def test_folding_keeps_the_answers_and_removes_the_foldable_batch_norms():
    model = _model()
    assert foldable_pairs(model) == {"bn_a": "conv_a", "bn_dw": "dw"}
    folded = fold_batch_norms(model)
    assert folded is not model
    faces = np.random.default_rng(1).uniform(0, 255, (4, 48, 48, 1)).astype(np.float32)
    ours, theirs = folded(faces, training=False).numpy(), model(faces, training=False).numpy()
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    assert not np.allclose(theirs, theirs[:1]), "the faces get different answers, so agreement means something"
    kept = {layer.name for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert kept == {"bn_after_relu", "bn_shared"}
    assert folded.get_layer("conv_a").use_bias and not model.get_layer("conv_a").use_bias
    # the original is untouched: it still serves explanations and training
    np.testing.assert_allclose(model(faces, training=False).numpy(), theirs)


def test_a_model_with_nothing_to_fold_is_returned_as_it_is():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(x)))
    assert fold_batch_norms(model) is model
    sequential = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization()])
    assert fold_batch_norms(sequential) is sequential


def test_a_fold_that_changes_the_answers_is_not_used(monkeypatch):
    import fer_utils.folding as folding

    model = _model()
    right = folding._folded_weights
    monkeypatch.setattr(folding, "_folded_weights", lambda conv, bn: [-w for w in right(conv, bn)])  # a sign error
    assert fold_batch_norms(model) is model
