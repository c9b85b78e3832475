"""Tests for fer_utils.evaluation: metrics against hand-worked numbers, TTA on a tiny
Keras model, input validation and the figure helpers."""

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fer_utils import evaluation as ev
from fer_utils import plotting

CLASSES = ["angry", "happy", "sad"]

# Hand example: 6 samples, 3 classes (rows sum to 1).
#   sample  true  proba               argmax
#   0       0     [0.7, 0.2, 0.1]     0  right
#   1       0     [0.3, 0.6, 0.1]     1  wrong
#   2       1     [0.2, 0.7, 0.1]     1  right
#   3       1     [0.1, 0.3, 0.6]     2  wrong
#   4       2     [0.1, 0.1, 0.8]     2  right
#   5       2     [0.2, 0.2, 0.6]     2  right
Y_HAND = np.array([0, 0, 1, 1, 2, 2])
P_HAND = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.3, 0.6],
        [0.1, 0.1, 0.8],
        [0.2, 0.2, 0.6],
    ]
)


def test_compute_metrics_matches_hand_computation():
    m = ev.compute_metrics(Y_HAND, P_HAND, CLASSES)
    # accuracy: 4 right out of 6
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # confusion (rows true, cols predicted): true0 -> {0,1}; true1 -> {1,2}; true2 -> {2,2}
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    # precision = diag / column sum: angry 1/1, happy 1/2, sad 2/3
    # recall    = diag / row sum:    angry 1/2, happy 1/2, sad 2/2
    # F1 = 2PR/(P+R): angry 2*1*.5/1.5 = 2/3, happy .5, sad 2*(2/3)*1/(5/3) = 4/5
    expected = {
        "angry": (1.0, 0.5, 2 / 3, 2),
        "happy": (0.5, 0.5, 0.5, 2),
        "sad": (2 / 3, 1.0, 0.8, 2),
    }
    for name, (precision, recall, f1, support) in expected.items():
        row = m["per_class"][name]
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1)
        assert row["support"] == support
    # macro F1 = (2/3 + 1/2 + 4/5) / 3 = (59/30) / 3 = 59/90; equal supports -> weighted too
    assert m["macro_f1"] == pytest.approx(59 / 90)
    assert m["weighted_f1"] == pytest.approx(59 / 90)
    # AUC happy vs rest: positives score {0.7, 0.3}, negatives {0.2, 0.6, 0.1, 0.2};
    # 0.7 beats all 4, 0.3 beats 3 of 4 -> 7/8 pairs ranked right.
    assert m["roc_auc"]["happy"] == pytest.approx(0.875)
    # angry: positives {0.7, 0.3} beat every negative {0.2, 0.1, 0.1, 0.2} -> 1.0
    assert m["roc_auc"]["angry"] == pytest.approx(1.0)
    # sad: positives {0.8, 0.6} vs negatives {0.1, 0.1, 0.1, 0.6}: 4 + 3 + one tie (1/2) = 7.5/8
    assert m["roc_auc"]["sad"] == pytest.approx(0.9375)
    # macro AUC = (1 + 0.875 + 0.9375) / 3
    assert m["roc_auc"]["macro"] == pytest.approx(0.9375)
    # log loss = -mean log p(true) = -(2 ln .7 + 2 ln .3 + ln .8 + ln .6) / 6
    expected_loss = -(2 * math.log(0.7) + 2 * math.log(0.3) + math.log(0.8) + math.log(0.6)) / 6
    assert m["loss"] == pytest.approx(expected_loss)  # ~0.6425
    # row-normalised confusion: every row has 2 samples
    np.testing.assert_allclose(
        m["confusion_matrix_normalized"], [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]
    )
    # plain Python types only
    json.dumps(m)
    assert type(m["accuracy"]) is float and type(m["n"]) is int
    assert type(m["confusion_matrix"][0][0]) is int


def test_log_loss_hand_example():
    # -(ln 0.5 + ln 0.75) / 2 = (0.693147 + 0.287682) / 2 = 0.490415
    m = ev.compute_metrics([0, 1], [[0.5, 0.5], [0.25, 0.75]], ["neg", "pos"])
    assert m["loss"] == pytest.approx(0.490415, abs=1e-6)


