"""Figures of the evaluation: confusion matrices, ROC curves, training curves, per-class F1, image grids.

Built on ``matplotlib.figure.Figure`` objects directly (no pyplot state, nothing is ever shown),
so the functions are safe in scripts, tests and notebooks alike. The figures take the metrics and
probabilities :mod:`fer_utils.evaluation` computes.
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from .evaluation import Evaluation, _check_class_names, _check_predictions, _roc_auc_per_class

__all__ = [
    "plot_confusion_matrix",
    "plot_roc_curves",
    "plot_training_curves",
    "plot_per_class_f1",
    "plot_image_grid",
    "save_figure",
]


def _row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows without samples stay zero instead of becoming NaN."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)


def plot_confusion_matrix(
    confusion: Any,
    class_names: Sequence[str],
    normalize: bool = False,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Annotated heatmap; normalised rows show per-class recall, which is easier to
    read than counts when classes are as unbalanced as FER2013's 'disgust'."""
    names = _check_class_names(class_names)
    matrix = np.asarray(confusion, dtype=float)
    if matrix.shape != (len(names), len(names)):
        raise ValueError(
            f"confusion must be a {len(names)}x{len(names)} matrix for {len(names)} "
            f"class names, got shape {matrix.shape}"
        )
    if normalize:
        matrix = _row_normalize(matrix)

    if ax is None:
        size = 1.0 + 0.75 * len(names)
        fig = Figure(figsize=(size + 1.2, size), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    vmax = 1.0 if normalize else max(float(matrix.max()), 1.0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)

    fmt = "{:.2f}" if normalize else "{:.0f}"
    for i in range(len(names)):
        for j in range(len(names)):
            value = matrix[i, j]
            ax.text(
                j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                color="white" if value > 0.5 * vmax else "black",
            )
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    default = "Confusion matrix (row-normalised)" if normalize else "Confusion matrix"
    ax.set_title(title if title is not None else default)
    return fig


def plot_roc_curves(
    y_true: Any, proba: Any, class_names: Sequence[str], title: str | None = None
) -> Figure:
    """One-vs-rest ROC curves show which expressions the model separates well
    regardless of the decision threshold."""
    names = _check_class_names(class_names)
    y, p = _check_predictions(y_true, proba, names)
    aucs = _roc_auc_per_class(y, p, names)

    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    for k, name in enumerate(names):
        if aucs[name] is None:
            continue  # no positive or no negative sample: the curve is undefined
        fpr, tpr, _ = roc_curve(y == k, p[:, k])
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {aucs[name]:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    macro = aucs["macro"]
    macro_text = "n/a" if macro is None else f"{macro:.3f}"
    prefix = title if title is not None else "ROC one-vs-rest"
    ax.set_title(f"{prefix} · macro AUC {macro_text}")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _history_frame(history: Any) -> pd.DataFrame:
    """Training logs arrive as History.history dicts, DataFrames or CSVLogger files."""
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        history = history.history  # a keras.callbacks.History object
    if isinstance(history, (str, os.PathLike)):
        path = pathlib.Path(history)
        if not path.is_file():
            raise ValueError(f"training log not found: {path}")
        frame = pd.read_csv(path)
    elif isinstance(history, pd.DataFrame):
        frame = history.copy()
    elif isinstance(history, Mapping):
        frame = pd.DataFrame({key: pd.Series(values) for key, values in history.items()})
    else:
        raise ValueError(
            "history must be a dict of lists, a pandas DataFrame, a keras History or "
            f"the path of a CSVLogger file, got {type(history).__name__}"
        )
    if "loss" not in frame.columns:
        raise ValueError(f"history has no 'loss' column; columns are {list(frame.columns)}")
    return frame


def _accuracy_column(columns: Sequence[str]) -> str | None:
    """Keras names the metric 'accuracy', 'acc' or e.g. 'sparse_categorical_accuracy'."""
    for name in ("accuracy", "acc"):
        if name in columns:
            return name
    candidates = [c for c in columns if "acc" in c and not c.startswith("val_")]
    return candidates[0] if candidates else None


def plot_training_curves(history: Any) -> Figure:
    """Train-vs-validation loss and accuracy side by side make over- and
    under-fitting visible at a glance; the learning rate explains sudden jumps."""
    frame = _history_frame(history)
    epochs = frame["epoch"] + 1 if "epoch" in frame.columns else pd.Series(
        np.arange(1, len(frame) + 1)
    )
    panels = [("loss", "loss")]
    accuracy = _accuracy_column(list(frame.columns))
    if accuracy is not None:
        panels.append((accuracy, "accuracy"))
    lr = next((c for c in ("learning_rate", "lr") if c in frame.columns), None)

    n_panels = len(panels) + (lr is not None)
    fig = Figure(figsize=(4.5 * n_panels, 3.6), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    for ax, (column, label) in zip(axes, panels):
        ax.plot(epochs, frame[column], marker=".", label="train")
        if f"val_{column}" in frame.columns:
            ax.plot(epochs, frame[f"val_{column}"], marker=".", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if lr is not None:
        ax = axes[-1]
        rates = frame[lr]
        ax.plot(epochs, rates, marker=".", color="tab:green")
        if (rates > 0).all() and rates.max() / rates.min() > 10:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.set_title("learning rate")
        ax.grid(alpha=0.3)
    return fig


def _per_class_metrics(name: str, value: Any) -> Mapping:
    """Accept a compute_metrics dict, an Evaluation, or Evaluation.metrics (uses 'plain')."""
    if isinstance(value, Evaluation):
        value = value.metrics
    if isinstance(value, Mapping) and "per_class" not in value and "plain" in value:
        value = value["plain"]
    if not isinstance(value, Mapping) or "per_class" not in value:
        raise ValueError(
            f"metrics for model {name!r} must be a compute_metrics() dict "
            "(with a 'per_class' entry) or an Evaluation"
        )
    return value


def plot_per_class_f1(
    metrics_by_model: Mapping[str, Mapping], class_names: Sequence[str]
) -> Figure:
    """Grouped bars show which expressions each architecture handles better,
    which a single accuracy number hides."""
    names = _check_class_names(class_names)
    if not metrics_by_model:
        raise ValueError("metrics_by_model is empty: nothing to plot")
    n_models = len(metrics_by_model)
    width = 0.8 / n_models
    positions = np.arange(len(names))

    fig = Figure(figsize=(max(6.0, 1.1 * len(names) + 0.4 * n_models), 4), layout="constrained")
    ax = fig.add_subplot()
    for m, (model_name, value) in enumerate(metrics_by_model.items()):
        metrics = _per_class_metrics(model_name, value)
        missing = [c for c in names if c not in metrics["per_class"]]
        if missing:
            raise ValueError(f"metrics for model {model_name!r} lack classes {missing}")
        f1 = [metrics["per_class"][c]["f1"] for c in names]
        label = model_name
        if "macro_f1" in metrics:
            label += f" (macro {metrics['macro_f1']:.3f})"
        ax.bar(positions + (m - (n_models - 1) / 2) * width, f1, width, label=label)
    ax.set_xticks(positions, labels=names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("Per-class F1")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_image_grid(images: Any, titles: Sequence[str] | None, ncols: int = 8) -> Figure:
    """Galleries of faces (samples, mistakes) with a fixed 0-255 grey scale so that
    dark and bright faces are not silently contrast-stretched."""
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"images must have shape (N, 48, 48, 1) or (N, 48, 48), got {x.shape}")
    if len(x) == 0:
        raise ValueError("images is empty: nothing to plot")
    if titles is not None and len(titles) != len(x):
        raise ValueError(f"got {len(titles)} titles for {len(x)} images")
    if int(ncols) < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")

    ncols = min(int(ncols), len(x))
    nrows = math.ceil(len(x) / ncols)
    vmax = 1.0 if x.max() <= 1.0 else 255.0  # tolerate images already scaled to [0, 1]
    fig = Figure(figsize=(1.4 * ncols, 1.6 * nrows), layout="constrained")
    for i, image in enumerate(x):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=vmax)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=7)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> pathlib.Path:
    """Write the figure (PNG unless the suffix names another format) and free it,
    so long evaluation loops do not accumulate open figures."""
    out = pathlib.Path(path)
    if out.suffix == "":
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    import matplotlib.pyplot as plt  # only to unregister figures made with pyplot

    plt.close(fig)
    return out
