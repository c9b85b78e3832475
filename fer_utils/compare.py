"""Side-by-side comparison of trained models from their cards and saved predictions.

``python -m fer_utils.compare [saved_models]`` prints the results table as Markdown (the README's
table comes from it), timing each model on one face on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plotting import plot_confusion_matrix
from .experiment import training_totals

MODEL_ORDER = ("scratch_cnn", "resnet50", "mobilenetv2", "inceptionv3", "ensemble")


def collect_cards(models_dir: str | os.PathLike) -> dict[str, dict]:
    """Every model card (``<name>.json`` beside ``<name>.keras``) in a folder, in study order."""
    models_dir = Path(models_dir)
    cards = {}
    for card_file in sorted(models_dir.glob("*.json")):
        if not card_file.with_suffix(".keras").exists():
            continue
        with open(card_file) as stream:
            card = json.load(stream)
        cards[card.get("name", card_file.stem)] = card
    order = {name: i for i, name in enumerate(MODEL_ORDER)}
    return dict(sorted(cards.items(), key=lambda item: (order.get(item[1].get("kind"), 99), item[0])))


def results_table(cards: Mapping[str, dict], split: str = "test") -> pd.DataFrame:
    """Accuracy and macro-F1 (plain and flip-TTA), size, parameters and training time."""
    rows = []
    for name, card in cards.items():
        metrics = card.get("metrics", {}).get(split, {})
        plain, tta = metrics.get("plain", {}), metrics.get("tta", {})
        rows.append({
            "model": card.get("display_name", name),
            "accuracy": plain.get("accuracy"),
            "macro_f1": plain.get("macro_f1"),
            "accuracy_tta": tta.get("accuracy"),
            "macro_f1_tta": tta.get("macro_f1"),
            "parameters": card.get("parameters_total"),
            "size_mb": _megabytes(card.get("file_size_bytes", 0)),
            "training_min": round((training_totals(card.get("training", {}))[1] or 0) / 60, 1),
            "weights": card.get("weights_source", ""),
        })
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def measure_latencies(cards: Mapping[str, dict], models_dir: str | os.PathLike, repeats: int = 30) -> dict[str, float]:
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
        loaded = by_file.get(Path(card["file"]).name)
        if loaded is None:
            continue
        loaded.warm_up()
        latency[card.get("display_name", name)] = round(measure_latency(loaded.predict, repeats, face)["median_ms"], 1)
    return latency


def _megabytes(size_bytes: int) -> float:
    """One decimal, two below 1 MB: the ensemble's head-only file must not read as 0."""
    size = size_bytes / 1e6
    return round(size, 1 if size >= 1 else 2)


def results_markdown(table: pd.DataFrame) -> str:
    """The results table as a Markdown table, accuracies in percent."""
    columns = {
        "accuracy": "PrivateTest acc.", "macro_f1": "macro-F1", "accuracy_tta": "acc. (flip TTA)",
        "macro_f1_tta": "macro-F1 (TTA)", "parameters": "parameters", "size_mb": "file MB",
        "latency_ms": "ms / face", "training_min": "training min",
    }
    present = [column for column in columns if column in table]
    lines = ["| model | " + " | ".join(columns[c] for c in present) + " |", "|---" * (len(present) + 1) + "|"]
    for model, row in table.iterrows():
        cells = []
        for column in present:
            value = row[column]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                cells.append("")
            elif column in ("accuracy", "accuracy_tta"):
                cells.append(f"{100 * value:.1f} %")
            elif column in ("macro_f1", "macro_f1_tta"):
                cells.append(f"{value:.3f}")
            elif column == "parameters":
                cells.append(f"{int(value):,}")
            else:
                cells.append(f"{value:g}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
