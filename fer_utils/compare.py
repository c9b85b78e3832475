"""Side-by-side comparison of trained models from their cards and saved predictions.

``python -m fer_utils.compare [saved_models]`` prints the results table as Markdown, timing each
model on one face on this machine. Its rows are :meth:`fer_utils.card.ModelCard.results_row`, the
same the README's table (``python -m fer_utils.card readme``) is written from.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .card import RESULT_COLUMNS, ModelCard, read_cards
from .card import results_markdown as _results_markdown
from .plotting import plot_confusion_matrix


def collect_cards(models_dir: str | os.PathLike) -> dict[str, ModelCard]:
    """Every model card (``<name>.json`` beside ``<name>.keras``) in a folder, in study order."""
    return read_cards(models_dir)


def results_table(cards: Mapping[str, ModelCard], split: str = "test") -> pd.DataFrame:
    """Accuracy and macro-F1 (plain and flip-TTA), size (decimal MB), parameters and training time."""
    rows = []
    for name, card in cards.items():
        card = ModelCard.of(card)
        rows.append({"model": card.label(name), **card.results_row(split)})
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def measure_latencies(cards: Mapping[str, ModelCard], models_dir: str | os.PathLike, repeats: int = 30) -> dict[str, float]:
    """Median milliseconds per single face for each model, through the serving path the demo and CLI use.

    The ensemble's figure is its members' forward passes plus its head, as one demo request pays it.
    """
    from .inference import measure_latency
    from .serving import load_models

    models = load_models(models_dir)
    by_file = {loaded.path.name: loaded for loaded in [*models.networks().values(), *models]}
    face = np.full((48, 48), 128, np.float32)
    latency = {}
    for name, card in cards.items():
        card = ModelCard.of(card)
        loaded = by_file.get(Path(card.file_name).name)
        if loaded is None:
            continue
        loaded.warm_up()
        latency[card.label(name)] = round(measure_latency(loaded.predict, repeats, face)["median_ms"], 1)
    return latency


def results_markdown(table: pd.DataFrame) -> str:
    """The results table as a Markdown table, accuracies in percent (the cells the README's table has)."""
    present = [column for column in RESULT_COLUMNS if column in table]
    return _results_markdown([(model, row) for model, row in table.iterrows()], present)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the results table of the models in a folder, from their cards.")
    parser.add_argument("models_dir", nargs="?", default="saved_models")
    parser.add_argument("--latency-repeats", type=int, default=30, help="single-face calls timed per model (0: skip)")
    args = parser.parse_args(argv)
    cards = collect_cards(args.models_dir)
    if not cards:
        raise SystemExit(f"no models with model cards in {args.models_dir}")
    table = results_table(cards)
    if args.latency_repeats:
        latency = measure_latencies(cards, args.models_dir, args.latency_repeats)
        table["latency_ms"] = [latency.get(m) for m in table.index]
    print(results_markdown(table))


def agreement_matrix(predictions: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Fraction of faces on which each pair of models predicts the same class."""
    names = list(predictions)
    lengths = {len(p) for p in predictions.values()}
    if len(lengths) > 1:
        raise ValueError(f"predictions cover different numbers of faces: {sorted(lengths)}")
    matrix = np.array([[np.mean(predictions[a] == predictions[b]) for b in names] for a in names])
    return pd.DataFrame(matrix, index=names, columns=names)


def plot_agreement(matrix: pd.DataFrame, title: str = "Per-image agreement between models") -> Figure:
    figure = Figure(figsize=(1.2 * len(matrix) + 2, 1.0 * len(matrix) + 1.5), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(matrix.to_numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(matrix)), labels=matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(matrix)), labels=matrix.index)
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            value = matrix.iat[i, j]
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title)
    return figure


def plot_confusion_matrices(metrics_by_model: Mapping[str, dict], class_names: Sequence[str], normalize: bool = True) -> Figure:
    """One row-normalised confusion matrix per model, side by side."""
    n = len(metrics_by_model)
    figure = Figure(figsize=(4.2 * n, 4.2), layout="constrained")
    axes = figure.subplots(1, n, squeeze=False)[0]
    for ax, (name, metrics) in zip(axes, metrics_by_model.items()):
        plot_confusion_matrix(metrics["confusion_matrix"], class_names, normalize=normalize, title=name, ax=ax)
    return figure


def fixes_and_breaks(labels: np.ndarray, member_predictions: Mapping[str, np.ndarray], ensemble_prediction: np.ndarray) -> pd.DataFrame:
    """Per member: faces the ensemble gets right that the member got wrong, and the reverse."""
    ensemble_right = ensemble_prediction == labels
    rows = []
    for name, prediction in member_predictions.items():
        member_right = prediction == labels
        rows.append({
            "member": name,
            "member_accuracy": float(member_right.mean()),
            "ensemble_fixes": int((ensemble_right & ~member_right).sum()),
            "ensemble_breaks": int((~ensemble_right & member_right).sum()),
        })
    rows.append({
        "member": "any member right",
        "member_accuracy": float(np.any([p == labels for p in member_predictions.values()], axis=0).mean()),
        "ensemble_fixes": None,
        "ensemble_breaks": None,
    })
    return pd.DataFrame(rows).set_index("member")


if __name__ == "__main__":
    main()