def test_class_without_samples_gives_zero_row_and_no_auc():
    y = [0, 1, 0, 1]
    proba = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1]]
    m = ev.compute_metrics(y, proba, CLASSES)
    # rows: true0 -> preds {0, 1}, true1 -> preds {1, 1}, true2 -> nothing
    np.testing.assert_allclose(
        m["confusion_matrix_normalized"], [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    )
    assert m["roc_auc"]["sad"] is None
    assert m["roc_auc"]["angry"] == pytest.approx(1.0)  # 0.8, 0.4 vs 0.2, 0.1
    assert m["roc_auc"]["macro"] == pytest.approx(1.0)
    assert m["per_class"]["sad"]["support"] == 0
    json.dumps(m)


@pytest.mark.parametrize(
    "y, proba, names, match",
    [
        (Y_HAND, P_HAND, ["a", "b"], "3 columns but there are 2 class names"),
        ([0, 1, 2, 3, 0, 1], P_HAND, CLASSES, "label out of range"),
        ([0, -1, 2, 1, 0, 1], P_HAND, CLASSES, "label out of range"),
        (Y_HAND[:5], P_HAND, CLASSES, "length mismatch"),
        (Y_HAND, P_HAND * 10, CLASSES, "logits"),
        (Y_HAND, P_HAND * 0.5, CLASSES, "sum to 1"),
        (Y_HAND, P_HAND, ["a", "a", "b"], "unique"),
    ],
)
def test_compute_metrics_rejects_bad_input(y, proba, names, match):
    with pytest.raises(ValueError, match=match):
        ev.compute_metrics(y, proba, names)


def test_confident_mistakes_order():
    y = [0, 1, 2, 0, 1]
    proba = [
        [0.9, 0.05, 0.05],  # right
        [0.6, 0.3, 0.1],  # wrong, confidence 0.6
        [0.1, 0.85, 0.05],  # wrong, confidence 0.85
        [0.2, 0.1, 0.7],  # wrong, confidence 0.7
        [0.3, 0.4, 0.3],  # right
    ]
    assert ev.confident_mistakes(y, proba).tolist() == [2, 3, 1]
    assert ev.confident_mistakes(y, proba, top=2).tolist() == [2, 3]
    assert ev.confident_mistakes([0, 1], [[0.9, 0.1], [0.2, 0.8]]).tolist() == []


def test_classification_report_frame():
    frame = ev.classification_report_frame(Y_HAND, P_HAND, CLASSES)
    assert list(frame.index) == CLASSES + ["macro avg", "weighted avg"]
    assert list(frame.columns) == ["precision", "recall", "f1", "support"]
    assert frame.loc["sad", "precision"] == pytest.approx(2 / 3)
    assert frame.loc["macro avg", "f1"] == pytest.approx(59 / 90)
    assert frame.loc["weighted avg", "support"] == 6


# --------------------------------------------------------------------------- #
# Prediction with a tiny, deliberately asymmetric Keras model
# --------------------------------------------------------------------------- #
K = 3


def _column_weights() -> np.ndarray:
    """Dense kernel (48*48, K): class 0 likes bright left side, class 1 the right,
    class 2 the top, so mirroring an image changes the prediction."""
    cols = np.tile(np.arange(48), 48).astype(np.float32)  # column index of each pixel
    rows = np.repeat(np.arange(48), 48).astype(np.float32)
    w = np.stack([(47 - cols) / 47, cols / 47, (47 - rows) / 47], axis=1)
    return (w / (48 * 48 * 255) * 20).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    model = keras.Sequential(
        [
            keras.Input((48, 48, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(K, activation="softmax"),
        ]
    )
    model.layers[-1].set_weights([_column_weights(), np.zeros(K, np.float32)])
    return model


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 48, 48, 1)).astype(np.uint8)
    x[:5, :, :24] = 250  # bright left half
    x[5:, :, 24:] = 250  # bright right half
    return x


def _softmax_by_hand(x: np.ndarray) -> np.ndarray:
    logits = x.reshape(len(x), -1).astype(np.float64) @ _column_weights().astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_predict_proba_matches_manual_softmax(tiny_model, faces):
    proba = ev.predict_proba(tiny_model, faces, batch_size=4)
    assert proba.shape == (10, K)
    np.testing.assert_allclose(proba, _softmax_by_hand(faces), atol=1e-5)
    # (N, 48, 48) without a channel axis is accepted too
    np.testing.assert_allclose(ev.predict_proba(tiny_model, faces[..., 0]), proba, atol=1e-6)


def test_predict_proba_tta_averages_image_and_mirror(tiny_model, faces):
    plain = ev.predict_proba(tiny_model, faces)
    mirrored = ev.predict_proba(tiny_model, faces[:, :, ::-1, :])
    assert np.abs(plain - mirrored).max() > 0.1  # the model is not flip-invariant
    tta = ev.predict_proba(tiny_model, faces, batch_size=3, tta=True)
    # oneDNN's AVX-512 kernels round differently for different batch sizes (seen: 3.6e-6)
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-5)


