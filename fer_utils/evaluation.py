"""Evaluation of facial-expression classifiers: predictions, metrics and figures.

Every model in the package maps a batch of raw 0-255 grey faces (N, 48, 48, 1)
to softmax probabilities (N, K), so everything here works from those
probabilities.  Metrics come from scikit-learn and are returned as plain
JSON-serialisable dicts so that they can be written next to saved models and
compared across runs.  Figures are built on ``matplotlib.figure.Figure``
objects directly in :mod:`fer_utils.plotting`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "Evaluation",
    "predict_proba",
    "ten_crops",
    "compute_metrics",
    "evaluate_model",
    "classification_report_frame",
    "confident_mistakes",
    "prediction_titles",
    "BestMemberGap",
    "gap_to_best_member",
]

# Softmax outputs in float32 can overshoot [0, 1] by a rounding error; anything
# further out than this is almost certainly logits passed by mistake.
_PROBA_TOLERANCE = 1e-4
# Softmax rows should sum to 1; a larger gap means scores that are not probabilities.
_ROW_SUM_TOLERANCE = 1e-3


# --------------------------------------------------------------------------- #
# Input validation
# --------------------------------------------------------------------------- #
def _as_image_batch(images: Any) -> np.ndarray:
    """Accept (N, H, W) or (N, H, W, 1) so callers need not add the channel axis."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise ValueError(
            f"images must have shape (N, 48, 48, 1) or (N, 48, 48); got {x.shape}"
        )
    if x.shape[0] == 0:
        raise ValueError("images is empty: nothing to predict")
    return x.astype(np.float32, copy=False)


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    """Class names become dict keys, so they must be unique strings."""
    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise ValueError(f"need at least 2 class names, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names!r}")
    if "macro" in names:
        raise ValueError("'macro' cannot be a class name: it is the key of the mean AUC")
    return names


def _check_labels(y_true: Any, n_classes: int) -> np.ndarray:
    """Turn labels into a 1-D int array and reject values outside 0..K-1."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(
            f"y_true must be a 1-D array of integer class indices, got shape {y.shape}"
            " (one-hot labels? use labels.argmax(axis=1))"
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if np.any(bad):
        raise ValueError(
            f"label out of range: found {sorted(set(y[bad].tolist()))[:10]} but labels "
            f"must lie in 0..{n_classes - 1} for {n_classes} classes"
        )
    return y


def _check_proba(proba: Any) -> np.ndarray:
    """Probabilities must be a finite 2-D array inside [0, 1] (not logits)."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must be a 2-D array (N, K), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    if p.size and (p.min() < -_PROBA_TOLERANCE or p.max() > 1 + _PROBA_TOLERANCE):
        raise ValueError(
            f"proba values must lie in [0, 1] (got {p.min():.3g}..{p.max():.3g}); "
            "did you pass logits instead of softmax probabilities?"
        )
    p = np.clip(p, 0.0, 1.0)
    sums = p.sum(axis=1, keepdims=True)
    if p.size and np.abs(sums - 1.0).max() > _ROW_SUM_TOLERANCE:
        raise ValueError(
            "each row of proba must sum to 1 (softmax outputs); "
            f"row sums range over {sums.min():.4g}..{sums.max():.4g}"
        )
    # float32 softmax rows are off by ~1e-7, which sklearn's log_loss warns about
    # once the values are float64: renormalise the rounding error away.
    return p / sums if p.size else p


