"""Figures and tables for looking at a FER dataset before training on it."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .data import CLASS_SETS, FerDataset, count_duplicates, load_dataset


def plot_class_distribution(dataset: FerDataset) -> Figure:
    """Images per class for each split: FER2013 is far from balanced (disgust is rare)."""
    counts = dataset.class_counts()
    figure = Figure(figsize=(9, 4), layout="constrained")
    ax = figure.add_subplot()
    width = 0.8 / len(counts.columns)
    positions = np.arange(len(counts))
    for i, split in enumerate(counts.columns):
        bars = ax.bar(positions + (i - (len(counts.columns) - 1) / 2) * width, counts[split], width, label=split)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(positions, labels=counts.index)
    ax.set_ylabel("images")
    ax.set_title("Class distribution per split")
    ax.legend()
    return figure


def sample_faces(dataset: FerDataset, per_class: int = 8, split: str = "train", seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """A few random faces of every class, class by class, with their class names."""
    rng = np.random.default_rng(seed)
    data = dataset.splits[split]
    images, titles = [], []
    for index, name in enumerate(dataset.class_names):
        members = np.flatnonzero(data.labels == index)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        images.extend(data.images[chosen])
        titles.extend([name] * len(chosen))
    return np.asarray(images), titles


def data_quality(dataset: FerDataset) -> pd.DataFrame:
    """Dropped blanks, exact duplicates within each split, and faces shared across splits."""
    rows = {name: {"images": len(split), "duplicates_within": count_duplicates(split.images)}
            for name, split in dataset.splits.items()}
    keys = {name: {image.tobytes() for image in split.images} for name, split in dataset.splits.items()}
    rows["train"]["also_in_val"] = len(keys["train"] & keys["val"])
    rows["train"]["also_in_test"] = len(keys["train"] & keys["test"])
    table = pd.DataFrame(rows).T
    table.attrs["dropped"] = dict(dataset.dropped)
    return table


def class_set_table(path: str | os.PathLike, seed: int = 42) -> pd.DataFrame:
    """Split sizes and classes under each class set (7, 6, 4), from the same file."""
    rows = []
    for class_set, names in CLASS_SETS.items():
        dataset = load_dataset(path, class_set, seed=seed)
        rows.append({"class_set": class_set, "classes": ", ".join(names), **dataset.split_sizes()})
    return pd.DataFrame(rows).set_index("class_set")