def test_predict_proba_rejects_bad_shape(tiny_model):
    with pytest.raises(ValueError, match="shape"):
        ev.predict_proba(tiny_model, np.zeros((48, 48)))


def test_evaluate_model(tiny_model, faces):
    labels = np.array([0] * 5 + [1] * 5)
    result = ev.evaluate_model(tiny_model, faces, labels, CLASSES, batch_size=4)
    assert isinstance(result, ev.Evaluation)
    assert set(result.metrics) == {"plain", "tta"}
    assert result.proba.shape == result.proba_tta.shape == (10, K)
    np.testing.assert_allclose(
        result.proba_tta, ev.predict_proba(tiny_model, faces, tta=True), atol=1e-6
    )
    assert result.metrics["plain"]["accuracy"] == pytest.approx(1.0)
    json.dumps(result.metrics)
    summary = result.summary()
    assert summary.startswith("accuracy 1.0000 · macro-F1 ")
    assert "(TTA: accuracy " in summary

    plain_only = ev.evaluate_model(tiny_model, faces, labels, CLASSES, tta=False)
    assert plain_only.proba_tta is None and set(plain_only.metrics) == {"plain"}
    assert "TTA" not in plain_only.summary()

    with pytest.raises(ValueError, match="length mismatch"):
        ev.evaluate_model(tiny_model, faces, labels[:9], CLASSES)


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #
def test_plot_confusion_matrix():
    m = ev.compute_metrics(Y_HAND, P_HAND, CLASSES)
    fig = plotting.plot_confusion_matrix(m["confusion_matrix"], CLASSES)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # heatmap + colourbar
    assert len(fig.axes[0].texts) == 9
    fig = plotting.plot_confusion_matrix(m["confusion_matrix"], CLASSES, normalize=True, title="t")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[:3] == ["0.50", "0.50", "0.00"] and fig.axes[0].get_title() == "t"
    given = Figure()
    ax = given.add_subplot()
    assert plotting.plot_confusion_matrix(m["confusion_matrix"], CLASSES, ax=ax) is given
    with pytest.raises(ValueError, match="3x3"):
        plotting.plot_confusion_matrix(np.zeros((2, 2)), CLASSES)


def test_plot_roc_curves_skips_undefined_classes():
    fig = plotting.plot_roc_curves(Y_HAND, P_HAND, CLASSES)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].lines) == 3 + 1  # one per class + chance diagonal
    assert "macro AUC 0.938" in fig.axes[0].get_title()
    y = [0, 1, 0, 1]  # no "sad" sample
    proba = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1]]
    assert len(plotting.plot_roc_curves(y, proba, CLASSES).axes[0].lines) == 2 + 1


def test_plot_training_curves_from_dict_frame_and_csv(tmp_path):
    history = {
        "loss": [1.8, 1.4, 1.2],
        "accuracy": [0.3, 0.45, 0.5],
        "val_loss": [1.7, 1.5, 1.4],
        "val_accuracy": [0.32, 0.41, 0.47],
    }
    fig = plotting.plot_training_curves(history)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert all(len(ax.lines) == 2 for ax in fig.axes)

    frame = pd.DataFrame({"epoch": [0, 1, 2], **history, "learning_rate": [1e-3, 1e-3, 1e-4]})
    assert len(plotting.plot_training_curves(frame).axes) == 3

    csv = tmp_path / "log.csv"
    frame.to_csv(csv, index=False)
    fig = plotting.plot_training_curves(csv)
    assert len(fig.axes) == 3
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3]
    assert len(plotting.plot_training_curves(str(csv)).axes) == 3

    with pytest.raises(ValueError, match="loss"):
        plotting.plot_training_curves({"accuracy": [0.1]})