def _check_predictions(
    y_true: Any, proba: Any, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Shared checks so every metric function fails with the same clear message."""
    p = _check_proba(proba)
    n_classes = p.shape[1] if class_names is None else len(class_names)
    if class_names is not None and p.shape[1] != n_classes:
        raise ValueError(
            f"proba has {p.shape[1]} columns but there are {n_classes} class names"
        )
    y = _check_labels(y_true, n_classes)
    if len(y) != len(p):
        raise ValueError(
            f"length mismatch: {len(y)} labels but {len(p)} rows of probabilities"
        )
    if len(y) == 0:
        raise ValueError("no samples: y_true and proba are empty")
    return y, p


# --------------------------------------------------------------------------- #
# Prediction
# --------------------------------------------------------------------------- #
def _raw_predict(model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """model.predict runs a compiled graph: measured ~1.7x faster than eager
    model(batch, training=False) for a few thousand faces on CPU."""
    if hasattr(model, "predict"):
        out = model.predict(x, batch_size=batch_size, verbose=0)
    else:  # a plain callable, e.g. a tf.function or a lambda in a test
        out = np.concatenate(
            [np.asarray(model(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        )
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[0] != len(x):
        raise ValueError(
            f"model output has shape {out.shape}; expected ({len(x)}, K) probabilities"
        )
    return out


def _mirror(x: np.ndarray) -> np.ndarray:
    """Faces are roughly left-right symmetric, so the mirror is a free second view."""
    return x[:, :, ::-1, :]


#: The test-time augmentations :func:`predict_proba` knows: ``"flip"`` (also ``tta=True``)
#: and ``"ten_crop"``.
TTA_CHOICES = ("flip", "ten_crop")
#: Ten-crop's crop side for 48-pixel faces: 44 keeps the face (the recipes crop 40-44 of 48).
TEN_CROP_SIDE = 44


def ten_crops(images: Any, side: int = TEN_CROP_SIDE) -> list[np.ndarray]:
    """The ten views of the strong published FER2013 recipes: four corner crops and the centre
    crop, each with its mirror, every crop resized back to the model's input size (the networks
    here take whole 48x48 faces; their training shift and zoom augmentation covers such views)."""
    import cv2

    x = _as_image_batch(images)
    height, width = x.shape[1:3]
    if not 0 < side <= min(height, width):
        raise ValueError(f"crop side must be in 1..{min(height, width)}, got {side}")
    corners = [(0, 0), (0, width - side), (height - side, 0), (height - side, width - side),
               ((height - side) // 2, (width - side) // 2)]
    views = []
    for top, left in corners:
        crop = x[:, top:top + side, left:left + side, 0]
        resized = np.stack([cv2.resize(face, (width, height), interpolation=cv2.INTER_LINEAR) for face in crop])
        views += [resized[..., None], _mirror(resized[..., None])]
    return views


def predict_proba(
    model: Any, images: Any, batch_size: int = 256, tta: bool | str = False
) -> np.ndarray:
    """Class probabilities for raw 0-255 faces, optionally averaged over test-time views:
    ``tta=True`` or ``"flip"`` adds the mirror image (usually a little accuracy for free),
    ``"ten_crop"`` averages :func:`ten_crops` (ten passes, reported separately)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if tta is True:
        tta = "flip"
    if tta and tta not in TTA_CHOICES:
        raise ValueError(f"tta must be False, True or one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    x = _as_image_batch(images)
    if tta == "ten_crop":
        return np.mean([_raw_predict(model, view, int(batch_size)) for view in ten_crops(x)], axis=0)
    proba = _raw_predict(model, x, int(batch_size))
    if tta == "flip":
        proba = (proba + _raw_predict(model, _mirror(x), int(batch_size))) / 2.0
    return proba


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #
def _roc_auc_per_class(
    y: np.ndarray, p: np.ndarray, class_names: Sequence[str]
) -> dict[str, float | None]:
    """One-vs-rest AUC is undefined without both positives and negatives: None then."""
    aucs: dict[str, float | None] = {}
    for k, name in enumerate(class_names):
        positives = y == k
        if positives.all() or not positives.any():
            aucs[name] = None
        else:
            aucs[name] = float(roc_auc_score(positives, p[:, k]))
    defined = [v for v in aucs.values() if v is not None]
    aucs["macro"] = float(np.mean(defined)) if defined else None
    return aucs


def compute_metrics(y_true: Any, proba: Any, class_names: Sequence[str]) -> dict:
    """Everything needed to compare models, as plain Python types so it can be
    dumped to JSON next to the saved model."""
    names = _check_class_names(class_names)
    y, p = _check_predictions(y_true, proba, names)
    labels = list(range(len(names)))
    y_pred = p.argmax(axis=1)

    precision, recall, f1, support = precision_recall_fscore_support(
        y, y_pred, labels=labels, zero_division=0
    )
    counts = confusion_matrix(y, y_pred, labels=labels)
    normalized = np.nan_to_num(confusion_matrix(y, y_pred, labels=labels, normalize="true"))
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, y_pred)),
        "loss": float(log_loss(y, p, labels=labels)),
        "macro_f1": float(f1_score(y, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(
            f1_score(y, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(names)
        },
        "confusion_matrix": counts.astype(int).tolist(),
        "confusion_matrix_normalized": normalized.astype(float).tolist(),
        "roc_auc": _roc_auc_per_class(y, p, names),
    }


@dataclass
class Evaluation:
    """Metrics plus the probabilities behind them, so figures and galleries can be
    drawn later without running the model again."""

    metrics: dict
    proba: np.ndarray
    proba_tta: np.ndarray | None = None

    def summary(self) -> str:
        """One line for logs and notebook cells."""
        plain = self.metrics["plain"]
        text = f"accuracy {plain['accuracy']:.4f} · macro-F1 {plain['macro_f1']:.4f}"
        if "tta" in self.metrics:
            tta = self.metrics["tta"]
            text += f" (TTA: accuracy {tta['accuracy']:.4f} · macro-F1 {tta['macro_f1']:.4f})"
        return text


def evaluate_model(
    model: Any,
    images: Any,
    labels: Any,
    class_names: Sequence[str],
    batch_size: int = 256,
    tta: bool = True,
) -> Evaluation:
    """Plain and mirror-TTA metrics from a single pass over each view of the data."""
    names = _check_class_names(class_names)
    x = _as_image_batch(images)
    y = _check_labels(labels, len(names))
    if len(y) != len(x):
        raise ValueError(f"length mismatch: {len(x)} images but {len(y)} labels")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")

    proba = _raw_predict(model, x, int(batch_size))
    metrics = {"plain": compute_metrics(y, proba, names)}
    proba_tta = None
    if tta:
        proba_tta = (proba + _raw_predict(model, _mirror(x), int(batch_size))) / 2.0
        metrics["tta"] = compute_metrics(y, proba_tta, names)
    return Evaluation(metrics=metrics, proba=proba, proba_tta=proba_tta)


def classification_report_frame(
    y_true: Any, proba: Any, class_names: Sequence[str]
) -> pd.DataFrame:
    """sklearn's report as a DataFrame, which renders as a readable table in notebooks."""
    names = _check_class_names(class_names)
    y, p = _check_predictions(y_true, proba, names)
    report = classification_report(
        y,
        p.argmax(axis=1),
        labels=list(range(len(names))),
        target_names=names,
        output_dict=True,
        zero_division=0,
    )
    accuracy = report.pop("accuracy", None)
    frame = pd.DataFrame(report).T.rename(columns={"f1-score": "f1"})
    frame = frame.loc[names + ["macro avg", "weighted avg"]]
    frame["support"] = frame["support"].astype(int)
    if accuracy is not None:
        frame.attrs["accuracy"] = float(accuracy)
    return frame


def confident_mistakes(y_true: Any, proba: Any, top: int = 16) -> np.ndarray:
    """The errors the model was surest about are the most instructive to look at
    (and often reveal label noise in FER2013)."""
    if int(top) < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    y, p = _check_predictions(y_true, proba)
    y_pred = p.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y)
    confidence = p[wrong, y_pred[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order][: int(top)]


def prediction_titles(
    y_true: Any, proba: Any, indices: Any, class_names: Sequence[str]
) -> list[str]:
    """Short 'true / predicted (confidence)' captions for plot_image_grid galleries."""
    names = _check_class_names(class_names)
    y, p = _check_predictions(y_true, proba, names)
    titles = []
    for i in np.asarray(indices, dtype=int).ravel():
        k = int(p[i].argmax())
        titles.append(f"true {names[y[i]]}\npred {names[k]} {p[i, k]:.2f}")
    return titles


# --------------------------------------------------------------------------- #
# Ensemble against its best member, on a small set
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class BestMemberGap:
    """The ensemble's accuracy minus its best member's, and whether any member truly reads above it."""

    gap: float  # ensemble minus the best member on the whole set (accuracy, as a fraction)
    best: str  # the best member on the whole set
    ensemble_only: int  # items the ensemble gets right and the best member wrong
    member_only: int  # ... and the other way round
    p_value: float  # the smallest one-sided exact McNemar p over the members, times their number (Bonferroni)
    best_p_value: float  # the best member's own one-sided p, before the correction
    members: int
    items: int
    alpha: float = 0.05

    @property
    def below(self) -> bool:
        """Some member reads above the ensemble by more than chance, at ``alpha`` over all members."""
        return self.p_value < self.alpha

    def sentence(self) -> str:
        """One line a reader can act on: how far below or above, and whether the set can tell."""
        verdict = ("some member is better than the ensemble beyond chance" if self.below else
                   "no member is better than the ensemble beyond chance")
        return (f"ensemble minus its best member ({self.best}): {100 * self.gap:+.1f} points on {self.items} items "
                f"(right on {self.ensemble_only} that it misses, wrong on {self.member_only} that it gets); "
                f"exact McNemar, one-sided: p = {self.best_p_value:.2f} for it alone, {self.p_value:.2f} "
                f"over all {self.members} members (Bonferroni), "
                f"so {verdict}")


def gap_to_best_member(y_true: Any, ensemble_proba: Any, member_probas: dict[str, Any], *,
                       alpha: float = 0.05) -> BestMemberGap:
    """Whether an ensemble really reads below its best member, on a set as small as a photo folder.

    On 213 photos one photo is 0.5 point, and the best of eight members is picked on the very
    photos it is compared on, so it reads high by luck alone: a bootstrap of that maximum calls
    an ensemble as good as its members "below" them a third of the time. Each member is instead
    compared with the ensemble on the same items by the exact McNemar test (the items exactly one
    of the two gets right; scipy.stats.binomtest), one-sided, and the smallest p is multiplied by
    the number of members, so "below" is claimed wrongly at most ``alpha`` of the time."""
    from scipy.stats import binomtest

    if not member_probas:
        raise ValueError("member_probas is empty: there is no member to compare the ensemble with")
    y, ensemble = _check_predictions(y_true, ensemble_proba)
    ensemble_right = ensemble.argmax(axis=1) == y
    rows = []
    for name, proba in member_probas.items():
        if np.shape(proba) != ensemble.shape:
            raise ValueError(f"{name}: probabilities of shape {np.shape(proba)}, the ensemble's are {ensemble.shape}")
        _, member = _check_predictions(y, proba)
        member_right = member.argmax(axis=1) == y
        ensemble_only, member_only = int(np.sum(ensemble_right & ~member_right)), int(np.sum(member_right & ~ensemble_right))
        p = binomtest(member_only, ensemble_only + member_only, 0.5, alternative="greater").pvalue if member_only else 1.0
        rows.append((float(member_right.mean()), name, ensemble_only, member_only, float(p)))
    accuracy, best, ensemble_only, member_only, best_p = max(rows, key=lambda row: row[0])
    return BestMemberGap(
        gap=float(ensemble_right.mean()) - accuracy, best=best, ensemble_only=ensemble_only, member_only=member_only,
        p_value=min(1.0, len(rows) * min(row[4] for row in rows)), best_p_value=best_p, members=len(rows),
        items=len(y), alpha=float(alpha),
    )
