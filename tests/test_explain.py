"""Tests for fer_utils.explain on tiny hand-weighted models whose decisive region is known."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fer_utils.explain import (  # noqa: E402
    CompiledExplainer,
    explain,
    find_last_conv_layer,
    grad_cam,
    occlusion_map,
    overlay_heatmap,
    plot_explanations,
    resolve_method,
    saliency_map,
)

CORNER = (slice(0, 12), slice(0, 12))  # top-left 12x12: the only region the corner model reads
SQUARE = (slice(30, 40), slice(6, 16))  # where the conv model's bright square sits


def _corner_mask() -> np.ndarray:
    mask = np.zeros((48, 48), dtype=bool)
    mask[CORNER] = True
    return mask


def _square_mask() -> np.ndarray:
    mask = np.zeros((48, 48), dtype=bool)
    mask[SQUARE] = True
    return mask


def _inside_outside_ratio(heat: np.ndarray, mask: np.ndarray) -> float:
    return float(heat[mask].mean() / max(heat[~mask].mean(), 1e-12))


@pytest.fixture(scope="module")
def corner_model() -> keras.Model:
    """Dense-only model: class-1 logit = 4 * (mean brightness of the top-left corner - 0.5), class-0 logit = 0."""
    inp = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name="corner_model")
    weights = np.zeros((48 * 48, 2), dtype=np.float32)
    weights[:, 1] = 4.0 * _corner_mask().reshape(-1) / _corner_mask().sum()
    model.get_layer("head").set_weights([weights, np.array([0.0, -2.0], dtype=np.float32)])
    return model


@pytest.fixture(scope="module")
def nested_model(corner_model) -> keras.Model:
    """Ensemble-like wrapper: the corner model used as a layer, so no Conv2D at top level."""
    inp = keras.Input((48, 48, 1))
    return keras.Model(inp, corner_model(inp), name="wrapper")


@pytest.fixture(scope="module")
def square_model() -> keras.Model:
    """Conv model that fires only on bright 3x3 areas; class 1 grows with the bright area (with BN, Dropout, Rescaling)."""
    inp = keras.Input((48, 48, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inp)
    x = keras.layers.Conv2D(1, 3, padding="same", name="conv_a")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Conv2D(2, 1, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(inp, out, name="square_model")
    model.get_layer("conv_a").set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32), np.array([-0.5], np.float32)])
    model.get_layer("conv_b").set_weights([np.array([[[[1.0, 1.0]]]], np.float32), np.zeros(2, np.float32)])
    head = np.array([[-20.0, 20.0], [-20.0, 20.0]], dtype=np.float32)
    model.get_layer("head").set_weights([head, np.zeros(2, np.float32)])
    return model


@pytest.fixture()
def corner_face() -> np.ndarray:
    """Noisy face with a bright corner, so the corner model predicts class 1 and occluding the corner hurts it."""
    rng = np.random.default_rng(0)
    face = rng.uniform(0, 255, size=(48, 48)).astype(np.float32)
    face[CORNER] = 230.0
    return face


@pytest.fixture()
def square_face() -> np.ndarray:
    face = np.full((48, 48), 20.0, dtype=np.float32)
    face[SQUARE] = 255.0
    return face


# --------------------------------------------------------------------------- saliency


def test_saliency_lights_up_only_the_decisive_corner(corner_model, corner_face):
    heat = saliency_map(corner_model, corner_face)
    assert heat.shape == (48, 48) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert _inside_outside_ratio(heat, _corner_mask()) > 5
    assert np.allclose(heat[~_corner_mask()], 0.0)


def test_saliency_accepts_2d_3d_and_uint8(corner_model, corner_face):
    reference = saliency_map(corner_model, corner_face)
    as_uint8 = np.rint(corner_face).astype(np.uint8)
    for face in (corner_face[..., None], as_uint8, as_uint8[..., None]):
        heat = saliency_map(corner_model, face)
        assert heat.shape == (48, 48)
        assert np.allclose(heat, reference, atol=1e-3)


def test_saliency_works_through_nested_models(corner_model, nested_model, corner_face):
    assert np.allclose(saliency_map(nested_model, corner_face), saliency_map(corner_model, corner_face), atol=1e-6)


def test_saliency_rejects_bad_input(corner_model, corner_face):
    with pytest.raises(ValueError, match="shape"):
        saliency_map(corner_model, np.zeros((2, 48, 48, 1)))
    with pytest.raises(ValueError, match="out of range"):
        saliency_map(corner_model, corner_face, class_index=7)


# --------------------------------------------------------------------------- occlusion


def test_occlusion_finds_the_decisive_corner(corner_model, corner_face):
    heat = occlusion_map(corner_model, corner_face, class_index=1)
    assert heat.shape == (48, 48)
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert _inside_outside_ratio(heat, _corner_mask()) > 5
    assert np.unravel_index(heat.argmax(), heat.shape) < (12, 12)
    # patches away from the corner do not touch it, so they cannot change the prediction
    assert np.all(heat[20:, 20:] == 0.0)


def test_occlusion_batching_does_not_change_the_result(corner_model, corner_face):
    one_batch = occlusion_map(corner_model, corner_face, patch=6, stride=6, batch_size=1000)
    small_batches = occlusion_map(corner_model, corner_face, patch=6, stride=6, batch_size=7)
    assert np.allclose(one_batch, small_batches, atol=1e-6)


def test_occlusion_rejects_bad_patch(corner_model, corner_face):
    with pytest.raises(ValueError, match="patch"):
        occlusion_map(corner_model, corner_face, patch=0)
    with pytest.raises(ValueError, match="stride"):
        occlusion_map(corner_model, corner_face, stride=0)


# --------------------------------------------------------------------------- Grad-CAM


def test_find_last_conv_layer(square_model, corner_model, nested_model):
    assert find_last_conv_layer(square_model) == "conv_b"
    assert find_last_conv_layer(corner_model) is None
    assert find_last_conv_layer(nested_model) is None

    inp = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(2, 3, name="plain")(inp)
    x = keras.layers.SeparableConv2D(2, 3, name="separable")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Flatten()(x)
    mixed = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    assert find_last_conv_layer(mixed) == "depthwise"


def test_grad_cam_peaks_on_the_bright_square(square_model, square_face):
    assert int(np.argmax(square_model(square_face[None, ..., None]).numpy())) == 1
    for layer in (None, "conv_a"):  # conv_a is pre-BN/ReLU, conv_b after Dropout
        heat = grad_cam(square_model, square_face, class_index=1, layer_name=layer)
        assert heat.shape == (48, 48) and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
        row, col = np.unravel_index(heat.argmax(), heat.shape)
        assert _square_mask()[row, col]
        assert _inside_outside_ratio(heat, _square_mask()) > 5


def test_grad_cam_is_deterministic_despite_dropout(square_model, square_face):
    first = grad_cam(square_model, np.rint(square_face).astype(np.uint8)[..., None])
    second = grad_cam(square_model, square_face)
    assert np.allclose(first, second, atol=1e-6)


def test_grad_cam_without_conv_layer_names_the_model(corner_model, nested_model, corner_face):
    with pytest.raises(ValueError, match="corner_model"):
        grad_cam(corner_model, corner_face)
    with pytest.raises(ValueError, match="wrapper"):
        grad_cam(nested_model, corner_face)


def test_grad_cam_unknown_layer(square_model, square_face):
    with pytest.raises(ValueError, match="no_such_layer"):
        grad_cam(square_model, square_face, layer_name="no_such_layer")


# --------------------------------------------------------------------------- explain


def test_explain_auto_picks_by_architecture(square_model, corner_model, nested_model, corner_face, square_face):
    heat, used = explain(square_model, square_face)
    assert used == "grad_cam"
    assert np.allclose(heat, grad_cam(square_model, square_face))
    for model in (corner_model, nested_model):
        heat, used = explain(model, corner_face)
        assert used == "saliency"
        assert heat.shape == (48, 48) and 0.0 <= heat.min() and heat.max() <= 1.0
    heat, used = explain(corner_model, corner_face, method="occlusion")
    assert used == "occlusion" and _inside_outside_ratio(heat, _corner_mask()) > 5


def test_one_rule_decides_what_auto_means_and_every_caller_follows_it(
    square_model, corner_model, nested_model, corner_face, square_face
):
    # the rule: Grad-CAM for a model with a convolution layer at top level, saliency without one
    assert resolve_method(square_model) == resolve_method(square_model, "auto") == "grad_cam"
    assert resolve_method(corner_model) == "saliency"  # dense only
    assert resolve_method(nested_model) == "saliency"  # an ensemble-like wrapper: its conv layers are nested
    for method in ("saliency", "occlusion", "grad_cam"):
        assert resolve_method(corner_model, method) == method  # a named method is taken as asked
    with pytest.raises(ValueError, match="saliency.*occlusion.*grad_cam"):
        resolve_method(corner_model, "lime")
    # explain() and CompiledExplainer (what the demo serves) agree with it and so with each other
    for model, face in ((square_model, square_face), (corner_model, corner_face), (nested_model, corner_face)):
        explainer = CompiledExplainer(model)
        assert explain(model, face)[1] == explainer.method == explainer(face)[1] == resolve_method(model)
    # and nothing else decides it: the demo's tabs and the serving code ask resolve_method too
    root = pathlib.Path(__file__).resolve().parent.parent
    for path in [*sorted((root / "demo").glob("*.py")), *sorted((root / "fer_utils").glob("*.py"))]:
        if path.name != "explain.py":
            assert "find_last_conv_layer(" not in path.read_text(encoding="utf-8"), path


def test_compiled_explainer_gives_the_eager_maps(square_model, corner_model, nested_model, corner_face, square_face):
    cases = ((square_model, square_face, "grad_cam"), (corner_model, corner_face, "saliency"),
             (nested_model, corner_face, "saliency"))
    for model, face, method in cases:
        explainer = CompiledExplainer(model)
        assert explainer.method == method and not explainer.traced
        for class_index in (None, 0, 1):
            heat, used = explainer(face, class_index)
            reference, reference_method = explain(model, face, class_index=class_index)
            assert used == reference_method == method
            np.testing.assert_allclose(heat, reference, atol=1e-5)
        assert explainer.traced
    heat, _ = CompiledExplainer(square_model)(square_face, 1)
    assert _square_mask()[np.unravel_index(heat.argmax(), heat.shape)], "traced Grad-CAM still finds the square"


def test_compiled_explainer_errors_are_clear(square_model, corner_model, corner_face):
    with pytest.raises(ValueError, match="out of range"):
        CompiledExplainer(square_model)(corner_face, 7)
    with pytest.raises(ValueError, match="shape"):
        CompiledExplainer(corner_model)(np.zeros((2, 48, 48, 1)))
    with pytest.raises(ValueError, match="not 'occlusion'"):
        CompiledExplainer(corner_model, method="occlusion")
    with pytest.raises(ValueError, match="corner_model"):
        CompiledExplainer(corner_model, method="grad_cam")


def test_explain_unknown_method_lists_valid_ones(corner_model, corner_face):
    with pytest.raises(ValueError, match="saliency.*occlusion.*grad_cam"):
        explain(corner_model, corner_face, method="lime")


# --------------------------------------------------------------------------- display


def test_overlay_heatmap_shape_dtype_and_colour():
    face = np.full((48, 48, 1), 128, dtype=np.uint8)
    heat = np.zeros((48, 48), dtype=np.float32)
    heat[:24] = 1.0
    out = overlay_heatmap(face, heat)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    # jet: hot rows turn red, cold rows blue
    assert out[5, 5, 0] > out[5, 5, 2] and out[40, 40, 2] > out[40, 40, 0]
    grey_only = overlay_heatmap(face, heat, alpha=0.0)
    assert np.all(grey_only == 128)

    big = overlay_heatmap(face[..., 0].astype(np.float32), heat, size=192)
    assert big.shape == (192, 192, 3) and big.dtype == np.uint8
    assert big[10, 10, 0] > big[10, 10, 2] and big[180, 180, 2] > big[180, 180, 0]


def test_overlay_heatmap_rejects_mismatch():
    with pytest.raises(ValueError, match="shape"):
        overlay_heatmap(np.zeros((48, 48)), np.zeros((7, 7)))
    with pytest.raises(ValueError, match="colormap"):
        overlay_heatmap(np.zeros((48, 48)), np.zeros((48, 48)), colormap="not_a_map")


def test_plot_explanations_grid(corner_model, corner_face):
    images = np.stack([corner_face, np.full((48, 48), 10.0, np.float32)])[..., None]
    fig = plot_explanations(corner_model, images, [1, 0], ["calm", "happy"], methods=("saliency", "occlusion"))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 3
    titles = [ax.get_title() for ax in fig.axes]
    assert "true: happy" in titles[0] and "pred: happy" in titles[0]
    assert "true: calm" in titles[3] and "pred: calm" in titles[3]
    assert titles[1] == "saliency" and titles[2] == "occlusion"


def test_plot_explanations_rejects_label_mismatch(corner_model, corner_face):
    with pytest.raises(ValueError, match="labels"):
        plot_explanations(corner_model, [corner_face], [0, 1], ["calm", "happy"])