def test_plot_per_class_f1():
    a = ev.compute_metrics(Y_HAND, P_HAND, CLASSES)
    b = ev.compute_metrics(Y_HAND, np.eye(3)[Y_HAND], CLASSES)
    fig = plotting.plot_per_class_f1({"cnn": a, "resnet": b}, CLASSES)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and len(ax.patches) == 2 * 3
    heights = [p.get_height() for p in ax.containers[0].patches]
    assert heights == pytest.approx([2 / 3, 0.5, 0.8])
    with pytest.raises(ValueError, match="per_class"):
        plotting.plot_per_class_f1({"bad": {"accuracy": 1.0}}, CLASSES)


def test_plot_image_grid_and_save_figure(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 48, 48, 1)).astype(np.uint8)
    titles = ev.prediction_titles(
        [0, 0, 1, 1, 2], P_HAND[:5], [0, 1, 2, 3, 4], CLASSES
    )
    assert titles[1] == "true angry\npred happy 0.60"
    fig = plotting.plot_image_grid(images, titles, ncols=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    assert fig.axes[1].get_title() == titles[1]
    with pytest.raises(ValueError, match="titles"):
        plotting.plot_image_grid(images, titles[:2])

    out = plotting.save_figure(fig, tmp_path / "sub" / "grid.png")
    assert out == tmp_path / "sub" / "grid.png"
    data = out.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- #
# The ensemble against its best member
# --------------------------------------------------------------------------- #
def _answers(labels: np.ndarray, right: np.ndarray, k: int = 7) -> np.ndarray:
    """One-hot-ish probabilities, right where ``right`` is True and on the next class otherwise."""
    predicted = np.where(right, labels, (labels + 1) % k)
    return np.eye(k)[predicted] * 0.9 + 0.1 / k


def test_gap_to_best_member_reads_the_accuracies_and_picks_the_best_member():
    labels = np.arange(200) % 7
    rng = np.random.default_rng(0)
    ensemble_right = rng.random(200) < 0.5
    fair_right = ensemble_right | (rng.random(200) < 0.3)  # right wherever the ensemble is, and more
    members = {"weak": _answers(labels, rng.random(200) < 0.3), "fair": _answers(labels, fair_right)}
    gap = ev.gap_to_best_member(labels, _answers(labels, ensemble_right), members)
    assert gap.best == "fair" and gap.items == 200 and gap.members == 2
    assert gap.gap == pytest.approx(ensemble_right.mean() - fair_right.mean()) and gap.gap < -0.1
    assert (gap.ensemble_only, gap.member_only) == (0, int(np.sum(fair_right & ~ensemble_right)))
    # all of the discordant items go the member's way: p = 2 * 0.5 ** n (Bonferroni over two members)
    assert gap.best_p_value == pytest.approx(0.5 ** gap.member_only)
    assert gap.p_value == pytest.approx(min(1.0, 2 * 0.5 ** gap.member_only))
    assert gap.below and "some member is better than the ensemble beyond chance" in gap.sentence()


def test_an_ensemble_as_good_as_its_members_is_not_called_below_them_on_a_small_set():
    # eight members and the ensemble each right 55 % of the time, independently, on 213 items: the best
    # of eight reads above the ensemble by luck alone (here by 6.6 points, 14 photos), and is not believed
    labels = np.arange(213) % 7
    rng = np.random.default_rng(3)
    ensemble = _answers(labels, rng.random(213) < 0.55)
    members = {f"m{i}": _answers(labels, rng.random(213) < 0.55) for i in range(8)}
    gap = ev.gap_to_best_member(labels, ensemble, members)
    best = max(float((p.argmax(1) == labels).mean()) for p in members.values())
    assert gap.gap == pytest.approx(float((ensemble.argmax(1) == labels).mean()) - best) and gap.gap < -0.05
    assert not gap.below and "no member is better than the ensemble beyond chance" in gap.sentence()
    # the same 10-point gap to one member, on 20 times the items, is told
    many = np.arange(213 * 20) % 7
    told = ev.gap_to_best_member(many, _answers(many, np.arange(many.size) % 10 < 4),
                                 {"m": _answers(many, np.arange(many.size) % 10 < 5)})
    assert told.below and told.p_value < 1e-6


def test_gap_to_best_member_rejects_no_members_and_mismatched_answers():
    labels = np.arange(14) % 7
    with pytest.raises(ValueError, match="no member"):
        ev.gap_to_best_member(labels, _answers(labels, labels > 2), {})
    with pytest.raises(ValueError, match="shape"):
        ev.gap_to_best_member(labels, _answers(labels, labels > 2), {"m": np.full((14, 3), 1 / 3)})
